"""Tests for dsjob.archive: hostile tarballs are refused whole, good ones extract safely."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from typing import TYPE_CHECKING

import pytest

from dsjob import archive
from dsjob.archive import safe_extract
from dsjob.errors import InputError, MissingObjectError, UnsafeArchiveError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.unit


def _file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], **limits: int) -> str:
    """Extract a hostile archive, assert nothing was written, return the refused member."""
    dest = tmp_path / "work"
    with pytest.raises(UnsafeArchiveError) as excinfo:
        safe_extract(_tarball(tmp_path / "package.tar.gz", members), dest, **limits)
    assert list(dest.iterdir()) == [], "a refused archive must not be partly extracted"
    assert excinfo.value.exit_code == 3
    assert excinfo.value.member in [info.name for info, _ in members], "names a real member"
    assert repr(excinfo.value.member) in str(excinfo.value)
    return excinfo.value.member


def test_good_archive_extracts(tmp_path: Path) -> None:
    """A well-formed archive with dirs, files, an inward symlink and a hardlink extracts."""
    pkg_dir = tarfile.TarInfo("package")
    pkg_dir.type = tarfile.DIRTYPE
    pkg_dir.mode = 0o755
    members = [
        (pkg_dir, b""),
        _file("package/__init__.py", b""),
        _file("package/preprocessing.py", b"def f():\n    return 1\n"),
        _special("package/alias.py", tarfile.SYMTYPE, "preprocessing.py"),
        _special("package/copy.py", tarfile.LNKTYPE, "package/preprocessing.py"),
    ]
    dest = tmp_path / "work"
    paths = safe_extract(_tarball(tmp_path / "p.tar.gz", members), dest)
    assert [p.relative_to(dest.resolve()).as_posix() for p in paths] == [
        "package",
        "package/__init__.py",
        "package/preprocessing.py",
        "package/alias.py",
        "package/copy.py",
    ]
    assert (dest / "package/preprocessing.py").read_text() == "def f():\n    return 1\n"
    assert (dest / "package/alias.py").is_symlink()
    assert (dest / "package/alias.py").read_text() == "def f():\n    return 1\n"
    assert (dest / "package/copy.py").read_text() == "def f():\n    return 1\n"


# The stdlib data filter's path, where this Python has one, and the fallback path
# (Debian bookworm's 3.11.2, the images' interpreter, has no filter).
BOTH_EXTRACTION_PATHS = pytest.mark.parametrize(
    "use_data_filter",
    [
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not hasattr(tarfile, "data_filter"),
                reason="this Python's tarfile has no data filter (added in 3.11.4, 3.12)",
            ),
        ),
        False,
    ],
)


def _extract_on_path(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], *, use_data_filter: bool
) -> Path:
    """Check and extract `members` on the chosen path; return the destination."""
    dest = tmp_path / "work"
    dest.mkdir()
    with tarfile.open(_tarball(tmp_path / "p.tar.gz", members)) as tar:
        checked = archive._checked_members(
            tar,
            dest,
            max_total_bytes=archive.MAX_TOTAL_BYTES,
            max_members=10,
            max_depth=archive.MAX_DEPTH,
        )
        archive._extract(tar, dest, checked, use_data_filter=use_data_filter)
    return dest


@BOTH_EXTRACTION_PATHS
@pytest.mark.parametrize(
    ("stored", "extracted"),
    [
        pytest.param(0o4777, 0o755, id="setuid-and-group-write-dropped-exec-kept"),
        pytest.param(0o666, 0o644, id="plain-file-plain-mode"),
        pytest.param(0o000, 0o600, id="no-permissions-owner-can-read"),
        pytest.param(0o744, 0o744, id="owner-exec-keeps-exec"),
        pytest.param(0o641, 0o640, id="other-exec-alone-is-dropped"),
        pytest.param(0o611, 0o600, id="group-and-other-exec-alone-are-dropped"),
    ],
)
def test_file_modes_come_out_as_the_data_filter_sets_them(
    tmp_path: Path,
    stored: int,
    extracted: int,
    use_data_filter: bool,  # noqa: FBT001 -- pytest parameter
) -> None:
    """On either extraction path a file keeps only owner-granted exec bits and owner rw."""
    info, data = _file("package/run.py")
    info.mode = stored
    dest = _extract_on_path(tmp_path, [(info, data)], use_data_filter=use_data_filter)
    assert (dest / "package/run.py").stat().st_mode & 0o7777 == extracted
    assert (dest / "package/run.py").read_bytes() == data


@BOTH_EXTRACTION_PATHS
@pytest.mark.parametrize("stored", [0o000, 0o777], ids=["no-permissions", "world-writable"])
def test_directories_are_open_to_their_owner_and_closed_to_writers(
    tmp_path: Path,
    stored: int,
    use_data_filter: bool,  # noqa: FBT001 -- pytest parameter
) -> None:
    """On either path an extracted directory lets the owner in and nobody else write."""
    folder = tarfile.TarInfo("package")
    folder.type = tarfile.DIRTYPE
    folder.mode = stored
    members = [(folder, b""), _file("package/a.py")]
    dest = _extract_on_path(tmp_path, members, use_data_filter=use_data_filter)
    mode = (dest / "package").stat().st_mode & 0o7777
    assert mode & 0o700 == 0o700, f"{oct(mode)}: the job must list and enter what it unpacked"
    assert mode & 0o022 == 0, f"{oct(mode)}: group and other must not write into the package"
    assert (dest / "package/a.py").read_bytes() == b"x = 1\n"


def _gnu_sparse(name: str, data: bytes, real_size: int) -> bytes:
    """An uncompressed tar holding one old-GNU sparse member (typeflag 'S').

    tarfile reads such headers but cannot write one, so the sparse map (GNU tar manual,
    "Storing Sparse Files": four offset/numbytes pairs at byte 386, the real size at
    483) is written into a GNU header by hand and the checksum recomputed.
    """
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = len(data)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = b"%011o\0" % 0  # the one data region starts at offset 0...
    header[398:410] = b"%011o\0" % len(data)  # ...and holds the stored bytes
    header[483:495] = b"%011o\0" % real_size  # the file's size with its holes
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[148:155] = b"%06o\0" % sum(header)
    padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return bytes(header) + data + padding + b"\0" * (2 * tarfile.BLOCKSIZE)


def _pax_sparse(name: str, data: bytes, real_size: int) -> bytes:
    """An uncompressed tar holding one member with GNU sparse 0.1 PAX records."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.pax_headers = {"GNU.sparse.map": f"0,{len(data)}", "GNU.sparse.size": str(real_size)}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("build", [_gnu_sparse, _pax_sparse], ids=["gnu-header", "pax-0.1"])
