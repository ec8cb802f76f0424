"""The S3 output store against a moto server with real boto3: conditions, checksums, errors.

Faults are answers on the real request path (botocore ``before-send`` handlers on
the test's own client, as ``s3faults.py`` registers them in a subprocess); no
dsjob function is patched. Where moto 5.2.5 differs from S3 the test says so.
"""

from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from dsjob.errors import ConfigError, ConflictError, DsjobError, TransientError
from dsjob.s3store import S3Store
from dsjob.storage import MiB, crc32_b64, digest_file
from tests.integration import s3faults

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"


def client(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def answer(s3: S3Client, operation: str, status: int, code: str) -> list[str]:
    """Answer every `operation` call with an S3 error; return the list of calls answered."""
    seen: list[str] = []
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    def handler(request: Any, **_: Any) -> AWSResponse:
        seen.append(request.url)
        return AWSResponse(request.url, status, HTTPHeaders(), s3faults._Raw(body))

    s3.meta.events.register(f"before-send.s3.{operation}", handler)  # type: ignore[arg-type]  # a before-send handler may answer
    return seen


def uploads(s3: S3Client) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=OUT).get("Uploads", [])]


def test_multipart_create_stores_bytes_metadata_and_full_object_crc32(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A 6 MiB file goes up in two parts with its metadata; HEAD reports S3's own CRC32."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(6 * MiB + 3))
    s3 = client(local_aws)
    store = S3Store(s3, OUT, part_size=5 * MiB)
    store.create_file(path, "p/big.bin", {"run-id": "r1"}, digest_file(path, 5 * MiB))
    got = s3.get_object(Bucket=OUT, Key="p/big.bin")
    assert got["Body"].read() == path.read_bytes()
    assert got["Metadata"] == {"run-id": "r1"}
    info = store.head("p/big.bin")
    assert info is not None
    assert (info.size, info.checksum_type) == (6 * MiB + 3, "FULL_OBJECT")
    assert info.checksum_crc32 == crc32_b64(zlib.crc32(path.read_bytes()))
    assert info.metadata == {"run-id": "r1"}
    assert info.etag == got["ETag"].strip('"')
    assert info.etag.endswith("-2")
    assert info.sha256 is None  # no SHA-256 checksum was asked for
    assert info.last_modified == got["LastModified"]
    assert uploads(s3) == []


def test_a_taken_key_is_a_conflict_and_keeps_its_bytes(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Creating a key that exists (multipart, empty or small) raises ConflictError naming it."""
    s3 = client(local_aws)
    store = S3Store(s3, OUT, part_size=5 * MiB)
    s3.put_object(Bucket=OUT, Key="p/k", Body=b"first")
    full, empty = tmp_path / "full.bin", tmp_path / "empty.bin"
    full.write_bytes(b"second")
    empty.write_bytes(b"")
    for path in (full, empty):
        with pytest.raises(ConflictError, match="s3://dsjob-output/p/k was written"):
            store.create_file(path, "p/k", {}, digest_file(path, 5 * MiB))
    with pytest.raises(ConflictError, match="s3://dsjob-output/p/k"):
        store.create_bytes("p/k", b"third", "application/json")
    assert s3.get_object(Bucket=OUT, Key="p/k")["Body"].read() == b"first"
    assert uploads(s3) == []  # the losing multipart upload was aborted


def test_an_empty_file_is_one_put_with_its_metadata(local_aws: LocalServe, tmp_path: Path) -> None:
    """A 0-byte output is a single PUT (no multipart upload) that keeps its metadata."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    s3 = client(local_aws)
    S3Store(s3, OUT).create_file(path, "p/empty.csv", {"dataset": "d"}, digest_file(path))
    head = s3.head_object(Bucket=OUT, Key="p/empty.csv")
    assert (head["ContentLength"], head["Metadata"]) == (0, {"dataset": "d"})


def test_swap_replaces_only_the_expected_version(local_aws: LocalServe) -> None:
    """If-Match on the ETag read replaces the pointer; a stale ETag or a taken key conflicts."""
    s3 = client(local_aws)
    store = S3Store(s3, OUT)
    store.swap_bytes("current/d.json", b"v1", "application/json", None)
    with pytest.raises(ConflictError):
        store.swap_bytes("current/d.json", b"v1b", "application/json", None)
    blob = store.get("current/d.json")
    assert blob is not None
    assert blob.data == b"v1"
    store.swap_bytes("current/d.json", b"v2", "application/json", blob.etag)
    with pytest.raises(ConflictError):
        store.swap_bytes("current/d.json", b"v3", "application/json", blob.etag)
    got = s3.get_object(Bucket=OUT, Key="current/d.json")
    assert (got["Body"].read(), got["ContentType"]) == (b"v2", "application/json")


def test_a_refused_digest_is_transient_and_aborts_the_upload(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """S3's BadDigest on a part (bytes changed on the way) exits 5 and leaves no upload behind.

    moto 5.2.5 never answers BadDigest (it does not check a client's checksum); S3
    does, so the answer is injected on the request path.
    """
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(local_aws)
    seen = answer(s3, "UploadPart", 400, "BadDigest")
    with pytest.raises(TransientError, match="refused the bytes \\(BadDigest\\)") as caught:
        S3Store(s3, OUT).create_file(path, "p/a.bin", {}, digest_file(path))
    assert "s3://dsjob-output/p/a.bin" in str(caught.value)
    assert seen
    assert uploads(s3) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT, Prefix="p/")


def test_a_failed_upload_is_aborted_even_if_the_abort_fails(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A 500 on CompleteMultipartUpload exits 5; an abort that fails too is only logged."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(local_aws)
    answer(s3, "CompleteMultipartUpload", 500, "InternalError")
    aborts = answer(s3, "AbortMultipartUpload", 500, "InternalError")
    with pytest.raises(TransientError):
        S3Store(s3, OUT).create_file(path, "p/a.bin", {}, digest_file(path))
    assert len(aborts) >= 1
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT, Prefix="p/")


def test_missing_keys_read_as_none_and_a_missing_bucket_names_itself(
    local_aws: LocalServe,
) -> None:
    """GET and HEAD of an absent key give None; any call on an absent bucket is a config error.

    HEAD answers 404 with no body for both (S3 API Reference, HeadObject), so a HEAD
    404 asks HeadBucket once; GET and LIST name NoSuchBucket themselves.
    """
    s3 = client(local_aws)
    store = S3Store(s3, OUT)
    assert store.get("nope") is None
    assert store.head("nope") is None
    assert store.get_bytes("nope") is None
    calls: list[Callable[[S3Store], object]] = [
        lambda gone: gone.head("k"),
        lambda gone: gone.get("k"),
        lambda gone: gone.list_objects("p/"),
        lambda gone: gone.create_bytes("k", b"x", "text/plain"),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="output bucket no-such-bucket does not exist") as err:
            call(S3Store(s3, "no-such-bucket"))
        assert err.value.exit_code == 2


def test_a_missing_key_costs_at_most_one_head_bucket(local_aws: LocalServe) -> None:
    """HeadBucket runs once per store, and not at all after a GET or LIST proved the bucket."""
    s3 = client(local_aws)
    asked: list[str] = []
    s3.meta.events.register("before-call.s3.HeadBucket", lambda **_: asked.append("HeadBucket"))
    store = S3Store(s3, OUT)
    assert [store.head("a"), store.head("b"), store.head("c")] == [None, None, None]
    assert asked == ["HeadBucket"]
    proven = S3Store(s3, OUT)
    assert proven.get("nope") is None  # NoSuchKey: the bucket exists
    assert proven.head("a") is None
    assert asked == ["HeadBucket"]


def test_delete_removes_more_than_one_batch_and_nothing_else(local_aws: LocalServe) -> None:
    """Deleting 1,001 keys takes two DeleteObjects calls of at most 1,000 keys; others stay."""
    s3 = client(local_aws)
    store = S3Store(s3, OUT)
    doomed = [f"p/{i:04d}" for i in range(1001)]
    for key in [*doomed, "p/keep"]:
        store.put_bytes(key, b"", "text/plain")
    batches: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        batches.append(len(params["Delete"]["Objects"]))

    s3.meta.events.register("provide-client-params.s3.DeleteObjects", count)
    store.delete(doomed)
    assert batches == [1000, 1]
    assert store.list_keys("p/") == ["p/keep"]
    assert store.list_objects("q/") == []


def test_a_failed_delete_names_the_bucket(local_aws: LocalServe) -> None:
    """A DeleteObjects that S3 refuses raises, naming the bucket, instead of passing silently."""
    s3 = client(local_aws)
    store = S3Store(s3, OUT)
    store.put_bytes("p/a", b"a", "text/plain")
    answer(s3, "DeleteObjects", 403, "AccessDenied")
    with pytest.raises(DsjobError, match="s3://dsjob-output/p/a"):
        store.delete(["p/a"])
    assert store.get_bytes("p/a") == b"a"
