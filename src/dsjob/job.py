"""The orchestrator: fetch -> process -> publish, in that order, nothing else."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dsjob import history, record, steps, stop, workdir
from dsjob.config import S3Location
from dsjob.context import read_report
from dsjob.errors import MalformedInputError, UserCodeError
from dsjob.localstore import LocalStore
from dsjob.preflight import preflight
from dsjob.publish import Published, already_published, manifest_key, publish
from dsjob.schedule import tick_run_id
from dsjob.storage import OutputStore, is_s3

if TYPE_CHECKING:
    from pathlib import Path

    from dsjob.aws import Clients
    from dsjob.config import JobConfig
    from dsjob.publish import PublishResult

LOGGER = logging.getLogger(__name__)


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
    with workdir.work_dir(f"dsjob-{cfg.run_id}-", cfg.work_root) as work:
        timings: dict[str, float] = {}
        mark = time.perf_counter()
        fetched = steps.fetch_all(cfg, work, s3, progress=progress)
        timings["fetch_s"] = round(time.perf_counter() - mark, 3)
        stop.checkpoint("after fetching the inputs")
        output_dir = work / "output"
        output_dir.mkdir()
        mark = time.perf_counter()
        metrics: dict[str, Any] = {}
        rows_out: int | None = None
        if "script" in fetched:
            mode, rows_in, dropped, records = (
                "script",
                *steps.run_script(cfg, fetched, work, output_dir),
            )
            report = read_report(work / steps.REPORT_NAME)
            rows_in = report.get("rows_in", rows_in)
            rows_out = report.get("rows_out")
            dropped, metrics = report.get("dropped", {}), report.get("metrics", {})
        else:
            mode, rows_in, dropped, records = (
                "builtin",
                *steps.run_builtin(cfg, fetched, work, output_dir, progress=progress),
            )
        timings["process_s"] = round(time.perf_counter() - mark, 3)
        stop.checkpoint("after processing")
        if rows_out is None:
            rows_out = _rows_out(mode, records, output_dir)
        mark = time.perf_counter()
        manifest = record.manifest_body(
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
            metadata=record.output_metadata(cfg, started, fetched),
            records=records,
            keep_outputs=cfg.keep_outputs,
            manifest=manifest,
        )
        timings["publish_s"] = round(time.perf_counter() - mark, 3)
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
