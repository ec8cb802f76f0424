"""A stand-in for the Lambda Runtime API, served on loopback for the `lambda` image.

The Runtime Interface Emulator (RIE) binary cannot be downloaded on our machines, so
this serves the documented Runtime API itself
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html: GET
`/2018-06-01/runtime/invocation/next`, POST `.../invocation/{id}/response` and
`.../invocation/{id}/error`, POST `.../init/error`), and the image's own awslambdaric
polls it through AWS_LAMBDA_RUNTIME_API, as it polls Lambda's. The container tests
and the benchmark's cold-start case both use it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

API = "/2018-06-01/runtime"


class RuntimeApi(ThreadingHTTPServer):
    """The Runtime API's invocation endpoints; events in, responses and errors out."""

    daemon_threads = True

    def __init__(self) -> None:
        """Listen on a free loopback port."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.results: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self.alive: Callable[[], bool] = lambda: True
        # perf_counter() of the first GET /next: the runtime finished its init.
        self.first_poll_at: float | None = None
        self.polled = threading.Event()
        # perf_counter() when the runtime last posted a response or an error.
        self.answered_at: float | None = None

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self.server_address[1]}"

    def invoke(self, event: dict[str, Any], timeout: float = 240) -> tuple[str, dict[str, Any]]:
        """Queue one event; wait for ("response" or "error", body) for its request id."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got_id, kind, body = self.results.get(timeout=2)
            except queue.Empty:
                # A runtime that died (a crash, the memory limit) never answers: say so.
                assert self.alive(), "the function's container exited without answering"
                continue
            if got_id in (request_id, "init"):
                return kind, body
        msg = f"no answer to {event} within {timeout} s"
        raise AssertionError(msg)


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeApi
    timeouts: ClassVar[float] = 600

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        del format, args

    def do_GET(self) -> None:
        if self.path != f"{API}/invocation/next":
            self.send_error(404)
            return
        if not self.server.polled.is_set():
            self.server.first_poll_at = time.perf_counter()
            self.server.polled.set()
        request_id, event = self.server.events.get(timeout=self.timeouts)
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 900_000))
        self.send_header(
            "Lambda-Runtime-Invoked-Function-Arn",
            "arn:aws:lambda:us-east-1:123456789012:function:dsjob",
        )
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        # awslambdaric's C++ client reads the content type unchecked: without it, it crashes.
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        parts = self.path.removeprefix(f"{API}/").split("/")
        if parts[:2] == ["init", "error"]:
            self.server.results.put(("init", "init-error", body))
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            self.server.answered_at = time.perf_counter()
            self.server.results.put((parts[1], parts[2], body))
        else:
            self.send_error(404)
            return
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def serving() -> Iterator[RuntimeApi]:
    """A RuntimeApi serving from a daemon thread until the generator is closed."""
    server = RuntimeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
