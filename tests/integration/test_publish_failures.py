"""Failures between upload and prune, injected in-process against a real moto server.

A real S3 cannot be made to fail on cue at one chosen call, so these tests patch
exactly one store method to raise (the brief's "killed at a chosen instant");
everything else — boto3, the emulator, the uploads — is real.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from unittest import mock

import pytest

from dsjob import cli, local
from dsjob.aws import Clients
from dsjob.errors import TransientError
from dsjob.storage import S3Store

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded() -> Iterator[Clients]:
    """An in-process emulator, seeded, with one good run already published."""
    with local.start():
        clients = Clients()
        local.seed(clients, rows=200)
        assert cli.main(["run", "--run-id", "good", "--log-format", "json"]) == 0
        time.sleep(1.1)  # the next run's timestamp must differ
        yield clients


def keys(clients: Clients) -> list[str]:
    found = clients.s3.list_objects_v2(Bucket=local.OUTPUT_BUCKET).get("Contents", [])
    return sorted(o["Key"] for o in found)


def test_failed_manifest_write_rolls_back_and_keeps_old_outputs(seeded: Clients) -> None:
    """If the manifest cannot be written, this run's uploads are removed and old outputs stay."""
    before = keys(seeded)
    with mock.patch.object(S3Store, "put_bytes", side_effect=TransientError("connection reset")):
        code = cli.main(["run", "--run-id", "broken", "--log-format", "json"])
    assert code == 5
    assert keys(seeded) == before


def test_failed_prune_keeps_everything(seeded: Clients) -> None:
    """If pruning fails, the new outputs and manifest are published and nothing old is lost."""
    before = keys(seeded)
    with mock.patch.object(S3Store, "delete", side_effect=TransientError("throttled")):
        code = cli.main(["run", "--run-id", "second", "--log-format", "json"])
    assert code == 5
    after = keys(seeded)
    assert set(before) <= set(after)
    assert "processed/manifests/second.json" in after
    assert len([k for k in after if k.endswith(".parquet")]) == 2
    # Step Functions retries exit 5 with the same run id: the retry finishes the prune.
    assert cli.main(["run", "--run-id", "second", "--log-format", "json"]) == 0
    assert len([k for k in keys(seeded) if k.endswith(".parquet")]) == 1
