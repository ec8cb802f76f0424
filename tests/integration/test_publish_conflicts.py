"""409 ConditionalRequestConflict on real requests of a `dsjob run` subprocess.

S3 answers a conditional write (``If-None-Match``/``If-Match``) that met a concurrent
write to its key with 409 ``ConditionalRequestConflict``; the write did not take
effect, and S3 asks for it to be sent again, for a multipart upload from a new
CreateMultipartUpload (S3 API Reference, PutObject and CompleteMultipartUpload,
``IfNoneMatch``; User Guide, "conditional requests"). moto 5.2.5 never answers 409,
so ``s3faults.py`` answers it on the real request path (a botocore ``before-send``
hook), and each test checks in the fault log that it fired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from dsjob.s3store import CONTENDED_TRIES
from tests.integration.test_publish_failures import (
    all_keys,
    data_keys,
    fault_log,
    keys,
    last_status,
    read_json,
    run,
    s3,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"


def test_a_409_on_completing_an_output_uploads_it_again_under_the_same_name(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A contended CompleteMultipartUpload is redone from a new upload: same name, one object."""
    proc = run(
        local_aws,
        tmp_path,
        "--run-id",
        "contended",
        fault="conflict:CompleteMultipartUpload:processed/:1",
    )
    assert "409 CompleteMultipartUpload processed/ #1" in fault_log(tmp_path)
    assert proc.returncode == 0, proc.stderr
    [output] = data_keys(local_aws)
    assert "-2." not in output  # the name was free: a 409 is not a taken name
    manifest = read_json(local_aws, "processed/manifests/contended.json")
    assert [o["key"] for o in manifest["outputs"]] == [output]
    head = s3(local_aws).head_object(Bucket=OUT, Key=output, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == manifest["outputs"][0]["crc32"]
    # The first upload was aborted, not left open.
    assert s3(local_aws).list_multipart_uploads(Bucket=OUT).get("Uploads", []) == []


@pytest.mark.parametrize("target", ["processed/manifests/", "processed/current/"])
def test_a_409_on_the_manifest_or_pointer_is_written_again(
    local_aws: LocalServe, tmp_path: Path, target: str
) -> None:
    """One 409 on the manifest's create or the pointer's swap: written again, the run commits."""
    proc = run(local_aws, tmp_path, "--run-id", "again", fault=f"conflict:PutObject:{target}:1")
    assert f"409 PutObject {target} #1" in fault_log(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert last_status(proc.stdout)["status"] == "succeeded"
    manifest = read_json(local_aws, "processed/manifests/again.json")
    pointer = read_json(local_aws, "processed/current/members.json")
    assert pointer["run_id"] == "again"
    assert pointer["outputs"] == [o["key"] for o in manifest["outputs"]] == data_keys(local_aws)


def test_a_manifest_that_stays_contended_exits_5_and_publishes_nothing(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """409 on every manifest create: tried CONTENDED_TRIES times, exit 5, old output kept."""
    assert run(local_aws, tmp_path, "--run-id", "good").returncode == 0
    before = keys(local_aws)
    proc = run(
        local_aws, tmp_path, "--run-id", "stuck", fault="conflict:PutObject:manifests/stuck:1+"
    )
    assert fault_log(tmp_path).count("409 PutObject manifests/stuck") == CONTENDED_TRIES
    assert proc.returncode == 5, proc.stderr
    assert "409 ConditionalRequestConflict" in last_status(proc.stdout)["error"]
    assert keys(local_aws) == before  # no output, manifest or pointer change of "stuck"
    assert not [k for k in all_keys(local_aws) if "/_leases/" in k]  # its lease went too
    # The retry (S3 no longer contended) publishes the run once.
    retry = run(local_aws, tmp_path, "--run-id", "stuck")
    assert retry.returncode == 0, retry.stderr
    assert read_json(local_aws, "processed/current/members.json")["run_id"] == "stuck"
    assert len(read_json(local_aws, "processed/manifests/stuck.json")["outputs"]) == 1
