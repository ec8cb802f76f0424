"""sfn_emulator.py's server, with Lambda Invoke answered as the `lambda` image would answer it.

Run as ``python -m tests.infra.sfn_lambda_emulator PORT OUTCOMES_JSON``; it serves until killed.

moto cannot invoke an image function without docker. Here moto's Lambda ``Invoke`` (which
moto's Step Functions interpreter calls for ``lambda:invoke``) answers each attempt of a
run id (the event's ``run-id``) as scripted in OUTCOMES_JSON:

- ``{"run": true}``: ``dsjob.lambda_handler.handler`` runs the real job in this process
  against this server's S3 and SSM (``AWS_ENDPOINT_URL``). A raised error is posted as
  awslambdaric posts it, with awslambdaric's own ``build_fault_result``
  (``errorType`` = the exception's class name) and ``X-Amz-Function-Error: Unhandled``;
- ``{"raise": "TransientError"}``: that dsjob error, turned into the handler's exception
  by ``lambda_handler.workflow_error`` (the code the handler raises it with), posted the
  same way;
- ``{"function_error": "Runtime.ExitError", "message": "..."}``: what Lambda itself reports
  for a runtime that died (killed for memory) or timed out (``Sandbox.Timedout``);
- ``{"service_error": "TooManyRequestsException", "status": 429}``: Invoke itself fails,
  as the Lambda API does when throttled; the interpreter names it ``Lambda.<code>``.

Each invocation's event is appended to ``invocations.jsonl`` next to OUTCOMES_JSON.
Everything else (Retry, Catch, Choice, Fail's ErrorPath, intrinsics) is moto's own, as in
sfn_emulator.py; a function error's error name and JSON cause come from moto's port of
the interpreter, which reads ``errorType`` from the payload, as Step Functions does.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.support.credentials import FAKE_ENV

PORT, OUTCOMES = sys.argv[1], Path(sys.argv[2])
ENDPOINT = f"http://127.0.0.1:{PORT}"
# The job in this process talks to this server, with the suite's fake credentials.
os.environ.update({**FAKE_ENV, "AWS_ENDPOINT_URL": ENDPOINT})
# sfn_emulator reads PORT MODE PATH at import and patches moto's interpreter.
sys.argv = [sys.argv[0], PORT, "scripted", str(OUTCOMES)]

from awslambdaric.bootstrap import build_fault_result  # type: ignore[import-untyped]  # noqa: E402
from moto.awslambda.models import LambdaBackend  # noqa: E402
from moto.core.exceptions import JsonRESTError  # noqa: E402
from moto.server import main  # noqa: E402

from dsjob import errors, lambda_handler  # noqa: E402
from tests.infra import sfn_emulator  # noqa: E402, F401 - its patches of moto's interpreter

_ATTEMPTS: dict[str, int] = defaultdict(int)
INVOCATIONS = OUTCOMES.parent / "invocations.jsonl"


def _fault(exc: BaseException) -> str:
    return json.dumps(build_fault_result((type(exc), exc, exc.__traceback__), None))


def _invoke(  # noqa: PLR0917 - moto's signature
    self: LambdaBackend,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,  # noqa: ARG001 - moto's signature
    response_headers: Any,
) -> str:
    """The scripted answer of this attempt (the last one repeats); default: run the job."""
    self.get_function(function_name, qualifier)  # a missing function fails as in moto
    event = json.loads(body or "{}")
    with INVOCATIONS.open("a") as log:
        log.write(json.dumps(event) + "\n")
    run_id = str(event.get("run-id", ""))
    scripts = json.loads(OUTCOMES.read_text()) if OUTCOMES.exists() else {}
    script = scripts.get(run_id, [{"run": True}])
    outcome = script[min(_ATTEMPTS[run_id], len(script) - 1)]
    _ATTEMPTS[run_id] += 1
    if "service_error" in outcome:
        throttled = type("ScriptedError", (JsonRESTError,), {"code": outcome["status"]})
        raise throttled(outcome["service_error"], "Rate exceeded")
    if "function_error" in outcome:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(
            {"errorType": outcome["function_error"], "errorMessage": outcome["message"]}
        )
    try:
        if "raise" in outcome:
            cause = getattr(errors, outcome["raise"])("scripted failure")
            raise lambda_handler.workflow_error(cause, run_id) from cause
        return json.dumps(lambda_handler.handler(event, None))
    except lambda_handler.WorkflowError as exc:
        response_headers["x-amz-function-error"] = "Unhandled"
        return _fault(exc)


LambdaBackend.invoke = _invoke  # type: ignore[method-assign]

if __name__ == "__main__":
    main(["--host", "127.0.0.1", "--port", PORT])
