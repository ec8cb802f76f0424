"""The commit of a run: its manifest, then the current pointer, then the prune and orphans.

``write_manifest`` creates ``<prefix>manifests/<run-id>.json`` once per run id
(``If-None-Match``), listing the orphans it is about to remove; from then on the
run is committed. ``finish`` moves the current pointer (``history.py``) and deletes
what fell out of its history and the orphans (``orphans.py``). ``commit`` is both,
for the fan-out's commit phase; ``publish.py`` calls them around its uploads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dsjob import history, lease, orphans, stop
from dsjob.errors import ConflictError, TransientError
from dsjob.verify import Published

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from dsjob.storage import OutputStore

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """What a publish left behind."""

    objects: tuple[Published, ...]
    manifest_uri: str
    pruned: tuple[str, ...]
    orphans: tuple[str, ...] = ()
    already_published: bool = False


def manifest_key(prefix: str, run_id: str) -> str:
    """Where the manifest of `run_id` lives."""
    return f"{prefix}manifests/{run_id}.json"


def write_manifest(
    store: OutputStore,
    *,
    prefix: str,
    run_id: str,
    dataset: str,
    outputs: Sequence[Published],
    manifest: Mapping[str, Any],
    fence: Callable[[], None] = lambda: None,
) -> tuple[dict[str, Any], orphans.Found]:
    """Find the orphans, call `fence` (raises if this run may not commit), create the manifest.

    Raises ``history.AlreadyCommittedError`` when another attempt of `run_id`
    committed first.
    """
    known = {o.key for o in outputs}
    found = orphans.find(store, prefix, run_id, dataset, exclude=known, ttl_s=lease.ttl_seconds())
    body = {
        **manifest,
        "run_id": run_id,
        "format": history.MANIFEST_FORMAT,
        "dataset": dataset,
        "committed_at": history.now_iso(),
        "outputs": [asdict(o) for o in outputs],
        "orphans_removed": list(found.orphans),
    }
    mkey = manifest_key(prefix, run_id)
    data = json.dumps(body, indent=2, default=str).encode()
    fence()
    try:
        store.create_bytes(mkey, data, "application/json")
    except ConflictError as exc:
        raise history.AlreadyCommittedError(run_id) from exc
    stored = store.get(mkey)
    if stored is None or stored.data != data:
        store.delete([mkey])
        raise TransientError(f"{store.uri(mkey)}: the manifest read back differs from the one sent")
    LOGGER.info("manifest written", extra={"manifest": store.uri(mkey)})
    return body, found


def commit(
    store: OutputStore,
    *,
    prefix: str,
    run_id: str,
    dataset: str,
    outputs: Sequence[Published],
    manifest: Mapping[str, Any],
    keep_outputs: int,
) -> PublishResult:
    """Write the manifest (the commit), the current pointer (last write), then prune.

    Raises ``history.AlreadyCommittedError`` when another attempt of `run_id` committed
    first; the caller rolls back its own uploads. A failure after the manifest is
    written leaves the run committed: a re-run with the same id finishes the
    pointer and the prune.
    """
    body, found = write_manifest(
        store,
        prefix=prefix,
        run_id=run_id,
        dataset=dataset,
        outputs=outputs,
        manifest=manifest,
    )
    return finish(store, prefix, body, keep_outputs, found=found)


def finish(
    store: OutputStore,
    prefix: str,
    manifest: Mapping[str, Any],
    keep_outputs: int,
    *,
    found: orphans.Found | None = None,
    release: Sequence[str] = (),
) -> PublishResult:
    """After the manifest: move the current pointer, then delete what fell out of it.

    One DeleteObjects takes the pruned outputs, the orphans, the dead runs' leases and
    `release` (this run's own lease).
    """
    run_id, dataset = str(manifest["run_id"]), str(manifest["dataset"])
    found = found or orphans.Found((), ())
    outputs = tuple(Published.from_manifest(o) for o in manifest.get("outputs", []))
    doomed, written = history.record(store, prefix, manifest, keep_outputs, last=found.pointer)
    if stop.skip("the prune of older outputs"):  # committed: report success, prune next time
        return PublishResult(outputs, store.uri(manifest_key(prefix, run_id)), ())
    pruned = history.still_owned(store, doomed)
    gone = [*found.orphans, *found.leases, *pruned, *release]
    if gone:
        store.delete(gone)
    if found.orphans:
        LOGGER.info("removed orphans of dead runs", extra={"deleted": list(found.orphans)})
    if pruned:
        LOGGER.info("pruned old outputs", extra={"deleted": pruned, "dataset": dataset})
    if doomed:
        history.clear_pending(store, prefix, dataset, [d["key"] for d in doomed], written)
    return PublishResult(
        outputs, store.uri(manifest_key(prefix, run_id)), tuple(pruned), found.orphans
    )


def already_published(
    store: OutputStore, prefix: str, run_id: str, keep_outputs: int
) -> PublishResult:
    """The earlier commit of `run_id`, with its pointer and prune finished if they were not.

    A retry after a failure between manifest and prune (exit 5) lands here and
    completes the commit instead of publishing again.
    """
    manifest = history.read_manifest(store, manifest_key(prefix, run_id))
    if manifest is None:  # pragma: no cover - only called once the manifest exists
        raise TransientError(f"{store.uri(manifest_key(prefix, run_id))} vanished")
    outputs = tuple(Published.from_manifest(o) for o in manifest.get("outputs", []))
    pruned: tuple[str, ...] = ()
    if "dataset" in manifest and "committed_at" in manifest:  # older manifests: nothing to finish
        pruned = finish(store, prefix, manifest, keep_outputs).pruned
    return PublishResult(
        outputs, store.uri(manifest_key(prefix, run_id)), pruned, already_published=True
    )
