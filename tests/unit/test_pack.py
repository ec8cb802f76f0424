"""Tests for dsjob.pack: finding the package, reproducible archives, uploading them to S3."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import sys
import tarfile
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from moto.server import ThreadedMotoServer
from urllib3.response import HTTPResponse

from dsjob.archive import safe_extract
from dsjob.errors import ConfigError, ExitCode, MissingObjectError
from dsjob.pack import FIXED_MTIME, build_package, find_package_dir, pack, upload_pack
from tests.support import credentials

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.unit

BUCKET = "dsjob-artifacts"


def _package(parent: Path, name: str, *, init: bool = True) -> Path:
    """A directory `name` under `parent`, a Python package when `init`."""
    folder = parent / name
    folder.mkdir(parents=True)
    if init:
        (folder / "__init__.py").write_text("")
    return folder


def test_a_folder_named_package_wins(tmp_path: Path) -> None:
    """DIR/package is shipped even when DIR holds another package beside it."""
    _package(tmp_path, "package", init=False)
    _package(tmp_path, "member_features")
    assert find_package_dir(tmp_path) == tmp_path / "package"


def test_the_one_python_package_is_found_by_its_import_name(tmp_path: Path) -> None:
    """With no package/, DIR's only folder holding __init__.py is the package."""
    _package(tmp_path, "data", init=False)
    features = _package(tmp_path, "member_features")
    (tmp_path / "script.py").write_text("")
    assert find_package_dir(tmp_path) == features


def test_folders_without_init_are_not_packages(tmp_path: Path) -> None:
    """A DIR whose folders hold no __init__.py has no package to ship: None."""
    data = _package(tmp_path, "data", init=False)
    (data / "rows.py").write_text("")
    (tmp_path / "script.py").write_text("")
    assert find_package_dir(tmp_path) is None


def test_an_empty_job_directory_has_no_package(tmp_path: Path) -> None:
    """A DIR with nothing in it has no package: None, not an error."""
    assert find_package_dir(tmp_path) is None


def test_several_packages_are_a_config_error_naming_them(tmp_path: Path) -> None:
    """Two candidate packages and no package/ exit 2, naming both and what to do."""
    _package(tmp_path, "beta")
    _package(tmp_path, "alpha")
    with pytest.raises(ConfigError) as excinfo:
        find_package_dir(tmp_path)
    assert excinfo.value.exit_code == 2
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path} holds several packages (alpha, beta): ")
    assert "pass the one to ship as DIR, or name it package/" in message


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
def endpoint() -> Iterator[str]:
    """A moto server with the artifact bucket, shared by this module's upload tests."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    credentials.client("s3", url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def s3(endpoint: str) -> S3Client:
    """A fresh client per test, so one test's event hooks never reach another."""
    client: S3Client = credentials.client("s3", endpoint)
    return client


def test_pack_and_upload(tmp_path: Path, s3: S3Client) -> None:
    """Pack and upload_pack put package.tar.gz and script.py under the prefix with their sha256."""
    src = _make_package(tmp_path)
    script = tmp_path / "script.py"
    script.write_text("print('hello')\n")
    result = pack(src, script, out_dir=tmp_path / "build")
    assert result.package_path == tmp_path / "build" / "package.tar.gz"
    keys = upload_pack(result, s3, BUCKET, "jobs/preprocessing")
    script_sha = hashlib.sha256(script.read_bytes()).hexdigest()
    assert keys == {
        "jobs/preprocessing/package.tar.gz": result.package_sha256,
        "jobs/preprocessing/script.py": script_sha,
    }
    for key, digest in keys.items():
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["Metadata"]["sha256"] == digest


def test_each_upload_asks_s3_to_check_its_sha256(tmp_path: Path, s3: S3Client) -> None:
    """Every PUT carries x-amz-checksum-sha256: base64 of the SHA-256 of the file's bytes.

    S3 checks that header against the body it receives and answers 400 BadDigest on a
    mismatch (S3 User Guide, "Checking object integrity"), so a body corrupted between
    pack and upload is refused. moto 5.2.5 neither checks nor keeps it (it stores a
    checksum only when x-amz-sdk-checksum-algorithm names one, which botocore does not
    send beside an explicit ChecksumSHA256), so HeadObject's ChecksumSHA256 cannot show
    it here: the header is read off the real request as it leaves botocore.
    """
    sent: dict[str, str] = {}

    def record(request: Any, **_: Any) -> None:
        value = request.headers.get("x-amz-checksum-sha256", b"")
        sent[urlsplit(request.url).path] = value.decode() if isinstance(value, bytes) else value

    s3.meta.events.register("before-send.s3.PutObject", record)
    script = tmp_path / "script.py"
    script.write_text("print('checked')\n")
    result = pack(_make_package(tmp_path), script, out_dir=tmp_path / "build")
    upload_pack(result, s3, BUCKET, "jobs/checked")

    def b64_sha256(path: Path) -> str:
        return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()

    assert sent == {
        f"/{BUCKET}/jobs/checked/package.tar.gz": b64_sha256(result.package_path),
        f"/{BUCKET}/jobs/checked/script.py": b64_sha256(script),
    }


def test_an_upload_s3_refuses_is_a_config_error_naming_bucket_and_key(
    tmp_path: Path, s3: S3Client
) -> None:
    """A PUT answered 403 AccessDenied exits 2 naming s3://bucket/key; nothing else is sent.

    The 403 is S3's documented error body (S3 API Reference, "Error responses"),
    answered by a before-send hook on the real request instead of the server.
    """
    answered: list[str] = []

    def deny(request: Any, **_: Any) -> AWSResponse:
        answered.append(urlsplit(request.url).path)
        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        raw = HTTPResponse(body=io.BytesIO(body), status=403, preload_content=False)
        return AWSResponse(request.url, 403, HTTPHeaders(), raw)

    s3.meta.events.register("before-send.s3.PutObject", deny)  # type: ignore[arg-type]  # a before-send handler may answer
    script = tmp_path / "script.py"
    script.write_text("print('denied')\n")
    result = pack(_make_package(tmp_path), script, out_dir=tmp_path / "build")
    with pytest.raises(ConfigError) as excinfo:
        upload_pack(result, s3, BUCKET, "jobs/denied")
    location = f"s3://{BUCKET}/jobs/denied/package.tar.gz"
    assert excinfo.value.exit_code == 2
    assert str(excinfo.value).startswith(f"uploading {location}: ")
    assert f"access denied to {location} (AccessDenied)" in str(excinfo.value)
    assert answered == [f"/{BUCKET}/jobs/denied/package.tar.gz"], "no retry, no script upload"


def test_pack_names_a_missing_script(tmp_path: Path) -> None:
    """`pack` refuses a script that does not exist, naming its path (exit 3)."""
    missing = tmp_path / "nope.py"
    with pytest.raises(MissingObjectError, match=re.escape(str(missing))) as caught:
        pack(_make_package(tmp_path), missing)
    assert caught.value.exit_code == ExitCode.INPUT


def test_upload_to_missing_bucket_is_a_config_error(tmp_path: Path, s3: S3Client) -> None:
    """Uploading to a bucket that does not exist names the bucket as a configuration problem."""
    result = pack(_make_package(tmp_path), None)
    with pytest.raises(ConfigError, match=r"s3://no-such-bucket/p/package\.tar\.gz"):
        upload_pack(result, s3, "no-such-bucket", "p/")
