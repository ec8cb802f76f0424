"""Memory and CPU limits for DuckDB, read from the container's cgroup (v2, then v1) or the host."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Memory kept back from the limit for the Python interpreter and the DuckDB binary.
_HEADROOM_BYTES = 200 * 1024**2
_MIN_MEMORY_BYTES = 128 * 1024**2


def default_memory_limit(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Bytes DuckDB may use: the cgroup or RAM limit minus headroom (never below 128 MiB)."""
    total = cgroup_memory_limit(cgroup_root) or os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )
    return max(_MIN_MEMORY_BYTES, min(int(total * 0.75), total - _HEADROOM_BYTES))


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The container's memory limit under ``root`` (cgroup v2, then v1), or None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            raw = path.read_text(encoding="ascii").strip()
        except OSError:
            continue
        # v2 says "max"; v1 reports "unlimited" as a huge number near 2**63.
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
    return None


def default_threads(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the cgroup CPU quota (v2, then v1), else the affinity mask."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota(cgroup_root)
    return max(1, min(quota, cpus or 1)) if quota else max(1, cpus or 1)


def _cgroup_cpu_quota(root: Path) -> int | None:
    """Whole CPUs the cgroup quota allows (rounded up), or None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text(encoding="ascii").split()
        return None if quota == "max" else -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period_us = int((v1 / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else -(-quota_us // period_us)
