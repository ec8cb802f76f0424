"""The compute: lambda state machine, executed by moto's interpreter, invoking the real handler.

The definition is the synthesized one (Ref/GetAtt resolved to the emulated buckets and
function; retry intervals shortened to 1 s). Invoke runs ``dsjob.lambda_handler.handler``
in the emulator against its S3 and SSM, or answers as scripted (sfn_lambda_emulator.py):
a dsjob error raised through the handler's own ``workflow_error``, Lambda's runtime
errors, or a throttled Invoke. What it cannot show: the image, real Lambda (its
timeouts, memory kills and throttling are scripted from their documented names), IAM.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from dsjob.sample import write_members_csv
from tests.infra.emulated import REGION, Emulated, _shorten_retries
from tests.infra.test_stack_lambda import _synth
from tests.support import credentials
from tests.support.paths import REPO
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.infra


class LambdaEmulated(Emulated):
    """The emulator with the Lambda variant deployed: buckets, parameters, function, machine."""

    def _deploy(self, resources: dict[str, Any]) -> None:
        session = boto3.session.Session(
            aws_access_key_id=credentials.ACCESS_KEY_ID,
            aws_secret_access_key=credentials.SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        role = session.client("iam", endpoint_url=self.endpoint).create_role(
            RoleName="dsjob-function",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        functions = session.client("lambda", endpoint_url=self.endpoint)
        for logical_id, resource in resources.items():
            kind, props = resource["Type"], resource.get("Properties", {})
            if kind == "AWS::S3::Bucket":
                self.refs[logical_id] = props["BucketName"]
                self.s3.create_bucket(Bucket=props["BucketName"])
            elif kind == "AWS::Lambda::Function":
                # moto invokes no image without docker; the emulator answers Invoke itself.
                code = io.BytesIO()
                with zipfile.ZipFile(code, "w") as archive:
                    archive.writestr("handler.py", "")
                self.atts[logical_id, "Arn"] = functions.create_function(
                    FunctionName=props["FunctionName"],
                    Runtime="python3.11",
                    Role=role,
                    Handler="handler.handler",
                    Code={"ZipFile": code.getvalue()},
                )["FunctionArn"]
        for resource in resources.values():
            if resource["Type"] == "AWS::SSM::Parameter":
                props = self.resolve(resource["Properties"])
                self.ssm.put_parameter(Name=props["Name"], Value=props["Value"], Type=props["Type"])
        [machine] = [
            r["Properties"]
            for r in resources.values()
            if r["Type"] == "AWS::StepFunctions::StateMachine"
        ]
        self.definition = json.loads(self.resolve(machine["DefinitionString"]))
        _shorten_retries(self.definition)
        self.machine_arn = self.sfn.create_state_machine(
            name=machine["StateMachineName"],
            definition=json.dumps(self.definition),
            roleArn="arn:aws:iam::123456789012:role/emulated",
        )["stateMachineArn"]

    def invocations(self, run_id: str) -> list[dict[str, Any]]:
        """The events the function was invoked with for a run id, in order."""
        log = self.outcomes.parent / "invocations.jsonl"
        if not log.exists():
            return []
        events = [json.loads(line) for line in log.read_text().splitlines()]
        return [e for e in events if e.get("run-id") == run_id]


@contextmanager
def _serve(resources: dict[str, Any], workdir: Path) -> Iterator[LambdaEmulated]:
    port = free_port()
    log_path = workdir / "emulator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSJOB_"))}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.infra.sfn_lambda_emulator",
                str(port),
                str(workdir / "outcomes.json"),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"emulator did not start: {log_path.read_text()}")
                    time.sleep(0.1)
            yield LambdaEmulated(endpoint, workdir / "outcomes.json", resources)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEmulated]:
    """The Lambda variant deployed in the emulator, with the sample input uploaded."""
    _, resources, _ = _synth(tmp_path_factory.mktemp("cdk.out.lambda-emulated"))
    with _serve(resources, tmp_path_factory.mktemp("sfn-lambda")) as emulated:
        sample = tmp_path_factory.mktemp("input") / "members.csv"
        write_members_csv(sample, 1228)
        emulated.s3.upload_file(str(sample), emulated.bucket("input"), "raw/members.csv")
        yield emulated


def _cause(result: dict[str, Any]) -> dict[str, Any]:
    cause: dict[str, Any] = json.loads(result["cause"])
    return cause


def test_a_real_run_publishes_and_returns_its_status(emulated):
    """No script: the handler runs the 1,228-row job; the execution's output is its status."""
    result = emulated.run("lambda-real-ok", timeout=180)
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["runId"] == "lambda-real-ok"
    assert output["status"]["status"] == "succeeded"
    assert output["status"]["rows_in"] == 1228
    [event] = emulated.invocations("lambda-real-ok")
    assert event["phase"] == "single"
    assert event["input-key"] == ""  # not given: the SSM parameter applies
    keys = [
        o["Key"] for o in emulated.s3.list_objects_v2(Bucket=emulated.bucket("output"))["Contents"]
    ]
    manifests = [k for k in keys if k.startswith("processed/manifests/")]
    assert [k for k in manifests if k.endswith("/lambda-real-ok.json")], keys
    assert "processed/status/lambda-real-ok.json" in keys