def test_sparse_member_is_refused_naming_it(
    tmp_path: Path, build: Callable[[str, bytes, int], bytes]
) -> None:
    """A sparse member (its size on disk is not its header size) is refused and named."""
    tarball = tmp_path / "package.tar.gz"
    tarball.write_bytes(gzip.compress(build("package/holes.bin", b"data" * 128, 1 << 20)))
    with tarfile.open(tarball) as tar:
        assert tar.getmember("package/holes.bin").issparse(), "tarfile must read it as sparse"
    dest = tmp_path / "work"
    with pytest.raises(UnsafeArchiveError, match="sparse files are not supported") as excinfo:
        safe_extract(tarball, dest)
    assert excinfo.value.member == "package/holes.bin"
    assert "'package/holes.bin'" in str(excinfo.value)
    assert excinfo.value.exit_code == 3
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "/tmp/x.py", "\\windows\\evil.py"])
def test_absolute_path_is_refused(tmp_path: Path, name: str) -> None:
    """A member with an absolute name is refused and named."""
    assert _refused(tmp_path, [_file("package/ok.py"), _file(name)]) == name


@pytest.mark.parametrize("name", ["../evil.py", "package/../../evil.py", "a/b/../../../c"])
def test_dotdot_traversal_is_refused(tmp_path: Path, name: str) -> None:
    """A member whose name climbs out with '..' is refused and named."""
    assert _refused(tmp_path, [_file(name)]) == name


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "sub/../../x", "\\x", ""])
def test_symlink_escaping_is_refused(tmp_path: Path, target: str) -> None:
    """A symlink pointing at an absolute path or through '..' is refused."""
    members = [_special("package/link", tarfile.SYMTYPE, target)]
    assert _refused(tmp_path, members) == "package/link"


def test_missing_archive_names_the_path(tmp_path: Path) -> None:
    """A package path that does not exist is a missing input naming that path."""
    with pytest.raises(MissingObjectError, match=r"input not found: .*nope\.tar\.gz"):
        safe_extract(tmp_path / "nope.tar.gz", tmp_path / "work")


def test_file_member_naming_the_destination_is_refused(tmp_path: Path) -> None:
    """A regular-file member named "./" (the destination itself) is refused and named."""
    assert _refused(tmp_path, [_file("./")]) == "./"


def test_archive_exactly_at_the_size_limit_extracts(tmp_path: Path) -> None:
    """The size limit is inclusive: an archive of exactly max_total_bytes extracts."""
    (tmp_path / "over").mkdir()
    members = [_file("package/a.bin", b"a" * 600), _file("package/b.bin", b"b" * 424)]
    dest = tmp_path / "work"
    safe_extract(_tarball(tmp_path / "p.tar.gz", members), dest, max_total_bytes=1024)
    assert (dest / "package/b.bin").stat().st_size == 424
    over = [*members, _file("package/c.bin", b"c")]
    assert _refused(tmp_path / "over", over, max_total_bytes=1024) == "package/c.bin"


