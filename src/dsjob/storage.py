"""Where bytes live: fetching inputs from S3 (or local paths) and the output stores."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dsjob.aws import aws_errors, translate
from dsjob.config import S3Location
from dsjob.errors import MissingObjectError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client

    from dsjob.config import Location

LOGGER = logging.getLogger(__name__)

MiB = 1024 * 1024
# Parts of 32 MiB and 8 threads keep a 2-vCPU task's link busy without holding
# much memory; outputs under the threshold go up in one PUT with a verifiable
# full-object SHA-256.
MULTIPART_THRESHOLD = 64 * MiB
MULTIPART_CHUNKSIZE = 32 * MiB
MAX_CONCURRENCY = 8


def transfer_config() -> TransferConfig:
    """The job's boto3 transfer settings (multipart, concurrent)."""
    from boto3.s3.transfer import TransferConfig  # noqa: PLC0415 - boto3 is imported lazily

    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=MAX_CONCURRENCY,
        use_threads=True,
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """A one-line transfer progress bar on a TTY (boto3 calls it from worker threads)."""

    def __init__(self, label: str, total: int, *, enabled: bool) -> None:
        """Args: label: what moves; total: bytes expected; enabled: draw at all (TTY only)."""
        self._label, self._total, self._enabled = label, max(total, 1), enabled
        self._done = 0
        self._lock = threading.Lock()
        self._last_pct = -1

    def __call__(self, amount: int) -> None:
        """Record `amount` more bytes and redraw when the percentage moves."""
        if not self._enabled:
            return
        with self._lock:
            self._done += amount
            pct = min(100, self._done * 100 // self._total)
            if pct != self._last_pct:
                self._last_pct = pct
                bar = "#" * (pct // 4)
                sys.stderr.write(
                    f"\r{self._label} [{bar:<25}] {pct:3d}% {self._done / MiB:,.1f} MiB"
                )
                if pct == 100:  # noqa: PLR2004 - complete
                    sys.stderr.write("\n")
                sys.stderr.flush()


@dataclass(frozen=True)
class FetchedFile:
    """One fetched asset: where it is now and what identified it at the source."""

    path: Path
    source: str
    size: int
    etag: str


def fetch(
    location: Location, dest_dir: Path, s3: S3Client | None, *, progress: bool = False
) -> FetchedFile:
    """Make `location` available as a local file.

    S3 objects are downloaded into `dest_dir` with the transfer manager; local files
    are used in place (no copy: inputs may be gigabytes).

    Args:
        location: an S3Location or a local path.
        dest_dir: the run's work directory.
        s3: an S3 client (required for S3 locations).
        progress: draw a progress bar (TTY text mode only).
    """
    if isinstance(location, Path):
        if not location.is_file():
            raise MissingObjectError(str(location))
        stat = location.stat()
        return FetchedFile(
            location.resolve(),
            str(location),
            stat.st_size,
            f"local:{stat.st_size}-{int(stat.st_mtime)}",
        )
    if s3 is None:  # pragma: no cover - the job always passes a client for S3 locations
        raise MissingObjectError(str(location))
    dest = dest_dir / (location.key.rsplit("/", 1)[-1] or "object")
    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key)
        size = head["ContentLength"]
        s3.download_file(
            location.bucket,
            location.key,
            str(dest),
            Config=transfer_config(),
            Callback=Progress(f"download {location}", size, enabled=progress),
        )
    except aws_errors() as exc:
        raise translate(
            exc, f"fetching {location}", bucket=location.bucket, key=location.key
        ) from exc
    LOGGER.info("fetched", extra={"source": str(location), "bytes": size})
    return FetchedFile(dest, str(location), size, head.get("ETag", "").strip('"'))


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD (or stat) says about a stored output."""

    size: int
    sha256: str | None  # hex, when the store can vouch for it
    metadata: Mapping[str, str]


class OutputStore(Protocol):
    """Where outputs and manifests are published: an S3 prefix or a local directory."""

    def uri(self, key: str) -> str:
        """The user-facing address of `key`."""
        ...

    def put_file(self, path: Path, key: str, metadata: Mapping[str, str], sha256: str) -> None:
        """Store `path` at `key` with `metadata`."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store a small blob (the manifest)."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """A small blob, or None when absent."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size, checksum and metadata of `key`, or None when absent."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete `keys` (absent keys are not an error)."""
        ...


class S3Store:
    """Outputs in an S3 bucket; uploads carry a SHA-256 checksum S3 verifies on arrival."""

    def __init__(self, s3: S3Client, bucket: str, *, progress: bool = False) -> None:
        """Args: s3: client; bucket: the output bucket; progress: draw upload bars."""
        self._s3, self.bucket, self._progress = s3, bucket, progress

    def uri(self, key: str) -> str:
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{key}"

    def _call(self, what: str, key: str, func: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        try:
            return func(**kwargs)
        except aws_errors() as exc:
            raise translate(exc, what, bucket=self.bucket, key=key) from exc

    def put_file(self, path: Path, key: str, metadata: Mapping[str, str], sha256: str) -> None:
        """Upload with the transfer manager; SHA-256 checksums are sent and checked by S3."""
        extra: dict[str, Any] = {"Metadata": dict(metadata), "ChecksumAlgorithm": "SHA256"}
        size = path.stat().st_size
        self._call(
            f"uploading {self.uri(key)}",
            key,
            self._s3.upload_file,
            Filename=str(path),
            Bucket=self.bucket,
            Key=key,
            ExtraArgs=extra,
            Config=transfer_config(),
            Callback=Progress(f"upload {self.uri(key)}", size, enabled=self._progress),
        )
        del sha256  # S3 verifies the checksum it was sent; head() reads it back

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """PUT a small object with a SHA-256 checksum."""
        self._call(
            f"writing {self.uri(key)}",
            key,
            self._s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
        )

    def get_bytes(self, key: str) -> bytes | None:
        """GET, or None on 404."""
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except aws_errors() as exc:
            error = translate(exc, f"reading {self.uri(key)}", bucket=self.bucket, key=key)
            if isinstance(error, MissingObjectError) and "bucket does not exist" not in str(error):
                return None
            raise error from exc
        return body

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD with checksum mode on; the SHA-256 is returned for single-part objects."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except aws_errors() as exc:
            error = translate(exc, f"checking {self.uri(key)}", bucket=self.bucket, key=key)
            if isinstance(error, MissingObjectError) and "bucket does not exist" not in str(error):
                return None
            raise error from exc
        checksum = head.get("ChecksumSHA256") or ""
        # Multipart uploads report a checksum of checksums ("...-N"): not the file's own.
        sha = base64.b64decode(checksum).hex() if checksum and "-" not in checksum else None
        return ObjectInfo(head["ContentLength"], sha, head.get("Metadata", {}))

    def list_keys(self, prefix: str) -> list[str]:
        """Paginated ListObjectsV2."""
        keys: list[str] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except aws_errors() as exc:
            raise translate(exc, f"listing {self.uri(prefix)}", bucket=self.bucket) from exc
        return keys

    def delete(self, keys: list[str]) -> None:
        """DeleteObjects in batches of 1,000 (the API's limit)."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            self._call(
                f"deleting old outputs under {self.uri('')}",
                batch[0],
                self._s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )


class LocalStore:
    """Outputs in a local directory: same names and manifest as S3, metadata in the manifest."""

    def __init__(self, root: Path) -> None:
        """Args: root: the output directory (created when missing)."""
        self.root = root

    def uri(self, key: str) -> str:
        """The file's path."""
        return str(self.root / key)

    def _write_atomically(self, key: str, write: Any) -> None:  # noqa: ANN401
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            write(tmp)
            tmp.replace(target)  # readers see the old file or the new one, never half
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, path: Path, key: str, metadata: Mapping[str, str], sha256: str) -> None:
        """Copy, never link: a link would let whoever wrote the file change it after the verify."""
        del metadata, sha256  # kept in the manifest for local outputs
        self._write_atomically(key, lambda tmp: shutil.copyfile(path, tmp))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Write a small file atomically."""
        del content_type
        self._write_atomically(key, lambda tmp: tmp.write_bytes(data))

    def get_bytes(self, key: str) -> bytes | None:
        """The file's bytes, or None."""
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def head(self, key: str) -> ObjectInfo | None:
        """Size and a fresh SHA-256 of the stored file."""
        path = self.root / key
        if not path.is_file():
            return None
        return ObjectInfo(path.stat().st_size, sha256_file(path), {})

    def list_keys(self, prefix: str) -> list[str]:
        """Keys (paths relative to the root) starting with `prefix`."""
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(
            k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith(".")
        )

    def delete(self, keys: list[str]) -> None:
        """Remove the files."""
        for key in keys:
            (self.root / key).unlink(missing_ok=True)


def is_s3(location: Location | None) -> bool:
    """Whether a location needs an S3 client."""
    return isinstance(location, S3Location)
