"""S3 faults on the real request path of a `dsjob run` subprocess, chosen by env var.

botocore loads this module into every client it creates when the environment has
``BOTOCORE_EXPERIMENTAL__PLUGINS=s3faults=tests.integration.s3faults`` (botocore's
client-plugin hook, ``botocore/plugin.py``); nothing in dsjob is patched. Because
botocore swallows plugin import errors, each fault leaves a line in
``S3FAULT_LOG`` and the tests check that it fired.

``S3FAULT`` is one of:

- ``corrupt-part``: flip one byte of every UploadPart body after its checksum was
  computed (a body changed in flight);
- ``composite``: drop ``x-amz-checksum-type: FULL_OBJECT`` from CreateMultipartUpload,
  as a store that ignores it would, so the object gets a COMPOSITE checksum;
- ``fail:<Operation>:N``: answer the N-th call of an S3 operation, and every one
  after it (botocore's retries included), with a 500 ``InternalError``; run with
  ``AWS_MAX_ATTEMPTS=1`` to keep the retries few;
- ``conflict:<Operation>:<key-part>:N`` (or ``N+``): answer the N-th call of an S3
  operation whose URL holds `key-part` (or that one and every one after it) with a
  409 ``ConditionalRequestConflict``, as S3 answers a conditional write that met a
  concurrent write to its key (S3 API Reference, PutObject and
  CompleteMultipartUpload, ``If-None-Match``); moto never answers it;
- ``hold-after-stored:N``: block the first UploadPart sent after N outputs were
  stored (N CompleteMultipartUpload calls answered with an ETag) until the process
  is killed or ``S3FAULT_RELEASE`` exists (the fault log says when it is held).
  Counting stored outputs, not parts, keeps "the first output is stored" true when
  a name another run took in the same second makes dsjob upload an output again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


def _log(line: str) -> None:
    path = os.environ.get("S3FAULT_LOG")
    if path:
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _nth(operation: str) -> int:
    with _LOCK:
        _COUNTS[operation] = _COUNTS.get(operation, 0) + 1
        return _COUNTS[operation]


def _corrupt(request: Any, **_: Any) -> None:
    body = request.body
    data = bytearray(body if isinstance(body, bytes) else body.read())
    data[len(data) // 2] ^= 0xFF
    request.body = bytes(data)
    _log("corrupted an UploadPart body")


def _composite(request: Any, **_: Any) -> None:
    request.headers.pop("x-amz-checksum-type", None)
    _log("dropped FULL_OBJECT from CreateMultipartUpload")


def _fail(operation: str, target: int) -> Any:
    def handler(request: Any, **_: Any) -> AWSResponse | None:
        if _nth(operation) < target:
            return None
        _log(f"failed {operation} #{target}")
        body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
        return AWSResponse(request.url, 500, HTTPHeaders(), _Raw(body))

    return handler


def _conflict(operation: str, part: str, when: str) -> Any:
    every_after = when.endswith("+")
    target = int(when.rstrip("+"))

    def handler(request: Any, **_: Any) -> AWSResponse | None:
        if part not in request.url:
            return None
        n = _nth(f"{operation}:{part}")
        if n < target or (n > target and not every_after):
            return None
        _log(f"409 {operation} {part} #{n}")
        body = (
            b"<Error><Code>ConditionalRequestConflict</Code>"
            b"<Message>A conflicting operation occurred. Please retry.</Message></Error>"
        )
        return AWSResponse(request.url, 409, HTTPHeaders(), _Raw(body))

    return handler


def _stored(parsed: Any = None, **_: Any) -> None:
    if isinstance(parsed, dict) and parsed.get("ETag"):
        _nth("stored")


def _hold(after: int) -> Any:
    held: list[bool] = []

    def handler(**_: Any) -> None:
        with _LOCK:
            if held or _COUNTS.get("stored", 0) < after:
                return
            held.append(True)
        _log(f"holding an UploadPart after {after} stored")
        # the test reads this line
        sys.stderr.write(f"s3faults: holding an UploadPart after {after} stored\n")
        sys.stderr.flush()
        release = Path(os.environ.get("S3FAULT_RELEASE", "/nonexistent/release"))
        while not release.exists():  # held until killed or released by the test
            time.sleep(0.05)

    return handler


class _Raw:
    """The smallest raw body AWSResponse reads (``stream``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


def initialize_client_plugin(client: Any) -> None:
    """Botocore's plugin entry point: register the fault named by S3FAULT on S3 clients."""
    if client.meta.service_model.service_name != "s3":
        return
    fault = os.environ.get("S3FAULT", "")
    name, _, arg = fault.partition(":")
    events = client.meta.events
    if name == "corrupt-part":
        events.register("before-send.s3.UploadPart", _corrupt)
    elif name == "composite":
        events.register("before-send.s3.CreateMultipartUpload", _composite)
    elif name == "fail":
        operation, _, nth = arg.partition(":")
        events.register(f"before-send.s3.{operation}", _fail(operation, int(nth)))
    elif name == "conflict":
        operation, part, when = arg.split(":")
        events.register(f"before-send.s3.{operation}", _conflict(operation, part, when))
    elif name == "hold-after-stored":
        events.register("after-call.s3.CompleteMultipartUpload", _stored)
        events.register("before-send.s3.UploadPart", _hold(int(arg)))
    _log(f"registered {fault} on an s3 client")
