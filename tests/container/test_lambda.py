"""The lambda image answers invocations of a Lambda Runtime API served by this test.

This stands in for the Runtime Interface Emulator (RIE): the RIE binary cannot be
downloaded on our machines, so the test serves the documented Runtime API itself
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html: GET
`/2018-06-01/runtime/invocation/next`, POST `.../invocation/{id}/response` and
`.../invocation/{id}/error`) on loopback, and the image's own awslambdaric polls it
through AWS_LAMBDA_RUNTIME_API, as it polls Lambda's. The container runs with a
read-only root file system and a tmpfs /tmp, as on Lambda.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from .imagekit import BuiltImage, Engine, build_image
from .test_job import OUTPUT_BUCKET, aws, output_keys

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import LocalServe

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # on top of the builds

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
            self.server.results.put((parts[1], parts[2], body))
        else:
            self.send_error(404)
            return
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def lambda_image(engine: Engine) -> BuiltImage:
    """The lambda target, built on the (cached) prod stages."""
    return build_image(engine, "--target", "lambda")


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    """The Runtime API on loopback, serving from a thread."""
    server = RuntimeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def function(
    engine: Engine, lambda_image: BuiltImage, runtime_api: RuntimeApi, local_aws: LocalServe
) -> Iterator[RuntimeApi]:
    """The lambda image polling the test's Runtime API: read-only root, tmpfs /tmp."""
    name = f"dsjob-lambda-{uuid.uuid4().hex[:8]}"
    engine(
        "run", "-d", "--name", name, "--network", "host", "--read-only",
        "--tmpfs", "/tmp:rw,size=512m", "--memory", "1024m",
        "-e", f"AWS_LAMBDA_RUNTIME_API={runtime_api.address}",
        "-e", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024",
        "-e", "AWS_LAMBDA_FUNCTION_NAME=dsjob",
        "-e", f"AWS_ENDPOINT_URL={local_aws.endpoint}",
        "-e", "AWS_ACCESS_KEY_ID=testing", "-e", "AWS_SECRET_ACCESS_KEY=testing",
        "-e", "AWS_DEFAULT_REGION=us-east-1",
        lambda_image.ref,
    )  # fmt: skip
    runtime_api.alive = lambda: (
        engine("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        == "true"
    )
    yield runtime_api
    logs = engine("logs", name, check=False)
    print(logs.stdout[-3000:], logs.stderr[-3000:])
    engine("rm", "--force", name, check=False)


def test_invocation_runs_the_job_and_returns_its_status(
    function: RuntimeApi, local_aws: LocalServe
) -> None:
    """An invocation publishes to the emulator and returns `dsjob run`'s JSON status."""
    kind, body = function.invoke({"run_id": "lambda-ok"})
    assert kind == "response", body
    assert body["status"] == "succeeded"
    assert body["exit_code"] == 0
    assert body["run_id"] == "lambda-ok"
    keys = output_keys(local_aws)
    assert any(k.endswith("manifests/lambda-ok.json") for k in keys), keys
    assert body["manifest"].endswith("manifests/lambda-ok.json")
    assert any(k.endswith(".parquet") for k in keys), keys
    key = body["outputs"][0].removeprefix(f"s3://{OUTPUT_BUCKET}/")
    assert aws(local_aws, "s3").head_object(Bucket=OUTPUT_BUCKET, Key=key)["ContentLength"] > 0


def test_failing_invocation_reports_an_error_and_publishes_nothing(
    function: RuntimeApi, local_aws: LocalServe
) -> None:
    """A missing input posts Dsjob.Input to /error with the status line; nothing is published."""
    kind, body = function.invoke({"input": "s3://dsjob-input/missing.csv", "run_id": "lambda-bad"})
    assert kind == "error", body
    # The error type is the name the state machine catches (infra/dsjob_infra/lambda_block.py).
    assert body["errorType"] == "Dsjob.Input"
    status = json.loads(body["errorMessage"])
    assert status["exit_code"] == 3
    assert "missing.csv" in status["error"]
    assert not [k for k in output_keys(local_aws) if "lambda-bad" in k]


def test_unknown_event_field_is_refused_before_any_work(function: RuntimeApi) -> None:
    """An event field that is no dsjob parameter fails the invocation and names the field."""
    kind, body = function.invoke({"inptu": "s3://dsjob-input/x.csv"})
    assert kind == "error", body
    assert "inptu" in body["errorMessage"]
    assert body["errorType"] == "Dsjob.Config"
