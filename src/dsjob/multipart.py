"""One multipart upload: parts in parallel with their CRC32s, completed only if the key is free.

The store (:mod:`dsjob.s3store`) decides the protocol (checksums, conditional
creates, retries after a 409); this module moves the bytes. Parts are sent from
a thread pool while the caller's ``checkpoint`` is polled, so a stop request is
seen within 0.2 s; any failure, a stop included, aborts the upload at once
(AbortMultipartUpload, S3 API Reference), and the bucket's
``AbortIncompleteMultipartUpload`` lifecycle rule is the backstop when even that fails.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsjob.aws import aws_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from dsjob.storage import Digests, Progress

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where the upload goes, and the store's call that turns S3 errors into dsjob's."""

    s3: S3Client
    bucket: str
    key: str
    # (what, key, client method, **arguments) -> the answer, S3 errors translated
    call: Callable[..., Any]


def upload(
    target: Target,
    path: Path,
    metadata: Mapping[str, str],
    digests: Digests,
    *,
    concurrency: int,
    progress: Progress,
    checkpoint: Callable[[], None],
) -> None:
    """Upload `path` in ``digests.part_size`` parts; complete with ``If-None-Match: *``.

    Args:
        target: bucket, key, client and the store's error-translating call.
        path: the file.
        metadata: the object's user metadata.
        digests: the file's CRC32 per part and in full, computed in the same pass as its SHA-256.
        concurrency: parts in flight.
        progress: called with each part's size.
        checkpoint: raises when the job must stop.
    """
    s3, bucket, key, call = target.s3, target.bucket, target.key, target.call
    what = f"uploading s3://{bucket}/{key}"
    size = digests.part_size
    upload_id = call(
        what,
        key,
        s3.create_multipart_upload,
        Bucket=bucket,
        Key=key,
        Metadata=dict(metadata),
        ChecksumAlgorithm="CRC32",
        ChecksumType="FULL_OBJECT",
    )["UploadId"]

    def part(index: int) -> dict[str, Any]:
        with path.open("rb") as handle:
            handle.seek(index * size)
            body = handle.read(size)
        sent = digests.part_crc32s[index]
        answer = call(
            what,
            key,
            s3.upload_part,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=index + 1,
            Body=body,
            ChecksumCRC32=sent,
        )
        progress(len(body))
        return {"PartNumber": index + 1, "ETag": answer["ETag"], "ChecksumCRC32": sent}

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="dsjob-part")
    try:
        futures = [pool.submit(part, i) for i in range(len(digests.part_crc32s))]
        pending = set(futures)
        while pending:  # wait in Python, so that a stop request is seen within 0.2 s
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            checkpoint()
            if any(f.done() and f.exception() for f in futures):
                break
        parts = [f.result() for f in futures]
        call(
            what,
            key,
            s3.complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumCRC32=digests.crc32,
            ChecksumType="FULL_OBJECT",
            MpuObjectSize=digests.size,
            IfNoneMatch="*",
        )
    except BaseException:
        # Do not wait for parts still on the wire: abort, and the upload is gone.
        pool.shutdown(wait=False, cancel_futures=True)
        _abort(s3, bucket, key, upload_id)
        raise
    pool.shutdown()


def _abort(s3: S3Client, bucket: str, key: str, upload_id: str) -> None:
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except aws_errors():  # the bucket's AbortIncompleteMultipartUpload rule is the backstop
        LOGGER.warning("could not abort a multipart upload", extra={"key": key})
