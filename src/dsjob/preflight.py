"""Checks before the work: output dir, work root and disk space, then the fetched input's format.

``preflight`` runs before anything is fetched, so a run that cannot finish fails in
seconds with exit 2 instead of after the whole step. ``check_input_format`` runs on
the fetched input, before processing, and refuses compressed data under a plain name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dsjob.config import S3Location
from dsjob.errors import ConfigError, MalformedInputError

if TYPE_CHECKING:
    from dsjob.aws import Clients
    from dsjob.config import JobConfig, Location

LOGGER = logging.getLogger(__name__)

# Leading bytes of formats that a plain `.csv` / `.tsv` / `.txt` name would hide.
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", ".gz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", ".zst"),
    (b"BZh", "bzip2-compressed", ".bz2"),
    (b"PK\x03\x04", "a zip archive", ".zip"),
    (b"PAR1", "Parquet", ".parquet"),
)
_PLAIN_SUFFIXES = (".csv", ".tsv", ".txt")


def preflight(cfg: JobConfig, clients: Clients | None) -> None:
    """Fail before any download when the run could not publish or would not fit on disk.

    Checks the local output directory (a directory, or creatable, and writable), the
    work root (exists, a directory, writable) and that the work root's filesystem has
    room for every object the run downloads (their sizes from HEAD, or stat).

    Args:
        cfg: the resolved configuration.
        clients: AWS clients for the HEAD requests (None in pure local mode).

    Raises:
        ConfigError: naming the path (and, for space, the download and both sizes).
        MissingObjectError: an S3 input does not exist (exit 3, before any work).
    """
    problems: list[str] = []
    if isinstance(cfg.output, Path):
        _check_writable_dir("output-dir", cfg.output, problems, may_create=True)
    root = cfg.work_root if cfg.work_root is not None else Path(tempfile.gettempdir())
    _check_writable_dir("work-root", root, problems, may_create=False)
    if problems:
        raise ConfigError("; ".join(problems))
    _check_space(cfg, root, clients)


def _check_writable_dir(name: str, path: Path, problems: list[str], *, may_create: bool) -> None:
    if path.exists():
        if not path.is_dir():
            problems.append(f"{name} {path} is a file, not a directory")
        elif not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"{name} {path} is not writable")
        return
    if not may_create:
        problems.append(f"{name} {path} does not exist (create it, or omit {name})")
        return
    # The store creates the directory later; its nearest existing parent must allow that.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        problems.append(f"{name} {path} cannot be created: {parent} is a file")
    elif not os.access(parent, os.W_OK | os.X_OK):
        problems.append(f"{name} {path} cannot be created: {parent} is not writable")


def _downloads(cfg: JobConfig) -> list[tuple[str, S3Location]]:
    # Only a single run (or a map task) downloads cfg.input; reduce and commit read
    # the work files of a fan-out run, whose sizes the fan-out bounds by partition.
    wanted: list[tuple[str, Location | None]] = [
        ("model", cfg.model),
        ("script", cfg.script),
        ("package", cfg.package),
        ("transform", cfg.transform),
    ]
    if cfg.phase in ("single", "map"):
        wanted.insert(0, ("input", cfg.input))
    found: list[tuple[str, S3Location]] = []
    for name, loc in wanted:
        if isinstance(loc, S3Location) and not loc.key.endswith("/"):
            found.append((name, loc))
    return found


def _check_space(cfg: JobConfig, root: Path, clients: Clients | None) -> None:
    downloads = _downloads(cfg)
    if not downloads or clients is None:
        return  # local inputs are read in place: they take no space in the work root
    from dsjob.aws import aws_errors, translate  # noqa: PLC0415 - boto3 only when used

    sizes: list[tuple[str, S3Location, int]] = []
    for name, loc in downloads:
        try:
            # HEAD returns ContentLength without the body (S3 API Reference, HeadObject).
            head = clients.s3.head_object(Bucket=loc.bucket, Key=loc.key)
        except aws_errors() as exc:
            raise translate(
                exc, f"checking the {name} {loc}", bucket=loc.bucket, key=loc.key
            ) from exc
        sizes.append((name, loc, int(head["ContentLength"])))
    needed = sum(size for _, _, size in sizes)
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize  # what an unprivileged writer may still use
    LOGGER.info(
        "disk space checked",
        extra={"work_root": str(root), "needed_bytes": needed, "free_bytes": free},
    )
    if needed > free:
        biggest = max(sizes, key=lambda item: item[2])
        raise ConfigError(
            f"not enough space in {root} for the download of {biggest[1]} "
            f"({_human(biggest[2])}; {_human(needed)} for all downloads, {_human(free)} free): "
            "give the task more ephemeral storage, or point --work-root at a larger disk"
        )


def check_input_format(path: Path, source: str) -> None:
    """Refuse compressed or binary data under a plain-text name (``data.csv`` holding gzip).

    DuckDB picks the decompression from the name, so such a file would fail as
    "not UTF-8" deep in the step; the fix is the name, and this says so.

    Args:
        path: the fetched input file.
        source: where it came from (``s3://bucket/key`` or the path), named in the error.

    Raises:
        MalformedInputError: naming the source, what the data is and the name to use.
    """
    name = path.name.lower()
    if not name.endswith(_PLAIN_SUFFIXES):
        return
    with path.open("rb") as handle:
        head = handle.read(8)
    for magic, what, suffix in _MAGIC:
        if head.startswith(magic):
            hint = f"{path.name}{suffix}" if suffix != ".parquet" else f"{path.stem}.parquet"
            raise MalformedInputError(
                f"input {source} is {what} but named like plain text; rename it to {hint}"
            )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:  # noqa: PLR2004 - binary units
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
