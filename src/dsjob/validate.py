"""Checks of single configuration values: S3 names, sizes, counts, durations.

Each check returns the (possibly normalised) value, or appends one problem naming
the parameter to ``problems`` so that ``config.resolve`` reports every problem at once.
This is the only place the job's settings are validated; the steps trust ``JobConfig``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

LOGGER = logging.getLogger(__name__)

# S3 bucket names as botocore checks them before sending a request (its
# ``validate_bucket_name`` handler), which also admits legacy us-east-1 names;
# access point and Outposts ARNs are bucket values too. New buckets follow the
# stricter "General purpose bucket naming rules" (docs.aws.amazon.com/AmazonS3/
# latest/userguide/bucketnamingrules.html); botocore's rule is the one whose
# violation would otherwise fail late, with its regex in the message.
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_ARN = re.compile(r"^arn:[a-z-]+:(s3|s3-outposts|s3-object-lambda):[^\s]*$")
# Object keys: up to 1024 bytes of UTF-8 ("Naming Amazon S3 objects",
# docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html).
_MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The output prefix is written, never read from elsewhere: keep it to the
# characters that guide calls safe (plus `=` for Hive-style partition folders).
_PREFIX_CHARS = re.compile(r"^[A-Za-z0-9!_.*'()=/-]*$")
# The dataset names output files and travels in S3 user metadata, which must be ASCII.
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# DuckDB's size syntax (``SET memory_limit``): a number, optional blanks, a unit.
# Units as DuckDB 2.0 parses them (case-insensitive); the percentage is of the
# memory DuckDB detects, which is what ``memory_available`` measures.
_SIZE = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)
_UNITS = {
    **dict.fromkeys(("b", "byte", "bytes"), 1),
    **dict.fromkeys(("k", "kb", "kilobyte", "kilobytes"), 1000),
    **dict.fromkeys(("m", "mb", "megabyte", "megabytes"), 1000**2),
    **dict.fromkeys(("g", "gb", "gigabyte", "gigabytes"), 1000**3),
    **dict.fromkeys(("t", "tb", "terabyte", "terabytes"), 1000**4),
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
# Below this DuckDB cannot hold the buffers of an ordinary query; a policy, not a law.
MIN_MEMORY_BYTES = 64 * 1024**2


def bucket(name: str, value: str, problems: list[str]) -> str:
    """A bucket name, with surrounding blanks, an ``s3://`` scheme and a trailing ``/`` removed.

    Those three are what users mean when they paste a console URI; anything else that
    is not a bucket name (a key after the bucket, blanks inside) is a problem.
    """
    cleaned = value.strip()
    if cleaned.lower().startswith("s3://"):
        cleaned = cleaned[5:]
    cleaned = cleaned.rstrip("/")
    if _ARN.match(cleaned):
        return cleaned
    if "/" in cleaned:
        problems.append(
            f"{name} must be a bucket name, got {value!r} "
            f"(put the part after the bucket into the matching -key parameter)"
        )
    elif not _BUCKET.match(cleaned):
        problems.append(
            f"{name} must be an S3 bucket name (letters, digits, '.', '-', '_'), got {value!r}"
        )
    elif cleaned != value:
        LOGGER.warning("%s %r read as bucket %r", name, value, cleaned)
    return cleaned


def key(name: str, value: str, problems: list[str], *, allow_prefix: bool = False) -> str:
    """An object key the job reads: no blanks at either end, no ``.``/``..`` segments.

    S3 itself allows both, but a key ending in a blank is a paste accident, and ``..``
    means a parent folder only to people, never to S3: either way the user would be
    told "not found" about a key they cannot see.

    Args:
        name: the parameter, named in the problem.
        value: the key.
        problems: where a problem is appended.
        allow_prefix: a trailing ``/`` is allowed (a folder of inputs for a fan-out run).
    """
    why = _key_problem(value, allow_prefix=allow_prefix)
    if why:
        problems.append(f"{name} {value!r} is not a usable object key: {why}")
    return value


def _key_problem(value: str, *, allow_prefix: bool) -> str | None:  # noqa: PLR0911 - one per rule
    if not value:
        return "it is empty"
    if value != value.strip():
        return "it starts or ends with a blank"
    if _CONTROL.search(value):
        return "it holds a control character (newline, tab, ...)"
    if value.startswith("/"):
        return "it starts with '/' (S3 keys have no leading slash)"
    if len(value.encode("utf-8")) > _MAX_KEY_BYTES:
        return f"it is longer than {_MAX_KEY_BYTES} bytes"
    segments = value.split("/")
    if segments[-1] == "" and not allow_prefix:
        return "it ends with '/' (a folder, not an object)"
    if any(s in (".", "..") for s in segments):
        return "it has a '.' or '..' segment"
    return None


def output_prefix(value: str, problems: list[str]) -> str:
    """The key prefix outputs are published under, ending in ``/`` unless empty."""
    if not value:
        return ""
    segments = value.rstrip("/").split("/")
    if value.startswith("/"):
        problems.append(f"output-prefix must not start with '/', got {value!r}")
    elif any(s in ("", ".", "..") for s in segments):
        problems.append(f"output-prefix must not hold '.', '..' or empty segments, got {value!r}")
    elif not _PREFIX_CHARS.match(value):
        problems.append(
            f"output-prefix may hold only ASCII letters, digits, '/' and !_.*'()=-, got {value!r}"
        )
    return value if value.endswith("/") else value + "/"


def dataset(value: str, problems: list[str]) -> str:
    """The output name stem: ASCII letters, digits and ``._-`` (it becomes S3 metadata)."""
    if not _DATASET.match(value):
        problems.append(
            "dataset must be 1-128 ASCII letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit (it names the outputs and is stored as S3 metadata), got {value!r}"
        )
    return value


def parse_size(text: str) -> int:
    """Bytes in a DuckDB size such as ``400MB``, ``1.5 GiB`` or ``75%``.

    Raises:
        ValueError: the text is not a size DuckDB accepts (the message says why).
    """
    match = _SIZE.match(text)
    if not match:
        msg = "expected a number and a unit, such as 400MB, 2GiB or 75%"
        raise ValueError(msg)
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < number <= 100:  # noqa: PLR2004 - a percentage
            msg = "a percentage must be above 0 and at most 100"
            raise ValueError(msg)
        return int(memory_available() * number / 100)
    if unit not in _UNITS:
        msg = f"unknown unit {unit!r} (DuckDB knows KB, MB, GB, TB, KiB, MiB, GiB, TiB, %)"
        raise ValueError(msg)
    return int(number * _UNITS[unit])


def memory_limit(value: str, problems: list[str]) -> str:
    """A DuckDB memory limit that fits in the memory this process may use."""
    try:
        size = parse_size(value)
    except ValueError as exc:
        problems.append(f"memory-limit {value!r} is not a size: {exc}")
        return value
    available = memory_available()
    if size < MIN_MEMORY_BYTES:
        problems.append(f"memory-limit {value!r} is below the minimum of 64MiB")
    elif size > available:
        problems.append(
            f"memory-limit {value!r} is more than the {available / 1024**3:.1f} GiB this "
            "machine or container has (omit it to use the container's limit)"
        )
    return value.strip()


def threads(value: int) -> int:
    """`value` capped at the CPUs this process may run on, with a warning when capped."""
    cpus = cpus_available()
    if value > cpus:
        LOGGER.warning("threads %d is more than the %d CPUs available; using %d", value, cpus, cpus)
        return cpus
    return value


def seconds(name: str, value: str, problems: list[str], *, default: float) -> float:
    """A positive, finite number of seconds (``nan`` and ``inf`` would never time out)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        problems.append(f"{name} must be a positive, finite number of seconds, got {value!r}")
        return default
    return number


def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return int(count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS and Windows have no affinity mask


def memory_available() -> int:
    """Bytes of memory this process may use: the cgroup limit, else the machine's RAM."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text(encoding="ascii").strip()
        except OSError:
            continue
        # cgroup v2 says "max" when unlimited; v1 says a number near 2**63.
        if raw.isdigit():
            return min(int(raw), physical)
    return physical
