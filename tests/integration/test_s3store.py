"""The S3 output store against a moto server with real boto3: conditions, checksums, errors.

Faults are answers on the real request path (botocore ``before-send`` handlers on
the test's own client, as ``s3faults.py`` registers them in a subprocess); no
dsjob function is patched. Where moto 5.2.5 differs from S3 the test says so.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
import zlib
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.httpsession import URLLib3Session

from dsjob.errors import ConfigError, ConflictError, DsjobError, TransientError
from dsjob.s3store import CONTENDED_TRIES, S3Store
from dsjob.storage import MiB, crc32_b64, digest_file
from tests.integration import s3faults

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"


@pytest.fixture
def bare_aws(_serve: LocalServe) -> LocalServe:
    """The session's emulator, wiped, with the output bucket alone: all these tests use.

    Cheaper than ``local_aws``'s full seed (SSM, sample input), which counts in
    ``make mutation``, where each mutant runs these tests again.
    """
    _serve.reset()
    client(_serve).create_bucket(Bucket=OUT)
    return _serve


#: botocore's retries off: one request per call, so an injected fault is seen once.
ONE_TRY = Config(retries={"total_max_attempts": 1})


def client(aws: LocalServe, config: Config | None = None) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1", config=config)


def answer(
    s3: S3Client, operation: str, status: int, code: str, times: int | None = None
) -> list[str]:
    """Answer `operation` calls (the first `times`, or all) with an S3 error; list those answered.

    An empty `code` answers with no error body, as S3 answers a HEAD.
    """
    seen: list[str] = []
    body = (
        f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode() if code else b""
    )

    def handler(request: Any, **_: Any) -> AWSResponse | None:
        if times is not None and len(seen) >= times:
            return None  # sent to moto
        seen.append(request.url)
        return AWSResponse(request.url, status, HTTPHeaders(), s3faults._Raw(body))

    s3.meta.events.register(f"before-send.s3.{operation}", handler)  # type: ignore[arg-type]  # a before-send handler may answer
    return seen


def uploads(s3: S3Client) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=OUT).get("Uploads", [])]


def test_multipart_create_stores_bytes_metadata_and_full_object_crc32(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """A 6 MiB file goes up in two parts with its metadata; HEAD reports S3's own CRC32."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(6 * MiB + 3))
    s3 = client(bare_aws)
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
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """Creating a key that exists (multipart, empty or small) raises ConflictError naming it."""
    s3 = client(bare_aws)
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


def test_an_empty_file_is_one_put_with_its_metadata(bare_aws: LocalServe, tmp_path: Path) -> None:
    """A 0-byte output is a single PUT (no multipart upload) with its metadata and CRC32.

    The CRC32 is dsjob's own: botocore's are off (``request_checksum_calculation =
    when_required``); moto 5.2.5 keeps no checksum for an empty object, so the request is read.
    """
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    s3 = boto3.client(
        "s3",
        endpoint_url=bare_aws.endpoint,
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )
    created: list[str] = []
    s3.meta.events.register(
        "before-call.s3.CreateMultipartUpload", lambda **_: created.append("upload")
    )
    crc: list[object] = []
    s3.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: crc.append(request.headers.get("x-amz-checksum-crc32")),
    )
    S3Store(s3, OUT).create_file(path, "p/empty.csv", {"dataset": "d"}, digest_file(path))
    head = s3.head_object(Bucket=OUT, Key="p/empty.csv")
    assert (head["ContentLength"], head["Metadata"]) == (0, {"dataset": "d"})
    assert created == []
    assert crc in ([crc32_b64(0)], [crc32_b64(0).encode()])


