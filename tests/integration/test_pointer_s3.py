"""The current pointer on real S3 (the emulator): stored as JSON, swapped by its ETag."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest

from dsjob.history import clear_pending, record
from dsjob.s3store import S3Store

if TYPE_CHECKING:
    from tests.support.emulator import LocalServe

pytestmark = pytest.mark.integration


def test_the_pointer_is_served_as_json_before_and_after_its_prune_is_cleared(
    local_aws: LocalServe,
) -> None:
    """Every pointer write says Content-Type application/json, so consoles and browsers show it."""
    s3 = boto3.client("s3", endpoint_url=local_aws.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="pointer-test")
    store = S3Store(s3, "pointer-test")
    run = {"dataset": "d", "committed_at": "2027-01-01T00:00:00", "outputs": [{"key": "p/a"}]}
    record(store, "p/", {**run, "run_id": "r1"}, 0)
    head = s3.head_object(Bucket="pointer-test", Key="p/current/d.json")
    assert head["ContentType"] == "application/json"
    _, written = record(store, "p/", {**run, "run_id": "r2", "committed_at": "2027-02-01"}, 0)
    clear_pending(store, "p/", "d", ["p/a"], written)
    head = s3.head_object(Bucket="pointer-test", Key="p/current/d.json")
    body = json.loads(s3.get_object(Bucket="pointer-test", Key="p/current/d.json")["Body"].read())
    assert (head["ContentType"], body["pending_delete"], body["run_id"]) == (
        "application/json",
        [],
        "r2",
    )