def test_symlink_then_write_through_it_is_refused(tmp_path: Path) -> None:
    """The classic two-step escape (link to /, then write via the link) stops at the link."""
    members = [
        _special("package/root", tarfile.SYMTYPE, "/"),
        _file("package/root/etc/evil"),
    ]
    assert _refused(tmp_path, members) == "package/root"


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "package/missing.py"])
def test_hardlink_escaping_is_refused(tmp_path: Path, target: str) -> None:
    """A hardlink to anything but an earlier file member of the archive is refused."""
    members = [_file("package/a.py"), _special("package/evil", tarfile.LNKTYPE, target)]
    assert _refused(tmp_path, members) == "package/evil"


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
    ],
)
def test_device_and_fifo_are_refused(tmp_path: Path, kind: bytes, label: str) -> None:
    """Device files and fifos are refused with their kind in the message."""
    with pytest.raises(UnsafeArchiveError, match=label) as excinfo:
        safe_extract(
            _tarball(tmp_path / "p.tar.gz", [_special("package/dev", kind)]), tmp_path / "w"
        )
    assert excinfo.value.member == "package/dev"


def test_size_bomb_is_refused_before_writing(tmp_path: Path) -> None:
    """Members whose total size exceeds the limit are refused, naming the one that crossed it."""
    members = [_file("package/a.bin", b"\0" * 600), _file("package/b.bin", b"\0" * 600)]
    member = _refused(tmp_path, members, max_total_bytes=1000)
    assert member == "package/b.bin"


def test_compression_bomb_with_default_limit(tmp_path: Path) -> None:
    """A 2 KiB gzip that expands past the 1 MiB limit is refused without extracting it."""
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("package/zeros.bin")
        info.size = 2 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    assert bomb.stat().st_size < 16 << 10
    with pytest.raises(UnsafeArchiveError, match="exceeds the limit") as excinfo:
        safe_extract(bomb, tmp_path / "w", max_total_bytes=1 << 20)
    assert excinfo.value.member == "package/zeros.bin"
    assert not (tmp_path / "w" / "package").exists()


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    """An archive with more members than the limit is refused at the first one over it."""
    members = [_file(f"package/m{i:03d}.py", b"") for i in range(30)]
    assert _refused(tmp_path, members, max_members=20) == "package/m020.py"


def test_deep_nesting_is_refused_fast_naming_the_member(tmp_path: Path) -> None:
    """1,000 nested directory levels (well under the member limit) are refused at once."""
    members = []
    name = "package"
    for _ in range(1000):
        name += "/d"
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        members.append((info, b""))
    members.append(_file(f"{name}/deep.py"))
    started = time.monotonic()
    refused = _refused(tmp_path, members)
    assert time.monotonic() - started < 5
    depth = archive.MAX_DEPTH + 1
    assert refused == "package" + "/d" * (depth - 1)


def test_nesting_at_the_depth_limit_extracts(tmp_path: Path) -> None:
    """A file exactly MAX_DEPTH components deep is accepted: the cap is not off by one."""
    name = "/".join(["package", *["d"] * (archive.MAX_DEPTH - 2), "ok.py"])
    safe_extract(_tarball(tmp_path / "p.tar.gz", [_file(name)]), tmp_path / "work")
    assert (tmp_path / "work" / name).read_bytes() == b"x = 1\n"


def test_overwriting_existing_file_is_refused(tmp_path: Path) -> None:
    """A member that would replace a file already in the work dir (e.g. script.py) is refused."""
    dest = tmp_path / "work"
    dest.mkdir()
    (dest / "script.py").write_text("print('mine')\n")
    tarball = _tarball(tmp_path / "p.tar.gz", [_file("script.py", b"print('theirs')\n")])
    with pytest.raises(UnsafeArchiveError, match=r"'script\.py': would overwrite existing "):
        safe_extract(tarball, dest)
    assert (dest / "script.py").read_text() == "print('mine')\n"


def test_a_member_without_a_name_is_refused(tmp_path: Path) -> None:
    """A member whose name is empty is refused, and the message shows that name."""
    assert _refused(tmp_path, [_file("")]) == ""


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    """Two members with the same name (a later one silently replacing the first) are refused."""
    members = [_file("package/a.py"), _file("./package/a.py")]
    assert _refused(tmp_path, members) == "./package/a.py"


def test_not_a_tarball_is_an_input_error(tmp_path: Path) -> None:
    """A corrupt download fails as an input error, not a stack trace."""
    bad = tmp_path / "package.tar.gz"
    bad.write_bytes(gzip.compress(b"this is not a tar archive" * 10)[:40])
    with pytest.raises(InputError, match="cannot extract package archive"):
        safe_extract(bad, tmp_path / "w")
