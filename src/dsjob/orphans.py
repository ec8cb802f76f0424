"""Which uncommitted outputs of a dataset belong to runs that are dead, and may be deleted.

An orphan is an output of the dataset (object metadata ``dataset``) whose run
never committed and will not: its owner (metadata ``run-id``) is

- this run id (an earlier attempt: Step Functions retries only after it stopped);
- a run whose leases (``lease.py``) are all stale: not rewritten for longer than
  their lease time, measured on the store's clock (S3 ``LastModified``, never
  this machine's), and claimed here by a conditional write, which fails if the
  run rewrote its lease meanwhile; or whose lease another run already claimed;
- a run with no lease at all (a fan-out task between phases, an older dsjob)
  whose object is older than ``ORPHAN_AGE``, longer than any run may take.

A fresh lease means the run is alive: its objects stay. The claimed leases are
deleted with the orphans, after this run's manifest lists them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dsjob import history, lease
from dsjob.errors import ConflictError, MissingObjectError

if TYPE_CHECKING:
    from dsjob.storage import Listed, OutputStore

LOGGER = logging.getLogger(__name__)

ORPHAN_AGE = timedelta(hours=24)
# GetObject's Last-Modified is an HTTP date (whole seconds); a lease is stale only
# beyond its time plus that rounding.
CLOCK_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Found:
    """Orphaned outputs (for the manifest) and the dead runs' leases to delete with them."""

    orphans: tuple[str, ...]
    leases: tuple[str, ...]
    pointer: history.Pointer | None = None  # as read here, for history.record


class _Verdicts:
    """Whether each owner may still be running, decided once per owner."""

    def __init__(
        self,
        store: OutputStore,
        run_id: str,
        leases: dict[str, list[Listed]],
        store_now: datetime,
        ttl_s: float,
    ) -> None:
        self._store, self._run_id, self._leases = store, run_id, leases
        self._now, self._ttl_s = store_now, ttl_s
        self._seen: dict[str, str] = {}
        self.claimed: list[str] = []

    def of(self, owner: str) -> str:
        """``same``, ``dead``, ``live``, or ``unknown`` (no lease: decide by age)."""
        if owner not in self._seen:
            self._seen[owner] = self._decide(owner)
        return self._seen[owner]

    def _decide(self, owner: str) -> str:
        found = self._leases.get(owner)
        if owner == self._run_id:
            for item in found or []:  # an earlier attempt's lease; this one's is fresh
                if not self._fresh(item.last_modified, self._ttl_s):
                    self._claim(item.key)
            return "same"
        if not found:
            return "unknown"
        if any(self._fresh(item.last_modified, self._ttl_s) for item in found):
            return "live"
        for item in found:
            if not self._claim(item.key):
                return "live"
        return "dead"

    def _fresh(self, written: datetime, ttl_s: float) -> bool:
        return self._now - written <= timedelta(seconds=ttl_s) + CLOCK_SLACK

    def _claim(self, key: str) -> bool:
        """Mark a stale lease claimed (If-Match its ETag); False when its run rewrote it."""
        blob = self._store.get(key)
        if blob is None:
            return True  # its run finished and deleted it: committed (checked next) or gone
        try:
            held = json.loads(blob.data)
        except ValueError:
            held = {}
        held = held if isinstance(held, dict) else {}
        if held.get("state") == "claimed":
            self.claimed.append(key)  # a run that claimed it did not finish its cleanup
            return True
        ttl_s = max(self._ttl_s, float(held.get("ttl_s", 0) or 0))
        if blob.last_modified is not None and self._fresh(blob.last_modified, ttl_s):
            return False
        data = lease.body(
            str(held.get("run_id", "")),
            str(held.get("dataset", "")),
            ttl_s,
            state="claimed",
            by=self._run_id,
        )
        try:
            self._store.swap_bytes(key, data, "application/json", blob.etag)
        except ConflictError:
            return False  # rewritten since we read it: its run is alive
        except MissingObjectError:
            return True  # deleted since the read: its run finished, as above
        LOGGER.info("claimed a stale lease", extra={"lease": self._store.uri(key)})
        self.claimed.append(key)
        return True


def _kept(store: OutputStore, prefix: str, dataset: str) -> tuple[set[str], history.Pointer]:
    """Every output the pointer's history keeps, and the pointer as read."""
    key = history.pointer_key(prefix, dataset)
    blob = store.get(key)
    pointer = history.parse(store, key, blob.data, "pointer") if blob else {}
    kept = {k for entry in pointer.get("history", []) for k in entry.get("outputs", [])}
    return kept, history.Pointer(blob)


def find(
    store: OutputStore,
    prefix: str,
    run_id: str,
    dataset: str,
    *,
    exclude: set[str],
    ttl_s: float,
) -> Found:
    """Keys of `dataset` outputs left by runs that never committed and cannot be running.

    The objects are listed before any lease is read: an object in the listing was
    stored after its run wrote its lease, so that lease (or its deletion, which
    follows the run's manifest) is visible to the reads that follow.
    """
    kept, read = _kept(store, prefix, dataset)
    listing = store.list_objects(prefix)
    if not listing:
        return Found((), (), read)
    leases: dict[str, list[Listed]] = {}
    for item in (i for i in listing if i.key.startswith(lease.folder(prefix, dataset))):
        leases.setdefault(lease.owner_of(item.key), []).append(item)
    # The newest LastModified listed is no later than the store's clock now.
    store_now = max(item.last_modified for item in listing)
    verdicts = _Verdicts(store, run_id, leases, store_now, ttl_s)
    cutoff = datetime.now(UTC) - ORPHAN_AGE
    committed: dict[str, bool] = {}
    orphans: list[str] = []
    for item in listing:
        rest = item.key[len(prefix) :]
        if rest.startswith(history.RESERVED) or item.key in exclude or item.key in kept:
            continue
        info = store.head(item.key)
        if info is None or info.metadata.get("dataset") != dataset:
            continue  # another dataset's, or a store that keeps no metadata
        owner = info.metadata.get("run-id", "")
        verdict = verdicts.of(owner)
        if verdict == "live" or (verdict == "unknown" and item.last_modified >= cutoff):
            continue  # its run may still be uploading
        if owner not in committed:  # read after the lease: a run deletes it after committing
            manifest = f"{prefix}manifests/{owner}.json"
            committed[owner] = owner != run_id and store.get(manifest) is not None
        if not committed[owner]:
            orphans.append(item.key)
    for owner in leases:  # stale leases of runs that left no object behind go too
        verdicts.of(owner)
    return Found(tuple(orphans), tuple(verdicts.claimed), read)