def test_swap_replaces_only_the_expected_version(bare_aws: LocalServe) -> None:
    """If-Match on the ETag read replaces the pointer; a stale ETag or a taken key conflicts."""
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    store.swap_bytes("current/d.json", b"v1", "application/json", None)
    with pytest.raises(ConflictError):
        store.swap_bytes("current/d.json", b"v1b", "application/json", None)
    blob = store.get("current/d.json")
    assert blob is not None
    assert blob.data == b"v1"
    head = s3.head_object(Bucket=OUT, Key="current/d.json")
    assert (blob.etag, blob.last_modified) == (head["ETag"], head["LastModified"])
    store.swap_bytes("current/d.json", b"v2", "application/json", blob.etag)
    with pytest.raises(ConflictError):
        store.swap_bytes("current/d.json", b"v3", "application/json", blob.etag)
    got = s3.get_object(Bucket=OUT, Key="current/d.json")
    assert (got["Body"].read(), got["ContentType"]) == (b"v2", "application/json")


def test_a_refused_digest_is_transient_and_aborts_the_upload(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """S3's BadDigest on a part (bytes changed on the way) exits 5 and leaves no upload behind.

    moto 5.2.5 never answers BadDigest (it does not check a client's checksum); S3
    does, so the answer is injected on the request path.
    """
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(bare_aws)
    seen = answer(s3, "UploadPart", 400, "BadDigest")
    with pytest.raises(TransientError, match="refused the bytes \\(BadDigest\\)") as caught:
        S3Store(s3, OUT).create_file(path, "p/a.bin", {}, digest_file(path))
    assert "s3://dsjob-output/p/a.bin" in str(caught.value)
    assert seen
    assert uploads(s3) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT, Prefix="p/")


