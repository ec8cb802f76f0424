"""The fan-out: map -> reduce -> commit over many input objects, equal to one run over all of them.

* **map** (``phase=map``, one task per input object): clean the object exactly as
  the built-in step does and hash-partition its rows into P files under
  ``<prefix>_work/<run-id>/part=<k>/``; its counts go into a record beside them
  (:mod:`dsjob.workarea`). The typing rule that makes the result equal to a
  single run is in :mod:`dsjob.shuffle`.
* **reduce** (``phase=reduce``, one task per partition): exact dedup of one
  partition into one part, ``<prefix><dataset>_<stamp>_<run-id>/part-<k>.parquet``
  (``<stamp>``: when the run's first map task started, so names sort by time).
* **commit** (``phase=commit``, one task): verify every part, write the run
  manifest listing all parts with the summed counts, then the current pointer,
  then prune older runs of the dataset and delete the work files.

Every phase is idempotent for a run id: a task that already left its record
reports it again; once the manifest exists, every phase reports
"already-published". The dataset is the ``dataset`` parameter when it is set,
else the name of the folder holding the input objects (``raw/members/x.csv`` ->
``members``). A custom script or transform.sql sees one whole input, so neither
can run fanned out.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob import fanout_commit as committing
from dsjob.config import S3Location
from dsjob.errors import ConfigError, InputError, MalformedInputError
from dsjob.job import RunSummary, _in_worker
from dsjob.publish import Published
from dsjob.storage import fetch
from dsjob.workarea import WorkArea, object_tag

if TYPE_CHECKING:
    from dsjob.aws import Clients
    from dsjob.config import JobConfig
    from dsjob.processing import ProcessSettings

LOGGER = logging.getLogger(__name__)


def run_phase(cfg: JobConfig, clients: Clients | None) -> RunSummary:
    """Run the phase `cfg.phase` names (map, reduce or commit) for `cfg.run_id`."""
    t0 = time.perf_counter()
    work = _work_area(cfg, clients)
    published = committing.already_committed(work, cfg, t0)
    if published is not None:
        return published
    phase = {"map": run_map, "reduce": run_reduce, "commit": committing.run_commit}[cfg.phase]
    return phase(cfg, work, t0)


def _work_area(cfg: JobConfig, clients: Clients | None) -> WorkArea:
    """The run's S3 work area; refuses what cannot fan out before any work starts."""
    problems = []
    if not isinstance(cfg.output, S3Location) or clients is None:
        problems.append("the fan-out publishes to S3 only: set output-bucket, not output-dir")
    if cfg.script is not None or cfg.transform is not None:
        problems.append(
            "script-key and transform-key see one whole input and cannot run fanned out; "
            "use phase single for them"
        )
    if problems or clients is None or not isinstance(cfg.output, S3Location):
        raise ConfigError(f"phase {cfg.phase}: " + "; ".join(problems))
    return WorkArea(clients.s3, cfg.output.bucket, cfg.output.key, cfg.run_id)


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


def _summary(
    cfg: JobConfig,
    record: dict[str, Any],
    uri: str,
    t0: float,
    *,
    mode: str,
    outputs: tuple[Published, ...] = (),
) -> RunSummary:
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
        return _summary(cfg, done, work.uri(work.map_key(tag)), t0, mode="map")
    started = datetime.now(UTC)
    dataset = dataset_of(cfg)
    with tempfile.TemporaryDirectory(prefix=f"dsjob-map-{cfg.run_id}-", dir=cfg.work_root) as tmp:
        s3 = work.s3 if isinstance(cfg.input, S3Location) else None
        fetched = fetch(cfg.input, Path(tmp), s3)
        if fetched.size == 0:
            msg = f"input {source} is empty (0 bytes): a fan-out maps data objects only"
            raise MalformedInputError(msg)
        step = settings(cfg, Path(tmp))
        out = _in_worker(
            lambda: shuffle.map_object(fetched.path, Path(tmp) / "map", step, cfg.partitions)
        )
        files = {}
        for k, (path, rows) in sorted(out.files.items()):
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
    return _summary(cfg, record, work.uri(work.map_key(tag)), t0, mode="map")


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
        outputs = tuple(Published(**o) for o in done["outputs"])
        return _summary(cfg, done, work.uri(work.reduce_key(k)), t0, mode="reduce", outputs=outputs)
    records = map_records(work, cfg)
    types = shuffle.global_types(records)
    stem = output_stem(cfg, records)
    published: list[Published] = []
    rows = 0
    with tempfile.TemporaryDirectory(
        prefix=f"dsjob-reduce-{cfg.run_id}-", dir=cfg.work_root
    ) as tmp:
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
            written, rows = _in_worker(lambda: shuffle.reduce_partition(files, types, target, step))
            for path in written:
                key = stem + path.name
                meta = {
                    "run-id": cfg.run_id,
                    "dataset": records[0]["dataset"],
                    "record-count": str(rows),
                }
                size, digest = work.put_verified(key, path, meta)
                published.append(Published(key, work.uri(key), size, digest, rows))
    record = {
        "partition": k,
        "partitions": cfg.partitions,
        "maps": sorted(r["tag"] for r in records),
        "types": types,
        "rows_in": sum(r["files"].get(str(k), {}).get("rows", 0) for r in records),
        "rows_out": rows,
        "outputs": [p.__dict__ for p in published],
    }
    record = work.put_record(work.reduce_key(k), record)
    LOGGER.info("reduced", extra={"partition": k, "rows_out": rows})
    outputs = tuple(Published(**o) for o in record["outputs"])
    return _summary(cfg, record, work.uri(work.reduce_key(k)), t0, mode="reduce", outputs=outputs)


def data_objects(clients: Clients, prefix: S3Location) -> list[str]:
    """Keys of the data objects under `prefix`: size above 0, no folder markers or hidden names."""
    from dsjob.aws import aws_errors, translate  # noqa: PLC0415

    keys, empty = [], 0
    try:
        pages = clients.s3.get_paginator("list_objects_v2").paginate(
            Bucket=prefix.bucket, Prefix=prefix.key
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if not name or name.startswith((".", "_")):
                    continue
                if obj["Size"] == 0:
                    empty += 1
                    continue
                keys.append(obj["Key"])
    except aws_errors() as exc:
        raise translate(exc, f"listing {prefix}", bucket=prefix.bucket) from exc
    if not keys:
        skipped = f" ({empty} zero-size object{'s' * (empty != 1)} skipped)" if empty else ""
        msg = f"no data objects under {prefix}{skipped}: nothing to fan out"
        raise InputError(msg)
    return sorted(keys)


def run_all(cfg: JobConfig, clients: Clients, prefix: S3Location) -> RunSummary:
    """Map every data object under `prefix`, reduce every partition, commit: all in-process.

    Args:
        cfg: the resolved configuration (phase and input are replaced per task).
        clients: AWS clients (the emulator's, for `dsjob local`).
        prefix: the input objects' bucket and key prefix.
    """
    keys = data_objects(clients, prefix)
    dataset = dataset_of(replace(cfg, input=S3Location(prefix.bucket, keys[0])))
    base = replace(cfg, dataset=dataset, sources={**cfg.sources, "dataset": "flag"})
    for key in keys:
        run_phase(replace(base, phase="map", input=S3Location(prefix.bucket, key)), clients)
    for k in range(cfg.partitions):
        run_phase(replace(base, phase="reduce", partition=k), clients)
    return run_phase(replace(base, phase="commit", partition=None), clients)
