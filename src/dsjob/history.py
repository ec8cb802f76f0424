"""Which runs of a dataset are committed, which is current, and what may be deleted.

The current pointer ``<prefix>current/<dataset>.json`` is the dataset's history:
``{"dataset", "run_id", "manifest", "outputs", "committed_at", "history": [...]}``,
where ``history`` lists the committed runs whose outputs are kept, newest first
(by the ``committed_at`` their manifest records), and the top-level fields
describe the newest. Runs add themselves by compare-and-swap (``If-Match`` on the
pointer's ETag), so concurrent commits serialise there. Whatever falls off the
end of the history (more than ``keep-outputs`` + 1 committed runs) is deleted,
and only that: an object another run is still uploading is in no history.

Orphans, outputs of runs that never committed and never will, are found by
``orphans.py``; the next commit of the dataset removes them and lists them in its
manifest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConflictError, DsjobError, MalformedInputError
from dsjob.storage import Blob

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dsjob.storage import OutputStore

LOGGER = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
MAX_SWAPS = 50
# Folders under the output prefix that hold bookkeeping, not outputs.
RESERVED = ("manifests/", "current/", "status/", "_work/", "_leases/")


class AlreadyCommittedError(DsjobError):
    """Another attempt of this run id wrote its manifest first (not an error to users)."""

    def __init__(self, run_id: str) -> None:
        """Args: run_id: the run id that is already committed."""
        super().__init__(f"run {run_id} is already committed")
        self.run_id = run_id


def now_iso() -> str:
    """The commit time, with microseconds so that runs in one second still order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def pointer_key(prefix: str, dataset: str) -> str:
    """Where the current pointer of `dataset` lives."""
    return f"{prefix}current/{dataset}.json"


def parse(store: OutputStore, key: str, data: bytes, what: str) -> dict[str, Any]:
    """A manifest or pointer as a dict; exits 3 naming `key` when corrupt or of a newer format."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{what} {store.uri(key)} is not valid JSON ({exc}); fix or remove it"
        raise MalformedInputError(msg) from exc
    if not isinstance(parsed, dict):
        raise MalformedInputError(f"{what} {store.uri(key)} is not a JSON object")
    fmt = parsed.get("format", 1)
    if not isinstance(fmt, int) or fmt > MANIFEST_FORMAT:
        raise MalformedInputError(
            f"{what} {store.uri(key)} has format {fmt!r}, newer than this dsjob reads "
            f"({MANIFEST_FORMAT}): run a newer dsjob"
        )
    return parsed


def read_manifest(store: OutputStore, key: str) -> dict[str, Any] | None:
    """A run's manifest, or None; a corrupt or newer-format one exits 3, naming it."""
    blob = store.get(key)
    return None if blob is None else parse(store, key, blob.data, "run manifest")


@dataclass(frozen=True)
class Pointer:
    """The current pointer as this run last read or wrote it (``blob`` None: absent)."""

    blob: Blob | None


def record(
    store: OutputStore,
    prefix: str,
    manifest: Mapping[str, Any],
    keep_outputs: int,
    *,
    last: Pointer | None = None,
) -> tuple[list[dict[str, str]], Pointer]:
    """Add a committed run to its dataset's pointer; return what fell out ({key, run_id}).

    `last` (the pointer as read a moment ago) saves the first read; if it is stale
    the compare-and-swap fails and the pointer is read again. Also returns the
    pointer as written, for ``clear_pending``. A run already in the history
    changes nothing (a re-run of a run id).
    """
    dataset, run_id = str(manifest["dataset"]), str(manifest["run_id"])
    key = pointer_key(prefix, dataset)
    entry = {
        "run_id": run_id,
        "manifest": f"{prefix}manifests/{run_id}.json",
        "committed_at": manifest["committed_at"],
        "outputs": [o["key"] for o in manifest.get("outputs", [])],
    }
    for _ in range(MAX_SWAPS):
        blob = last.blob if last is not None else store.get(key)
        last = None
        pointer = parse(store, key, blob.data, "pointer") if blob else {}
        runs: list[dict[str, Any]] = list(pointer.get("history", []))
        pending = [p for p in pointer.get("pending_delete", []) if isinstance(p, dict)]
        if any(r.get("run_id") == run_id for r in runs):
            return pending, Pointer(blob)  # a re-run: finish a prune that failed
        runs = sorted([*runs, entry], key=lambda r: str(r.get("committed_at", "")), reverse=True)
        kept, dropped = runs[: keep_outputs + 1], runs[keep_outputs + 1 :]
        newest = kept[0]
        doomed = [
            *pending,
            *({"key": k, "run_id": r["run_id"]} for r in dropped for k in r["outputs"]),
        ]
        body = {
            "format": MANIFEST_FORMAT,
            "dataset": dataset,
            "run_id": newest["run_id"],
            "manifest": newest["manifest"],
            "outputs": newest["outputs"],
            "committed_at": newest["committed_at"],
            "history": kept,
            # Deleted after this write; a failed delete is finished by the next commit.
            "pending_delete": doomed,
        }
        data = json.dumps(body, indent=2).encode()
        try:
            etag = store.swap_bytes(key, data, "application/json", blob.etag if blob else None)
        except ConflictError:
            continue  # another run moved the pointer: read it again
        if newest["run_id"] != run_id:
            LOGGER.info("a newer run is current", extra={"current": newest["run_id"]})
        return doomed, Pointer(Blob(data, etag))
    raise ConflictError(f"{store.uri(key)} kept changing; gave up after {MAX_SWAPS} tries")


def clear_pending(
    store: OutputStore, prefix: str, dataset: str, deleted: list[str], last: Pointer | None = None
) -> None:
    """Drop deleted keys from the pointer's pending list (best effort: one try).

    `last` is the pointer as this run wrote it; if another run moved it since, the
    swap fails and the next commit re-deletes (a missing key is no error).
    """
    key = pointer_key(prefix, dataset)
    blob = last.blob if last is not None else store.get(key)
    if blob is None:
        return
    pointer = parse(store, key, blob.data, "pointer")
    gone = set(deleted)
    pointer["pending_delete"] = [
        p for p in pointer.get("pending_delete", []) if isinstance(p, dict) and p["key"] not in gone
    ]
    try:
        store.swap_bytes(key, json.dumps(pointer, indent=2).encode(), "application/json", blob.etag)
    except ConflictError:
        LOGGER.info("pointer moved on; the next commit re-deletes the pruned keys")


def still_owned(store: OutputStore, doomed: list[dict[str, str]]) -> list[str]:
    """The doomed keys that still hold their run's object.

    A pruned name is free again, and a run that started in the same second may
    have taken it since: its object names another run in its ``run-id`` metadata
    and is not deleted.
    """
    keys = []
    for entry in doomed:
        info = store.head(entry["key"])
        if info is not None and info.metadata.get("run-id") == entry["run_id"]:
            keys.append(entry["key"])
    return keys
