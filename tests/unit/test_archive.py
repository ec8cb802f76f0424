"""Tests for dsjob.archive and dsjob.pack: hostile tarballs, reproducible packages, upload."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import time
from typing import TYPE_CHECKING

import pytest
from moto.server import ThreadedMotoServer

from dsjob import archive
from dsjob.archive import safe_extract
from dsjob.errors import ConfigError, InputError, MissingObjectError, UnsafeArchiveError
from dsjob.pack import FIXED_MTIME, build_package, pack, upload_pack
from tests.support import credentials

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

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


# The stdlib data filter's path, where this Python has one, and the fallback path.
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


@BOTH_EXTRACTION_PATHS
def test_extract_without_stdlib_filter_is_equivalent(
    tmp_path: Path,
    use_data_filter: bool,  # noqa: FBT001 -- pytest parameter
) -> None:
    """Both extraction paths (3.12 data filter and the 3.11 fallback) drop setuid bits."""
    info, data = _file("package/run.py")
    info.mode = 0o4777
    dest = tmp_path / "work"
    dest.mkdir()
    with tarfile.open(_tarball(tmp_path / "p.tar.gz", [(info, data)])) as tar:
        members = archive._checked_members(
            tar,
            dest,
            max_total_bytes=archive.MAX_TOTAL_BYTES,
            max_members=10,
            max_depth=archive.MAX_DEPTH,
        )
        archive._extract(tar, dest, members, use_data_filter=use_data_filter)
    mode = (dest / "package/run.py").stat().st_mode
    assert mode & 0o7777 == 0o755, "setuid and group/other write bits dropped, exec kept"
    assert (dest / "package/run.py").read_bytes() == data


@BOTH_EXTRACTION_PATHS
def test_both_extraction_paths_give_plain_files_plain_modes(
    tmp_path: Path,
    use_data_filter: bool,  # noqa: FBT001 -- pytest parameter
) -> None:
    """A world-writable non-executable file extracts as 0644 on either path."""
    info, data = _file("package/data.txt")
    info.mode = 0o666
    dest = tmp_path / "work"
    dest.mkdir()
    with tarfile.open(_tarball(tmp_path / "p.tar.gz", [(info, data)])) as tar:
        members = archive._checked_members(
            tar,
            dest,
            max_total_bytes=archive.MAX_TOTAL_BYTES,
            max_members=10,
            max_depth=archive.MAX_DEPTH,
        )
        archive._extract(tar, dest, members, use_data_filter=use_data_filter)
    assert (dest / "package/data.txt").stat().st_mode & 0o7777 == 0o644


@BOTH_EXTRACTION_PATHS
def test_a_member_stored_without_permissions_is_readable_after_extraction(
    tmp_path: Path,
    use_data_filter: bool,  # noqa: FBT001 -- pytest parameter
) -> None:
    """A file archived with mode 000 extracts as 0600: the job can read what it unpacked."""
    info, data = _file("package/locked.py")
    info.mode = 0o000
    dest = tmp_path / "work"
    dest.mkdir()
    with tarfile.open(_tarball(tmp_path / "p.tar.gz", [(info, data)])) as tar:
        members = archive._checked_members(
            tar,
            dest,
            max_total_bytes=archive.MAX_TOTAL_BYTES,
            max_members=10,
            max_depth=archive.MAX_DEPTH,
        )
        archive._extract(tar, dest, members, use_data_filter=use_data_filter)
    assert (dest / "package/locked.py").stat().st_mode & 0o7777 == 0o600


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


def _make_package(root: Path) -> Path:
    src = root / "package"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "preprocessing.py").write_text("def clean(x):\n    return x.strip()\n")
    (src / "sub" / "tool.sh").write_text("#!/bin/sh\n")
    (src / "sub" / "tool.sh").chmod(0o775)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "preprocessing.cpython-311.pyc").write_bytes(b"\0")
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".ipynb_checkpoints" / "x.py").write_text("")
    (src / "stale.pyc").write_bytes(b"\0")
    return src


def test_build_package_is_byte_reproducible(tmp_path: Path) -> None:
    """Building the same tree twice, with different mtimes and modes, gives identical bytes."""
    src = _make_package(tmp_path / "one")
    first = tmp_path / "a" / "package.tar.gz"
    digest = build_package(src, first)
    # Touch everything and loosen a mode: neither may change the archive.
    for path in src.rglob("*"):
        path.touch()
    (src / "preprocessing.py").chmod(0o666)
    second = tmp_path / "b" / "package.tar.gz"
    assert build_package(src, second) == digest
    assert first.read_bytes() == second.read_bytes()
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    # A copy of the tree elsewhere (other inode order, other parent) packs the same.
    other = _make_package(tmp_path / "two" / "deeper")
    assert build_package(other, tmp_path / "c.tar.gz") == digest
    # The gzip header carries no file name and no timestamp (RFC 1952: FLG bit 3, MTIME).
    header = first.read_bytes()[:10]
    assert header[3] & 0x08 == 0
    assert header[4:8] == b"\0\0\0\0"
    with tarfile.open(first) as tar:
        assert tar.pax_headers is not None
        assert all(m.name.startswith("package") for m in tar.getmembers())


def test_build_package_writes_into_a_new_directory_tree(tmp_path: Path) -> None:
    """The archive's parent directories are created as needed."""
    out = tmp_path / "not" / "yet" / "there" / "package.tar.gz"
    build_package(_make_package(tmp_path / "src"), out)
    assert out.is_file()


