"""The manifest on S3 is read back before the run counts as committed: real boto3, moto server.

A manifest whose bytes changed on the way is refused: S3 checks the CRC32 botocore
sends with the PUT and answers ``BadDigest`` (User Guide, "Checking object
integrity"); moto 5.2.5 stores the changed bytes, so there the read-back
comparison in ``commit.write_manifest`` catches it. Either way the run fails
retryably (exit 5), no manifest is left and its uploads are removed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from dsjob.errors import TransientError
from dsjob.s3store import S3Store
from tests.integration.test_publish_failures import publish_run

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"


def test_a_manifest_changed_on_the_way_is_removed_and_the_run_fails(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A manifest PUT whose body changes after its checksum fails the run and leaves nothing.

    Kills ``stored is None and stored.data != data`` (a differing manifest accepted as
    the commit) and ``store.delete(None)`` (the bad manifest kept).
    """
    # botocore's default (when_supported) checks a GET's checksum and would refuse moto's
    # bent bytes at the read; this client checks only when required, so the bytes reach
    # dsjob's own read-back comparison (the check for a store that keeps no checksum).
    quiet = Config(response_checksum_validation="when_required")
    s3 = boto3.client("s3", endpoint_url=local_aws.endpoint, region_name="us-east-1", config=quiet)
    bent: list[str] = []

    def bend_manifest(request: Any, **_: Any) -> None:
        if "/manifests/" in request.url:
            raw = request.body
            body = bytearray(raw if isinstance(raw, bytes) else raw.read())
            body[body.index(b'"run_id"')] = ord("'")  # still sent with the old CRC32
            request.body = bytes(body)
            bent.append(request.url)

    s3.meta.events.register("before-send.s3.PutObject", bend_manifest)
    out = tmp_path / "output"
    out.mkdir()
    (out / "members.csv").write_text("id\n1\n")
    with pytest.raises(TransientError, match=r"manifests/bent\.json"):
        publish_run(S3Store(s3, OUT), out, "20270101_000000", "bent")
    assert bent
    left = s3.list_objects_v2(Bucket=OUT, Prefix="processed/").get("Contents", [])
    assert [o["Key"] for o in left] == []  # no manifest, no output, no lease


def test_the_prune_clears_its_pending_keys_only_on_the_pointer_it_wrote(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A pointer another run moved during the prune keeps that run's pending deletes.

    The commit lists the keys it prunes in the pointer (``pending_delete``), deletes
    them, then drops them from the list with a compare-and-swap on the pointer *it*
    wrote (``If-Match``, S3 API Reference, PutObject). Here another run rewrites the
    pointer right after the DeleteObjects, pending the same name for its own object
    (a pruned name is free to be taken again): the swap must fail (412) and leave that
    entry, not re-read the pointer and drop it. Kills ``clear_pending(..., None)``.
    """
    s3 = boto3.client("s3", endpoint_url=local_aws.endpoint, region_name="us-east-1")
    other = boto3.client("s3", endpoint_url=local_aws.endpoint, region_name="us-east-1")
    pointer_key = "processed/current/members.json"

    def run(run_id: str, stamp: str) -> tuple[str, ...]:
        out = tmp_path / run_id
        out.mkdir()
        (out / "members.csv").write_text(f"id\n{run_id}\n")
        return publish_run(S3Store(s3, OUT), out, stamp, run_id).pruned

    run("first", "20270101_000000")
    first_key = "processed/members_20270101_000000.csv"
    theirs = {"key": first_key, "run_id": "third"}

    def another_run_moves_the_pointer(**_: Any) -> None:
        pointer = json.loads(other.get_object(Bucket=OUT, Key=pointer_key)["Body"].read())
        pointer["pending_delete"] = [*pointer.get("pending_delete", []), theirs]
        other.put_object(Bucket=OUT, Key=pointer_key, Body=json.dumps(pointer).encode())

    s3.meta.events.register("after-call.s3.DeleteObjects", another_run_moves_the_pointer)
    assert run("second", "20270201_000000") == (first_key,)
    pointer = json.loads(s3.get_object(Bucket=OUT, Key=pointer_key)["Body"].read())
    assert theirs in pointer["pending_delete"]
