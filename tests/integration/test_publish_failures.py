"""Publishing to S3 under faults: real boto3 against a moto server, faults on the request path.

In-process tests drive the store with a small part size so multipart uploads stay
fast. Subprocess tests run the real CLI; faults reach it through botocore's client
plugins (``s3faults.py``), so dsjob itself is never patched.

Where moto 5.2.5 differs from S3, the test says which S3 behaviour the code follows:
moto does not check a checksum a client sends (S3 answers ``BadDigest``), so a body
changed in flight is caught by comparing the checksum moto computed over the stored
parts with dsjob's own (on S3 the upload itself fails, with the same result).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from dsjob.errors import TransientError
from dsjob.publish import PublishResult, publish, upload_verified
from dsjob.s3store import S3Store
from dsjob.storage import MiB, crc32_b64
from tests.conftest import DSJOB, REPO, LocalServe
from tests.integration import s3faults

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

OUT = "dsjob-output"
PREFIX = "/ds/preprocessing"
PLUGIN = "s3faults=tests.integration.s3faults"


def s3(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def all_keys(aws: LocalServe) -> list[str]:
    pages = s3(aws).get_paginator("list_objects_v2").paginate(Bucket=OUT)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def keys(aws: LocalServe) -> list[str]:
    """Outputs, manifests and pointers: not the runner's status objects, not the leases."""
    return [k for k in all_keys(aws) if "/status/" not in k and "/_leases/" not in k]


def leases(aws: LocalServe) -> list[str]:
    return [k for k in all_keys(aws) if k.startswith("processed/_leases/")]


def data_keys(aws: LocalServe, ext: str = ".parquet") -> list[str]:
    return [k for k in keys(aws) if k.endswith(ext) and "/manifests/" not in k]


def put_param(aws: LocalServe, name: str, value: str) -> None:
    boto3.client("ssm", endpoint_url=aws.endpoint, region_name="us-east-1").put_parameter(
        Name=f"{PREFIX}/{name}", Value=value, Type="String", Overwrite=True
    )