def test_a_failed_upload_is_aborted_even_if_the_abort_fails(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """A 500 on CompleteMultipartUpload exits 5; an abort that fails too is only logged."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(bare_aws)
    answer(s3, "CompleteMultipartUpload", 500, "InternalError")
    aborts = answer(s3, "AbortMultipartUpload", 500, "InternalError")
    with pytest.raises(TransientError):
        S3Store(s3, OUT).create_file(path, "p/a.bin", {}, digest_file(path))
    assert len(aborts) >= 1
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT, Prefix="p/")


def test_missing_keys_read_as_none_and_a_missing_bucket_names_itself(
    bare_aws: LocalServe,
) -> None:
    """GET and HEAD of an absent key give None; any call on an absent bucket is a config error.

    HEAD answers 404 with no body for both (S3 API Reference, HeadObject), so a HEAD
    404 asks HeadBucket once; GET and LIST name NoSuchBucket themselves.
    """
    s3 = client(bare_aws)
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
    asked: list[str] = []
    s3.meta.events.register("before-call.s3.HeadBucket", lambda **_: asked.append("HeadBucket"))
    with pytest.raises(ConfigError, match="output bucket no-such-bucket does not exist"):
        S3Store(s3, "no-such-bucket").get("k")
    assert asked == []  # GET's NoSuchBucket names the bucket itself


def test_a_missing_key_costs_at_most_one_head_bucket(bare_aws: LocalServe) -> None:
    """HeadBucket runs once per store, and not at all after a GET or LIST proved the bucket."""
    s3 = client(bare_aws)
    asked: list[str] = []
    s3.meta.events.register("before-call.s3.HeadBucket", lambda **_: asked.append("HeadBucket"))
    store = S3Store(s3, OUT)
    assert [store.head("a"), store.head("b"), store.head("c")] == [None, None, None]
    assert asked == ["HeadBucket"]
    proven = S3Store(s3, OUT)
    assert proven.get("nope") is None  # NoSuchKey: the bucket exists
    assert proven.head("a") is None
    listed = S3Store(s3, OUT)
    assert listed.list_objects("p/") == []  # an answer only an existing bucket gives
    assert listed.head("a") is None
    assert asked == ["HeadBucket"]


def test_delete_removes_more_than_one_batch_and_nothing_else(bare_aws: LocalServe) -> None:
    """Deleting 1,001 keys takes two DeleteObjects calls of at most 1,000 keys; others stay.

    Only the first and last key of each batch exist: DeleteObjects reports a key that
    does not exist as deleted (S3 API Reference, DeleteObjects; moto 5.2.5 too), and
    1,002 PUTs would make this the slowest test of the file.
    """
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    doomed = [f"p/{i:04d}" for i in range(1001)]
    for key in [doomed[0], doomed[999], doomed[1000], "p/keep"]:
        store.put_bytes(key, b"", "text/plain")
    batches: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        batches.append(len(params["Delete"]["Objects"]))

    s3.meta.events.register("provide-client-params.s3.DeleteObjects", count)
    store.delete(doomed)
    assert batches == [1000, 1]
    assert s3.get_object(Bucket=OUT, Key="p/keep")["ContentType"] == "text/plain"
    assert store.list_keys("p/") == ["p/keep"]
    [listed] = store.list_objects("p/")
    assert listed.last_modified == s3.head_object(Bucket=OUT, Key="p/keep")["LastModified"]
    assert store.list_objects("q/") == []


def test_a_failed_delete_names_the_bucket(bare_aws: LocalServe) -> None:
    """A DeleteObjects that S3 refuses raises, naming the bucket, instead of passing silently."""
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    store.put_bytes("p/a", b"a", "text/plain")
    answer(s3, "DeleteObjects", 403, "AccessDenied")
    with pytest.raises(
        DsjobError, match=r"deleting under s3://dsjob-output/: .*s3://dsjob-output/p/a"
    ):
        store.delete(["p/a"])
    assert store.get_bytes("p/a") == b"a"


@pytest.mark.parametrize(
    ("codes", "kind", "exit_code"),
    [
        (["AccessDenied"], ConfigError, 2),
        (["SlowDown", "InternalError", "SlowDown", "InternalError", "SlowDown"], TransientError, 5),
        (["SlowDown"] * 5 + ["AccessDenied"], ConfigError, 2),  # retrying cannot fix a denial
        (["MethodNotAllowed"], DsjobError, 1),
    ],
)
def test_a_key_delete_objects_kept_raises_naming_it_and_its_code(
    bare_aws: LocalServe, codes: list[str], kind: type[DsjobError], exit_code: int
) -> None:
    """A 200 DeleteObjects answer with per-key Errors raises, naming the keys and their codes.

    S3 lists each key it did not delete in an ``Error`` element of a 200 answer (S3 API
    Reference, DeleteObjects); moto 5.2.5 never does, so the answer is injected and
    nothing reaches moto. Exit 5 only when every refusal is worth retrying.
    """
    s3 = client(bare_aws)
    kept = dict(zip((f"p/k{i}" for i in range(len(codes))), codes, strict=True))
    sent: list[str] = []

    def refuse(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        asked = re.findall(r"<Key>([^<]*)</Key>", request.body.decode())
        errors = "".join(
            f"<Error><Key>{key}</Key><Code>{kept[key]}</Code><Message>x</Message></Error>"
            for key in asked
            if key in kept
        )
        body = (
            f'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{errors}</DeleteResult>'
        )
        return AWSResponse(request.url, 200, HTTPHeaders(), s3faults._Raw(body.encode()))

    s3.meta.events.register("before-send.s3.DeleteObjects", refuse)  # type: ignore[arg-type]  # a before-send handler may answer
    first, *rest = kept  # the first batch holds one refused key, the second the others
    with pytest.raises(kind) as caught:
        S3Store(s3, OUT).delete([first, *(f"p/{i:04d}" for i in range(1000)), *rest])
    assert len(sent) == 2  # the second batch went out after the first one's refusal
    assert type(caught.value) is kind
    assert caught.value.exit_code == exit_code
    named = ", ".join(f"s3://dsjob-output/{key} ({code})" for key, code in list(kept.items())[:5])
    more = " and 1 more" if len(kept) == 6 else ""  # the third case: one past the five named
    hint = "; check the role's permissions (s3:DeleteObject)" if kind is ConfigError else ""
    assert str(caught.value) == (
        f"deleting under s3://dsjob-output/: S3 kept {len(kept)} key(s): {named}{more}{hint}"
    )


class _Bent:
    """moto's real GET body with its first byte flipped on the way (a ``raw`` botocore reads)."""

    def __init__(self, raw: Any) -> None:
        self._raw, self._first = raw, True

    def read(self, amt: int | None = None) -> bytes:
        data: bytes = self._raw.read(amt)
        if data and self._first:
            self._first = False
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data


def test_a_get_whose_body_fails_its_checksum_is_transient_and_names_the_key(
    bare_aws: LocalServe,
) -> None:
    """A GET body that does not match its CRC32 raises TransientError (exit 5) naming the key.

    botocore (1.36 on, ``response_checksum_validation=when_supported``) asks for the
    object's checksum (S3 API Reference, GetObject, ``x-amz-checksum-mode``) and checks
    the body against it as it is read. The GET really goes to moto, which returns the
    CRC32 stored with the PUT; one byte is flipped on the way back.
    """
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    store.put_bytes("p/k", b"payload bytes", "text/plain")
    seen: list[str] = []

    def bend(request: Any, **_: Any) -> AWSResponse:
        real = URLLib3Session().send(request)
        seen.append(real.headers.get("x-amz-checksum-crc32", ""))
        return AWSResponse(
            request.url,
            real.status_code,
            HTTPHeaders.from_dict(dict(real.headers)),
            _Bent(real.raw),
        )

    s3.meta.events.register("before-send.s3.GetObject", bend)  # type: ignore[arg-type]  # a before-send handler may answer
    with pytest.raises(TransientError) as caught:
        store.get("p/k")
    assert seen == [crc32_b64(zlib.crc32(b"payload bytes"))]  # moto sent the real CRC32
    assert caught.value.exit_code == 5
    assert "reading s3://dsjob-output/p/k" in str(caught.value)
    assert "the body of s3://dsjob-output/p/k did not match its checksum" in str(caught.value)


def test_a_409_is_written_again_and_a_409_every_time_is_transient(bare_aws: LocalServe) -> None:
    """One 409 ConditionalRequestConflict: the PUT is sent again; 409 each time: exit 5, no object.

    S3 answers 409 to a conditional write that met a concurrent write to its key and
    asks for a retry (S3 API Reference, PutObject, ``If-None-Match``); moto 5.2.5 never
    answers it, so it is answered on the request path. The retries wait 0.2 s, then 0.4 s.
    """
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    once = answer(s3, "PutObject", 409, "ConditionalRequestConflict", times=1)
    etag = store.swap_bytes("current/d.json", b"v1", "application/json", None)
    assert len(once) == 1
    got = s3.get_object(Bucket=OUT, Key="current/d.json")
    assert (got["Body"].read(), got["ETag"]) == (b"v1", etag)

    always = client(bare_aws)
    seen = answer(always, "PutObject", 409, "ConditionalRequestConflict")
    started = time.monotonic()
    with pytest.raises(TransientError, match="409 ConditionalRequestConflict 3 times") as caught:
        S3Store(always, OUT).create_bytes("p/m.json", b"{}", "application/json")
    # 0.2 s + 0.4 s of backoff; the upper bound leaves 1.4 s for 3 answers given in-process
    assert 0.6 <= time.monotonic() - started < 2.0  # 0.2 s + 0.4 s of backoff
    assert "s3://dsjob-output/p/m.json" in str(caught.value)
    assert caught.value.exit_code == 5  # retryable
    assert len(seen) == CONTENDED_TRIES
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT, Prefix="p/")


