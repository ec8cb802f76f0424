"""Verification after upload against S3's own checksum: real boto3, a moto server, real faults.

``upload_verified`` trusts only what the store computed over the bytes it kept:
the full-object CRC32 (``ChecksumType=FULL_OBJECT``) or, where the store kept a
composite one, the CRC32 of the part CRC32s with a ``-N`` suffix (S3 User Guide,
"Checking object integrity": full-object and composite checksums; API Reference,
HeadObject: ``x-amz-checksum-crc32`` and ``x-amz-checksum-type``).

moto 5.2.5 differs in two ways, both handled here and in ``verify.py``:

- it does not check the checksum a client sends with a part (S3 refuses it with
  ``BadDigest``), so a body changed in flight is stored and only the HEAD shows it;
- its HEAD of a composite object drops the ``-N`` and the checksum type that its
  GET keeps. S3's HEAD spelling is rebuilt from moto's own GET value by a
  ``before-parse`` handler, so the value compared is still the store's.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from dsjob.errors import TransientError
from dsjob.publish import upload_verified
from dsjob.s3store import S3Store
from dsjob.storage import MiB, crc32_b64, digest_file
from tests.integration import s3faults
from tests.integration.test_publish_failures import publish_run

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from tests.conftest import LocalServe

pytestmark = pytest.mark.integration

OUT = "dsjob-output"
PART = 5 * MiB  # S3's smallest part: a 6 MiB file is two parts


def client(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def big_file(tmp_path: Path, size: int = 6 * MiB) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(size))
    return path


def head_as_s3_spells_it(s3: S3Client, reader: S3Client, key: str) -> None:
    """Make `s3`'s HEAD of `key` carry the composite CRC32 as S3 sends it: `<b64>-N`, COMPOSITE.

    The value is the one moto computed and returns on GET; only its HEAD drops it.
    """

    def spell(response_dict: dict[str, Any], **_: Any) -> None:
        got = reader.get_object(Bucket=OUT, Key=key, ChecksumMode="ENABLED")
        got["Body"].close()
        response_dict["headers"]["x-amz-checksum-crc32"] = got["ChecksumCRC32"]
        response_dict["headers"]["x-amz-checksum-type"] = "COMPOSITE"

    s3.meta.events.register("before-parse.s3.HeadObject", spell)


def test_a_body_changed_in_flight_is_refused_naming_the_object(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Parts whose bytes changed after they were hashed raise TransientError (exit 5) naming it.

    On S3 the UploadPart itself fails (``BadDigest``: "S3 refused the bytes"); on moto
    the part is stored and the HEAD's CRC32 differs ("checksum mismatch"). Kills
    ``reported is None and ...`` (every mismatch accepted) and a message of None.
    """
    s3 = client(local_aws)
    s3.meta.events.register("before-send.s3.UploadPart", s3faults._corrupt)
    path = big_file(tmp_path)
    with pytest.raises(
        TransientError,
        match=r"s3://dsjob-output/p/bent\.bin.*(checksum mismatch after upload|S3 refused)",
    ):
        upload_verified(S3Store(s3, OUT, part_size=PART), path, "p/bent.bin", {})


def test_a_composite_checksum_as_s3_spells_it_is_rebuilt_from_the_parts(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A HEAD answering `<b64>-2` COMPOSITE verifies against the part CRC32s; bent parts fail.

    Kills ``accepted = None`` in the composite branch, a branch test that no longer
    sees the ``-`` suffix, and one that sends a composite value to the FULL_OBJECT set.
    """
    s3, reader = client(local_aws), client(local_aws)
    s3.meta.events.register("before-send.s3.CreateMultipartUpload", s3faults._composite)
    head_as_s3_spells_it(s3, reader, "p/c.bin")
    path = big_file(tmp_path)
    store = S3Store(s3, OUT, part_size=PART)
    published = upload_verified(store, path, "p/c.bin", {})
    info = store.head("p/c.bin")
    assert info is not None
    assert info.checksum_crc32 == digest_file(path, PART).composite_crc32()
    assert info.checksum_crc32.endswith("-2")
    assert published.crc32 == crc32_b64(zlib.crc32(path.read_bytes()))  # the manifest's
    head_as_s3_spells_it(s3, reader, "p/bent.bin")
    s3.meta.events.register("before-send.s3.UploadPart", s3faults._corrupt)
    with pytest.raises(TransientError, match=r"p/bent\.bin: checksum mismatch"):
        upload_verified(store, path, "p/bent.bin", {})


def test_the_manifest_names_each_outputs_stored_etag_version_and_size(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """In a versioned bucket the manifest records the ETag, VersionId and size S3 reports.

    With S3 Versioning on (User Guide, "Retaining multiple versions of objects with
    S3 Versioning") a reader can fetch the exact version a run published. Kills
    ``etag=None``, ``version_id=None`` (or either dropped) and ``size=None`` in
    the verified record.
    """
    s3 = client(local_aws)
    s3.put_bucket_versioning(Bucket=OUT, VersioningConfiguration={"Status": "Enabled"})
    out = tmp_path / "output"
    out.mkdir()
    (out / "members.csv").write_text("id\n1\n")
    result = publish_run(S3Store(s3, OUT), out, "20270101_000000", "v1")
    [entry] = result.objects
    head = s3.head_object(Bucket=OUT, Key=entry.key)
    assert head["VersionId"]  # versioned: S3 names the version it stored
    stored = s3.head_object(Bucket=OUT, Key="processed/manifests/v1.json")
    assert stored["ContentType"] == "application/json"  # commit's; S3 serves it so
    manifest = json.loads(
        s3.get_object(Bucket=OUT, Key="processed/manifests/v1.json")["Body"].read()
    )
    [listed] = manifest["outputs"]
    assert (listed["etag"], listed["version_id"], listed["size"]) == (
        head["ETag"].strip('"'),
        head["VersionId"],
        head["ContentLength"],
    )
