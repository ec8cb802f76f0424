"""The prod image runs the job against the embedded AWS: end to end, SIGTERM, memory limit."""

from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import credentials

from .imagekit import BuiltImage, Engine

if TYPE_CHECKING:
    from tests.conftest import LocalServe

pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(600),
]  # on top of the image builds (conftest)

PREFIX = "/ds/preprocessing"
INPUT_BUCKET = "dsjob-input"
OUTPUT_BUCKET = "dsjob-output"
ARTIFACT_BUCKET = "dsjob-artifacts"


def aws(server: LocalServe, service: str) -> Any:
    """A boto3 client for the emulator."""
    return credentials.client(service, server.endpoint)


def output_keys(server: LocalServe) -> list[str]:
    """Every object key in the emulated output bucket."""
    listed = aws(server, "s3").list_objects_v2(Bucket=OUTPUT_BUCKET)
    return [item["Key"] for item in listed.get("Contents", [])]


def run_args(server: LocalServe, *extra: str) -> list[str]:
    """`run` arguments: host network, the emulator's endpoint and test credentials."""
    return [
        "run",
        "--network",
        "host",
        "-e",
        f"AWS_ENDPOINT_URL={server.endpoint}",
        "-e",
        "AWS_ACCESS_KEY_ID=testing",
        "-e",
        "AWS_SECRET_ACCESS_KEY=testing",
        "-e",
        "AWS_DEFAULT_REGION=us-east-1",
        *extra,
    ]


def test_prod_image_runs_the_job_end_to_end(
    engine: Engine, prod_image: BuiltImage, local_aws: LocalServe
) -> None:
    """The prod container publishes outputs and the manifest to the emulated bucket."""
    name = f"dsjob-e2e-{time.monotonic_ns()}"
    cmd = [engine.command, *run_args(local_aws, "--name", name), prod_image.ref]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    first_line_s = None
    for line in proc.stdout:
        if first_line_s is None and line.startswith("{"):
            first_line_s = time.monotonic() - start
        lines.append(line.rstrip("\n"))
    proc.stdout.close()
    rc = proc.wait(300)
    try:
        assert rc == 0, "\n".join(lines[-30:])
        # The merged pipe above can splice a stderr chunk into a stdout line: read the
        # status from the container's own stdout.
        stdout = engine("logs", name).stdout.strip().splitlines()
        status = json.loads(stdout[-1])
        assert status["status"] == "succeeded"
        # Includes creating and starting the container: an upper bound on start -> log.
        print(f"engine run -> first job log line {first_line_s:.2f} s")
    finally:
        engine("rm", "--force", name, check=False)
    keys = output_keys(local_aws)
    manifests = [k for k in keys if "/manifests/" in k]
    assert len(manifests) == 1, keys
    manifest = json.loads(
        aws(local_aws, "s3").get_object(Bucket=OUTPUT_BUCKET, Key=manifests[0])["Body"].read()
    )
    outputs = [k for k in keys if k not in manifests]
    assert outputs, keys
    assert any(k.endswith((".parquet", ".csv")) for k in outputs)
    assert status["run_id"] in manifests[0]
    assert manifest["run_id"] == status["run_id"]
    published = {o["key"] for o in manifest["outputs"]}
    assert published, manifest
    assert published <= set(outputs), (published, outputs)
    assert first_line_s is not None
    assert first_line_s < 10  # the <1 s budget is reported, not asserted, on a loaded CI box


HANGING_SCRIPT = """\
import sys, time
print("hanging script started", flush=True)
time.sleep(600)
"""


def test_sigterm_stops_the_job_without_partial_output(
    engine: Engine, prod_image: BuiltImage, local_aws: LocalServe
) -> None:
    """SIGTERM (engine stop) ends a running job non-zero within the stop timeout, no outputs."""
    aws(local_aws, "s3").put_object(
        Bucket=ARTIFACT_BUCKET, Key="scripts/hang.py", Body=HANGING_SCRIPT.encode()
    )
    aws(local_aws, "ssm").put_parameter(
        Name=f"{PREFIX}/script-key", Value="scripts/hang.py", Type="String", Overwrite=True
    )
    name = f"dsjob-sigterm-{time.monotonic_ns()}"
    engine(*run_args(local_aws, "-d", "--name", name), prod_image.ref)
    try:
        deadline = time.monotonic() + 120
        logs = ""
        while time.monotonic() < deadline and "hanging script started" not in logs:
            time.sleep(0.5)
            proc = engine("logs", name, check=False)
            logs = proc.stdout + proc.stderr
        assert "hanging script started" in logs, logs
        stop_timeout = 25
        start = time.monotonic()
        engine("stop", "-t", str(stop_timeout), name, timeout=stop_timeout + 60)
        elapsed = time.monotonic() - start
        code = int(engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
        proc = engine("logs", name, check=False)
        logs = proc.stdout + proc.stderr
        print(f"stopped in {elapsed:.1f} s with exit code {code}")
        # tini forwards SIGTERM; the job exits 143 itself (137 would be the engine's SIGKILL).
        assert code == 143, logs
        assert elapsed < stop_timeout, logs
        status = json.loads(proc.stdout.strip().splitlines()[-1])
        assert status["exit_code"] == 143, proc.stdout
        assert "stopped without publishing" in status["error"]
        # No output and no manifest: only the run's failure status object is left behind.
        keys = output_keys(local_aws)
        assert keys == [f"processed/status/{status['run_id']}.json"], keys
    finally:
        engine("rm", "--force", name, check=False)


def test_too_small_memory_limit_exits_137(
    engine: Engine, prod_image: BuiltImage, local_aws: LocalServe
) -> None:
    """The built-in step on a big input under a too-small --memory is OOM-killed: exit 137."""
    s3 = aws(local_aws, "s3")
    seeded = s3.get_object(Bucket=INPUT_BUCKET, Key="raw/members.csv")["Body"].read().decode()
    header, _, body = seeded.partition("\n")
    big = header + "\n" + body * 500  # about 90 MB of member rows
    s3.put_object(Bucket=INPUT_BUCKET, Key="raw/big.csv", Body=big.encode())
    aws(local_aws, "ssm").put_parameter(
        Name=f"{PREFIX}/input-key", Value="raw/big.csv", Type="String", Overwrite=True
    )
    proc = engine(
        *run_args(local_aws, "--rm", "--memory", "96m", "--memory-swap", "96m"),
        prod_image.ref,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 137, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [k for k in output_keys(local_aws) if "/manifests/" in k] == []