def test_build_package_refuses_a_symlinked_directory_naming_it(tmp_path: Path) -> None:
    """A symlinked directory inside the tree is a config error that names it."""
    src = _make_package(tmp_path / "src")
    (src / "linked").symlink_to(src / "sub")
    with pytest.raises(ConfigError, match=r"cannot pack symlinked directory .*linked"):
        build_package(src, tmp_path / "p.tar.gz")


def test_build_package_members_are_normalised(tmp_path: Path) -> None:
    """Members are sorted, under the dir's name, owned by 0 with fixed mtime; no caches."""
    src = _make_package(tmp_path)
    out = tmp_path / "out" / "package.tar.gz"
    build_package(src, out)
    assert out.read_bytes()[4:8] == b"\0\0\0\0", "gzip header mtime must be zero"
    with tarfile.open(out) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [
        "package",
        "package/__init__.py",
        "package/preprocessing.py",
        "package/sub",
        "package/sub/tool.sh",
    ]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {
        (FIXED_MTIME, 0, 0, "", "")
    }
    modes = {i.name: i.mode for i in infos}
    assert modes["package/sub/tool.sh"] == 0o755
    assert modes["package/preprocessing.py"] == 0o644
    assert modes["package"] == 0o755


def test_built_package_extracts_and_imports(tmp_path: Path) -> None:
    """A built package passes safe_extract and `from package.preprocessing import *` works."""
    src = _make_package(tmp_path / "src")
    tarball = tmp_path / "package.tar.gz"
    build_package(src, tarball)
    work = tmp_path / "work"
    safe_extract(tarball, work)
    code = "from package.preprocessing import *; print(clean('  hi  '))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, capture_output=True, text=True, check=True
    )
    assert done.stdout == "hi\n"


def test_build_package_refuses_missing_dir_and_output_inside(tmp_path: Path) -> None:
    """Packing a missing directory, or writing the archive inside the tree, is a config error."""
    with pytest.raises(ConfigError, match="not a directory"):
        build_package(tmp_path / "nope", tmp_path / "p.tar.gz")
    src = _make_package(tmp_path)
    with pytest.raises(ConfigError, match="must not be written inside"):
        build_package(src, src / "package.tar.gz")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Client]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client: S3Client = credentials.client("s3", f"http://{host}:{port}")
    client.create_bucket(Bucket="dsjob-artifacts")
    yield client
    server.stop()


def test_pack_and_upload(tmp_path: Path, s3: S3Client) -> None:
    """Pack and upload_pack put package.tar.gz and script.py under the prefix with their sha256."""
    src = _make_package(tmp_path)
    script = tmp_path / "script.py"
    script.write_text("print('hello')\n")
    result = pack(src, script, out_dir=tmp_path / "build")
    assert result.package_path == tmp_path / "build" / "package.tar.gz"
    keys = upload_pack(result, s3, "dsjob-artifacts", "jobs/preprocessing")
    script_sha = hashlib.sha256(script.read_bytes()).hexdigest()
    assert keys == {
        "jobs/preprocessing/package.tar.gz": result.package_sha256,
        "jobs/preprocessing/script.py": script_sha,
    }
    for key, digest in keys.items():
        body = s3.get_object(Bucket="dsjob-artifacts", Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest
        head = s3.head_object(Bucket="dsjob-artifacts", Key=key)
        assert head["Metadata"]["sha256"] == digest


def test_pack_names_a_missing_script(tmp_path: Path) -> None:
    """`pack` refuses a script that does not exist, naming its path (exit 3)."""
    missing = tmp_path / "nope.py"
    with pytest.raises(MissingObjectError, match=re.escape(str(missing))):
        pack(_make_package(tmp_path), missing)


def test_upload_to_missing_bucket_is_a_config_error(tmp_path: Path, s3: S3Client) -> None:
    """Uploading to a bucket that does not exist names the bucket as a configuration problem."""
    result = pack(_make_package(tmp_path), None)
    with pytest.raises(ConfigError, match=r"s3://no-such-bucket/p/package\.tar\.gz"):
        upload_pack(result, s3, "no-such-bucket", "p/")
