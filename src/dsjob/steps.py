"""The work between fetching and publishing: the built-in DuckDB step or the custom script.

Each step runs in a worker thread while the main thread waits in Python, so a
SIGTERM (ECS stop) is handled at once even while DuckDB holds its thread in C.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from dsjob import stop
from dsjob.errors import MalformedInputError
from dsjob.preflight import check_input_format
from dsjob.queryprogress import QueryProgress
from dsjob.storage import fetch

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from dsjob.config import JobConfig, Location
    from dsjob.storage import FetchedFile

T = TypeVar("T")
REPORT_NAME = ".dsjob-report.json"  # in the work dir, so it is never published


def in_worker(func: Callable[[], T], poll: Callable[[], None] | None = None) -> T:
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


def fetch_all(
    cfg: JobConfig,
    work: Path,
    s3: S3Client | None,
    *,
    progress: bool,
) -> dict[str, FetchedFile]:
    """Download (or copy) the input and each artifact into the work dir; check the input."""
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


def run_builtin(
    cfg: JobConfig, fetched: dict[str, FetchedFile], work: Path, output_dir: Path, *, progress: bool
) -> tuple[int | None, dict[str, int], dict[str, int | None]]:
    """The built-in DuckDB step: rows in, rows dropped by reason, records per output file."""
    from dsjob import processing  # noqa: PLC0415 - loads duckdb

    # Drawn on a TTY in text mode only: JSON logs (CloudWatch) get no \r lines.
    bar = QueryProgress("processing", enabled=progress and sys.stderr.isatty())
    transform = fetched.get("transform")
    settings = processing.ProcessSettings(
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
        result = in_worker(
            lambda: processing.run_builtin(fetched["input"].path, output_dir, settings),
            poll=bar.poll,
        )
    finally:
        bar.finish()
    records: dict[str, int | None] = {
        f.relative_to(output_dir).as_posix(): result.rows_out for f in result.files
    }
    return result.rows_in, dict(result.dropped), records


def run_script(
    cfg: JobConfig, fetched: dict[str, FetchedFile], work: Path, output_dir: Path
) -> tuple[int | None, dict[str, int], dict[str, int | None]]:
    """script.py with its package: rows in, no drops, records per output file it wrote."""
    from dsjob import custom  # noqa: PLC0415
    from dsjob.archive import safe_extract  # noqa: PLC0415
    from dsjob.context import JobContext  # noqa: PLC0415

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
    custom.run_script(fetched["script"].path, ctx, timeout=cfg.script_timeout)
    rows_in = count_records(fetched["input"].path)
    records = {
        p.relative_to(output_dir).as_posix(): count_records(p)
        for p in sorted(output_dir.rglob("*"))
        if p.is_file()
    }
    return rows_in, {}, records
