"""Where bytes live: fetching inputs, local digests, and the output-store protocol.

The S3 output store is in ``s3store.py``, the local one in ``localstore.py``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dsjob.aws import aws_errors, translate
from dsjob.config import S3Location
from dsjob.errors import MissingObjectError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client

    from dsjob.config import Location

LOGGER = logging.getLogger(__name__)

MiB = 1024 * 1024
# Parts of 32 MiB and 8 threads keep a 2-vCPU task's link busy without holding
# much memory (8 parts in flight: 256 MiB). Downloads use the same sizes.
MULTIPART_THRESHOLD = 64 * MiB
MULTIPART_CHUNKSIZE = 32 * MiB
MAX_CONCURRENCY = 8
# S3's smallest part but the last (User Guide "Amazon S3 multipart upload limits").
MIN_PART_SIZE = 5 * MiB


def transfer_config() -> TransferConfig:
    """The job's boto3 transfer settings for downloads (multipart, concurrent)."""
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


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def crc32_b64(value: int) -> str:
    """A CRC32 as S3 spells it in ``x-amz-checksum-crc32``: 4 big-endian bytes, base64."""
    return _b64(value.to_bytes(4, "big"))


@dataclass(frozen=True)
class Digests:
    """What dsjob computed over a local file in one read, before it is sent anywhere.

    ``crc32`` is the full-object CRC32 that S3 computes for an object uploaded with
    ``ChecksumType=FULL_OBJECT``; ``part_crc32s`` (one per part of ``part_size``)
    give the composite form ``base64(CRC32(concat(part CRCs)))-N`` that S3 reports
    for a ``COMPOSITE`` multipart upload (S3 User Guide, "Checking object
    integrity": full-object and composite checksums).
    """

    size: int
    sha256: str  # hex, kept in the manifest and object metadata
    crc32: str  # base64, full object
    part_size: int
    part_crc32s: tuple[str, ...]

    def composite_crc32(self) -> str:
        """The composite CRC32 of a multipart upload made of these parts."""
        joined = b"".join(base64.b64decode(p) for p in self.part_crc32s)
        return f"{crc32_b64(zlib.crc32(joined))}-{len(self.part_crc32s)}"


def digest_file(path: Path, part_size: int = MULTIPART_CHUNKSIZE) -> Digests:
    """SHA-256, full CRC32 and per-part CRC32s of `path`, read once in 1 MiB blocks."""
    sha = hashlib.sha256()
    whole = 0
    parts: list[str] = []
    part, in_part, size = 0, 0, 0
    with path.open("rb") as handle:
        while block := handle.read(min(MiB, part_size - in_part)):
            sha.update(block)
            whole = zlib.crc32(block, whole)
            part = zlib.crc32(block, part)
            in_part += len(block)
            size += len(block)
            if in_part == part_size:
                parts.append(crc32_b64(part))
                part, in_part = 0, 0
    if in_part or not parts:
        parts.append(crc32_b64(part))
    return Digests(size, sha.hexdigest(), crc32_b64(whole), part_size, tuple(parts))


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says it holds under a key (HEAD, or a fresh look at a local file)."""

    size: int
    checksum_crc32: str | None  # base64; "<b64>-N" for a composite multipart checksum
    checksum_type: str | None  # "FULL_OBJECT" or "COMPOSITE" (None when not reported)
    metadata: Mapping[str, str] = field(default_factory=dict)
    etag: str = ""
    version_id: str | None = None
    last_modified: datetime | None = None
    sha256: str | None = None  # hex, when the store reports a full-object SHA-256 (single PUT)


@dataclass(frozen=True)
class Blob:
    """A small object read whole (a manifest, the current pointer) and its ETag."""

    data: bytes
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class Listed:
    """One key from a listing, with the store's own modification time."""

    key: str
    last_modified: datetime


class OutputStore(Protocol):
    """Where outputs and manifests are published: an S3 prefix or a local directory.

    Every ``create_*`` is a conditional create: it raises ``ConflictError`` when the
    key already exists, and never overwrites.
    """

    def uri(self, key: str) -> str:
        """The user-facing address of `key`."""
        ...

    def create_file(
        self, path: Path, key: str, metadata: Mapping[str, str], digests: Digests
    ) -> None:
        """Store `path` at `key` unless `key` exists; the store checks `digests` on arrival."""
        ...

    def create_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store a small blob at `key` unless `key` exists."""
        ...

    def swap_bytes(
        self, key: str, data: bytes, content_type: str, expected_etag: str | None
    ) -> str:
        """Replace `key` only if it still has `expected_etag` (None: only if absent); new ETag."""
        ...

    def get(self, key: str) -> Blob | None:
        """A small blob with its ETag, or None when absent."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size, the store's own checksum and metadata of `key`, or None when absent."""
        ...

    def list_objects(self, prefix: str) -> list[Listed]:
        """Every key starting with `prefix`."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete `keys` (absent keys are not an error)."""
        ...


def is_s3(location: Location | None) -> bool:
    """Whether a location needs an S3 client."""
    return isinstance(location, S3Location)
