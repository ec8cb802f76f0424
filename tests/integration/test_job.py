"""The job as users run it: `dsjob run` as a subprocess against a real moto server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import zlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from tests.conftest import DSJOB, LocalServe
from tests.support.paths import REPO
from tests.support.ports import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient

pytestmark = pytest.mark.integration

PREFIX = "/ds/preprocessing"
OUT = "dsjob-output"
ART = "dsjob-artifacts"


def s3(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def ssm(aws: LocalServe) -> SSMClient:
    return boto3.client("ssm", endpoint_url=aws.endpoint, region_name="us-east-1")


def run_job(
    aws: LocalServe, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DSJOB), "run", *args],
        env=aws.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one-line JSON status: the last line on stdout."""
    last = proc.stdout.strip().splitlines()[-1]
    parsed: dict[str, Any] = json.loads(last)
    return parsed


def logged(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON log records on stderr."""
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


def outputs(aws: LocalServe) -> list[str]:
    """What publish wrote; the status object every CLI run leaves is the runner's."""
    pages = s3(aws).get_paginator("list_objects_v2").paginate(Bucket=OUT)
    found = (o["Key"] for p in pages for o in p.get("Contents", []))
    return sorted(k for k in found if "/status/" not in k)


def put_param(aws: LocalServe, name: str, value: str) -> None:
    ssm(aws).put_parameter(Name=f"{PREFIX}/{name}", Value=value, Type="String", Overwrite=True)


def upload_script(aws: LocalServe, body: str, key: str = "jobs/script.py") -> None:
    s3(aws).put_object(Bucket=ART, Key=key, Body=body.encode())
    put_param(aws, "script-key", key)


def succeed_once(aws: LocalServe, run_id: str = "first") -> list[str]:
    """A good run, so failure tests can check that its outputs survive."""
    proc = run_job(aws, DSJOB_RUN_ID=run_id)
    assert proc.returncode == 0, proc.stderr
    keys = outputs(aws)
    assert any(k.endswith(".parquet") for k in keys)
    return keys


def test_builtin_run_publishes_outputs_metadata_and_manifest(local_aws: LocalServe) -> None:
    """A seeded run publishes timestamped Parquet with metadata and a manifest written last."""
    ssm(local_aws).put_parameter(
        Name=f"{PREFIX}/id-column", Value="id", Type="SecureString", Overwrite=True
    )
    proc = run_job(local_aws, DSJOB_RUN_ID="exec-1")
    assert proc.returncode == 0, proc.stderr
    st = status(proc)
    assert st["status"] == "succeeded"
    assert st["rows_in"] == 1228
    assert 0 < st["rows_out"] < 1228  # the sample holds duplicates and null ids
    assert st["rows_in"] - st["rows_out"] == sum(st["dropped"].values())
    keys = outputs(local_aws)
    data = [k for k in keys if k.endswith(".parquet")]
    assert len(data) == 1
    assert data[0].startswith("processed/members_")
    head = s3(local_aws).head_object(Bucket=OUT, Key=data[0])
    meta = head["Metadata"]
    assert meta["record-count"] == str(st["rows_out"])
    assert meta["run-id"] == "exec-1"
    raw = s3(local_aws).head_object(Bucket="dsjob-input", Key="raw/members.csv")
    # HeadObject's ETag is quoted (S3 API Reference, HeadObject "ETag"); dsjob stores it bare.
    assert meta["input-etag"] == raw["ETag"].strip('"')
    # The installed distribution's version, read here independently of dsjob.version().
    assert meta["dsjob-version"] == metadata.version("dsjob")
    manifest = json.loads(
        s3(local_aws).get_object(Bucket=OUT, Key="processed/manifests/exec-1.json")["Body"].read()
    )
    assert manifest["counts"]["rows_out"] == st["rows_out"]
    assert manifest["outputs"][0]["key"] == data[0]
    assert manifest["config"]["input"] == "s3://dsjob-input/raw/members.csv"
    assert manifest["config"]["id_column"] == "***"  # a SecureString value is redacted
    body = s3(local_aws).get_object(Bucket=OUT, Key=data[0])["Body"].read()
    entry = manifest["outputs"][0]
    assert meta["sha256"] == entry["sha256"] == hashlib.sha256(body).hexdigest()
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert entry["crc32"] == crc
    assert entry["etag"] == head["ETag"].strip('"')
    assert entry["records"] == st["rows_out"]
    assert manifest["inputs"]["input"]["etag"] == raw["ETag"].strip('"')
    assert manifest["inputs"]["input"]["bytes"] == raw["ContentLength"]
    assert manifest["versions"]["dsjob"] == metadata.version("dsjob")
    assert manifest["orphans_removed"] == []
    pointer = json.loads(
        s3(local_aws).get_object(Bucket=OUT, Key="processed/current/members.json")["Body"].read()
    )
    assert (pointer["run_id"], pointer["outputs"]) == ("exec-1", data)
    assert pointer["manifest"] == "processed/manifests/exec-1.json"
    # With JSON logs the report is one "run summary" record (its text table is for TTYs).
    [report] = [r for r in logged(proc) if r["message"] == "run summary"]
    assert report["run_id"] == "exec-1"
    assert (report["status"], report["mode"]) == ("succeeded", "builtin")
    assert (report["rows_in"], report["rows_out"]) == (st["rows_in"], st["rows_out"])
    assert report["dropped"] == st["dropped"]
    assert report["outputs"] == [
        {"uri": f"s3://{OUT}/{data[0]}", "size": len(body), "records": st["rows_out"]}
    ]
    assert report["manifest"] == f"s3://{OUT}/processed/manifests/exec-1.json"


def test_second_run_replaces_first_and_keep_outputs_keeps_history(local_aws: LocalServe) -> None:
    """keep-outputs=0 leaves exactly one current output; keep-outputs=1 keeps one previous."""
    first = succeed_once(local_aws, "a")
    proc = run_job(local_aws, DSJOB_RUN_ID="b")
    assert proc.returncode == 0, proc.stderr
    data = [k for k in outputs(local_aws) if k.endswith(".parquet")]
    assert len(data) == 1
    assert data[0] not in first
    put_param(local_aws, "keep-outputs", "1")
    proc = run_job(local_aws, DSJOB_RUN_ID="c")
    assert proc.returncode == 0, proc.stderr
    assert len([k for k in outputs(local_aws) if k.endswith(".parquet")]) == 2


def test_rows_out_counts_rows_once_with_both_formats(local_aws: LocalServe) -> None:
    """With output-format both, rows_out is the row count, not the sum over the two files."""
    put_param(local_aws, "output-format", "both")
    proc = run_job(local_aws, DSJOB_RUN_ID="both")
    assert proc.returncode == 0, proc.stderr
    st = status(proc)
    assert len(st["outputs"]) == 2
    for uri in st["outputs"]:
        head = s3(local_aws).head_object(Bucket=OUT, Key=uri.split("/", 3)[3])
        assert head["Metadata"]["record-count"] == str(st["rows_out"])
    assert st["rows_in"] - st["rows_out"] == sum(st["dropped"].values())


def test_an_empty_result_never_replaces_good_output(local_aws: LocalServe) -> None:
    """A run left with no rows exits 3 and prunes nothing; earlier outputs stay."""
    before = succeed_once(local_aws)
    s3(local_aws).put_object(Bucket="dsjob-input", Key="raw/nulls.csv", Body=b"id,name\n,a\n,b\n")
    proc = run_job(local_aws, DSJOB_INPUT_KEY="raw/nulls.csv", DSJOB_DATASET="members")
    assert proc.returncode == 3, proc.stderr
    assert "no rows" in proc.stderr
    assert outputs(local_aws) == before


def test_a_script_writing_only_empty_files_exits_4(local_aws: LocalServe) -> None:
    """A script whose outputs are all 0 bytes exits 4 and prunes nothing."""
    before = succeed_once(local_aws)
    upload_script(
        local_aws,
        "import os\nfrom pathlib import Path\n"
        "Path(os.environ['DSJOB_OUTPUT_DIR'], 'members.csv').write_bytes(b'')\n",
    )
    proc = run_job(local_aws)
    assert proc.returncode == 4, proc.stderr
    assert "empty" in proc.stderr
    assert outputs(local_aws) == before


def test_same_run_id_does_not_publish_twice(local_aws: LocalServe) -> None:
    """Re-running a run id that already has a manifest publishes nothing new and exits 0."""
    before = succeed_once(local_aws, "exec-same")
    proc = run_job(local_aws, DSJOB_RUN_ID="exec-same")
    assert proc.returncode == 0, proc.stderr
    assert status(proc)["status"] == "already-published"
    assert outputs(local_aws) == before


def test_missing_parameters_are_named_together(local_aws: LocalServe) -> None:
    """Missing parameters exit 2 and every one is named in a single message."""
    ssm(local_aws).delete_parameters(Names=[f"{PREFIX}/input-bucket", f"{PREFIX}/input-key"])
    proc = run_job(local_aws)
    assert proc.returncode == 2
    assert f"{PREFIX}/input-bucket" in proc.stderr
    assert f"{PREFIX}/input-key" in proc.stderr
    errors = [json.loads(line) for line in proc.stderr.splitlines() if '"level": "error"' in line]
    assert [e["message"] for e in errors] == [status(proc)["error"]]
    assert status(proc) == {"status": "failed", "exit_code": 2, "error": status(proc)["error"]}
    assert outputs(local_aws) == []


def test_env_override_beats_ssm(local_aws: LocalServe) -> None:
    """DSJOB_INPUT_KEY overrides the SSM value (how Step Functions passes per-run input)."""
    proc = run_job(local_aws, DSJOB_INPUT_KEY="raw/other.csv")
    assert proc.returncode == 3
    assert "s3://dsjob-input/raw/other.csv" in proc.stderr


def test_missing_input_object_names_bucket_and_key(local_aws: LocalServe) -> None:
    """A missing input exits 3, names bucket and key, and leaves earlier outputs alone."""
    before = succeed_once(local_aws)
    put_param(local_aws, "input-key", "raw/nope.csv")
    proc = run_job(local_aws)
    assert proc.returncode == 3
    assert "s3://dsjob-input/raw/nope.csv" in proc.stderr
    assert status(proc)["exit_code"] == 3
    assert outputs(local_aws) == before


def test_failing_script_exits_4_and_keeps_outputs(local_aws: LocalServe) -> None:
    """A script that raises exits 4 with its error in the message; nothing is published."""
    before = succeed_once(local_aws)
    upload_script(local_aws, "raise SystemExit('model file is corrupt')\n")
    proc = run_job(local_aws)
    assert proc.returncode == 4
    assert "model file is corrupt" in proc.stderr
    assert outputs(local_aws) == before


def test_hanging_script_times_out(local_aws: LocalServe) -> None:
    """A script past script-timeout is stopped and the run exits 4 naming the timeout."""
    before = succeed_once(local_aws)
    upload_script(local_aws, "import time\ntime.sleep(600)\n")
    put_param(local_aws, "script-timeout", "2")
    started = time.monotonic()
    proc = run_job(local_aws, timeout=60)
    assert proc.returncode == 4
    assert time.monotonic() - started < 30
    # The config log mentions "script-timeout" anyway: assert the error itself.
    assert "script.py timed out after 2 s" in status(proc)["error"]
    assert outputs(local_aws) == before


def _tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_hostile_tarball_is_refused_naming_the_member(local_aws: LocalServe) -> None:
    """A package with a ../ member exits 3, names it, writes nothing outside the work dir."""
    before = succeed_once(local_aws)
    evil = tarfile.TarInfo("package/../../../../tmp/dsjob-pwned.py")
    payload = b"print('owned')\n"
    evil.size = len(payload)
    s3(local_aws).put_object(
        Bucket=ART, Key="jobs/package.tar.gz", Body=_tarball([(evil, payload)])
    )
    put_param(local_aws, "package-key", "jobs/package.tar.gz")
    upload_script(local_aws, "print('never runs')\n")
    proc = run_job(local_aws)
    assert proc.returncode == 3
    assert "dsjob-pwned.py" in proc.stderr
    assert not Path("/tmp/dsjob-pwned.py").exists()
    assert outputs(local_aws) == before


def test_script_imports_its_package_and_publishes(local_aws: LocalServe) -> None:
    """The example script and package run end to end, their SHA-256s on outputs and manifest."""
    proc = subprocess.run(
        [str(DSJOB), "pack", str(REPO / "examples"), "--bucket", ART, "--prefix", "jobs"],
        env=local_aws.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    put_param(local_aws, "script-key", "jobs/script.py")
    put_param(local_aws, "package-key", "jobs/package.tar.gz")
    proc = run_job(local_aws, DSJOB_RUN_ID="scripted")
    assert proc.returncode == 0, proc.stderr
    st = status(proc)
    assert st["outputs"]
    uploaded = {
        name: hashlib.sha256(
            s3(local_aws).get_object(Bucket=ART, Key=f"jobs/{file}")["Body"].read()
        ).hexdigest()
        for name, file in (("script", "script.py"), ("package", "package.tar.gz"))
    }
    head = s3(local_aws).head_object(Bucket=OUT, Key=st["outputs"][0].split("/", 3)[3])
    assert head["Metadata"]["script-sha256"] == uploaded["script"]
    assert head["Metadata"]["package-sha256"] == uploaded["package"]
    manifest = json.loads(
        s3(local_aws).get_object(Bucket=OUT, Key="processed/manifests/scripted.json")["Body"].read()
    )
    assert {n: manifest["inputs"][n]["sha256"] for n in uploaded} == uploaded


def test_sigterm_stops_the_job_without_publishing(local_aws: LocalServe) -> None:
    """SIGTERM while a script runs exits 143 quickly and publishes nothing."""
    before = succeed_once(local_aws)
    upload_script(local_aws, "import time\nprint('working', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen(
        [str(DSJOB), "run"],
        env=local_aws.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the script is really running
        if "working" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert json.loads(out.strip().splitlines()[-1])["exit_code"] == 143
    assert outputs(local_aws) == before


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    """When AWS cannot be reached after retries the job exits 5, the one code worth retrying."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DSJOB_")},
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_MAX_ATTEMPTS": "2",
        "DSJOB_LOG_FORMAT": "json",
    }
    proc = subprocess.run(
        [str(DSJOB), "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 5, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == 5


def test_local_files_mode_needs_no_aws(tmp_path: Path) -> None:
    """`--input FILE --output-dir DIR` runs the same path with no AWS and writes a manifest."""
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1, Ann \n1, Ann \n,ghost\n2,Bob\n")
    out = tmp_path / "out"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DSJOB_")},
        # An endpoint that answers nothing: pure local mode must not call it.
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    proc = subprocess.run(
        [str(DSJOB), "run", "--input", str(data), "--output-dir", str(out), "--run-id", "loc"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (st["rows_in"], st["rows_out"]) == (4, 2)
    assert st["dropped"]["duplicate"] == 1
    assert len(list(out.glob("people_*.parquet"))) == 1
    manifest = json.loads((out / "manifests" / "loc.json").read_text())
    assert manifest["config"]["local_mode"] is True
