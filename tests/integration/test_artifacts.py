"""model-key and transform-key as users set them (SSM), through `dsjob run` against moto server."""

from __future__ import annotations

import hashlib
import json
import subprocess
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from tests.support.credentials import client
from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.emulator import LocalServe

pytestmark = pytest.mark.integration

PREFIX = "/ds/preprocessing"
ART = "dsjob-artifacts"
OUT = "dsjob-output"


def put_param(aws: LocalServe, name: str, value: str) -> None:
    client("ssm", aws.endpoint).put_parameter(
        Name=f"{PREFIX}/{name}", Value=value, Type="String", Overwrite=True
    )


def upload(aws: LocalServe, bucket: str, key: str, body: bytes) -> None:
    client("s3", aws.endpoint).put_object(Bucket=bucket, Key=key, Body=body)


def run_job(aws: LocalServe, run_id: str) -> dict[str, Any]:
    """`dsjob run --run-id RUN_ID` with the SSM parameters as set; its JSON status."""
    proc = subprocess.run(
        [str(DSJOB), "run", "--run-id", run_id],
        env=aws.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    status: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return status


def get(aws: LocalServe, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body: bytes = client("s3", aws.endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def manifest_of(aws: LocalServe, status: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(get(aws, status["manifest"]))
    return parsed


def test_script_reads_the_model_named_by_model_key(local_aws: LocalServe) -> None:
    """The object at model-key reaches script.py as ctx.model_path; the manifest has its SHA-256."""
    model = bytes(range(256)) * 40 + b"weights v3\n"  # binary, so a text round trip would show
    upload(local_aws, ART, "models/churn.bin", model)
    put_param(local_aws, "model-key", "models/churn.bin")
    script = (
        "import shutil, dsjob\n"
        "ctx = dsjob.context()\n"
        "shutil.copyfile(ctx.model_path, ctx.output_dir / 'seen.bin')\n"
        "(ctx.output_dir / 'name.txt').write_text(ctx.model_path.name)\n"
    )
    upload(local_aws, ART, "jobs/script.py", script.encode())
    put_param(local_aws, "script-key", "jobs/script.py")

    status = run_job(local_aws, "with-model")

    published = {u.rsplit("/", 1)[-1].split("_", 1)[0]: u for u in status["outputs"]}
    assert get(local_aws, published["seen"]) == model
    assert get(local_aws, published["name"]) == b"churn.bin"
    entry = manifest_of(local_aws, status)["inputs"]["model"]
    head = client("s3", local_aws.endpoint).head_object(Bucket=ART, Key="models/churn.bin")
    assert entry == {
        "source": f"s3://{ART}/models/churn.bin",
        "bytes": len(model),
        # HeadObject's ETag is quoted (S3 API Reference, HeadObject "ETag"); dsjob keeps it bare.
        "etag": head["ETag"].strip('"'),
        "sha256": hashlib.sha256(model).hexdigest(),
    }


def test_builtin_step_writes_what_the_transform_at_transform_key_selects(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """The SQL at transform-key picks the published rows; outputs and manifest carry its SHA-256."""
    people = [(1, "ann"), (2, "bob"), (3, "cid"), (4, "dee"), (5, "eve")]
    csv = "id,name\n" + "".join(f"{i},{name}\n" for i, name in people)
    upload(local_aws, "dsjob-input", "raw/people.csv", csv.encode())
    put_param(local_aws, "input-key", "raw/people.csv")
    sql = b"SELECT id, upper(name) AS shout FROM input WHERE id % 2 = 1\n"
    upload(local_aws, ART, "sql/odd.sql", sql)
    put_param(local_aws, "transform-key", "sql/odd.sql")

    status = run_job(local_aws, "with-transform")

    [uri] = status["outputs"]
    local = tmp_path / "out.parquet"
    local.write_bytes(get(local_aws, uri))
    with duckdb.connect() as con:
        cursor = con.execute("SELECT * FROM read_parquet(?) ORDER BY id", [str(local)])
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    assert columns == ["id", "shout"]
    assert rows == [(i, name.upper()) for i, name in people if i % 2 == 1]
    assert (status["rows_in"], status["rows_out"]) == (len(people), len(rows))
    digest = hashlib.sha256(sql).hexdigest()
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    head = client("s3", local_aws.endpoint).head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["transform-sha256"] == digest
    entry = manifest_of(local_aws, status)["inputs"]["transform"]
    assert (entry["source"], entry["sha256"]) == (f"s3://{ART}/sql/odd.sql", digest)