def test_a_409_on_completing_starts_the_upload_again_and_aborts_the_first(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """A 409 on CompleteMultipartUpload redoes the upload from a new CreateMultipartUpload.

    S3 asks for the whole upload again after a 409 on CompleteMultipartUpload (S3 API
    Reference, CompleteMultipartUpload, ``If-None-Match``); moto 5.2.5 never answers it.
    """
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(bare_aws)
    created: list[str] = []
    s3.meta.events.register(
        "after-call.s3.CreateMultipartUpload",
        lambda parsed, **_: created.append(parsed["UploadId"]),
    )
    conflicts = answer(s3, "CompleteMultipartUpload", 409, "ConditionalRequestConflict", times=1)
    S3Store(s3, OUT).create_file(path, "p/a.bin", {}, digest_file(path))
    assert len(conflicts) == 1
    assert len(set(created)) == 2  # the first upload, then a new one
    assert s3.get_object(Bucket=OUT, Key="p/a.bin")["Body"].read() == path.read_bytes()
    assert uploads(s3) == []  # the contended upload was aborted
    always = client(bare_aws)
    answer(always, "CompleteMultipartUpload", 409, "ConditionalRequestConflict")
    with pytest.raises(TransientError, match=r"s3://dsjob-output/p/b\.bin: S3 answered 409"):
        S3Store(always, OUT).create_file(path, "p/b.bin", {}, digest_file(path))
    assert uploads(s3) == []


@pytest.mark.parametrize("code", ["BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"])
def test_every_refused_checksum_is_transient(bare_aws: LocalServe, code: str) -> None:
    """Each of S3's "the bytes changed on the way" answers to a PUT exits 5, naming the code.

    S3 answers BadDigest, InvalidDigest or XAmzContentSHA256Mismatch to bytes that do
    not match the checksum or hash sent with them (S3 API Reference, "Error
    responses"); moto 5.2.5 checks none of them, so each is answered on the request path.
    """
    s3 = client(bare_aws)
    answer(s3, "PutObject", 400, code)
    with pytest.raises(TransientError, match=f"refused the bytes \\({code}\\)") as caught:
        S3Store(s3, OUT).create_bytes("p/m.json", b"{}", "application/json")
    assert caught.value.exit_code == 5  # retryable


def test_head_reports_a_full_object_sha256_and_not_a_composite_one(bare_aws: LocalServe) -> None:
    """HEAD gives the hex SHA-256 S3 stored for a single PUT, and none for a composite one.

    A single PUT sent with a SHA-256 checksum keeps it as the full object's; a
    multipart upload's composite checksum reads "<base64>-<parts>" (User Guide,
    "Checking object integrity") and is no digest of the bytes. moto 5.2.5's HEAD of a
    composite object drops the "-N", so that answer is given on the request path.
    """
    s3 = client(bare_aws)
    data = b"fan-out work file"
    s3.put_object(Bucket=OUT, Key="w/a", Body=data, ChecksumAlgorithm="SHA256")
    info = S3Store(s3, OUT).head("w/a")
    assert info is not None
    assert info.sha256 == hashlib.sha256(data).hexdigest()

    composite = base64.b64encode(hashlib.sha256(b"parts").digest()).decode() + "-2"
    headers = HTTPHeaders()
    for name, value in {
        "Content-Length": "10",
        "ETag": '"e-2"',
        "x-amz-checksum-sha256": composite,
    }.items():
        headers[name] = value
    s3.meta.events.register(
        "before-send.s3.HeadObject",
        lambda request, **_: AWSResponse(request.url, 200, headers, s3faults._Raw(b"")),  # type: ignore[arg-type]  # a before-send handler may answer
    )
    info = S3Store(s3, OUT).head("w/b")
    assert info is not None
    assert (info.size, info.etag, info.sha256) == (10, "e-2", None)


def test_a_conditional_write_of_the_work_area_conflicts_retries_and_names_its_key(
    bare_aws: LocalServe,
) -> None:
    """conditional(): a taken key conflicts, a 409 is written again, a refusal names the write.

    The fan-out's work files are PUT with ``If-None-Match: *`` (S3 User Guide,
    "conditional writes"): moto answers the 412 itself; the 409 and the 403 are
    answered on the request path (moto 5.2.5 never answers 409).
    """
    s3 = client(bare_aws)
    store = S3Store(s3, OUT)
    writes: list[str] = []

    def write() -> object:
        writes.append("w/k")
        return s3.put_object(Bucket=OUT, Key="w/k", Body=b"a", IfNoneMatch="*")

    answer(s3, "PutObject", 409, "ConditionalRequestConflict", times=1)
    store.conditional("w/k", "writing the work file", write)
    assert len(writes) == 2  # contended once, then written
    with pytest.raises(ConflictError, match="s3://dsjob-output/w/k was written by another run"):
        store.conditional("w/k", "writing the work file", write)
    denied = client(bare_aws)
    answer(denied, "PutObject", 403, "AccessDenied")
    with pytest.raises(DsjobError, match="writing the work file") as caught:
        S3Store(denied, OUT).conditional(
            "w/j",
            "writing the work file",
            lambda: denied.put_object(Bucket=OUT, Key="w/j", Body=b""),
        )
    assert not isinstance(caught.value, ConflictError | TransientError)
    always = client(bare_aws)
    answer(always, "PutObject", 409, "ConditionalRequestConflict")
    with pytest.raises(TransientError, match="s3://dsjob-output/w/i: S3 answered 409"):
        S3Store(always, OUT).conditional(
            "w/i",
            "writing the work file",
            lambda: always.put_object(Bucket=OUT, Key="w/i", Body=b""),
        )


def test_a_refused_read_list_or_write_names_what_was_done_and_where(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """403 on GET, HEAD, LIST or PUT: a config error (exit 2) naming the operation and the key.

    HEAD's 403 has no error body (S3 API Reference, HeadObject), so its code is "403".
    """
    s3 = client(bare_aws)
    for operation, body_code in [
        ("GetObject", "AccessDenied"),
        ("HeadObject", ""),
        ("ListObjectsV2", "AccessDenied"),
        ("PutObject", "AccessDenied"),
        ("UploadPart", "AccessDenied"),
    ]:
        answer(s3, operation, 403, body_code)
    store = S3Store(s3, OUT)
    part, empty = tmp_path / "a.bin", tmp_path / "e.csv"
    part.write_bytes(b"x" * 100)
    empty.write_bytes(b"")
    calls: list[tuple[str, Callable[[], object]]] = [
        (
            "reading s3://dsjob-output/p/k: access denied to s3://dsjob-output/p/k",
            lambda: store.get("p/k"),
        ),
        (
            "checking s3://dsjob-output/p/k: access denied to s3://dsjob-output/p/k (403)",
            lambda: store.head("p/k"),
        ),
        (
            "listing s3://dsjob-output/p/: access denied to s3://dsjob-output/ ",
            lambda: store.list_objects("p/"),
        ),
        (
            "writing s3://dsjob-output/p/k: access denied to s3://dsjob-output/p/k",
            lambda: store.put_bytes("p/k", b"x", "text/plain"),
        ),
        (
            "writing s3://dsjob-output/p/j: access denied to s3://dsjob-output/p/j",
            lambda: store.create_bytes("p/j", b"x", "text/plain"),
        ),
        (
            "uploading s3://dsjob-output/p/a.bin: access denied to s3://dsjob-output/p/a.bin",
            lambda: store.create_file(part, "p/a.bin", {}, digest_file(part)),
        ),
        (
            "uploading s3://dsjob-output/p/e.csv: access denied to s3://dsjob-output/p/e.csv",
            lambda: store.create_file(empty, "p/e.csv", {}, digest_file(empty)),
        ),
    ]
    for operation in ("CreateMultipartUpload", "CompleteMultipartUpload"):
        refusing = client(bare_aws)
        answer(refusing, operation, 403, "AccessDenied")
        where = f"p/{operation}.bin"
        calls.append(
            (
                f"uploading s3://dsjob-output/{where}: access denied to s3://dsjob-output/{where}",
                partial(S3Store(refusing, OUT).create_file, part, where, {}, digest_file(part)),
            )
        )
    for message, call in calls:
        with pytest.raises(ConfigError) as caught:
            call()
        assert message in str(caught.value)
        assert caught.value.exit_code == 2  # a configuration problem


def test_a_head_bucket_that_cannot_connect_leaves_a_missing_key_missing(
    bare_aws: LocalServe,
) -> None:
    """When HeadBucket fails to connect, a HEAD 404 still reads as "no such key" (None).

    The object operations that follow report the failure themselves; the connection
    failure is raised on HeadBucket's real request path, with botocore's retries off.
    """
    s3 = client(bare_aws, ONE_TRY)
    refused: list[str] = []

    def unreachable(request: Any, **_: Any) -> None:
        refused.append(request.url)
        raise EndpointConnectionError(endpoint_url=request.url)

    s3.meta.events.register("before-send.s3.HeadBucket", unreachable)
    assert S3Store(s3, OUT).head("p/none") is None
    assert len(refused) == 1


@pytest.mark.parametrize("write", ["put_bytes", "swap_bytes"])
def test_small_writes_send_a_crc32_even_where_the_sdk_would_not(
    bare_aws: LocalServe, write: str
) -> None:
    """put_bytes and swap_bytes ask for a CRC32 themselves: S3 keeps it with the object.

    botocore adds a CRC32 to PutObject only by default: with
    ``request_checksum_calculation = when_required`` (AWS SDKs and Tools Reference Guide,
    "Data integrity protections for Amazon S3") it sends none unless asked. S3 checks
    a checksum sent with the bytes and keeps it (User Guide, "Checking object
    integrity"); moto 5.2.5 keeps what the client sent, so HEAD shows it either way.
    """
    s3 = boto3.client(
        "s3",
        endpoint_url=bare_aws.endpoint,
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )
    store = S3Store(s3, OUT)
    data = b'{"run_id": "r1"}'
    if write == "put_bytes":
        store.put_bytes("p/k.json", data, "application/json")
    else:
        store.swap_bytes("p/k.json", data, "application/json", None)
    head = s3.head_object(Bucket=OUT, Key="p/k.json", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc32_b64(zlib.crc32(data))


def test_a_failed_part_cancels_the_parts_not_yet_sent(bare_aws: LocalServe, tmp_path: Path) -> None:
    """When one part fails, the parts still queued are never sent: the upload is aborted at once.

    Ten 10-byte parts, one in flight at a time; every UploadPart answers 500 (the first
    at once, the rest after 0.1 s), with botocore's retries off. moto accepts parts this
    small until CompleteMultipartUpload (S3 too: EntityTooSmall comes at completion).
    """
    path = tmp_path / "a.bin"
    path.write_bytes(bytes(range(100)))
    s3 = client(bare_aws, ONE_TRY)
    sent: list[str] = []
    failed = threading.Event()
    body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"

    def fail(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        if len(sent) > 1:  # a part taken before the cancel stays in flight until the raise
            failed.wait(10)
        return AWSResponse(request.url, 500, HTTPHeaders(), s3faults._Raw(body))

    s3.meta.events.register("before-send.s3.UploadPart", fail)  # type: ignore[arg-type]  # a before-send handler may answer
    store = S3Store(s3, OUT, part_size=10, concurrency=1)
    with pytest.raises(TransientError):
        store.create_file(path, "p/a.bin", {}, digest_file(path, 10))
    failed.set()
    time.sleep(1.5)  # time enough for every queued part to be sent, were they not cancelled
    # Part 1 failed; the single worker may have taken part 2 before the cancel; no more.
    assert parse_qs(urlsplit(sent[0]).query)["partNumber"] == ["1"]
    assert len(sent) in {1, 2}, sent
    assert uploads(s3) == []


def test_a_connection_failure_is_transient_and_names_the_write(bare_aws: LocalServe) -> None:
    """A PUT that cannot reach S3 exits 5, naming the write (botocore's retries off)."""
    s3 = client(bare_aws, ONE_TRY)

    def unreachable(request: Any, **_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=request.url)

    s3.meta.events.register("before-send.s3.PutObject", unreachable)
    with pytest.raises(TransientError, match="writing s3://dsjob-output/p/k: connection failed"):
        S3Store(s3, OUT).put_bytes("p/k", b"x", "text/plain")


def test_head_reports_the_version_of_a_versioned_object(bare_aws: LocalServe) -> None:
    """In a versioned bucket HEAD gives the object's VersionId (the manifest records it)."""
    s3 = client(bare_aws)
    s3.put_bucket_versioning(Bucket=OUT, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=OUT, Key="p/v", Body=b"v")
    info = S3Store(s3, OUT).head("p/v")
    assert info is not None
    assert info.version_id == put["VersionId"]


def test_an_upload_sends_each_checksum_and_the_full_object_size_s3_checks(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """Each part carries its CRC32; completion sends the full-object CRC32, its type and size.

    S3 checks each part's checksum, and on CompleteMultipartUpload the full-object
    ``x-amz-checksum-crc32`` of type ``FULL_OBJECT`` and ``x-amz-mp-object-size``
    (S3 API Reference, UploadPart and CompleteMultipartUpload). moto 5.2.5 checks none
    of them, so the test reads the real requests (with botocore's own checksums off,
    ``request_checksum_calculation = when_required``, so only dsjob's are there).
    """
    path = tmp_path / "a.bin"
    path.write_bytes(os.urandom(5 * MiB + 25))
    digests = digest_file(path, 5 * MiB)
    s3 = boto3.client(
        "s3",
        endpoint_url=bare_aws.endpoint,
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )
    sent: dict[str, list[dict[str, str]]] = {}

    def record(request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        sent.setdefault(operation, []).append(
            {
                k.lower(): v.decode() if isinstance(v, bytes) else v
                for k, v in request.headers.items()
            }
        )

    s3.meta.events.register("before-send.s3", record)
    S3Store(s3, OUT, part_size=5 * MiB, concurrency=1).create_file(path, "p/a.bin", {}, digests)
    parts = [h.get("x-amz-checksum-crc32") for h in sent["UploadPart"]]
    assert parts == list(digests.part_crc32s)
    [done] = sent["CompleteMultipartUpload"]
    assert done.get("x-amz-checksum-crc32") == digests.crc32
    assert done.get("x-amz-checksum-type") == "FULL_OBJECT"
    assert done.get("x-amz-mp-object-size") == str(5 * MiB + 25)
    assert done.get("if-none-match") == "*"


def test_progress_is_drawn_only_when_asked_and_names_the_object(
    bare_aws: LocalServe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store made with progress=True draws a bar to 100 % named by the URI; by default none."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    s3 = client(bare_aws)
    S3Store(s3, OUT).create_file(path, "p/quiet.bin", {}, digest_file(path))
    assert capsys.readouterr().err == ""
    S3Store(s3, OUT, progress=True).create_file(path, "p/shown.bin", {}, digest_file(path))
    err = capsys.readouterr().err
    assert "upload s3://dsjob-output/p/shown.bin [" in err
    assert err.endswith("100% 0.0 MiB\n")


class _StopError(Exception):
    """The job was asked to stop (what a checkpoint raises)."""


def test_a_stop_is_seen_within_a_poll_and_the_upload_is_aborted_at_once(
    bare_aws: LocalServe, tmp_path: Path
) -> None:
    """A stop asked for while a part is on the wire ends the upload at the next 0.2 s poll.

    Each part takes 1.5 s on the wire (held on its real request), one in flight at a
    time; the checkpoint asks to stop at its 2nd poll (~0.4 s). The upload is aborted
    without waiting for the part in flight, and no other part is sent.
    """
    path = tmp_path / "a.bin"
    path.write_bytes(bytes(range(40)))
    s3 = client(bare_aws)
    sent: list[str] = []

    def slow(request: Any, **_: Any) -> None:
        sent.append(request.url)
        time.sleep(1.5)

    s3.meta.events.register("before-send.s3.UploadPart", slow)
    polls: list[float] = []

    def checkpoint() -> None:
        polls.append(time.monotonic())
        if len(polls) == 2:
            raise _StopError

    store = S3Store(s3, OUT, part_size=10, concurrency=1, checkpoint=checkpoint)
    started = time.monotonic()
    with pytest.raises(_StopError):
        store.create_file(path, "p/a.bin", {}, digest_file(path, 10))
    assert time.monotonic() - started < 1.2  # not held by the part in flight
    assert len(sent) == 1
    assert uploads(s3) == []
