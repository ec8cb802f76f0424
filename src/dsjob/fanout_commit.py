"""The fan-out's commit: verify every part, then the publish protocol's commit, then cleanup.

Every part is checked to be the very object its reduce task uploaded and
verified (same size and ETag on a fresh HEAD). The manifest, the current
pointer and the prune are :func:`dsjob.publish.commit`'s, exactly as for a
single run: the manifest is created once per run id, the pointer's history
decides which older outputs fall out, and orphans of killed runs go. The work
files go last; a commit re-run after a failure finishes the pointer, the prune
and the cleanup.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dsjob import history, stop, version
from dsjob.errors import InputError, MalformedInputError
from dsjob.job import RunSummary
from dsjob.publish import Published, already_published, commit, manifest_key

if TYPE_CHECKING:
    from dsjob.config import JobConfig
    from dsjob.workarea import WorkArea

LOGGER = logging.getLogger(__name__)


def already_committed(work: WorkArea, cfg: JobConfig, t0: float) -> RunSummary | None:
    """The committed run's summary if its manifest exists, else None.

    A commit task finishes what a failed attempt left (pointer, prune, cleanup).
    """
    mkey = manifest_key(work.prefix, cfg.run_id)
    manifest = history.read_manifest(work.store, mkey)
    if manifest is None:
        return None
    LOGGER.info("run id already committed; nothing new", extra={"run_id": cfg.run_id})
    outputs = tuple(Published.from_manifest(o) for o in manifest.get("outputs", []))
    if cfg.phase == "commit":
        outputs = already_published(work.store, work.prefix, cfg.run_id, cfg.keep_outputs).objects
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
        manifest_uri=work.uri(mkey),
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
    outputs = sorted(
        (Published.from_manifest(o) for r in reduces for o in r["outputs"]), key=lambda p: p.key
    )
    for part in outputs:
        _check_part(work, part)
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
        # Each reduce task counts the copies it dropped (records of an older dsjob: derived).
        "duplicate": sum(
            r.get("dropped", {}).get("duplicate", r["rows_in"] - r["rows_out"]) for r in reduces
        ),
        "malformed": dropped["malformed"],
    }
    if rows_in != rows_out + sum(dropped.values()):  # the books of map and reduce must agree
        msg = (
            f"run {cfg.run_id}: the map tasks read {rows_in} rows, the reduce tasks kept "
            f"{rows_out} and dropped {dropped}: the work files under "
            f"{work.uri(work.root)} do not add up; run the fan-out again with a new run id"
        )
        raise InputError(msg)
    dataset = maps[0]["dataset"]
    manifest = {
        "run_id": cfg.run_id,
        "status": "succeeded",
        "mode": "fanout",
        "started_at": min(m["started_at"] for m in maps),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.redacted(),
        "inputs": [
            {k: m[k] for k in ("source", "bytes", "etag", "rows_in", "rows_out", "dropped")}
            for m in maps
        ],
        "partitions": cfg.partitions,
        "schema": reduces[0]["types"],
        "counts": {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped},
        "versions": {"dsjob": version()},
    }
    stop.checkpoint("before writing the manifest")
    try:
        result = commit(
            work.store,
            prefix=work.prefix,
            run_id=cfg.run_id,
            dataset=dataset,
            outputs=outputs,
            manifest=manifest,
            keep_outputs=cfg.keep_outputs,
        )
    except history.AlreadyCommittedError:
        # A twin commit of the same run got there first: report (and finish) its result.
        committed = already_committed(work, cfg, t0)
        if committed is not None:
            return committed
        raise
    LOGGER.info("committed", extra={"manifest": result.manifest_uri, "parts": len(outputs)})
    _clean(work)
    return RunSummary(
        run_id=cfg.run_id,
        status="succeeded",
        mode="fanout",
        rows_in=rows_in,
        rows_out=rows_out,
        dropped=dropped,
        outputs=result.objects,
        manifest_uri=result.manifest_uri,
        duration_s=round(time.perf_counter() - t0, 3),
    )


def _check_part(work: WorkArea, part: Published) -> None:
    """The part is still the object its reduce task verified: same size and ETag."""
    info = work.store.head(part.key)
    if info is None:
        msg = f"cannot commit: part {part.uri} is missing (deleted after its reduce verified it)"
        raise InputError(msg)
    if info.size != part.size or (part.etag and info.etag != part.etag):
        msg = (
            f"cannot commit: part {part.uri} changed after its reduce verified it "
            f"({info.size} bytes, ETag {info.etag}; expected {part.size}, {part.etag})"
        )
        raise InputError(msg)


def _clean(work: WorkArea) -> None:
    """Remove the run's work files (map partitions and records)."""
    keys = work.store.list_keys(work.root)
    if keys:
        work.store.delete(keys)
        LOGGER.info("removed the fan-out work files", extra={"files": len(keys)})
