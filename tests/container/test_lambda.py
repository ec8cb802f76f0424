"""The lambda image answers invocations of a Lambda Runtime API served by this test.

This stands in for the Runtime Interface Emulator (RIE): the RIE binary cannot be
downloaded on our machines, so the test serves the documented Runtime API itself
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html: GET
`/2018-06-01/runtime/invocation/next`, POST `.../invocation/{id}/response` and
`.../invocation/{id}/error`) on loopback (tests/support/lambda_runtime.py), and the
image's own awslambdaric polls it through AWS_LAMBDA_RUNTIME_API, as it polls Lambda's.
The container runs with a read-only root file system and a tmpfs /tmp, as on Lambda.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.support.lambda_runtime import RuntimeApi, serving

from .imagekit import BuiltImage, Engine, build_image
from .test_job import OUTPUT_BUCKET, aws, output_keys

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LocalServe

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # on top of the builds


@pytest.fixture(scope="module")
def lambda_image(engine: Engine) -> BuiltImage:
    """The lambda target, built on the (cached) prod stages."""
    return build_image(engine, "--target", "lambda")


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    """The Runtime API on loopback, serving from a thread."""
    with serving() as server:
        yield server


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
