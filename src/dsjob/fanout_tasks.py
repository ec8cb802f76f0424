"""The fan-out's map and reduce tasks (see :mod:`dsjob.fanout` for the whole run)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob import stop, workdir
from dsjob.config import S3Location
from dsjob.errors import ConfigError, ConflictError, InputError, MalformedInputError
from dsjob.job import RunSummary
from dsjob.publish import Published, upload_verified
from dsjob.steps import in_worker
from dsjob.storage import fetch
from dsjob.workarea import object_tag

if TYPE_CHECKING:
    from dsjob.config import JobConfig
    from dsjob.processing import ProcessSettings
    from dsjob.workarea import WorkArea

LOGGER = logging.getLogger(__name__)


def settings(cfg: JobConfig, work_dir: Path) -> ProcessSettings:
    """The built-in step's settings for one fan-out task."""
    from dsjob.processing import ProcessSettings  # noqa: PLC0415 - loads duckdb

    return ProcessSettings(
        id_column=cfg.id_column,
        output_formats=cfg.output_formats,
        dataset=cfg.dataset,
        on_bad_rows=cfg.on_bad_rows,
        memory_limit=cfg.memory_limit,
        threads=cfg.threads,
        temp_dir=work_dir / "spill",
    )


def dataset_of(cfg: JobConfig) -> str:
    """The fan-out's dataset: the parameter when set, else the input objects' folder name."""
    if cfg.sources.get("dataset") in ("flag", "env", "ssm"):
        return cfg.dataset
    key = cfg.input.key if isinstance(cfg.input, S3Location) else str(cfg.input)
    folder = key.rstrip("/").rsplit("/", 2)
    if len(folder) < 2 or not folder[-2]:  # noqa: PLR2004 - "<folder>/<name>"
        msg = f"{cfg.input}: no folder to name the dataset after; set the dataset parameter"
        raise ConfigError(msg)
    return folder[-2]


def summary(
    cfg: JobConfig,
    record: dict[str, Any],
    uri: str,
    t0: float,
    *,
    mode: str,
    outputs: tuple[Published, ...] = (),
) -> RunSummary:
    """A task's status line from its record."""
    return RunSummary(
        run_id=cfg.run_id,
        status="succeeded",
        mode=mode,
        rows_in=record.get("rows_in"),
        rows_out=record.get("rows_out"),
        dropped=dict(record.get("dropped", {})),
        outputs=outputs,
        manifest_uri=uri,
        duration_s=round(time.perf_counter() - t0, 3),
    )


def run_map(cfg: JobConfig, work: WorkArea, t0: float) -> RunSummary:
    """Clean one input object and write its rows, partitioned, into the work area."""
    from dsjob import shuffle  # noqa: PLC0415 - loads duckdb

    source = str(cfg.input)
    tag = object_tag(cfg.input.key if isinstance(cfg.input, S3Location) else str(cfg.input))
    done = work.get_json(work.map_key(tag))
    if done is not None:
        LOGGER.info("map task already done for this run id", extra={"input": source})
        return summary(cfg, done, work.uri(work.map_key(tag)), t0, mode="map")
    started = datetime.now(UTC)
    dataset = dataset_of(cfg)
    with workdir.work_dir(f"dsjob-map-{cfg.run_id}-", cfg.work_root) as tmp:
        s3 = work.s3 if isinstance(cfg.input, S3Location) else None
        fetched = fetch(cfg.input, Path(tmp), s3)
        if fetched.size == 0:
            msg = f"input {source} is empty (0 bytes): a fan-out maps data objects only"
            raise MalformedInputError(msg)
        step = settings(cfg, Path(tmp))
        out = in_worker(
            lambda: shuffle.map_object(fetched.path, Path(tmp) / "map", step, cfg.partitions)
        )
        files = {}
        for k, (path, rows) in sorted(out.files.items()):
            stop.checkpoint("between uploads of partition files")
            key = work.part_key(k, tag)
            size, digest = work.put_verified(key, path, {"run-id": cfg.run_id, "rows": str(rows)})
            files[str(k)] = {"key": key, "rows": rows, "bytes": size, "sha256": digest}
    record = {
        "tag": tag,
        "source": source,
        "etag": fetched.etag,
        "bytes": fetched.size,
        "dataset": dataset,
        "partitions": cfg.partitions,
        "started_at": started.isoformat(timespec="seconds"),
        "rows_in": out.rows_in,
        "rows_out": out.rows,
        "dropped": out.dropped,
        "types": out.types,
        "non_null": out.non_null,
        "files": files,
    }
    record = work.put_record(work.map_key(tag), record)
    LOGGER.info("mapped", extra={"input": source, "rows": out.rows, "partitions": len(files)})
    return summary(cfg, record, work.uri(work.map_key(tag)), t0, mode="map")


