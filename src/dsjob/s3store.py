"""The S3 output store: conditional creates, full-object CRC32 checksums, paged listing.

Every object is created with ``If-None-Match: *`` (S3 User Guide, "Add
preconditions to S3 operations with conditional requests"): a name another run
took answers 412 and becomes ``ConflictError``, never an overwrite. The current
pointer is replaced with ``If-Match: <etag>`` (compare-and-swap). A 409
``ConditionalRequestConflict`` (a concurrent write met this one) is written again.

Data outputs always go up as a multipart upload with ``ChecksumAlgorithm=CRC32``
and ``ChecksumType=FULL_OBJECT`` (User Guide, "Checking object integrity"), even
when one part suffices, because that is the path on which S3 *and* moto compute
the stored object's checksum themselves:

- S3 checks each part's CRC32 on arrival and the full-object CRC32 we send with
  CompleteMultipartUpload, failing with ``BadDigest`` on a difference; HEAD with
  ``ChecksumMode=ENABLED`` returns the full-object value it stored.
- moto 5.2.5 does not check the values a client sends (a PUT stores the client's
  header as the checksum), but it computes the completed object's checksum from the
  part bytes it stored. So on moto the HEAD value is the only check, and it is real.

boto3's transfer manager cannot send ``If-None-Match`` (it is not among its
allowed upload arguments), hence the small hand-rolled multipart upload in
:mod:`dsjob.multipart`.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from dsjob import multipart
from dsjob.aws import aws_errors, refusal, translate
from dsjob.errors import ConfigError, ConflictError, MissingObjectError, TransientError
from dsjob.storage import MAX_CONCURRENCY, MULTIPART_CHUNKSIZE, Blob, Listed, ObjectInfo, Progress

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from dsjob.storage import Digests

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

# 412: the precondition failed (the key exists, or its ETag moved).
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412"})
# 409 ConditionalRequestConflict: a concurrent write to the key met this conditional
# one, which did not take effect. S3 asks for the request to be retried; for
# CompleteMultipartUpload, from a new CreateMultipartUpload with every part again
# (S3 API Reference, PutObject and CompleteMultipartUpload, IfNoneMatch). moto 5.2.5
# never answers it: tests/integration/test_publish_conflicts.py injects it.
_CONTENDED_CODES = frozenset({"ConditionalRequestConflict", "409"})
CONTENDED_TRIES = 3
_CONTENDED_BACKOFF_S = 0.2
# S3 refuses bytes whose checksum differs from the one sent with them.
_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


class _ContendedError(TransientError):
    """One 409 ConditionalRequestConflict; :meth:`S3Store._retried` sends the write again."""


class S3Store:
    """Outputs in an S3 bucket."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        progress: bool = False,
        part_size: int = MULTIPART_CHUNKSIZE,
        concurrency: int = MAX_CONCURRENCY,
        checkpoint: Callable[[], None] = lambda: None,
    ) -> None:
        """Set up the store.

        Args:
            s3: the client.
            bucket: the output bucket.
            progress: draw upload bars.
            part_size: multipart part size (S3's minimum is 5 MiB for all but the last).
            concurrency: parts in flight.
            checkpoint: called while parts are in flight; raises when the job must stop.
        """
        self._s3, self.bucket, self._progress = s3, bucket, progress
        self.part_size, self._concurrency = part_size, concurrency
        self._checkpoint = checkpoint
        self._bucket_seen = False  # an answer that only an existing bucket gives came back

    def uri(self, key: str) -> str:
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{key}"

    def _call(self, what: str, key: str, func: Callable[..., Any], **kwargs: Any) -> Any:  # noqa: ANN401
        try:
            return func(**kwargs)
        except aws_errors() as exc:
            code = _code(exc)
            if code == "NoSuchBucket":
                raise self._no_bucket() from exc
            if code in _CONFLICT_CODES:
                raise ConflictError(f"{self.uri(key)} was written by another run first") from exc
            if code in _CONTENDED_CODES:
                raise _ContendedError(f"{what}: 409 {code}") from exc
            if code in _DIGEST_CODES:
                msg = f"{what}: S3 refused the bytes ({code}): they changed on the way"
                raise TransientError(msg) from exc
            raise translate(exc, what, bucket=self.bucket, key=key) from exc

    def _retried(self, key: str, write: Callable[[], _T]) -> _T:
        """Run a conditional `write`, again after a 409, at most ``CONTENDED_TRIES`` times.

        Still contended after that: ``TransientError`` (exit 5), nothing written.
        """
        for attempt in range(1, CONTENDED_TRIES + 1):
            try:
                return write()
            except _ContendedError as exc:
                LOGGER.warning(
                    "S3 saw a concurrent write to the key; writing again",
                    extra={"key": self.uri(key), "attempt": attempt, "error": str(exc)},
                )
                if attempt < CONTENDED_TRIES:
                    time.sleep(_CONTENDED_BACKOFF_S * 2 ** (attempt - 1))
        msg = (
            f"{self.uri(key)}: S3 answered 409 ConditionalRequestConflict {CONTENDED_TRIES} "
            "times (other writes to this key at the same moment); nothing was written"
        )
        raise TransientError(msg)

    def conditional(self, key: str, what: str, write: Callable[[], object]) -> None:
        """Run `write`, a conditional write of `key`, as this store's own writes run.

        412: ``ConflictError``; 409: sent again, at most ``CONTENDED_TRIES`` times;
        anything else translated (the fan-out's work files, :mod:`dsjob.workarea`).
        """
        self._retried(key, lambda: self._call(what, key, write))

    def create_file(
        self, path: Path, key: str, metadata: Mapping[str, str], digests: Digests
    ) -> None:
        """Multipart upload with CRC32 checksums, completed only if `key` is still free.

        After a 409 the whole upload starts again from CreateMultipartUpload.
        """
        self._retried(key, lambda: self._create_file(path, key, metadata, digests))

    def _create_file(
        self, path: Path, key: str, metadata: Mapping[str, str], digests: Digests
    ) -> None:
        what = f"uploading {self.uri(key)}"
        if digests.size == 0:  # a multipart upload needs a part with bytes in it
            self._call(
                what,
                key,
                self._s3.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=b"",
                Metadata=dict(metadata),
                IfNoneMatch="*",
                ChecksumCRC32=digests.crc32,
            )
            return
        if digests.part_size != self.part_size:  # pragma: no cover - publish digests with ours
            msg = f"digests of {path} use {digests.part_size}-byte parts, not {self.part_size}"
            raise ValueError(msg)
        multipart.upload(
            multipart.Target(self._s3, self.bucket, key, self._call),
            path,
            metadata,
            digests,
            concurrency=self._concurrency,
            progress=Progress(f"upload {self.uri(key)}", digests.size, enabled=self._progress),
            checkpoint=self._checkpoint,
        )

    def create_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """PUT a small object only if `key` is free (S3 checks the CRC32 botocore sends)."""
        self.swap_bytes(key, data, content_type, None)

    def swap_bytes(
        self, key: str, data: bytes, content_type: str, expected_etag: str | None
    ) -> str:
        """PUT with If-Match (or If-None-Match when `expected_etag` is None); the new ETag.

        If-Match on a key that is gone answers 404 NoSuchKey (``MissingObjectError``).
        """
        condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        answer = self._retried(
            key,
            lambda: self._call(
                f"writing {self.uri(key)}",
                key,
                self._s3.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm="CRC32",
                **condition,
            ),
        )
        return str(answer["ETag"])

    def _no_bucket(self) -> ConfigError:
        return ConfigError(
            f"the output bucket {self.bucket} does not exist (s3://{self.bucket}): "
            "create it, or set output-bucket to a bucket that exists"
        )

    def _missing(self, exc: BaseException, what: str, key: str) -> bool:
        """True when `key` is absent from a bucket that exists; raises for anything else."""
        error = translate(exc, what, bucket=self.bucket, key=key)
        code = _code(exc)
        if code == "NoSuchBucket":
            raise self._no_bucket() from exc
        if not isinstance(error, MissingObjectError):
            raise error from exc
        if code == "NoSuchKey":  # an error body naming the key: the bucket is there
            self._bucket_seen = True
        else:
            self._check_bucket()
        return True

    def _check_bucket(self) -> None:
        """Ask HeadBucket, once, whether the bucket exists.

        A HEAD of an object answers a bare 404 with no body whether the key or the
        whole bucket is missing (S3 API Reference, HeadObject); HeadBucket answers
        404 only for a bucket that does not exist (API Reference, HeadBucket).
        """
        if self._bucket_seen:
            return
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except aws_errors() as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:  # noqa: PLR2004 - HeadBucket's "no such bucket"
                raise self._no_bucket() from exc
            return  # denied or failing: the object operations that follow say so themselves
        self._bucket_seen = True

    def get(self, key: str) -> Blob | None:
        """GET, or None on 404."""
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
            data: bytes = answer["Body"].read()
        except aws_errors() as exc:
            if self._missing(exc, f"reading {self.uri(key)}", key):
                return None
            raise  # pragma: no cover - _missing raises
        return Blob(data, answer.get("ETag", ""), answer.get("LastModified"))

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD with ChecksumMode=ENABLED: S3's own checksum of the stored bytes."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except aws_errors() as exc:
            if self._missing(exc, f"checking {self.uri(key)}", key):
                return None
            raise  # pragma: no cover - _missing raises
        sha = head.get("ChecksumSHA256") or ""
        return ObjectInfo(
            sha256=base64.b64decode(sha).hex() if sha and "-" not in sha else None,
            size=head["ContentLength"],
            checksum_crc32=head.get("ChecksumCRC32"),
            checksum_type=head.get("ChecksumType"),
            metadata=head.get("Metadata", {}),
            etag=head.get("ETag", "").strip('"'),
            version_id=head.get("VersionId"),
            last_modified=head.get("LastModified"),
        )

    def list_objects(self, prefix: str) -> list[Listed]:
        """Paginated ListObjectsV2 (strongly consistent: User Guide, "data consistency model")."""
        found: list[Listed] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                found.extend(Listed(o["Key"], o["LastModified"]) for o in page.get("Contents", []))
        except aws_errors() as exc:
            if _code(exc) == "NoSuchBucket":
                raise self._no_bucket() from exc
            raise translate(exc, f"listing {self.uri(prefix)}", bucket=self.bucket) from exc
        self._bucket_seen = True
        return found

    def delete(self, keys: list[str]) -> None:
        """DeleteObjects in batches of 1,000 (the API's limit); raises if S3 kept any key.

        S3 answers 200 even when it refused some keys, listing each in an ``Error``
        element (in quiet mode the answer holds only those: S3 API Reference,
        DeleteObjects). Every batch is still sent, then the refusals raise together:
        exit 5 only when each is worth retrying (``SlowDown``, ``InternalError``).
        moto 5.2.5 never refuses a key; tests/integration/test_s3store.py injects it.
        """
        refused: list[tuple[str, str]] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            answer = self._call(
                f"deleting under {self.uri('')}",
                batch[0],
                self._s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            # Each Error names its Key and Code (S3 API Reference, DeleteObjects, Error).
            refused.extend((e["Key"], e["Code"]) for e in answer.get("Errors", []))
        if refused:
            kinds = [refusal(code) for _, code in refused]
            kind = next((k for k in kinds if k is not TransientError), TransientError)
            named = ", ".join(f"{self.uri(key)} ({code})" for key, code in refused[:5])
            more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""  # noqa: PLR2004
            msg = f"deleting under {self.uri('')}: S3 kept {len(refused)} key(s): {named}{more}"
            if kind is ConfigError:
                msg += "; check the role's permissions (s3:DeleteObject)"
            raise kind(msg)

    # Plain reads and writes used by the fan-out's work area (``workarea.py``).

    def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, or None on 404."""
        blob = self.get(key)
        return None if blob is None else blob.data

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`."""
        return [item.key for item in self.list_objects(prefix)]

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """PUT a small object unconditionally (S3 checks the CRC32 botocore sends)."""
        self._call(
            f"writing {self.uri(key)}",
            key,
            self._s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumAlgorithm="CRC32",
        )


def _code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ("" for other failures)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
