"""A run's lease on S3: real boto3 against a moto server, in-process so mutmut sees it.

The lease is kept fresh by conditional rewrites (``If-Match`` on the ETag the run
last wrote; S3 User Guide, "Add preconditions to S3 operations with conditional
requests"): a rewrite meeting another run's claim answers 412 PreconditionFailed.
A claim is itself an ``If-Match`` write on the ETag the claimer read, so a run that
rewrote its lease in between keeps it, which holds only because every rewrite has
new bytes and so a new ETag (an S3 ETag reflects changes to the object's contents:
API Reference, Object, ``ETag``). moto 5.2.5 answers both conditions as S3 does.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from dsjob import lease, orphans
from dsjob.s3store import S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"


def client(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def body(s3: S3Client, key: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(s3.get_object(Bucket=OUT, Key=key)["Body"].read())
    return loaded


def test_the_heartbeat_rewrites_the_lease_while_the_run_lives(local_aws: LocalServe) -> None:
    """A 0.4 s lease is rewritten every 0.1 s (If-Match), stays held, and goes at stop.

    Kills a heartbeat that never runs (no target, ``wait(None)``), one that waits four
    lease times, rewrites sent with If-None-Match (``_write(None)``, or the first ETag
    forgotten): S3 answers those 412 and the run would lose its own lease.
    """
    s3 = client(local_aws)
    sent: list[tuple[str | None, str | None]] = []  # (If-None-Match, If-Match) of each PUT

    def record(request: Any, **_: Any) -> None:
        none, match = (request.headers.get(h) for h in ("If-None-Match", "If-Match"))
        sent.append((none and none.decode(), match and match.decode()))  # botocore sends bytes

    s3.meta.events.register("before-send.s3.PutObject", record)
    held = lease.Lease(S3Store(s3, OUT), "p/", "members", "r1", ttl_s=0.4)
    held.start()
    assert sent == [("*", None)]  # created before start() returns, so before any upload
    try:
        time.sleep(1.2)
        assert all(none is None and match for none, match in sent[1:])
        now = body(s3, held.key)
        assert now["state"] == "live"
        assert now["seq"] >= 4  # the create and at least 3 beats
        head = s3.head_object(Bucket=OUT, Key=held.key)
        assert head["ContentType"] == "application/json"
        held.confirm()  # still held
    finally:
        held.stop(release=True)
    assert s3.list_objects_v2(Bucket=OUT, Prefix="p/_leases/").get("KeyCount") == 0


@pytest.mark.parametrize("rewrite_before", ["", "GetObject", "PutObject"])
def test_a_claim_takes_a_stale_lease_unless_its_run_rewrites_it_first(
    local_aws: LocalServe, rewrite_before: str
) -> None:
    """A stale lease is claimed and its run's output is an orphan, unless the run rewrites it.

    The run rewrites its lease in the claimer's before-send of the claim's read
    (GetObject: the claimer then sees a fresh lease and leaves it) or of the claim
    itself (PutObject: its If-Match on the ETag read meets 412). Kills a claim that
    skips the freshness check on the read or treats a fresh read as dead, a 412 taken
    as a won claim, a heartbeat that writes the same bytes each time (``seq``
    constant: the same ETag would let the claim through), and a claim written with
    another Content-Type.
    """
    s3, claimer = client(local_aws), client(local_aws)
    held = lease.Lease(S3Store(s3, OUT), "p/", "members", "slow", ttl_s=0.1)
    held.start()
    held.stop(release=False)  # no more beats: the lease goes stale on the store's clock
    time.sleep(2.1)  # LastModified has whole seconds: > 0.1 s + 1 s slack, whatever the phase
    s3.put_object(
        Bucket=OUT, Key="p/members_1.csv", Body=b"id\n1\n",
        Metadata={"run-id": "slow", "dataset": "members"},
    )  # fmt: skip
    rewrote: list[str] = []

    def rewrite_first(request: Any, **_: Any) -> None:
        if "_leases/" in request.url and not rewrote:
            held.confirm()  # the run is alive after all: it rewrites before this lands
            rewrote.append(request.url)

    if rewrite_before:
        claimer.meta.events.register(f"before-send.s3.{rewrite_before}", rewrite_first)
    found = orphans.find(S3Store(claimer, OUT), "p/", "me", "members", exclude=set(), ttl_s=0.1)
    if not rewrite_before:
        assert (found.orphans, found.leases) == (("p/members_1.csv",), (held.key,))
        assert body(s3, held.key)["state"] == "claimed"
        head = s3.head_object(Bucket=OUT, Key=held.key)
        assert head["ContentType"] == "application/json"
        return
    assert rewrote  # the claim was under way when the run rewrote its lease
    assert (found.orphans, found.leases) == ((), ())
    assert body(s3, held.key)["state"] == "live"
    held.confirm()  # and the run still holds it