def map_records(work: WorkArea, cfg: JobConfig) -> list[dict[str, Any]]:
    """Every map record of the run, checked to describe one dataset with P partitions."""
    records = work.records("maps")
    if not records:
        msg = f"no map results under {work.uri(work.root + 'maps/')}: run the map phase first"
        raise InputError(msg)
    for record in records:
        if record["partitions"] != cfg.partitions:
            msg = (
                f"{record['source']} was mapped into {record['partitions']} partitions, "
                f"this task expects {cfg.partitions}: every phase needs the same partitions"
            )
            raise ConfigError(msg)
        if record["dataset"] != records[0]["dataset"]:
            msg = (
                f"{record['source']} maps to dataset {record['dataset']!r}, "
                f"{records[0]['source']} to {records[0]['dataset']!r}: set the dataset parameter"
            )
            raise ConfigError(msg)
    return records


def output_stem(cfg: JobConfig, records: list[dict[str, Any]]) -> str:
    """``<prefix><dataset>_<stamp>_<run-id>/``: the same for every reduce task of the run."""
    stamp = min(datetime.fromisoformat(r["started_at"]) for r in records).strftime("%Y%m%d_%H%M%S")
    prefix = cfg.output.key if isinstance(cfg.output, S3Location) else ""
    return f"{prefix}{records[0]['dataset']}_{stamp}_{cfg.run_id}/"


def run_reduce(cfg: JobConfig, work: WorkArea, t0: float) -> RunSummary:
    """Deduplicate one partition exactly into one verified part."""
    from dsjob import shuffle  # noqa: PLC0415 - loads duckdb

    k = cfg.partition
    if k is None:  # pragma: no cover - config validation requires it for phase reduce
        msg = "phase reduce needs partition"
        raise ConfigError(msg)
    done = work.get_json(work.reduce_key(k))
    if done is not None:
        outputs = tuple(Published.from_manifest(o) for o in done["outputs"])
        return summary(cfg, done, work.uri(work.reduce_key(k)), t0, mode="reduce", outputs=outputs)
    records = map_records(work, cfg)
    types = shuffle.global_types(records)
    stem = output_stem(cfg, records)
    published: list[Published] = []
    rows = 0
    with workdir.work_dir(f"dsjob-reduce-{cfg.run_id}-", cfg.work_root) as tmp:
        files = [
            work.download(
                r["files"][str(k)]["key"],
                Path(tmp) / f"in-{i}.parquet",
                r["files"][str(k)]["sha256"],
            )
            for i, r in enumerate(records)
            if str(k) in r["files"]
        ]
        if files:
            step = settings(cfg, Path(tmp))
            target = Path(tmp) / "out" / f"part-{k:05d}"
            target.parent.mkdir()
            written, rows = in_worker(lambda: shuffle.reduce_partition(files, types, target, step))
            for path in written:
                stop.checkpoint("before uploading the part")
                key = stem + path.name
                meta = {"run-id": cfg.run_id, "dataset": records[0]["dataset"]}
                published.append(_upload_part(work, path, key, meta, rows))
    rows_in = sum(r["files"].get(str(k), {}).get("rows", 0) for r in records)
    record = {
        "partition": k,
        "partitions": cfg.partitions,
        "maps": sorted(r["tag"] for r in records),
        "types": types,
        "rows_in": rows_in,
        "rows_out": rows,
        # The map tasks dropped the NULL ids and malformed rows; a partition drops only
        # the copies of rows it already holds (every copy of a row hashes to one partition).
        "dropped": {"duplicate": rows_in - rows},
        "outputs": [asdict(p) for p in published],
    }
    record = work.put_record(work.reduce_key(k), record)
    LOGGER.info("reduced", extra={"partition": k, "rows_out": rows})
    outputs = tuple(Published.from_manifest(o) for o in record["outputs"])
    return summary(cfg, record, work.uri(work.reduce_key(k)), t0, mode="reduce", outputs=outputs)


def _upload_part(
    work: WorkArea, path: Path, key: str, metadata: dict[str, str], rows: int
) -> Published:
    """Create one part with the publish protocol's verified upload (checksum S3 computed)."""
    try:
        return upload_verified(work.store, path, key, metadata, records=rows)
    except ConflictError:
        # The key is this run's own partition: an attempt of this reduce task that
        # never wrote its record left it, so nothing refers to it.
        LOGGER.info("replacing a part an unfinished attempt left", extra={"key": key})
        work.store.delete([key])
        return upload_verified(work.store, path, key, metadata, records=rows)
