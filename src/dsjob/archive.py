"""Safe extraction of package.tar.gz: every member checked before anything is written.

Building the archive is :mod:`dsjob.pack`'s job.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dsjob.errors import InputError, MissingObjectError, UnsafeArchiveError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MAX_DEPTH",
    "MAX_MEMBERS",
    "MAX_TOTAL_BYTES",
    "safe_extract",
]

LOGGER = logging.getLogger(__name__)

MAX_TOTAL_BYTES = 1 << 30
MAX_MEMBERS = 10_000
# Python packages nest a handful of levels; thousands make extraction quadratic
# (every member re-walks its parents) and removal recursive, so refuse them up front.
MAX_DEPTH = 32


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_members: int = MAX_MEMBERS,
    max_depth: int = MAX_DEPTH,
) -> list[Path]:
    """Extract a tar(.gz) into ``dest`` after checking every member header first.

    Nothing is written unless the whole archive passes. Refused: absolute names,
    ``..`` components, symlinks whose target is absolute or contains ``..`` (so a
    link can only point at or below its own directory, which keeps every path,
    followed through any chain of links, inside ``dest``), hardlinks to anything but
    an earlier regular-file member, devices, fifos, sparse files, duplicate names,
    members that would overwrite a file already in ``dest``, names more than
    ``max_depth`` levels deep, more than ``max_members`` members, and more than
    ``max_total_bytes`` of file data. A tar
    header's size is exactly the number of bytes tarfile writes for that member
    (sparse members, whose expanded size differs, are refused), so the header sum
    bounds what reaches the disk. Python's ``data`` filter is applied on top where
    the interpreter has it.

    Args:
        archive: the package.tar.gz to extract.
        dest: the directory to extract into (created if missing).
        max_total_bytes: limit on the sum of regular file sizes.
        max_members: limit on the number of members of any type.
        max_depth: limit on the path components of a member name.

    Returns:
        The extracted paths, in archive order.

    Raises:
        UnsafeArchiveError: naming the first offending member and why.
        InputError: the file is not a readable tar archive.
    """
    if not archive.is_file():
        raise MissingObjectError(str(archive))
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(
                tar,
                root,
                max_total_bytes=max_total_bytes,
                max_members=max_members,
                max_depth=max_depth,
            )
            _extract(tar, root, members, use_data_filter=hasattr(tarfile, "data_filter"))
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        # An I/O error while the archive is open is as likely a truncated or corrupt
        # download as a disk problem; either way the package cannot be used.
        raise InputError(f"cannot extract package archive {archive}: {exc}") from exc
    paths = [root / _normalised(m.name) for m in members]
    LOGGER.info(
        "extracted package archive",
        extra={"archive": str(archive), "dest": str(root), "members": len(paths)},
    )
    return paths


def _normalised(name: str) -> PurePosixPath:
    """The member name with ``./`` and trailing slashes removed."""
    return PurePosixPath(*[part for part in PurePosixPath(name).parts if part != "."])


def _check_name(name: str) -> PurePosixPath:
    if not name or "\x00" in name:
        raise UnsafeArchiveError(name, "empty or invalid name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\"):
        raise UnsafeArchiveError(name, "absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(name, "'..' path component escapes the destination")
    return _normalised(name)


def _iter_members(tar: tarfile.TarFile, max_members: int) -> Iterator[tarfile.TarInfo]:
    """Yield headers one at a time so a member-count bomb stops at the limit."""
    count = 0
    while (member := tar.next()) is not None:
        count += 1
        if count > max_members:
            raise UnsafeArchiveError(member.name, f"archive has more than {max_members} members")
        yield member


@dataclass
class _Seen:
    """What the header scan has accumulated so far."""

    files: set[PurePosixPath] = field(default_factory=set)
    names: set[PurePosixPath] = field(default_factory=set)
    total_bytes: int = 0


def _checked_members(
    tar: tarfile.TarFile, root: Path, *, max_total_bytes: int, max_members: int, max_depth: int
) -> list[tarfile.TarInfo]:
    seen = _Seen()
    members: list[tarfile.TarInfo] = []
    for member in _iter_members(tar, max_members):
        path = _check_name(member.name)
        if len(path.parts) > max_depth:
            raise UnsafeArchiveError(
                member.name, f"nested {len(path.parts)} levels deep (the limit is {max_depth})"
            )
        if not member.isdir():
            _check_entry(member, path, root, seen, max_total_bytes)
        members.append(member)
    return members


def _check_entry(
    member: tarfile.TarInfo, path: PurePosixPath, root: Path, seen: _Seen, max_total_bytes: int
) -> None:
    """Check one non-directory member against the rules and the running totals."""
    name = member.name
    if not path.parts:
        raise UnsafeArchiveError(name, "a non-directory member names the destination itself")
    if path in seen.names:
        raise UnsafeArchiveError(name, "duplicate member name")
    seen.names.add(path)
    target = root.joinpath(*path.parts)
    if target.exists() or target.is_symlink():
        raise UnsafeArchiveError(name, f"would overwrite existing {target}")
    if member.issym():
        _check_symlink(name, member.linkname)
    elif member.islnk():
        # Only an earlier regular-file member (never an absolute or '..' name, never
        # something already on disk) may be the other end of a hardlink.
        if _normalised(member.linkname) not in seen.files:
            raise UnsafeArchiveError(
                name, f"hardlink to {member.linkname!r}, which is not an earlier file member"
            )
    elif member.isreg():
        if member.issparse():
            raise UnsafeArchiveError(name, "sparse files are not supported")
        seen.total_bytes += member.size
        if seen.total_bytes > max_total_bytes:
            raise UnsafeArchiveError(
                name, f"total uncompressed size exceeds the limit of {max_total_bytes} bytes"
            )
        seen.files.add(path)
    else:
        raise UnsafeArchiveError(name, f"unsupported member type {_kind(member)}")


def _check_symlink(name: str, linkname: str) -> None:
    link = PurePosixPath(linkname)
    if not linkname or link.is_absolute() or linkname.startswith("\\"):
        raise UnsafeArchiveError(name, f"symlink to absolute path {linkname!r}")
    if ".." in link.parts:
        raise UnsafeArchiveError(name, f"symlink to {linkname!r} may point outside the package")


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return repr(member.type)


def _extract(
    tar: tarfile.TarFile, root: Path, members: list[tarfile.TarInfo], *, use_data_filter: bool
) -> None:
    """Extract already-checked members, with the stdlib ``data`` filter when available."""
    if use_data_filter:
        try:
            tar.extractall(root, members=members, filter="data")
        except tarfile.FilterError as exc:
            # Our checks are stricter, so this only fires if the two disagree; refuse.
            member = getattr(exc, "tarinfo", None)
            raise UnsafeArchiveError(getattr(member, "name", "?"), str(exc)) from exc
        return
    # Interpreters without filters: the checks above already proved every path stays
    # inside root; drop ownership and the mode bits the data filter would drop.
    for member in members:
        member.uid = member.gid = os.getuid()
        member.uname = member.gname = ""
        if member.isreg():
            member.mode = _file_mode(member.mode)
        elif member.isdir():
            # The data filter creates directories with the default mode; the fallback's
            # tarfile cannot be told to, so it keeps the stored bits but never locks the
            # owner out of listing and entering what the job unpacked.
            member.mode = (member.mode & 0o755) | stat.S_IRWXU
    tar.extractall(root, members=members)  # noqa: S202 -- every member was checked above


def _file_mode(mode: int) -> int:
    """A regular file's mode as the stdlib ``data`` filter sets it (PEP 706).

    No setuid, setgid, sticky or group/other write bits; execute bits only when the
    owner may execute; the owner may always read and write.
    """
    mode &= 0o755
    if not mode & stat.S_IXUSR:
        mode &= ~0o111
    return mode | stat.S_IRUSR | stat.S_IWUSR
