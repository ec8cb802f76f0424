"""Outputs in a local directory: the same names, manifests and pointer as on S3."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dsjob.errors import ConflictError
from dsjob.storage import Blob, Listed, ObjectInfo, digest_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from dsjob.storage import Digests


class LocalStore:
    """Outputs in a local directory: same names and manifest as S3, metadata in the manifest.

    Files are copied, never hard-linked: a process that still holds the work file
    cannot change a published output. Creates are exclusive (``link`` of a finished
    temp file fails if the name exists), so two runs never overwrite each other.
    """

    def __init__(self, root: Path) -> None:
        """Args: root: the output directory (created when missing)."""
        self.root = root

    def uri(self, key: str) -> str:
        """The file's path."""
        return str(self.root / key)

    def _create(self, key: str, write: Callable[[Path], object]) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            write(tmp)
            os.link(tmp, target)  # atomic and exclusive: readers see all of it or nothing
        except FileExistsError as exc:
            raise ConflictError(f"{target} already exists") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def create_file(
        self, path: Path, key: str, metadata: Mapping[str, str], digests: Digests
    ) -> None:
        """Copy `path` to `key`; its metadata goes to a dot-file beside it (``.<name>.meta``)."""
        del digests
        self._create(key, lambda tmp: shutil.copyfile(path, tmp))
        self._meta(key).write_text(json.dumps(dict(metadata)), encoding="utf-8")

    def _meta(self, key: str) -> Path:
        target = self.root / key
        return target.with_name(f".{target.name}.meta")

    def create_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Write a small file exclusively."""
        del content_type
        self._create(key, lambda tmp: tmp.write_bytes(data))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".dsjob.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def swap_bytes(
        self, key: str, data: bytes, content_type: str, expected_etag: str | None
    ) -> str:
        """Compare-and-swap under a directory lock (the local stand-in for If-Match)."""
        del content_type
        target = self.root / key
        with self._locked():
            current = self.get(key)
            if (current.etag if current else None) != expected_etag:
                raise ConflictError(f"{target} changed while this run was committing")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> Blob | None:
        """The file's bytes, with its SHA-256 as the ETag."""
        path = self.root / key
        if not path.is_file():
            return None
        data = path.read_bytes()
        return Blob(data, hashlib.sha256(data).hexdigest(), _mtime(path))

    def head(self, key: str) -> ObjectInfo | None:
        """Size and a fresh full-object CRC32 of the stored file."""
        path = self.root / key
        if not path.is_file():
            return None
        digests = digest_file(path)
        meta = self._meta(key)
        metadata = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
        return ObjectInfo(
            digests.size, digests.crc32, "FULL_OBJECT", metadata, last_modified=_mtime(path)
        )

    def list_objects(self, prefix: str) -> list[Listed]:
        """Files (paths relative to the root) starting with `prefix`; dot-files are internal."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith("."):
                found.append(Listed(key, _mtime(path)))
        return sorted(found, key=lambda item: item.key)

    def delete(self, keys: list[str]) -> None:
        """Remove the files."""
        for key in keys:
            (self.root / key).unlink(missing_ok=True)
            self._meta(key).unlink(missing_ok=True)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