def test_a_missing_input_fails_dsjob_input_with_the_status_line_once(emulated):
    """A real run on a missing key: Dsjob.Input, cause = the run's status line, not retried."""
    result = emulated.run("lambda-real-missing", {"inputKey": "raw/missing.csv"}, timeout=120)
    assert result["status"] == "FAILED", result
    assert result["error"] == "Dsjob.Input"
    status = _cause(result)
    assert status["exit_code"] == 3
    assert "missing.csv" in status["error"]
    assert len(emulated.invocations("lambda-real-missing")) == 1


def test_transient_failures_are_retried_then_the_real_run_succeeds(emulated):
    """TransientError, then ConflictError (a subclass), then the job: three invocations."""
    emulated.script(
        "lambda-flaky", {"raise": "TransientError"}, {"raise": "ConflictError"}, {"run": True}
    )
    result = emulated.run("lambda-flaky", timeout=180)
    assert result["status"] == "SUCCEEDED", result
    assert len(emulated.invocations("lambda-flaky")) == 3


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        ("UserCodeError", "Dsjob.UserCode"),
        ("OutOfMemoryError", "Dsjob.OutOfMemory"),
        ("DsjobError", "Dsjob.Internal"),
    ],
)
def test_final_dsjob_errors_fail_once_under_their_name(emulated, raised, error):
    """Errors the Fargate path does not retry are not retried here either."""
    run_id = f"lambda-final-{raised.lower()}"
    emulated.script(run_id, {"raise": raised})
    result = emulated.run(run_id)
    assert result["status"] == "FAILED", result
    assert result["error"] == error
    assert _cause(result)["error"] == "scripted failure"
    assert len(emulated.invocations(run_id)) == 1


def test_throttling_is_retried_then_fails_task_not_placed(emulated):
    """Lambda.TooManyRequestsException on every try: 1 + 3 retries, then Dsjob.TaskNotPlaced."""
    emulated.script(
        "lambda-throttled", {"service_error": "TooManyRequestsException", "status": 429}
    )
    result = emulated.run("lambda-throttled")
    assert result["status"] == "FAILED", result
    assert result["error"] == "Dsjob.TaskNotPlaced"
    assert "Rate exceeded" in result["cause"]
    assert len(emulated.invocations("lambda-throttled")) == 4


def test_a_runtime_killed_for_memory_is_dsjob_out_of_memory(emulated):
    """Runtime.ExitError 'signal: killed': Dsjob.OutOfMemory naming lambdaMemoryMiB, once."""
    emulated.script(
        "lambda-oom",
        {
            "function_error": "Runtime.ExitError",
            "message": "RequestId: 1 Error: Runtime exited with error: signal: killed",
        },
    )
    result = emulated.run("lambda-oom")
    assert result["status"] == "FAILED", result
    assert result["error"] == "Dsjob.OutOfMemory"
    assert "lambdaMemoryMiB" in result["cause"]
    assert len(emulated.invocations("lambda-oom")) == 1


def test_a_timeout_keeps_lambdas_name_and_is_not_retried(emulated):
    """Sandbox.Timedout is neither renamed nor retried."""
    emulated.script(
        "lambda-timeout",
        {"function_error": "Sandbox.Timedout", "message": "Task timed out after 900.00 seconds"},
    )
    result = emulated.run("lambda-timeout")
    assert result["status"] == "FAILED", result
    assert result["error"] == "Sandbox.Timedout"
    assert len(emulated.invocations("lambda-timeout")) == 1


def test_an_input_prefix_is_refused_without_invoking(emulated):
    """Fan-out on Lambda: Dsjob.Config at once, the function never invoked."""
    result = emulated.run("lambda-fanout", {"inputPrefix": "raw/"})
    assert result["status"] == "FAILED", result
    assert result["error"] == "Dsjob.Config"
    assert "compute: fargate" in result["cause"]
    assert emulated.invocations("lambda-fanout") == []
