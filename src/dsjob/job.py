"""The orchestrator: fetch -> process -> publish, in that order, nothing else."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dsjob import history, stop, version, workdir
from dsjob.config import S3Location
from dsjob.context import read_report
from dsjob.errors import ConfigError, MalformedInputError, UserCodeError
from dsjob.preflight import check_input_format, preflight
from dsjob.publish import Published, already_published, manifest_key, publish
from dsjob.queryprogress import QueryProgress
from dsjob.storage import LocalStore, OutputStore, fetch, is_s3, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

    from dsjob.aws import Clients
    from dsjob.config import JobConfig, Location
    from dsjob.publish import PublishResult
    from dsjob.storage import FetchedFile

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_NAME = ".dsjob-report.json"  # in the work dir, so it is never published


@dataclass(frozen=True)
class RunSummary:
    """What one run did, for the CLI's summary and status line."""

    run_id: str
    status: str  # "succeeded" or "already-published"
    mode: str  # "builtin" or "script"
    rows_in: int | None
    rows_out: int | None
    dropped: dict[str, int]
    outputs: tuple[Published, ...]
    manifest_uri: str
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # what script.py reported


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "dsjob": version()}
    for dist in ("duckdb", "boto3", "botocore", "pandas", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def make_store(
    cfg: JobConfig, clients: Clients | None, *, progress: bool
) -> tuple[OutputStore, str]:
    """The output store and the key prefix inside it."""
    if isinstance(cfg.output, S3Location):
        from dsjob.s3store import S3Store  # noqa: PLC0415 - boto3 loads only for S3 output

        assert clients is not None  # noqa: S101 - resolve() guarantees clients for S3 output
        store = S3Store(clients.s3, cfg.output.bucket, progress=progress, checkpoint=_checkpoint)
        return store, cfg.output.key
    return LocalStore(cfg.output), ""


def _in_worker(func: Callable[[], T], poll: Callable[[], None] | None = None) -> T:
    """Run `func` in a thread while the main thread waits in Python (calling `poll` each 0.1 s).

    DuckDB holds the calling thread in C for the whole query, where Python signal
    handlers cannot run; waiting here keeps SIGTERM (ECS stop) handled at once.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="dsjob-step", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        stop.checkpoint("while processing")
        if poll is not None:
            poll()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def tick_run_id(scheduled_time: str) -> str:
    """The run id of a schedule tick: ``scheduled-YYYYMMDDTHHMMSSZ`` of the tick in UTC.

    Every delivery of one tick (EventBridge Scheduler delivers at least once) gets
    the same id, so the second one finds the first one's manifest and publishes
    nothing. The id does not depend on the cadence: a monthly tick on 1 January
    2027 is ``scheduled-20270101T000000Z``.
    """
    try:
        tick = datetime.fromisoformat(scheduled_time.strip())
    except ValueError as exc:
        msg = f"scheduled-time must be an ISO 8601 time, got {scheduled_time!r}"
        raise ConfigError(msg) from exc
    if tick.tzinfo is None:
        tick = tick.replace(tzinfo=UTC)  # the scheduler's <aws.scheduler.scheduled-time> is UTC
    return tick.astimezone(UTC).strftime("scheduled-%Y%m%dT%H%M%SZ")


def count_records(path: Path) -> int | None:
    """Rows in a CSV or Parquet file (None for other files or when unreadable)."""
    suffix = "".join(path.suffixes).lower()
    if not suffix.startswith((".csv", ".parquet", ".tsv")):
        return None
    import duckdb  # noqa: PLC0415 - the data engine loads only when data is touched

    reader = "read_parquet" if suffix.startswith(".parquet") else "read_csv"
    try:
        with duckdb.connect() as con:
            row = con.execute(f"SELECT count(*) FROM {reader}(?)", [str(path)]).fetchone()  # noqa: S608 - reader is one of two literals
    except duckdb.Error:
        return None
    return int(row[0]) if row else None


def run(cfg: JobConfig, clients: Clients | None, *, progress: bool = False) -> RunSummary:
    """Run the job once.

    Args:
        cfg: the resolved configuration.
        clients: AWS clients (None in pure local mode).
        progress: draw transfer progress bars (TTY text mode).
    """
    if cfg.phase != "single":  # map / reduce / commit of a fan-out run
        from dsjob import fanout  # noqa: PLC0415 - imports this module

        return fanout.run_phase(cfg, clients)
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    if cfg.scheduled_time and "run-id" not in cfg.sources:
        cfg = dataclasses.replace(cfg, run_id=tick_run_id(cfg.scheduled_time))
        LOGGER.info("run id from the schedule tick", extra={"run_id": cfg.run_id})
    store, prefix = make_store(cfg, clients, progress=progress)
    if history.read_manifest(store, manifest_key(prefix, cfg.run_id)) is not None:
        result = already_published(store, prefix, cfg.run_id, cfg.keep_outputs)
        return _summary_of(cfg, store, prefix, result, t0)
    preflight(cfg, clients)

    s3 = (
        clients.s3
        if clients is not None
        and any(is_s3(x) for x in (cfg.input, cfg.model, cfg.script, cfg.package, cfg.transform))
        else None
    )
    work = Path(tempfile.mkdtemp(prefix=f"dsjob-{cfg.run_id}-", dir=cfg.work_root))
    try:
        timings: dict[str, float] = {}
        mark = time.perf_counter()
        fetched = _fetch_all(cfg, work, s3, progress=progress)
        timings["fetch_s"] = round(time.perf_counter() - mark, 3)
        stop.checkpoint("after fetching the inputs")
        output_dir = work / "output"
        output_dir.mkdir()
        mark = time.perf_counter()
        metrics: dict[str, Any] = {}
        rows_out: int | None = None
        if "script" in fetched:
            mode, rows_in, dropped, records = "script", *_run_script(cfg, fetched, work, output_dir)
            report = read_report(work / REPORT_NAME)
            rows_in = report.get("rows_in", rows_in)
            rows_out = report.get("rows_out")
            dropped, metrics = report.get("dropped", {}), report.get("metrics", {})
        else:
            mode, rows_in, dropped, records = (
                "builtin",
                *_run_builtin(cfg, fetched, work, output_dir, progress=progress),
            )
        timings["process_s"] = round(time.perf_counter() - mark, 3)
        stop.checkpoint("after processing")
        if rows_out is None:
            rows_out = _rows_out(mode, records, output_dir)
        mark = time.perf_counter()
        manifest = _manifest(
            cfg,
            started=started,
            fetched=fetched,
            rows_in=rows_in,
            rows_out=rows_out,
            dropped=dropped,
            timings=timings,
            mode=mode,
        )
        if metrics:
            manifest["counts"]["metrics"] = metrics
        result = publish(
            store,
            output_dir,
            prefix=prefix,
            stamp=started.strftime("%Y%m%d_%H%M%S"),
            run_id=cfg.run_id,
            dataset=cfg.dataset,
            metadata=_metadata(cfg, started, fetched),
            records=records,
            keep_outputs=cfg.keep_outputs,
            manifest=manifest,
        )
        timings["publish_s"] = round(time.perf_counter() - mark, 3)
    finally:
        if os.environ.get("DSJOB_KEEP_WORK") != "1":
            workdir.remove_tree(work)
    if result.already_published:  # another attempt of this run id committed first
        return _summary_of(cfg, store, prefix, result, t0)
    return RunSummary(
        run_id=cfg.run_id,
        status="succeeded",
        mode=mode,
        rows_in=rows_in,
        rows_out=rows_out,
        dropped=dropped,
        outputs=result.objects,
        manifest_uri=result.manifest_uri,
        duration_s=round(time.perf_counter() - t0, 3),
        timings=timings,
        metrics=metrics,
    )


def _checkpoint() -> None:
    """Raise if the job was asked to stop (SIGTERM/SIGINT): between and during uploads."""
    stop.checkpoint("while publishing")


def _rows_out(mode: str, records: dict[str, int | None], output_dir: Path) -> int | None:
    """Rows the run produced; a result with none never replaces earlier outputs.

    The built-in step writes the same rows once per format, so its count is the
    step's own, not a sum over files. A script's files may hold different data:
    its count is the sum over the files that can be counted.
    """
    if mode == "builtin":
        rows = next(iter(records.values()), None)
        if not rows:
            raise MalformedInputError(
                "no rows left after cleaning and deduplication: nothing published, "
                "earlier outputs kept"
            )
        return rows
    files = [p for p in output_dir.rglob("*") if p.is_file()]
    if files and all(
        p.stat().st_size == 0 or records.get(p.relative_to(output_dir).as_posix()) == 0
        for p in files
    ):
        raise UserCodeError(
            "script.py wrote only empty outputs (0 bytes or 0 rows): nothing published, "
            "earlier outputs kept"
        )
    counted = [v for v in records.values() if v is not None]
    return sum(counted) if counted else None


def _fetch_all(
    cfg: JobConfig,
    work: Path,
    s3: S3Client | None,
    *,
    progress: bool,
) -> dict[str, FetchedFile]:
    fetched: dict[str, FetchedFile] = {}
    wanted: list[tuple[str, Location | None]] = [
        ("input", cfg.input),
        ("model", cfg.model),
        ("script", cfg.script),
        ("package", cfg.package),
        ("transform", cfg.transform),
    ]
    for name, location in wanted:
        if location is None:
            continue
        dest = work / "inputs" / name
        dest.mkdir(parents=True)
        fetched[name] = fetch(location, dest, s3, progress=progress and name == "input")
    if fetched["input"].size == 0:
        raise MalformedInputError(f"input {fetched['input'].source} is empty (0 bytes)")
    check_input_format(fetched["input"].path, fetched["input"].source)
    return fetched


def _run_builtin(
    cfg: JobConfig, fetched: dict[str, FetchedFile], work: Path, output_dir: Path, *, progress: bool
) -> tuple[int | None, dict[str, int], dict[str, int | None]]:
    from dsjob.processing import ProcessSettings, run_builtin  # noqa: PLC0415 - loads duckdb

    # Drawn on a TTY in text mode only: JSON logs (CloudWatch) get no \r lines.
    bar = QueryProgress("processing", enabled=progress and sys.stderr.isatty())
    transform = fetched.get("transform")
    settings = ProcessSettings(
        id_column=cfg.id_column,
        output_formats=cfg.output_formats,
        dataset=cfg.dataset,
        transform_sql=transform.path.read_text(encoding="utf-8") if transform else None,
        on_bad_rows=cfg.on_bad_rows,
        memory_limit=cfg.memory_limit,
        threads=cfg.threads,
        temp_dir=work / "spill",
        on_connect=bar.attach if bar.enabled else None,
    )
    try:
        result = _in_worker(
            lambda: run_builtin(fetched["input"].path, output_dir, settings), poll=bar.poll
        )
    finally:
        bar.finish()
    records: dict[str, int | None] = {
        f.relative_to(output_dir).as_posix(): result.rows_out for f in result.files
    }
    return result.rows_in, dict(result.dropped), records


def _run_script(
    cfg: JobConfig, fetched: dict[str, FetchedFile], work: Path, output_dir: Path
) -> tuple[int | None, dict[str, int], dict[str, int | None]]:
    from dsjob.archive import safe_extract  # noqa: PLC0415
    from dsjob.context import JobContext  # noqa: PLC0415
    from dsjob.custom import run_script  # noqa: PLC0415

    if "package" in fetched:
        safe_extract(fetched["package"].path, work)
    model = fetched.get("model")
    ctx = JobContext(
        input_path=fetched["input"].path,
        model_path=model.path if model else None,
        output_dir=output_dir,
        run_id=cfg.run_id,
        work_dir=work,
        report_path=work / REPORT_NAME,
    )
    run_script(fetched["script"].path, ctx, timeout=cfg.script_timeout)
    rows_in = count_records(fetched["input"].path)
    records = {
        p.relative_to(output_dir).as_posix(): count_records(p)
        for p in sorted(output_dir.rglob("*"))
        if p.is_file()
    }
    return rows_in, {}, records


def _metadata(cfg: JobConfig, started: datetime, fetched: dict[str, FetchedFile]) -> dict[str, str]:
    meta = {
        "generated-at": started.isoformat(timespec="seconds"),
        "dsjob-version": version(),
        "dataset": cfg.dataset,
        "input-etag": fetched["input"].etag,
    }
    for name in ("script", "package", "transform"):
        if name in fetched:
            meta[f"{name}-sha256"] = sha256_file(fetched[name].path)
    return meta


def _manifest(
    cfg: JobConfig,
    *,
    started: datetime,
    fetched: dict[str, FetchedFile],
    rows_in: int | None,
    rows_out: int | None,
    dropped: dict[str, int],
    timings: dict[str, float],
    mode: str,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for name, item in fetched.items():
        entry: dict[str, Any] = {"source": item.source, "bytes": item.size, "etag": item.etag}
        if name in ("script", "package", "transform"):
            entry["sha256"] = sha256_file(item.path)
        inputs[name] = entry
    return {
        "run_id": cfg.run_id,
        "status": "succeeded",
        "mode": mode,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.redacted(),
        "inputs": inputs,
        "counts": {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped},
        "timings": timings,
        "versions": _versions(),
    }


def _summary_of(
    cfg: JobConfig, store: OutputStore, prefix: str, result: PublishResult, t0: float
) -> RunSummary:
    """A re-run of a committed run id reports the earlier result instead of publishing twice."""
    manifest = history.read_manifest(store, manifest_key(prefix, cfg.run_id)) or {}
    LOGGER.info("run id already published; nothing new", extra={"run_id": cfg.run_id})
    counts = manifest.get("counts", {})
    return RunSummary(
        run_id=cfg.run_id,
        status="already-published",
        mode=manifest.get("mode", "builtin"),
        rows_in=counts.get("rows_in"),
        rows_out=counts.get("rows_out"),
        dropped=counts.get("dropped", {}),
        metrics=counts.get("metrics", {}),
        outputs=result.objects,
        manifest_uri=result.manifest_uri,
        duration_s=round(time.perf_counter() - t0, 3),
    )
