"""A run's lease: a small object it keeps fresh while it uploads, so others can tell it is alive.

While a run publishes, ``<prefix>_leases/<dataset>/<run-id>.<token>.json`` exists
and a heartbeat thread rewrites it every quarter of the lease time
(``DSJOB_LEASE_SECONDS``, default 120 s). Every rewrite is conditional on the ETag
the run last wrote (``If-Match``; S3 User Guide, "Add preconditions to S3
operations with conditional requests"): S3 serialises it with the claim another
run makes on a lease it found stale (see ``orphans.py``), so exactly one of the
two wins. A run whose lease was claimed learns it on its next write, at the
latest just before its manifest (``confirm``), and fails without committing.

The lease is deleted when the run committed or removed its own uploads; a run
killed with SIGKILL leaves it behind, and it goes stale. ``<token>`` keeps two
attempts of one run id (a duplicate delivery) from sharing a lease.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING

from dsjob.errors import ConfigError, ConflictError, DsjobError, MissingObjectError, TransientError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dsjob.storage import OutputStore

LOGGER = logging.getLogger(__name__)

ENV_NAME = "DSJOB_LEASE_SECONDS"
DEFAULT_TTL_S = 120.0
FOLDER = "_leases/"
BEATS_PER_TTL = 4  # a lease misses three heartbeats in a row before it is stale


def ttl_seconds(environ: Mapping[str, str] | None = None) -> float:
    """The lease time in seconds: ``DSJOB_LEASE_SECONDS``, else 120."""
    raw = (os.environ if environ is None else environ).get(ENV_NAME, "").strip()
    if not raw:
        return DEFAULT_TTL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        msg = f"{ENV_NAME} must be a positive number of seconds, got {raw!r}"
        raise ConfigError(msg)
    return value


def folder(prefix: str, dataset: str) -> str:
    """Where the leases of `dataset`'s runs live."""
    return f"{prefix}{FOLDER}{dataset}/"


def owner_of(key: str) -> str:
    """The run id of a lease key (``.../<run-id>.<token>.json``)."""
    return key.rsplit("/", 1)[-1].rsplit(".", 2)[0]


def body(
    run_id: str, dataset: str, ttl_s: float, *, state: str, seq: int = 0, by: str = ""
) -> bytes:
    """A lease's JSON: who holds it, for how long, and a counter so every rewrite has a new ETag."""
    doc: dict[str, object] = {
        "run_id": run_id,
        "dataset": dataset,
        "state": state,
        "ttl_s": ttl_s,
        "seq": seq,
    }
    if by:
        doc["claimed_by"] = by
    return json.dumps(doc).encode()


class Lease:
    """The lease of one publishing run; ``start`` it before the first upload."""

    def __init__(
        self, store: OutputStore, prefix: str, dataset: str, run_id: str, *, ttl_s: float
    ) -> None:
        """Args: store, prefix: where outputs go; dataset, run_id: whose; ttl_s: lease time."""
        self.token = secrets.token_hex(4)  # this attempt's, also in its outputs' metadata
        self.key = f"{folder(prefix, dataset)}{run_id}.{self.token}.json"
        self._store, self._dataset, self._run_id, self.ttl_s = store, dataset, run_id, ttl_s
        self._etag: str | None = None
        self._sent = 0.0  # when the last write that succeeded was sent (monotonic)
        self._seq = 0
        self._lost = ""
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the lease (If-None-Match) and start the heartbeat thread."""
        self._etag = self._write(None)
        self._thread = threading.Thread(target=self._beat, name="dsjob-lease", daemon=True)
        self._thread.start()

    def _write(self, expected: str | None) -> str:
        sent = time.monotonic()
        self._seq += 1
        data = body(self._run_id, self._dataset, self.ttl_s, state="live", seq=self._seq)
        etag = self._store.swap_bytes(self.key, data, "application/json", expected)
        self._sent = sent
        return etag

    def _refresh(self) -> None:
        """One conditional rewrite; a claimed (changed or deleted) lease is lost for good."""
        with self._lock:
            if self._lost:
                return
            try:
                self._etag = self._write(self._etag)
            except (ConflictError, MissingObjectError):
                self._lost = f"another run found {self._store.uri(self.key)} stale and claimed it"
                LOGGER.warning("lease lost", extra={"lease": self._store.uri(self.key)})

    def _beat(self) -> None:
        while not self._halt.wait(self.ttl_s / BEATS_PER_TTL):
            try:
                self._refresh()
            except DsjobError as exc:  # a passing S3 fault: the next beat tries again
                LOGGER.warning("lease not refreshed", extra={"error": str(exc)})

    def confirm(self) -> None:
        """Refresh now and raise ``TransientError`` unless this run still holds its lease.

        Called just before the manifest: a run declared dead may have lost its
        uploads to another run's orphan removal, so it must not commit them. A write
        sent less than half the lease time ago cannot have been claimed since (a
        claim needs it older than the whole lease time), so that needs no request.
        """
        with self._lock:
            recent = self._etag is not None and time.monotonic() - self._sent < self.ttl_s / 2
        if not recent:
            self._refresh()
        if self._lost:
            msg = f"run {self._run_id} cannot commit: {self._lost} (its uploads may be gone)"
            raise TransientError(msg)

    def stop(self, *, release: bool) -> None:
        """Stop the heartbeat; delete the lease when `release` (nothing of this run is left)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
        if not release or self._lost:
            return
        try:
            self._store.delete([self.key])
        except DsjobError:
            LOGGER.warning("could not delete the lease", extra={"lease": self._store.uri(self.key)})
