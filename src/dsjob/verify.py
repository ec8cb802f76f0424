"""Create one output object and prove that the store holds exactly the bytes dsjob hashed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsjob.errors import TransientError
from dsjob.storage import MULTIPART_CHUNKSIZE, digest_file

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from dsjob.storage import Digests, OutputStore

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """One verified output object."""

    key: str
    uri: str
    size: int
    sha256: str
    records: int | None
    crc32: str = ""  # the full-object CRC32 the store reported (base64)
    etag: str = ""
    version_id: str | None = None

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> Published:
        """Read an "outputs" entry of a manifest (older manifests lack the later fields)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in entry.items() if k in names})


def part_size_of(store: OutputStore) -> int:
    """The part size the store uploads with (the composite checksum depends on it)."""
    return int(getattr(store, "part_size", MULTIPART_CHUNKSIZE))


def upload_verified(
    store: OutputStore,
    path: Path,
    key: str,
    metadata: Mapping[str, str],
    *,
    records: int | None = None,
    digests: Digests | None = None,
) -> Published:
    """Create `key` from `path` and verify it against the store's own checksum.

    Raises ``ConflictError`` when `key` exists (nothing was overwritten) and
    ``TransientError`` when what the store holds differs from what was sent.
    """
    digests = digests or digest_file(path, part_size_of(store))
    meta = {**metadata, "sha256": digests.sha256}
    if records is not None:
        meta["record-count"] = str(records)
    store.create_file(path, key, meta, digests)
    info = store.head(key)
    if info is None:
        raise TransientError(f"uploaded {store.uri(key)} but it is not there on read-back")
    if info.size != digests.size:
        raise TransientError(f"{store.uri(key)}: {info.size} bytes stored, {digests.size} sent")
    reported = info.checksum_crc32
    if digests.size and reported is None:
        raise TransientError(f"{store.uri(key)}: the store reported no checksum to verify")
    composite = digests.composite_crc32()
    if reported is None:  # a 0-byte object: the size check above is the whole check
        accepted = set()
    elif info.checksum_type == "FULL_OBJECT":
        # S3 (and moto, from the part bytes it stored) computed the CRC32 of the whole
        # object (User Guide, "Checking object integrity", full object checksums).
        accepted = {digests.crc32}
    elif "-" in reported:
        # A COMPOSITE checksum, as S3 keeps when FULL_OBJECT was not honoured (its default
        # for CRC32 multipart uploads): rebuilt here from the same parts. S3's HEAD spells
        # every composite value "<b64>-N" (N parts) beside ChecksumType COMPOSITE, so the
        # suffix alone picks this branch (User Guide, "Checking object integrity").
        accepted = {composite}
    else:
        # moto 5.2.5's HEAD of a COMPOSITE object drops both the "-N" and the checksum
        # type (its GET keeps them): accept the value either way it may have been computed.
        accepted = {digests.crc32, composite.rpartition("-")[0]}
    if reported is not None and reported not in accepted:
        raise TransientError(
            f"{store.uri(key)}: checksum mismatch after upload "
            f"(stored CRC32 {reported}, computed here {' or '.join(sorted(accepted))})"
        )
    LOGGER.info("published", extra={"uri": store.uri(key), "bytes": digests.size})
    return Published(
        key,
        store.uri(key),
        digests.size,
        digests.sha256,
        records,
        crc32=digests.crc32,
        etag=info.etag,
        version_id=info.version_id,
    )