def read_json(aws: LocalServe, key: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(s3(aws).get_object(Bucket=OUT, Key=key)["Body"].read())
    return parsed


def job_env(aws: LocalServe, tmp_path: Path, fault: str = "", **extra: str) -> dict[str, str]:
    env = aws.env(**extra)
    if fault:
        env.update(
            BOTOCORE_EXPERIMENTAL__PLUGINS=PLUGIN,
            S3FAULT=fault,
            S3FAULT_LOG=str(tmp_path / "fault.log"),
            S3FAULT_RELEASE=str(tmp_path / "release"),
            PYTHONPATH=str(REPO),
        )
    return env


def run(
    aws: LocalServe, tmp_path: Path, *args: str, fault: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DSJOB), "run", *args],
        env=job_env(aws, tmp_path, fault, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fault_log(tmp_path: Path) -> str:
    path = tmp_path / "fault.log"
    return path.read_text() if path.exists() else ""


def last_status(stdout: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return parsed


# ---- verification against the checksum S3 computed ---------------------------------


def test_large_output_is_multipart_and_verified_against_the_stored_crc32(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A 12 MiB output goes up in 3 parts; S3's FULL_OBJECT CRC32 is checked, the SHA-256 kept."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(12 * MiB))
    store = S3Store(s3(local_aws), OUT, part_size=5 * MiB)
    published = upload_verified(store, path, "processed/big.bin", {"run-id": "r"})
    head = s3(local_aws).head_object(Bucket=OUT, Key="processed/big.bin", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert head["ChecksumCRC32"] == crc32_b64(zlib.crc32(path.read_bytes()))
    assert published.crc32 == head["ChecksumCRC32"]
    assert head["Metadata"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_composite_checksum_is_recomputed_from_the_parts(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A store that keeps a COMPOSITE CRC32 (`<b64>-N`) is verified by rebuilding it from parts."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    client = s3(local_aws)
    client.meta.events.register("before-send.s3.CreateMultipartUpload", s3faults._composite)
    published = upload_verified(S3Store(client, OUT, part_size=5 * MiB), path, "p/c.bin", {})
    # GET spells the composite as S3's HEAD does ("<b64>-3"); moto's HEAD drops the "-3".
    got = client.get_object(Bucket=OUT, Key="p/c.bin", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"].endswith("-3")
    assert got["ChecksumCRC32"] != crc32_b64(zlib.crc32(path.read_bytes()))  # not full-object
    assert published.size == 11 * MiB


def test_a_body_changed_in_flight_fails_the_run_and_publishes_nothing(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """An upload whose stored bytes differ from what dsjob hashed exits 5 and leaves no trace."""
    proc = run(local_aws, tmp_path, "--run-id", "bent", fault="corrupt-part")
    assert "corrupted an UploadPart body" in fault_log(tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "checksum mismatch" in proc.stderr
    assert keys(local_aws) == []
    assert s3(local_aws).list_multipart_uploads(Bucket=OUT).get("Uploads", []) == []


def test_second_upload_failing_with_both_formats_publishes_nothing(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """With output-format both, a failed second upload removes the first and keeps old outputs."""
    assert run(local_aws, tmp_path, "--run-id", "good").returncode == 0
    before = keys(local_aws)
    put_param(local_aws, "output-format", "both")
    proc = run(
        local_aws, tmp_path, "--run-id", "half",
        fault="fail:CompleteMultipartUpload:2", AWS_MAX_ATTEMPTS="1",
    )  # fmt: skip
    assert "failed CompleteMultipartUpload #2" in fault_log(tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert keys(local_aws) == before


def publish_run(store: S3Store, out: Path, stamp: str, run_id: str) -> PublishResult:
    """publish() of `out` (one members.csv of one row) as dataset members, keeping no old output."""
    return publish(
        store,
        out,
        prefix="processed/",
        stamp=stamp,
        run_id=run_id,
        dataset="members",
        metadata={},
        records={"members.csv": 1},
        keep_outputs=0,
        manifest={"run_id": run_id},
    )


def _publish_one(client: S3Client, tmp_path: Path, stamp: str) -> None:
    out = tmp_path / "output"
    out.mkdir(exist_ok=True)
    (out / "members.csv").write_text("id\n1\n")
    publish_run(S3Store(client, OUT), out, stamp, "second")


def test_a_failed_create_on_a_name_another_run_holds_leaves_that_object(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Two runs of one second share a stamp: a Complete failing on the taken name deletes nothing.

    The failed CompleteMultipartUpload never reached the store (botocore's before-send
    answered 500 for it), so the object under the name is the other run's. The
    rollback asks the store whose object it is (``attempt`` metadata) before deleting.
    """
    client = s3(local_aws)
    taken = "processed/members_20260115_090000.csv"
    client.put_object(Bucket=OUT, Key=taken, Body=b"id\n7\n", Metadata={"run-id": "first"})
    fail_every = s3faults._fail("CompleteMultipartUpload", 1)  # a 500 for each Complete
    client.meta.events.register("before-send.s3.CompleteMultipartUpload", fail_every)
    with pytest.raises(TransientError):
        _publish_one(client, tmp_path, "20260115_090000")
    kept = client.get_object(Bucket=OUT, Key=taken)
    assert kept["Body"].read() == b"id\n7\n"
    assert kept["Metadata"] == {"run-id": "first"}
    assert keys(local_aws) == [taken]
    assert leases(local_aws) == []  # nothing of this attempt is left, so its lease went too


def test_a_failed_create_whose_owner_cannot_be_asked_leaves_that_object(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A failed create on a taken name whose HEAD fails too counts as not ours: nothing deleted.

    Whose object the name holds cannot be told, so it is left for the next successful
    run's orphan removal rather than deleted blind (it is the other run's here).
    """
    client = s3(local_aws)
    taken = "processed/members_20260115_090000.csv"
    client.put_object(Bucket=OUT, Key=taken, Body=b"id\n7\n", Metadata={"run-id": "first"})
    client.meta.events.register(
        "before-send.s3.CompleteMultipartUpload", s3faults._fail("CompleteMultipartUpload", 1)
    )
    fail_head = s3faults._fail("HeadObject", 1)

    def fail_heads_of_taken(request: Any, **kwargs: Any) -> Any:
        return fail_head(request, **kwargs) if request.url.endswith(taken) else None

    client.meta.events.register("before-send.s3.HeadObject", fail_heads_of_taken)
    with pytest.raises(TransientError):
        _publish_one(client, tmp_path, "20260115_090000")
    assert s3(local_aws).get_object(Bucket=OUT, Key=taken)["Body"].read() == b"id\n7\n"
    assert keys(local_aws) == [taken]


def test_a_create_whose_answer_is_lost_is_still_rolled_back(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """S3 stored the object but its answer did not arrive: the object is this attempt's, removed."""
    client = s3(local_aws)

    def lose_answer(**_: Any) -> None:  # after S3 completed the upload
        raise ConnectionResetError("injected: the CompleteMultipartUpload answer was lost")

    client.meta.events.register("after-call.s3.CompleteMultipartUpload", lose_answer)
    with pytest.raises(TransientError, match="answer was lost"):
        _publish_one(client, tmp_path, "20260115_090000")
    assert keys(local_aws) == []
    assert leases(local_aws) == []


def _after_manifest_call(handler: Any) -> tuple[Any, Any]:
    """`before-call` and `after-call` handlers running `handler` after a call on a manifest key."""

    def note(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["manifest"] = "/manifests/" in params["url_path"]

    def only(context: dict[str, Any], **kwargs: Any) -> Any:
        return handler(context=context, **kwargs) if context.get("manifest") else None

    return note, only


def test_a_manifest_stored_whose_answer_is_lost_commits_the_run_and_keeps_its_outputs(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """S3 stored the manifest but its answer did not arrive: the run is committed, nothing deleted.

    The create is conditional (If-None-Match, S3 API Reference, PutObject), so a lost
    answer is indistinguishable from a refusal until the manifest is read back. It lists
    this attempt's outputs (keys and ETags), so they are the commit's: rolling them back
    would leave a manifest that promises deleted objects, which a retry then reports.
    """
    client = s3(local_aws)

    def lose_answer(**_: Any) -> None:
        raise ConnectionResetError("injected: the manifest's PutObject answer was lost")

    note, only = _after_manifest_call(lose_answer)
    client.meta.events.register("before-call.s3.PutObject", note)
    client.meta.events.register("after-call.s3.PutObject", only)
    out = _tick_output(tmp_path, "out", "1")
    result = publish_run(S3Store(client, OUT), out, "20260115_090000", "lost")
    assert not result.already_published
    manifest = read_json(local_aws, "processed/manifests/lost.json")
    listed = sorted(o["key"] for o in manifest["outputs"])
    assert listed == sorted(o.key for o in result.objects) == data_keys(local_aws, ".csv")
    assert read_json(local_aws, "processed/current/members.json")["run_id"] == "lost"
    assert leases(local_aws) == []


def test_a_manifest_that_cannot_be_read_back_keeps_everything_and_the_retry_reports_it(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Every read of the new manifest fails: exit 5 with outputs and manifest kept; a retry commits.

    Whether the run committed cannot be told, so nothing is deleted (before, the outputs
    were rolled back under a stored manifest that listed them). The retry of the run id
    meets the manifest (412 on its create), finds it lists the first attempt's outputs,
    removes its own uploads and reports that commit, whose objects all exist.
    """
    client = boto3.client(
        "s3",
        endpoint_url=local_aws.endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    fail = s3faults._fail("GetObject", 1)  # a 500 for each call it is given

    def fail_manifest_reads(request: Any, **kwargs: Any) -> Any:
        return fail(request, **kwargs) if "/manifests/" in request.url else None

    client.meta.events.register("before-send.s3.GetObject", fail_manifest_reads)
    out = _tick_output(tmp_path, "out", "1")
    said = "^s3://dsjob-output/processed/manifests/unread.json: could not tell whether run unread"
    with pytest.raises(TransientError, match=said):
        publish_run(S3Store(client, OUT), out, "20260115_090000", "unread")
    manifest = read_json(local_aws, "processed/manifests/unread.json")
    first = sorted(o["key"] for o in manifest["outputs"])
    assert first == data_keys(local_aws, ".csv")
    # The lease stays: a create whose answer was lost may still land, and until it
    # does another run's orphan sweep must not take the outputs it would list.
    assert len(leases(local_aws)) == 1
    retry = publish_run(S3Store(s3(local_aws), OUT), out, "20260115_090000", "unread")
    assert retry.already_published
    assert sorted(o.key for o in retry.objects) == first == data_keys(local_aws, ".csv")
    assert read_json(local_aws, "processed/current/members.json")["run_id"] == "unread"


def test_an_upload_failing_while_manifests_cannot_be_read_still_rolls_back(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A transient upload failure with the manifest unreadable removes this attempt's uploads.

    No manifest create was sent, so no manifest can list this attempt's outputs: the
    failed read of the manifest (asked for a twin's commit) does not make the outcome
    unknown, and the first output and the lease go as after any failed upload.
    """
    client = boto3.client(
        "s3",
        endpoint_url=local_aws.endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    fail_put = s3faults._fail("CompleteMultipartUpload", 1)
    fail_get = s3faults._fail("GetObject", 1)

    def fail_second_output(request: Any, **kwargs: Any) -> Any:  # a 500 before it is sent
        return fail_put(request, **kwargs) if "/b_" in request.url else None

    def fail_manifest_reads(request: Any, **kwargs: Any) -> Any:
        return fail_get(request, **kwargs) if "/manifests/" in request.url else None

    client.meta.events.register("before-send.s3.CompleteMultipartUpload", fail_second_output)
    client.meta.events.register("before-send.s3.GetObject", fail_manifest_reads)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("id\n1\n")
    (out / "b.csv").write_text("id\n2\n")
    with pytest.raises(TransientError) as failed:
        publish_run(S3Store(client, OUT), out, "20260115_090000", "upload")
    assert "could not tell" not in str(failed.value)
    assert keys(local_aws) == []  # a_….csv was stored, then rolled back
    assert leases(local_aws) == []


def _tick_output(tmp_path: Path, name: str, rows: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "members.csv").write_text(f"id\n{rows}\n")
    return out


def test_a_twin_that_committed_first_is_reported_when_this_manifest_write_fails(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A twin of one run id commits mid-upload, then this manifest write fails: report the twin.

    Two deliveries of one schedule tick (EventBridge Scheduler delivers at least once)
    share the run id. Here the twin commits while this attempt uploads, and this
    attempt's own manifest write then meets 409 ConditionalRequestConflict until the
    store gives up (exit 5 material). Before failing, publish looks for the run's
    manifest: the twin's is there, so this attempt removes its upload and reports
    that commit instead of failing a run that is published.
    """
    client, other = s3(local_aws), s3(local_aws)
    seen: list[list[str]] = []
    twin: list[PublishResult] = []

    def twin_commits(**_: Any) -> None:  # on this attempt's first part, before it is sent
        if seen:
            return
        seen.append(leases(local_aws))
        twin.append(publish_run(S3Store(other, OUT), _tick_output(tmp_path, "b", "2"), "b", "tick"))
        conflict = s3faults._conflict("PutObject", "manifests", "1+")
        client.meta.events.register("before-send.s3.PutObject", conflict)

    client.meta.events.register("before-send.s3.UploadPart", twin_commits)
    result = publish_run(S3Store(client, OUT), _tick_output(tmp_path, "a", "1"), "a", "tick")
    [held] = seen[0]  # this attempt's lease, where the twin and the orphan check look
    assert held.startswith("processed/_leases/members/tick.")
    assert result.already_published
    assert [o.key for o in result.objects] == [o.key for o in twin[0].objects]
    assert (
        result.manifest_uri == twin[0].manifest_uri == f"s3://{OUT}/processed/manifests/tick.json"
    )
    outputs = data_keys(local_aws, ".csv")
    assert outputs == ["processed/members_b.csv"]  # the twin's only; this one's was removed
    assert client.get_object(Bucket=OUT, Key=outputs[0])["Body"].read() == b"id\n2\n"
    assert leases(local_aws) == []


def test_a_twin_that_committed_first_is_reported_when_this_upload_fails(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A twin of one run id commits mid-upload, then this attempt's upload fails: report the twin.

    The failure comes before this attempt's manifest create was sent, so nothing of it
    can be committed; the manifest found is the twin's (none of its keys is this
    attempt's), and this attempt reports that commit instead of failing.
    """
    client = boto3.client(
        "s3",
        endpoint_url=local_aws.endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    other = s3(local_aws)
    twin: list[PublishResult] = []

    def twin_commits(**_: Any) -> None:  # on this attempt's first part, before it is sent
        if twin:
            return
        twin.append(publish_run(S3Store(other, OUT), _tick_output(tmp_path, "b", "2"), "b", "tick"))
        fail = s3faults._fail("CompleteMultipartUpload", 1)  # a 500 for each Complete
        client.meta.events.register("before-send.s3.CompleteMultipartUpload", fail)

    client.meta.events.register("before-send.s3.UploadPart", twin_commits)
    result = publish_run(S3Store(client, OUT), _tick_output(tmp_path, "a", "1"), "a", "tick")
    assert result.already_published
    assert [o.key for o in result.objects] == [o.key for o in twin[0].objects]
    assert data_keys(local_aws, ".csv") == ["processed/members_b.csv"]
    assert leases(local_aws) == []


def test_a_many_part_output_asks_before_it_uploads_and_a_one_part_output_just_tries(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A 2-part output skips a taken name after one HEAD; a 1-part one sends no name HEAD.

    The store keeps a COMPOSITE checksum here (as S3 does for a multipart upload that
    did not ask for FULL_OBJECT), so the verification rebuilds it from part CRC32s
    computed at the store's own part size: a digest of other part sizes fails it.
    """
    client = s3(local_aws)
    stamp = "20270115_090000"
    client.put_object(Bucket=OUT, Key=f"processed/big_{stamp}.bin", Body=b"another run's")
    client.meta.events.register("before-send.s3.CreateMultipartUpload", s3faults._composite)
    sent: list[tuple[str, str]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        sent.append((event_name.rsplit(".", 1)[-1], request.url.rsplit("/", 1)[-1]))

    client.meta.events.register("before-send.s3.HeadObject", record)
    client.meta.events.register("before-send.s3.UploadPart", record)
    out = tmp_path / "output"
    out.mkdir()
    (out / "big.bin").write_bytes(os.urandom(6 * MiB))  # two 5 MiB parts
    (out / "small.csv").write_text("id\n1\n")
    result = publish(
        S3Store(client, OUT, part_size=5 * MiB),
        out,
        prefix="processed/",
        stamp=stamp,
        run_id="named",
        dataset="members",
        metadata={},
        records={"small.csv": 1},
        keep_outputs=0,
        manifest={"run_id": "named"},
    )
    assert [o.key for o in result.objects] == [
        f"processed/big_{stamp}-2.bin",
        f"processed/small_{stamp}.csv",
    ]
    parts = [url for op, url in sent if op == "UploadPart"]
    assert len(parts) == 3  # 2 for big (once, under the free name) + 1 for small
    small_heads = [url for op, url in sent if op == "HeadObject" and url.startswith("small_")]
    assert len(small_heads) == 1  # the verification's, none before the upload


def test_failed_manifest_write_rolls_back_and_keeps_old_outputs(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """If the manifest cannot be written, this run's uploads are removed and old outputs stay."""
    assert run(local_aws, tmp_path, "--run-id", "good").returncode == 0
    before = keys(local_aws)
    proc = run(  # PutObject #1 creates the run's lease, #2 the manifest
        local_aws, tmp_path, "--run-id", "broken", fault="fail:PutObject:2", AWS_MAX_ATTEMPTS="1"
    )
    assert "failed PutObject #2" in fault_log(tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "processed/manifests/broken.json" in proc.stderr
    assert keys(local_aws) == before


def test_a_failed_pointer_write_after_the_manifest_keeps_the_committed_outputs(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Once the manifest exists nothing is rolled back: exit 5, and the retry moves the pointer."""
    proc = run(  # PutObject #1 creates the lease, #2 the manifest, #3 the current pointer
        local_aws, tmp_path, "--run-id", "late", fault="fail:PutObject:3", AWS_MAX_ATTEMPTS="1"
    )
    assert "failed PutObject #3" in fault_log(tmp_path)
    assert proc.returncode == 5, proc.stderr
    manifest = read_json(local_aws, "processed/manifests/late.json")
    committed = sorted(o["key"] for o in manifest["outputs"])
    assert committed == data_keys(local_aws)  # still there: the manifest names them
    assert "processed/current/members.json" not in keys(local_aws)
    retry = run(local_aws, tmp_path, "--run-id", "late")
    assert retry.returncode == 0, retry.stderr
    assert last_status(retry.stdout)["status"] == "already-published"
    assert read_json(local_aws, "processed/current/members.json")["outputs"] == committed


def test_failed_prune_keeps_everything_and_the_retry_finishes_it(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A failed prune exits 5 with the run committed; the same run id's retry prunes, exit 0."""
    assert run(local_aws, tmp_path, "--run-id", "first").returncode == 0
    old = data_keys(local_aws)
    proc = run(
        local_aws, tmp_path, "--run-id", "second",
        fault="fail:DeleteObjects:1", AWS_MAX_ATTEMPTS="1",
    )  # fmt: skip
    assert "failed DeleteObjects #1" in fault_log(tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "processed/manifests/second.json" in keys(local_aws)
    assert len(data_keys(local_aws)) == 2
    retry = run(local_aws, tmp_path, "--run-id", "second")
    assert retry.returncode == 0, retry.stderr
    assert last_status(retry.stdout)["status"] == "already-published"
    remaining = data_keys(local_aws)
    assert len(remaining) == 1
    assert remaining[0] not in old


# ---- signals and kills during an upload ------------------------------------------------


def _held(
    aws: LocalServe, tmp_path: Path, *args: str, stored: int = 1, **extra: str
) -> subprocess.Popen[str]:
    """Start a run that blocks on its next UploadPart once `stored` outputs are stored."""
    proc = subprocess.Popen(
        [str(DSJOB), "run", *args],
        env=job_env(aws, tmp_path, f"hold-after-stored:{stored}", **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # s3faults writes a line to stderr when it holds the part
        if f"s3faults: holding an UploadPart after {stored} stored" in line:
            break
    assert f"holding an UploadPart after {stored} stored" in fault_log(tmp_path), "never held"
    return proc


def test_sigterm_during_an_upload_rolls_back(local_aws: LocalServe, tmp_path: Path) -> None:
    """SIGTERM while an output is uploading exits 143, removes this run's uploads, keeps old."""
    assert run(local_aws, tmp_path, "--run-id", "good").returncode == 0
    before = keys(local_aws)
    put_param(local_aws, "output-format", "both")
    proc = _held(local_aws, tmp_path, "--run-id", "stopped", stored=1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert last_status(out)["exit_code"] == 143
    assert keys(local_aws) == before  # the first output (already complete) was removed
    assert s3(local_aws).list_multipart_uploads(Bucket=OUT).get("Uploads", []) == []


def _killed_mid_upload(aws: LocalServe, tmp_path: Path, run_id: str, **extra: str) -> str:
    """Kill -9 a run with both formats after its first output is stored; return the orphan."""
    put_param(aws, "output-format", "both")
    before = set(keys(aws))
    proc = _held(aws, tmp_path, "--run-id", run_id, stored=1, **extra)
    proc.kill()
    proc.communicate(timeout=30)
    (tmp_path / "fault.log").unlink()
    left = sorted(set(keys(aws)) - before)
    assert len(left) == 1, left  # the completed first output, no manifest
    assert f"processed/manifests/{run_id}.json" not in left
    assert [k.rsplit("/", 1)[-1].split(".")[0] for k in leases(aws)] == [run_id]  # left behind
    return left[0]


def test_kill_9_then_same_run_id_completes_without_duplicates(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """After kill -9 mid-upload, the same run id publishes once and removes the orphan."""
    orphan = _killed_mid_upload(local_aws, tmp_path, "exec-7")
    proc = run(local_aws, tmp_path, "--run-id", "exec-7")
    assert proc.returncode == 0, proc.stderr
    manifest = read_json(local_aws, "processed/manifests/exec-7.json")
    assert manifest["orphans_removed"] == [orphan]
    assert orphan not in keys(local_aws)
    assert len(data_keys(local_aws, ".parquet")) == 1
    assert len(data_keys(local_aws, ".csv")) == 1
    assert sorted(o["key"] for o in manifest["outputs"]) == sorted(
        data_keys(local_aws, ".csv") + data_keys(local_aws, ".parquet")
    )


LEASE = {"DSJOB_LEASE_SECONDS": "3"}  # heartbeats every 0.75 s; stale 3 s (+1 s) after the last


def test_kill_9_then_a_new_run_id_removes_the_orphan_and_keeps_the_previous_output(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A killed run's lease goes stale: the next run (another id) removes its orphan, lists it."""
    assert run(local_aws, tmp_path, "--run-id", "good", "--output-format", "both").returncode == 0
    good = read_json(local_aws, "processed/manifests/good.json")["outputs"]
    put_param(local_aws, "keep-outputs", "1")
    orphan = _killed_mid_upload(local_aws, tmp_path, "killed", **LEASE)
    time.sleep(4.5)  # no heartbeat since the kill: the lease is now older than 3 s + 1 s
    proc = run(local_aws, tmp_path, "--run-id", "fresh", **LEASE)
    assert proc.returncode == 0, proc.stderr
    assert read_json(local_aws, "processed/manifests/fresh.json")["orphans_removed"] == [orphan]
    remaining = set(keys(local_aws))
    assert orphan not in remaining
    assert {o["key"] for o in good} <= remaining  # the previous committed output is intact
    assert leases(local_aws) == []  # the dead run's lease went with its orphan
    pointer = read_json(local_aws, "processed/current/members.json")
    assert [h["run_id"] for h in pointer["history"]] == ["fresh", "good"]


def test_a_live_run_mid_upload_keeps_its_objects_and_commits(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A run held mid-upload keeps its lease fresh: another run's commit leaves its object alone."""
    put_param(local_aws, "output-format", "both")
    held = _held(local_aws, tmp_path, "--run-id", "slow", stored=1, **LEASE)
    first = keys(local_aws)
    assert len(first) == 1  # its first output, stored, not committed
    time.sleep(4.5)  # longer than the lease time: only the heartbeat keeps it fresh
    other = run(local_aws, tmp_path, "--run-id", "quick", **LEASE)
    assert other.returncode == 0, other.stderr
    assert read_json(local_aws, "processed/manifests/quick.json")["orphans_removed"] == []
    assert first[0] in keys(local_aws)
    (tmp_path / "release").touch()
    out, err = held.communicate(timeout=60)
    assert held.returncode == 0, err
    manifest = read_json(local_aws, "processed/manifests/slow.json")
    assert first[0] in [o["key"] for o in manifest["outputs"]]
    assert leases(local_aws) == []  # both runs deleted their own
    assert last_status(out)["status"] == "succeeded"


def test_a_run_paused_past_its_lease_loses_it_and_does_not_commit(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """SIGSTOP past the lease time: another run claims it and removes the upload; no commit."""
    put_param(local_aws, "output-format", "both")
    held = _held(local_aws, tmp_path, "--run-id", "paused", stored=1, **LEASE)
    first = keys(local_aws)
    held.send_signal(signal.SIGSTOP)  # its heartbeat thread stops with it
    try:
        time.sleep(4.5)
        other = run(local_aws, tmp_path, "--run-id", "claimer", **LEASE)
    finally:
        held.send_signal(signal.SIGCONT)
    assert other.returncode == 0, other.stderr
    assert read_json(local_aws, "processed/manifests/claimer.json")["orphans_removed"] == first
    (tmp_path / "release").touch()
    _, err = held.communicate(timeout=60)
    assert held.returncode == 5, err
    assert "cannot commit" in err
    assert "processed/manifests/paused.json" not in keys(local_aws)
    pointer = read_json(local_aws, "processed/current/members.json")
    outputs = [k for k in keys(local_aws) if "/manifests/" not in k and "/current/" not in k]
    assert (
        sorted(pointer["outputs"])
        == outputs
        == sorted(
            o["key"] for o in read_json(local_aws, "processed/manifests/claimer.json")["outputs"]
        )
    )


# ---- concurrency ------------------------------------------------------------------------


def test_three_concurrent_runs_leave_exactly_one_current_output(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Three runs at once on one dataset with keep-outputs 0 all exit 0; one output remains."""
    procs = [
        subprocess.Popen(
            [str(DSJOB), "run", "--run-id", f"c{i}"],
            env=job_env(local_aws, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    remaining = data_keys(local_aws)
    assert len(remaining) == 1
    manifests = [read_json(local_aws, f"processed/manifests/c{i}.json") for i in range(3)]
    newest = max(manifests, key=lambda m: m["committed_at"])
    assert [o["key"] for o in newest["outputs"]] == remaining
    pointer = read_json(local_aws, "processed/current/members.json")
    assert (pointer["run_id"], pointer["outputs"]) == (newest["run_id"], remaining)


# ---- one run per schedule tick; a manifest that cannot be read --------------------------


def test_second_delivery_of_a_schedule_tick_publishes_nothing(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Two deliveries of one tick share the run id from scheduled-time; the second exits 0."""
    tick = {"DSJOB_SCHEDULED_TIME": "2027-01-01T00:00:00Z"}
    first = run(local_aws, tmp_path, **tick)
    assert first.returncode == 0, first.stderr
    assert last_status(first.stdout)["run_id"] == "monthly-2027-01"
    before = keys(local_aws)
    second = run(local_aws, tmp_path, **tick)
    assert second.returncode == 0, second.stderr
    assert last_status(second.stdout)["status"] == "already-published"
    assert keys(local_aws) == before


def test_two_deliveries_of_one_tick_at_once_publish_once(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Two concurrent deliveries of one tick both exit 0 and leave one run's outputs."""
    env = job_env(local_aws, tmp_path, DSJOB_SCHEDULED_TIME="2027-03-01T00:00:00Z")
    procs = [
        subprocess.Popen(
            [str(DSJOB), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    statuses = sorted(last_status(out)["status"] for out, _ in results)
    assert statuses == ["already-published", "succeeded"]
    manifest = read_json(local_aws, "processed/manifests/monthly-2027-03.json")
    assert [o["key"] for o in manifest["outputs"]] == data_keys(local_aws)


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "is not valid JSON"), (b'{"format": 99}', "has format 99")],
)
def test_an_unreadable_manifest_on_a_rerun_exits_3(
    local_aws: LocalServe, tmp_path: Path, body: bytes, message: str
) -> None:
    """A corrupt or newer-format manifest for the run id exits 3 naming it, no traceback."""
    s3(local_aws).put_object(Bucket=OUT, Key="processed/manifests/again.json", Body=body)
    proc = run(local_aws, tmp_path, "--run-id", "again")
    assert proc.returncode == 3, proc.stderr
    assert "s3://dsjob-output/processed/manifests/again.json" in proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert keys(local_aws) == ["processed/manifests/again.json"]
