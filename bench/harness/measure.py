"""Run one program as a child process and measure it: wall, peak RSS, CPU, first output line.

Wall time comes from this parent's clock, peak RSS and CPU seconds from
``os.wait4`` on the child. The deadline holds whether or not the child prints:
a silent hang is killed (with its whole process group) when time is up.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.paths import REPO
from tests.support.versions import VERSIONS

if TYPE_CHECKING:
    import resource
    from collections.abc import Sequence

ROOT = REPO  # the bench modules' name for it
DATA = Path(os.environ.get("BENCH_DATA", ROOT / "bench" / ".data"))
WORK = Path(os.environ.get("BENCH_WORK", ROOT / "bench" / ".work"))
PY = sys.executable
DSJOB = str(Path(PY).with_name("dsjob"))
MIB = 1024**2


@dataclass
class Sample:
    """One child process: wall seconds, peak RSS (bytes), CPU seconds, exit code, stdout."""

    wall: float
    rss: int
    cpu: float
    returncode: int
    stdout: str
    first_line_at: float | None = None
    timed_out: bool = False


def measure(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    first_line: bool = False,
) -> Sample:
    """Run ``cmd``; return its wall time, peak RSS and CPU time; kill it at ``timeout`` seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        text=True,
        start_new_session=True,  # one process group to kill, grandchildren included
    )
    chunks: list[str] = []
    first_at: list[float] = []

    def read() -> None:
        if proc.stdout is None:
            return
        for line in proc.stdout:
            if first_line and not first_at:
                first_at.append(time.perf_counter() - started)
            chunks.append(line)

    waited: list[tuple[int, int, resource.struct_rusage]] = []
    reader = threading.Thread(target=read, daemon=True)
    # wait4 blocks in its own thread, so the deadline below never depends on output.
    waiter = threading.Thread(target=lambda: waited.append(os.wait4(proc.pid, 0)), daemon=True)
    reader.start()
    waiter.start()
    waiter.join(timeout)
    timed_out = waiter.is_alive()
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        waiter.join()
    reader.join(5)
    wall = time.perf_counter() - started
    if proc.stdout is not None:
        proc.stdout.close()
    _, status, usage = waited[0]
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Sample(
        wall=wall,
        rss=usage.ru_maxrss * 1024,
        cpu=usage.ru_utime + usage.ru_stime,
        returncode=proc.returncode,
        stdout="".join(chunks),
        first_line_at=first_at[0] if first_at else None,
        timed_out=timed_out,
    )


def dataset(rows: int) -> Path:
    """The seeded member-like CSV with ``rows`` rows (generated once, then reused).

    Generated in a child process: this parent must stay small, because a child's
    ``ru_maxrss`` starts from the parent's RSS at fork/exec time on Linux.
    """
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"members_{rows}.csv"
    if not path.exists() or path.stat().st_size == 0:
        code = (
            "import sys; from pathlib import Path; from dsjob.sample import write_members_csv; "
            "write_members_csv(Path(sys.argv[1]), int(sys.argv[2]), seed=7)"
        )
        started = time.perf_counter()
        subprocess.run([PY, "-c", code, str(path), str(rows)], check=True)
        took = time.perf_counter() - started
        print(f"generated {path.name} in {took:.1f}s", file=sys.stderr, flush=True)
    return path


def machine() -> str:
    """Cores, memory, CPU model, kernel and the load while we ran (the machine may be shared)."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
    total = re.search(r"MemTotal:\s*(\d+) kB", meminfo)
    versions = []
    for dist in ("dsjob", "duckdb", "pandas", "pyarrow", "polars", "boto3", "moto"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    return (
        f"| | |\n|---|---|\n"
        f"| CPU | {model.group(1).strip() if model else platform.processor()} |\n"
        f"| cores (usable) | {len(os.sched_getaffinity(0))} |\n"
        f"| memory | {int(total.group(1)) // 1024 if total else 0} MiB |\n"
        f"| kernel | {platform.release()} |\n"
        f"| python | {platform.python_version()} |\n"
        f"| versions | {', '.join(versions)} |\n"
        f"| load average at start | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |\n"
    )


def container_engine() -> str | None:
    """The engine scripts/lib/container-engine.sh picks (the one source), if it answers."""
    lib = ROOT / "scripts" / "lib" / "container-engine.sh"
    picked = subprocess.run(
        ["bash", "-c", f'source "{lib}" && container_engine'],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not picked:
        return None
    try:
        probe = subprocess.run([picked, "info"], capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return picked if probe.returncode == 0 else None


def image_name() -> str:
    """IMAGE_NAME from the environment or config/versions.conf."""
    return os.environ.get("IMAGE_NAME") or VERSIONS["IMAGE_NAME"]


def image_exists(engine: str, ref: str) -> bool:
    """Whether the engine has the image locally."""
    inspect = subprocess.run([engine, "image", "inspect", ref], capture_output=True, check=False)
    return inspect.returncode == 0


def image_size(engine: str, ref: str) -> int:
    """The image's size in bytes as the engine reports it."""
    out = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())
