"""Case 2: the built-in step in the prod image under --memory 512m, side by side with polars.

On the run's largest input (bench/run.py's sizes) it compares the step *inside* a
512 MiB container with polars' streaming engine on the host (it needs several GB, so
it cannot run under the same cap), on the same file in the same run. Rounds alternate
container and polars so load on a shared machine falls on both alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
from typing import TYPE_CHECKING

from bench.harness.measure import (
    MIB,
    PY,
    ROOT,
    WORK,
    Sample,
    container_engine,
    dataset,
    image_exists,
    image_name,
    measure,
)
from bench.harness.report import span

if TYPE_CHECKING:
    from pathlib import Path

    from bench.harness.report import Report

TITLE = "2. Memory-bounded (prod image, --memory 512m)"
#: BENCH_IMAGE_SRC=1 bind-mounts this checkout's src/dsjob over the image's copy, so
#: the step measured is the checkout's even when the image was built from an older commit.
MOUNT_SRC = os.environ.get("BENCH_IMAGE_SRC") == "1"


def container_out(name: str = "container") -> Path:
    """A fresh bind-mount directory the container user can write."""
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # The image runs as a numeric non-root user; let it write the bind mount.
    out.chmod(0o777)
    return out


# Peak RSS of the job process (wait4 from a tiny Python parent), then the cgroup's
# peak usage -- which on cgroup v1 also counts page cache (input read, spill files).
_WRAP = (
    "python -c 'import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    'print("rss", u.ru_maxrss * 1024, file=sys.stderr); '
    'print("cpu", round((u.ru_utime + u.ru_stime) * 1000), file=sys.stderr); '
    "sys.exit(rc)'"
)
_PEAK = (
    "echo cgroup $(cat /sys/fs/cgroup/memory.peak 2>/dev/null "
    "|| cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || echo unknown)"
)
_LIMIT = ["--memory", "512m", "--memory-swap", "512m"]


def _package_dir(engine: str, image: str) -> str | None:
    """Where the image installed the dsjob package (to mount the checkout's over it)."""
    found = subprocess.run(
        [engine, "run", "--rm", "--entrypoint", "python", image, "-c",
         "import dsjob, os; print(os.path.dirname(dsjob.__file__))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return found.stdout.strip() or None


def case_memory_bounded(report: Report, rows: int, rounds: int = 1) -> None:
    """The big file through the prod image under --memory 512m, polars beside it, then pandas."""
    engine = container_engine()
    name = image_name()
    prod, dev = f"{name}:prod", f"{name}:dev"
    if engine is None or not image_exists(engine, prod):
        report.add(TITLE, f"not run: no engine/image ({engine or 'no container engine'}, {prod})")
        return
    src = dataset(rows)
    size_mb = src.stat().st_size / 1e6
    mounts = ["-v", f"{src.parent}:/data:ro"]
    code = f"the image's own dsjob ({prod})"
    package = _package_dir(engine, prod) if MOUNT_SRC else None
    if package:
        mounts += ["-v", f"{ROOT / 'src' / 'dsjob'}:{package}:ro"]
        code = f"this checkout's src/dsjob mounted over the image's ({prod}, BENCH_IMAGE_SRC=1)"
    job = (
        f"{_WRAP} dsjob run --input /data/{src.name} --output-dir /out/builtin --log-format json"
        f" 2>&1 > /out/job.log; rc=$?; {_PEAK}; exit $rc"
    )
    boxed: list[Sample] = []
    polars: list[Sample] = []
    status = "no run"
    step_seconds: list[float | None] = []
    for i in range(rounds):
        out = container_out()
        boxed.append(
            measure(
                [
                    engine,
                    "run",
                    "--rm",
                    *_LIMIT,
                    *mounts,
                    "-v",
                    f"{out}:/out",
                    "--entrypoint",
                    "sh",
                    prod,
                    "-c",
                    job,
                ]
            )
        )
        status = _last_json(out / "job.log")
        step_seconds.append(_step_seconds(boxed[-1].stdout))
        host = WORK / "engines" / f"polars-bounded-{i}"
        shutil.rmtree(host, ignore_errors=True)
        polars.append(
            measure([PY, str(ROOT / "bench" / "engines.py"), "polars", str(src), str(host)])
        )
        shutil.rmtree(host, ignore_errors=True)
    lines = [
        (
            f"Input: {rows:,} rows ({size_mb:,.0f} MB); {rounds} round(s), container and host "
            f"polars alternating; code measured: {code}. Process peak RSS comes from wait4 "
            "inside the container; polars runs on the host without a cap (it needs GBs)."
        ),
        "",
        (
            "| run | where | exits | wall s, median (min-max) | MB/s | process peak RSS MiB "
            "| cgroup peak MiB | result |"
        ),
        "|---|---|---|---|---|---|---|---|",
        (
            f"| built-in `dsjob run` | {prod}, --memory 512m | "
            f"{', '.join(str(s.returncode) for s in boxed)} | {span([s.wall for s in boxed])} "
            f"| {size_mb / statistics.median(s.wall for s in boxed):,.0f} "
            f"| {_peak_mib(''.join(s.stdout for s in boxed))} | {status}; CPU s "
            f"{_cpu(boxed)}; the step itself {_seconds(step_seconds)} s |"
        ),
        (
            f"| polars `scan_csv → unique → sink_parquet` | host | "
            f"{', '.join(str(s.returncode) for s in polars)} | {span([s.wall for s in polars])} "
            f"| {size_mb / statistics.median(s.wall for s in polars):,.0f} "
            f"| {max(s.rss for s in polars) / MIB:,.0f} | - | CPU s "
            f"{statistics.median(s.cpu for s in polars):.1f} |"
        ),
    ]
    _judge(report, rows, boxed, polars)
    lines.append(_pandas_row(engine, dev if image_exists(engine, dev) else prod, src))
    lines += [
        "",
        (
            "Wall time includes container start; the job reads the input in place from the "
            "bind mount and spills under its work dir in the container. The cgroup peak counts "
            "page cache too (cgroup v1 here), so it sits near the limit whenever files are "
            "read or written; the process peak RSS is what the memory target is about. "
            "The container run's CPU seconds are the job's own (getrusage of its children "
            "inside the container); 'the step itself' is the built-in step's own log line."
        ),
    ]
    report.add(TITLE, "\n".join(lines))


def _judge(report: Report, rows: int, boxed: list[Sample], polars: list[Sample]) -> None:
    """The 512 MiB-container target: at or below polars' wall, under 512 MiB, exit 0."""
    if any(s.returncode for s in (*boxed, *polars)):
        report.targets.append(
            f"| 512 MiB container vs polars at {rows:,} rows | a run failed | - |"
        )
        return
    rss = re.findall(r"^rss (\d+)$", "".join(s.stdout for s in boxed), re.MULTILINE)
    peak = max((int(r) for r in rss), default=0) / MIB
    box, pol = statistics.median(s.wall for s in boxed), statistics.median(s.wall for s in polars)
    report.target(
        f"built-in in the prod image with --memory 512m at or below polars' wall at {rows:,} rows",
        f"{box:.1f} s vs polars {pol:.1f} s ({pol / box:.2f}x polars' speed), process peak "
        f"{peak:,.0f} MiB",
        met=box <= pol and 0 < peak < 512,
    )


def _pandas_row(engine: str, image: str, src: Path) -> str:
    """The pandas way under the same cap (expected to be killed at 10 M rows)."""
    out = container_out("container-pandas")
    script = (
        f"{_WRAP} python /bench/engines.py pandas /data/{src.name} /out/pandas"
        f" 2>&1 > /out/pandas.log; rc=$?; {_PEAK}; exit $rc"
    )
    pandas = measure(
        [engine, "run", "--rm", *_LIMIT, "-v", f"{src.parent}:/data:ro", "-v", f"{out}:/out",
         "-v", f"{ROOT / 'bench'}:/bench:ro", "--entrypoint", "sh", image, "-c", script]
    )  # fmt: skip
    tail = (out / "pandas.log").read_text(encoding="utf-8", errors="replace").strip()
    verdict = (
        "killed (out of memory)"
        if pandas.returncode in {137, 247, -9} or "MemoryError" in tail
        else (tail.splitlines()[-1][:120] if tail else "ok")
    )
    return (
        f"| pandas way | {image}, --memory 512m | {pandas.returncode} | {pandas.wall:.1f} | "
        f"| {_peak_mib(pandas.stdout)} | {verdict} |"
    )


def _cpu(samples: list[Sample]) -> str:
    """Median CPU seconds the wrapper inside the container reported (``cpu <ms>`` lines)."""
    lines = "".join(s.stdout for s in samples)
    found = [int(v) / 1000 for v in re.findall(r"^cpu (\d+)$", lines, re.MULTILINE)]
    return f"{statistics.median(found):.1f}" if found else "unknown"


def _step_seconds(output: str) -> float | None:
    """The built-in step's own seconds from its 'built-in step done' log line.

    The job's log goes to stderr, which the wrapper's ``2>&1 > file`` sends to the
    harness's pipe (stdout alone goes to job.log).
    """
    for line in output.splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            entry = json.loads(line)
            if entry.get("message") == "built-in step done":
                return float(entry["seconds"])
    return None


def _seconds(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return span(known, "{:.1f}") if known else "unknown"


def _peak_mib(stdout: str) -> str:
    """'process | cgroup' MiB columns from the wrapper's ``rss N`` and ``cgroup N`` lines."""
    found: dict[str, int] = {}
    for key, value in re.findall(r"^(rss|cgroup) (\d+)$", stdout, re.MULTILINE):
        found[key] = max(found.get(key, 0), int(value))
    return " | ".join(
        f"{found[k] / MIB:,.0f}" if k in found else "unknown" for k in ("rss", "cgroup")
    )


def _last_json(log: Path) -> str:
    """The job's final one-line JSON status, shortened."""
    if not log.exists():
        return "no log"
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            status = json.loads(line)
            if isinstance(status, dict) and "status" in status:
                keep = {k: status[k] for k in ("status", "rows_in", "rows_out") if k in status}
                return json.dumps(keep)
    return "no status line"
