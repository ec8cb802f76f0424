"""dsjob.history: the current pointer's content, its compare-and-swap, the prune list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from dsjob.errors import MalformedInputError
from dsjob.history import (
    AlreadyCommittedError,
    Pointer,
    clear_pending,
    now_iso,
    pointer_key,
    read_manifest,
    record,
    still_owned,
)
from dsjob.localstore import LocalStore
from dsjob.storage import Blob

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

PREFIX = "processed/"
KEY = "processed/current/members.json"


def manifest(run_id: str, committed_at: str, *outputs: str) -> dict[str, Any]:
    """A committed run's manifest as far as the pointer reads it."""
    return {
        "run_id": run_id,
        "dataset": "members",
        "committed_at": committed_at,
        "outputs": [{"key": f"{PREFIX}{name}"} for name in outputs],
    }


def pointer(store: LocalStore) -> dict[str, Any]:
    """The pointer document as stored."""
    blob = store.get(KEY)
    assert blob is not None
    data: dict[str, Any] = json.loads(blob.data)
    return data


def entry(run_id: str, committed_at: str, *outputs: str) -> dict[str, Any]:
    """One run of the pointer's history."""
    return {
        "run_id": run_id,
        "manifest": f"{PREFIX}manifests/{run_id}.json",
        "committed_at": committed_at,
        "outputs": [f"{PREFIX}{name}" for name in outputs],
    }


def test_the_first_commit_writes_the_whole_pointer(tmp_path: Path) -> None:
    """The first run's pointer names format, dataset, the run, its outputs and a one-run history."""
    store = LocalStore(tmp_path)
    doomed, written = record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv"), 0)
    assert doomed == []
    assert pointer_key(PREFIX, "members") == KEY
    assert pointer(store) == {
        "format": 1,
        "dataset": "members",
        "run_id": "r1",
        "manifest": f"{PREFIX}manifests/r1.json",
        "outputs": [f"{PREFIX}a.csv"],
        "committed_at": "2027-01-01T00:00:00",
        "history": [entry("r1", "2027-01-01T00:00:00", "a.csv")],
        "pending_delete": [],
    }
    assert written.blob is not None
    assert json.loads(written.blob.data) == pointer(store)


def test_a_newer_run_pushes_the_oldest_past_keep_outputs(tmp_path: Path) -> None:
    """With keep-outputs 0 the older run falls off: its outputs are pending delete, then cleared."""
    store = LocalStore(tmp_path)
    record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv", "a.parquet"), 0)
    doomed, written = record(store, PREFIX, manifest("r2", "2027-02-01T00:00:00", "b.csv"), 0)
    expected = [
        {"key": f"{PREFIX}a.csv", "run_id": "r1"},
        {"key": f"{PREFIX}a.parquet", "run_id": "r1"},
    ]
    assert doomed == expected
    now = pointer(store)
    assert (now["run_id"], now["outputs"], now["pending_delete"]) == (
        "r2",
        [f"{PREFIX}b.csv"],
        expected,
    )
    assert now["history"] == [entry("r2", "2027-02-01T00:00:00", "b.csv")]
    clear_pending(store, PREFIX, "members", [f"{PREFIX}a.csv"], written)
    assert pointer(store)["pending_delete"] == [expected[1]]


def test_an_older_commit_arriving_late_never_becomes_current(tmp_path: Path) -> None:
    """History is ordered by committed_at: a late older run is kept behind the newer one."""
    store = LocalStore(tmp_path)
    record(store, PREFIX, manifest("new", "2027-02-01T00:00:00", "n.csv"), 1)
    doomed, _ = record(store, PREFIX, manifest("old", "2027-01-01T00:00:00", "o.csv"), 1)
    assert doomed == []
    now = pointer(store)
    assert now["run_id"] == "new"
    assert [r["run_id"] for r in now["history"]] == ["new", "old"]


def test_a_stale_pointer_is_read_again_not_overwritten(tmp_path: Path) -> None:
    """A commit holding a pointer another run has moved since re-reads it and keeps both runs."""
    store = LocalStore(tmp_path)
    record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv"), 5)
    stale = Pointer(store.get(KEY))
    record(store, PREFIX, manifest("r2", "2027-02-01T00:00:00", "b.csv"), 5)
    record(store, PREFIX, manifest("r3", "2027-03-01T00:00:00", "c.csv"), 5, last=stale)
    assert [r["run_id"] for r in pointer(store)["history"]] == ["r3", "r2", "r1"]


def test_a_rerun_of_a_committed_run_changes_nothing(tmp_path: Path) -> None:
    """Recording a run already in the history returns the pending list and leaves the pointer."""
    store = LocalStore(tmp_path)
    record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv"), 0)
    record(store, PREFIX, manifest("r2", "2027-02-01T00:00:00", "b.csv"), 0)
    before = store.get(KEY)
    doomed, read = record(store, PREFIX, manifest("r2", "2027-02-01T00:00:00", "b.csv"), 0)
    assert doomed == [{"key": f"{PREFIX}a.csv", "run_id": "r1"}]
    assert store.get(KEY) == before
    assert read.blob == before  # what the re-run's clear_pending swaps against


