"""A fan-out run's files in S3: where they go, written once with a condition, read back verified.

Layout under the output prefix (``<prefix>``)::

    <prefix>_work/<run-id>/part=<k>/<object-tag>.parquet  one object's rows of partition k
    <prefix>_work/<run-id>/maps/<object-tag>.json          a map task's record (written last)
    <prefix>_work/<run-id>/reduce/part=<k>.json            a reduce task's record (written last)

Every object is created with ``If-None-Match: *`` (S3 conditional writes,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html):
S3 answers 412 PreconditionFailed when the key exists, 409 ConditionalRequestConflict
when a concurrent write to it is in flight, which is sent again as the publish
protocol's writes are (:meth:`dsjob.s3store.S3Store.conditional`; exit 5 once it
stays contended). moto 5.2.5 answers the 412 the same way; it never answers the
409 (it serialises requests): tests/integration/test_fanout.py injects it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from dsjob.aws import aws_errors, translate
from dsjob.errors import ConfigError, ConflictError, InputError, TransientError
from dsjob.s3store import S3Store
from dsjob.storage import sha256_file

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

LOGGER = logging.getLogger(__name__)

#: S3's limit for one PutObject (https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html).
MAX_PUT_BYTES = 5 * 1024**3


def object_tag(key: str) -> str:
    """A short, key-safe, unique name for one input object (its file name + a hash of its key)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", key.rsplit("/", 1)[-1])[:80] or "object"
    return f"{name}-{sha256(key.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class WorkArea:
    """The S3 work files of one fan-out run."""

    s3: S3Client
    bucket: str
    prefix: str  # the output prefix, e.g. "processed/"
    run_id: str

    @property
    def store(self) -> S3Store:
        """The plain (unconditional) store: HEAD, GET, list, delete."""
        return S3Store(self.s3, self.bucket)

    @property
    def root(self) -> str:
        """``<prefix>_work/<run-id>/``."""
        return f"{self.prefix}_work/{self.run_id}/"

    def part_key(self, partition: int, tag: str) -> str:
        """Where a map task puts its rows of `partition`."""
        return f"{self.root}part={partition}/{tag}.parquet"

    def map_key(self, tag: str) -> str:
        """A map task's record."""
        return f"{self.root}maps/{tag}.json"

    def reduce_key(self, partition: int) -> str:
        """A reduce task's record."""
        return f"{self.root}reduce/part={partition}.json"

    def uri(self, key: str) -> str:
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{key}"

    def put_new(self, key: str, body: bytes | Path, metadata: dict[str, str] | None = None) -> bool:
        """Create `key` unless it exists; False when it already did (S3 412)."""
        data = body if isinstance(body, bytes) else None
        if data is None and not isinstance(body, bytes) and body.stat().st_size > MAX_PUT_BYTES:
            msg = f"{body.name} is over 5 GiB, S3's limit for one PUT: raise partitions"
            raise ConfigError(msg)

        def write() -> None:
            if data is not None:
                self._put(key, data, metadata)
            else:
                with body.open("rb") as handle:  # type: ignore[union-attr]
                    self._put(key, handle, metadata)

        try:
            self.store.conditional(key, f"writing {self.uri(key)}", write)
        except ConflictError:
            return False
        return True

    def _put(self, key: str, body: Any, metadata: dict[str, str] | None) -> None:  # noqa: ANN401
        # ChecksumAlgorithm: S3 verifies the SHA-256 on arrival and keeps it for HEAD.
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            IfNoneMatch="*",
            ChecksumAlgorithm="SHA256",
            Metadata=metadata or {},
        )

    def put_verified(self, key: str, path: Path, metadata: dict[str, str]) -> tuple[int, str]:
        """Create `key` from `path` and check what S3 stored; returns size and SHA-256.

        A key left by an earlier, unfinished attempt of the same task (same run id,
        same object) is replaced: that attempt never wrote its record, so nothing
        refers to it.
        """
        digest = sha256_file(path)
        meta = {**metadata, "sha256": digest}
        if not self.put_new(key, path, meta):
            LOGGER.info("replacing a file an unfinished attempt left", extra={"key": key})
            self.store.delete([key])
            if not self.put_new(key, path, meta):
                msg = f"{self.uri(key)}: another task is writing this file at the same time"
                raise TransientError(msg)
        self.verify(key, path.stat().st_size, digest)
        return path.stat().st_size, digest

    def verify(self, key: str, size: int, digest: str) -> None:
        """HEAD `key`: the size and the SHA-256 S3 computed must be what was sent.

        S3 returns the full-object ChecksumSHA256 for a single PUT made with it
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html);
        every fan-out file is one PUT, so no composite checksum arises here.
        """
        info = self.store.head(key)
        if info is None:
            msg = f"{self.uri(key)} is missing"
            raise InputError(msg)
        if info.size != size or info.sha256 != digest:
            msg = (
                f"{self.uri(key)}: S3 holds {info.size} bytes with SHA-256 {info.sha256}, "
                f"expected {size} bytes with {digest}"
            )
            raise InputError(msg)

    def get_json(self, key: str) -> dict[str, Any] | None:
        """A record, or None when absent."""
        raw = self.store.get_bytes(key)
        return None if raw is None else dict(json.loads(raw))

    def put_record(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Write a task's record once; if a twin attempt wrote it first, return that one."""
        if self.put_new(key, json.dumps(record, indent=2, default=str).encode()):
            return record
        existing = self.get_json(key)
        return existing if existing is not None else record

    def records(self, folder: str) -> list[dict[str, Any]]:
        """Every record under ``<root><folder>/``, in key order."""
        keys = sorted(
            k for k in self.store.list_keys(f"{self.root}{folder}/") if k.endswith(".json")
        )
        return [r for r in (self.get_json(k) for k in keys) if r is not None]

    def download(self, key: str, dest: Path, digest: str) -> Path:
        """GET `key` into `dest` and check it against the SHA-256 its writer recorded."""
        try:
            self.s3.download_file(self.bucket, key, str(dest))
        except aws_errors() as exc:
            raise translate(exc, f"reading {self.uri(key)}", bucket=self.bucket, key=key) from exc
        if sha256_file(dest) != digest:
            msg = f"{self.uri(key)} changed after its map task wrote it (SHA-256 differs)"
            raise InputError(msg)
        return dest
