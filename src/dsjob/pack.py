"""`dsjob pack`: build package.tar.gz from a directory and upload it with script.py."""

from __future__ import annotations

import base64
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsjob.archive import build_package
from dsjob.aws import aws_errors, translate
from dsjob.errors import ConfigError, MissingObjectError
from dsjob.storage import sha256_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LOGGER = logging.getLogger(__name__)

PACKAGE_NAME = "package.tar.gz"
SCRIPT_NAME = "script.py"


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