@pytest.mark.parametrize(
    ("body", "what"),
    [(b"{not json", "is not valid JSON"), (b"[1]", "is not a JSON object")],
)
def test_a_corrupt_pointer_or_manifest_is_named(tmp_path: Path, body: bytes, what: str) -> None:
    """A corrupt pointer or manifest exits 3 saying which document it is and where."""
    store = LocalStore(tmp_path)
    store.create_bytes(KEY, body, "application/json")
    store.create_bytes("processed/manifests/r0.json", body, "application/json")
    with pytest.raises(MalformedInputError, match=f"^pointer {tmp_path}/{KEY} {what}"):
        record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv"), 0)
    with pytest.raises(MalformedInputError, match=f"^pointer {tmp_path}/{KEY} {what}"):
        clear_pending(store, PREFIX, "members", [])
    with pytest.raises(MalformedInputError, match=f"^run manifest {tmp_path}/processed/manifests"):
        read_manifest(store, "processed/manifests/r0.json")


def test_a_manifest_without_a_format_is_format_1(tmp_path: Path) -> None:
    """Documents written before the format field are read as format 1; newer formats are refused."""
    store = LocalStore(tmp_path)
    store.create_bytes("m/old.json", b'{"run_id": "r0"}', "application/json")
    store.create_bytes("m/new.json", b'{"format": 2}', "application/json")
    assert read_manifest(store, "m/old.json") == {"run_id": "r0"}
    assert read_manifest(store, "m/none.json") is None
    with pytest.raises(MalformedInputError, match="has format 2, newer than this dsjob reads"):
        read_manifest(store, "m/new.json")


def test_still_owned_keeps_only_objects_of_the_doomed_run(tmp_path: Path) -> None:
    """A pruned name another run has taken since (its run-id metadata) is not deleted."""
    store = LocalStore(tmp_path)
    for name, owner in (("a.csv", "r1"), ("b.csv", "r9")):
        src = tmp_path / name
        src.write_text("x")
        store.create_file(src, f"{PREFIX}{name}", {"run-id": owner}, None)  # type: ignore[arg-type]
    doomed = [
        {"key": f"{PREFIX}a.csv", "run_id": "r1"},
        {"key": f"{PREFIX}b.csv", "run_id": "r1"},
        {"key": f"{PREFIX}gone.csv", "run_id": "r1"},
    ]
    assert still_owned(store, doomed) == [f"{PREFIX}a.csv"]


def test_commit_times_are_utc_with_microseconds() -> None:
    """now_iso is an aware UTC time to the microsecond, so runs within one second still order."""
    before = datetime.now(UTC)
    stamp = now_iso()
    parsed = datetime.fromisoformat(stamp)
    assert stamp.endswith("+00:00")
    assert len(stamp.split(".")[1]) == len("000000+00:00")
    assert before <= parsed <= datetime.now(UTC)


def test_already_committed_names_the_run() -> None:
    """The error for a run id committed by another attempt carries that id."""
    error = AlreadyCommittedError("r7")
    assert (error.run_id, str(error)) == ("r7", "run r7 is already committed")


class CountingStore(LocalStore):
    """A LocalStore that counts the GETs its callers send (each one an S3 request on S3)."""

    def __init__(self, root: Path) -> None:
        """Args: root: the output directory."""
        super().__init__(root)
        self.gets = 0
        self._swapping = False

    def get(self, key: str) -> Blob | None:
        """Count (unless the local compare-and-swap reads for itself), then read."""
        self.gets += not self._swapping
        return super().get(key)

    def swap_bytes(
        self, key: str, data: bytes, content_type: str, expected_etag: str | None
    ) -> str:
        """The local If-Match reads the file itself; S3 does that server-side."""
        self._swapping = True
        try:
            return super().swap_bytes(key, data, content_type, expected_etag)
        finally:
            self._swapping = False


def test_the_pointer_just_read_or_written_saves_a_get(tmp_path: Path) -> None:
    """Given the pointer as last read or written, record and clear_pending send no GET for it."""
    store = CountingStore(tmp_path)
    record(store, PREFIX, manifest("r1", "2027-01-01T00:00:00", "a.csv"), 0)
    last = Pointer(store.get(KEY))
    store.gets = 0
    _, written = record(store, PREFIX, manifest("r2", "2027-02-01T00:00:00", "b.csv"), 0, last=last)
    clear_pending(store, PREFIX, "members", [f"{PREFIX}a.csv"], written)
    assert store.gets == 0
    assert pointer(store)["pending_delete"] == []


def test_a_pointer_from_before_pending_deletes_is_cleared(tmp_path: Path) -> None:
    """An older pointer without a pending_delete list is swapped to an empty one, not refused."""
    store = LocalStore(tmp_path)
    old = {"format": 1, "dataset": "members", "run_id": "r0", "history": []}
    store.create_bytes(KEY, json.dumps(old).encode(), "application/json")
    clear_pending(store, PREFIX, "members", [f"{PREFIX}a.csv"])
    assert pointer(store) == {**old, "pending_delete": []}
