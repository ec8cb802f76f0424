"""`dsjob pack`: build a reproducible package.tar.gz from a directory, upload it with script.py."""

from __future__ import annotations

import base64
import gzip
import logging
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsjob.aws import aws_errors, translate
from dsjob.errors import ConfigError, MissingObjectError
from dsjob.storage import sha256_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LOGGER = logging.getLogger(__name__)

PACKAGE_NAME = "package.tar.gz"
SCRIPT_NAME = "script.py"

# 2000-01-01T00:00:00Z for every member: a constant (not SOURCE_DATE_EPOCH, not the
# files' mtimes) so the same tree gives the same sha256 on every machine, and not 0
# because some unpackers and zip-based tools mishandle dates before 1980.
FIXED_MTIME = 946_684_800

# Build debris that must never reach production or change the package's checksum.
EXCLUDED_NAMES = frozenset(
    {
        "__pycache__",
        ".ipynb_checkpoints",
        ".git",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".DS_Store",
    }
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class PackResult:
    """A built package (and optional script) ready to upload.

    Attributes:
        package_path: the package.tar.gz, in a fresh temporary directory the caller owns.
        package_sha256: its sha256 hex digest.
        script_path: the script.py to upload next to it, or None.
        script_sha256: the script's sha256 hex digest, or None.
    """

    package_path: Path
    package_sha256: str
    script_path: Path | None = None
    script_sha256: str | None = None

    def uploads(self) -> dict[str, tuple[Path, str]]:
        """Object name (relative to the prefix) -> (local file, sha256), package first."""
        files = {PACKAGE_NAME: (self.package_path, self.package_sha256)}
        if self.script_path is not None and self.script_sha256 is not None:
            files[SCRIPT_NAME] = (self.script_path, self.script_sha256)
        return files


def find_package_dir(directory: Path) -> Path | None:
    """The package to ship from a job directory: DIR/package, else DIR's one Python package.

    A job directory is `script.py` next to its package, either named `package/`
    (examples/) or by its import name (`member_features/`, as notebook 02 writes it).

    Raises:
        ConfigError: DIR holds several candidate packages and none is named `package`.
    """
    if (directory / "package").is_dir():
        return directory / "package"
    candidates = sorted(
        p for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ConfigError(
            f"{directory} holds several packages ({names}): pass the one to ship as DIR, "
            "or name it package/"
        )
    return candidates[0] if candidates else None


def pack(src_dir: Path, script: Path | None, *, out_dir: Path | None = None) -> PackResult:
    """Build ``package.tar.gz`` from ``src_dir`` and checksum it and ``script``.

    Args:
        src_dir: the package directory (its name becomes the importable package).
        script: the script.py to ship with it, or None for a package only.
        out_dir: where to write package.tar.gz; a new temporary directory when None
            (the caller removes it after uploading).

    Raises:
        ConfigError: src_dir is not a directory.
        MissingObjectError: script does not exist.
    """
    if script is not None and not script.is_file():
        raise MissingObjectError(str(script))
    if not (src_dir / "__init__.py").is_file():
        LOGGER.warning(
            "package directory has no __init__.py; it imports as a namespace package",
            extra={"source": str(src_dir)},
        )
    target = Path(tempfile.mkdtemp(prefix="dsjob-pack-")) if out_dir is None else out_dir
    package = target / PACKAGE_NAME
    digest = build_package(src_dir, package)
    return PackResult(
        package_path=package,
        package_sha256=digest,
        script_path=script,
        script_sha256=None if script is None else sha256_file(script),
    )


def upload_pack(
    result: PackResult, s3_client: S3Client, bucket: str, prefix: str
) -> dict[str, str]:
    """Upload the package (and script) under ``prefix`` and return ``{key: sha256}``.

    Each object carries its sha256 as ``x-amz-meta-sha256`` and as the S3 SHA-256
    checksum, so S3 rejects a corrupted upload and the job can compare later.

    Args:
        result: what ``pack`` built.
        s3_client: a boto3 S3 client (honours ``AWS_ENDPOINT_URL``).
        bucket: the artifact bucket.
        prefix: key prefix, e.g. ``"jobs/preprocessing/"``; a missing ``/`` is added.

    Raises:
        ConfigError: the bucket does not exist or access is denied.
        TransientError: throttling, a dropped connection or a 5xx.
        DsjobError: any other S3 failure.
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys: dict[str, str] = {}
    for name, (path, digest) in result.uploads().items():
        key = f"{prefix}{name}"
        # S3 checks x-amz-checksum-sha256 against the body and answers 400 BadDigest on a
        # mismatch (S3 User Guide, "Checking object integrity"), so bytes that changed
        # after pack hashed them are refused. moto 5.2.5 neither checks nor stores it.
        checksum = base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        try:
            with path.open("rb") as body:
                s3_client.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=body,
                    ChecksumSHA256=checksum,
                    Metadata={"sha256": digest},
                )
        except aws_errors() as exc:
            error = translate(exc, f"uploading s3://{bucket}/{key}", bucket=bucket, key=key)
            if isinstance(error, MissingObjectError):  # only the bucket can be missing on a PUT
                error = ConfigError(f"cannot upload s3://{bucket}/{key}: no such bucket")
            raise error from exc
        LOGGER.info("uploaded", extra={"bucket": bucket, "key": key, "sha256": digest})
        keys[key] = digest
    return keys


def _package_files(src_dir: Path) -> list[Path]:
    """Every directory and file under src_dir that goes into the package, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        here = Path(dirpath)
        # Pruning in place keeps os.walk out of excluded directories.
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_NAMES)
        for dirname in dirnames:
            if (here / dirname).is_symlink():
                raise ConfigError(f"cannot pack symlinked directory {here / dirname}")
        found.extend(here / d for d in dirnames)
        found.extend(
            here / f
            for f in filenames
            if f not in EXCLUDED_NAMES and not f.endswith(EXCLUDED_SUFFIXES)
        )
    return sorted(found, key=lambda p: p.relative_to(src_dir).as_posix())


def _tarinfo(path: Path, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    st = path.stat()  # follows symlinks: a linked file is packed as its content
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        info.size = st.st_size
    else:
        raise ConfigError(f"cannot pack {path}: not a regular file or directory")
    return info


def build_package(src_dir: Path, out: Path) -> str:
    """Write a reproducible ``package.tar.gz`` of ``src_dir`` and return its sha256 hex.

    The archive's top-level directory is ``src_dir``'s name, so extracting it into
    the work dir makes ``from <name>.module import ...`` work. Members are sorted,
    with mtime ``FIXED_MTIME``, uid/gid 0, empty owner names, modes 0755/0644, and
    the gzip header carries no name and no timestamp: the same tree gives
    byte-identical output (for the same zlib). ``EXCLUDED_NAMES`` and ``*.pyc``
    are left out; file symlinks are packed as the file they point to.

    Raises:
        ConfigError: src_dir is not a directory, or holds something unpackable.
    """
    src = src_dir.resolve()
    if not src.is_dir():
        raise ConfigError(f"package source is not a directory: {src_dir}")
    if out.resolve().is_relative_to(src):
        raise ConfigError(f"package archive {out} must not be written inside {src_dir}")
    top = src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    # filename="" and mtime=0 keep the gzip header free of the path and the clock.
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_tarinfo(src, top))
        for path in _package_files(src):
            arcname = f"{top}/{path.relative_to(src).as_posix()}"
            info = _tarinfo(path, arcname)
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    tmp.replace(out)
    digest = sha256_file(out)
    LOGGER.info(
        "built package archive",
        extra={"source": str(src), "archive": str(out), "sha256": digest},
    )
    return digest
