"""The fan-out's commit: verify every part, write the manifest and the current pointer, then prune.

The manifest (``<prefix>manifests/<run-id>.json``, created with ``If-None-Match: *``)
is the commit: before it, the parts are invisible to anyone who follows the
pointer; after it, ``<prefix>current/<dataset>.json`` names it. Only then are
older runs pruned: outputs listed by *committed* manifests of the same dataset,
beyond the newest ``keep-outputs``, never an output of this run or of a run
committed after it, never a file of a run that has no manifest yet. The work
files go last; a commit re-run after a failure finishes the prune and cleanup.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dsjob import stop
from dsjob.errors import InputError, MalformedInputError
from dsjob.job import RunSummary, version
from dsjob.publish import Published, manifest_key

if TYPE_CHECKING:
    from dsjob.config import JobConfig
    from dsjob.workarea import WorkArea

LOGGER = logging.getLogger(__name__)


def current_key(prefix: str, dataset: str) -> str:
    """The pointer to the dataset's current manifest and outputs."""
    return f"{prefix}current/{dataset}.json"


def already_committed(work: WorkArea, cfg: JobConfig, t0: float) -> RunSummary | None:
    """The committed run's summary if its manifest exists (finishing prune, cleanup), else None."""
    manifest = work.get_json(manifest_key(work.prefix, cfg.run_id))
    if manifest is None:
        return None
    LOGGER.info("run id already committed; nothing new", extra={"run_id": cfg.run_id})
    outputs = tuple(Published(**o) for o in manifest.get("outputs", []))
    if cfg.phase == "commit":
        _prune(work, manifest, cfg.keep_outputs)
        _clean(work)
    counts = manifest.get("counts", {})
    return RunSummary(
        run_id=cfg.run_id,
        status="already-published",
        mode=manifest.get("mode", "fanout"),
        rows_in=counts.get("rows_in"),
        rows_out=counts.get("rows_out"),
        dropped=counts.get("dropped", {}),
        outputs=outputs,
        manifest_uri=work.uri(manifest_key(work.prefix, cfg.run_id)),
        duration_s=round(time.perf_counter() - t0, 3),
    )


def _reduce_records(work: WorkArea, cfg: JobConfig, tags: list[str]) -> list[dict[str, Any]]:
    """One reduce record per partition, each over every map result; fails naming what is missing."""
    records, missing = [], []
    for k in range(cfg.partitions):
        record = work.get_json(work.reduce_key(k))
        if record is None:
            missing.append(k)
            continue
        if record["maps"] != tags:
            msg = (
                f"partition {k} was reduced over {len(record['maps'])} map results, the run has "
                f"{len(tags)}: delete {work.uri(work.reduce_key(k))} and run its reduce again"
            )
            raise InputError(msg)
        records.append(record)
    if missing:
        shown = ", ".join(map(str, missing))
        msg = (
            f"cannot commit run {cfg.run_id}: partition {shown} of {cfg.partitions} has no "
            f"reduce result (expected {work.uri(work.reduce_key(missing[0]))}); run reduce first"
        )
        raise InputError(msg)
    return records


def run_commit(cfg: JobConfig, work: WorkArea, t0: float) -> RunSummary:
    """Verify every part, write the manifest, the current pointer, prune, remove the work files."""
    from dsjob.fanout_tasks import map_records  # noqa: PLC0415 - loads the tasks lazily

    maps = map_records(work, cfg)
    reduces = _reduce_records(work, cfg, sorted(m["tag"] for m in maps))
    outputs = sorted((Published(**o) for r in reduces for o in r["outputs"]), key=lambda p: p.key)
    for part in outputs:
        work.verify(part.key, part.size, part.sha256)
    dropped = {
        reason: sum(m["dropped"].get(reason, 0) for m in maps)
        for reason in ("null_id", "malformed")
    }
    rows_in = sum(m["rows_in"] for m in maps)
    rows_out = sum(r["rows_out"] for r in reduces)
    if rows_out == 0:
        msg = (
            f"run {cfg.run_id}: no rows left after cleaning {len(maps)} objects; nothing published"
        )
        raise MalformedInputError(msg)
    dropped = {
        "null_id": dropped["null_id"],
        "duplicate": rows_in - dropped["malformed"] - dropped["null_id"] - rows_out,
        "malformed": dropped["malformed"],
    }
    now = datetime.now(UTC).isoformat(timespec="seconds")
    dataset = maps[0]["dataset"]
    manifest = {
        "run_id": cfg.run_id,
        "status": "succeeded",
        "mode": "fanout",
        "dataset": dataset,
        "started_at": min(m["started_at"] for m in maps),
        "finished_at": now,
        "committed_at": now,
        "config": cfg.redacted(),
        "inputs": [
            {k: m[k] for k in ("source", "bytes", "etag", "rows_in", "rows_out", "dropped")}
            for m in maps
        ],
        "partitions": cfg.partitions,
        "schema": reduces[0]["types"],
        "counts": {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped},
        "outputs": [o.__dict__ for o in outputs],
        "versions": {"dsjob": version()},
    }
    mkey = manifest_key(work.prefix, cfg.run_id)
    stop.checkpoint("before writing the manifest")
    if not work.put_new(mkey, json.dumps(manifest, indent=2).encode()):
        # A twin commit of the same run got there first: report its result.
        committed = already_committed(work, cfg, t0)
        if committed is not None:
            return committed
    pointer = {
        "dataset": dataset,
        "run_id": cfg.run_id,
        "manifest": mkey,
        "outputs": [o.key for o in outputs],
        "committed_at": now,
    }
    work.store.put_bytes(
        current_key(work.prefix, dataset), json.dumps(pointer).encode(), "application/json"
    )
    LOGGER.info("committed", extra={"manifest": work.uri(mkey), "parts": len(outputs)})
    _prune(work, manifest, cfg.keep_outputs)
    _clean(work)
    return RunSummary(
        run_id=cfg.run_id,
        status="succeeded",
        mode="fanout",
        rows_in=rows_in,
        rows_out=rows_out,
        dropped=dropped,
        outputs=tuple(outputs),
        manifest_uri=work.uri(mkey),
        duration_s=round(time.perf_counter() - t0, 3),
    )


def _committed_at(manifest: dict[str, Any]) -> str:
    return str(manifest.get("committed_at") or manifest.get("finished_at") or "")


def _prune(work: WorkArea, ours: dict[str, Any], keep: int) -> tuple[str, ...]:
    """Delete outputs of older committed runs of the same dataset beyond the newest `keep`."""
    mine = {o["key"] for o in ours.get("outputs", [])}
    older = []
    for key in work.store.list_keys(f"{work.prefix}manifests/"):
        other = work.get_json(key) if key.endswith(".json") else None
        if other is None or other.get("run_id") == ours["run_id"]:
            continue
        dataset = other.get("dataset") or other.get("config", {}).get("dataset")
        if dataset == ours["dataset"] and _committed_at(other) <= _committed_at(ours):
            older.append((_committed_at(other), key, other))
    older.sort(reverse=True)
    doomed = [
        o["key"]
        for _, _, other in older[keep:]
        for o in other.get("outputs", [])
        if o["key"] not in mine
    ]
    if doomed:
        work.store.delete(doomed)
        LOGGER.info("pruned outputs of older runs", extra={"deleted": doomed})
    return tuple(doomed)


def _clean(work: WorkArea) -> None:
    """Remove the run's work files (map partitions and records)."""
    keys = work.store.list_keys(work.root)
    if keys:
        work.store.delete(keys)
        LOGGER.info("removed the fan-out work files", extra={"files": len(keys)})
