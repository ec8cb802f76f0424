"""Publish without losing anything: upload, verify, write the manifest last, then prune.

Output names are ``<stem>_YYYYMMDD_HHMMSS.<ext>`` under the output prefix (a
``-N`` suffix on the time only if that name is already taken). The run manifest
goes to ``<prefix>manifests/<run-id>.json`` after every output is verified; only
then are older outputs of the same stem beyond ``keep-outputs`` deleted. If
anything fails before the manifest is written, this run's own uploads are removed
and every earlier output stays where it was.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsjob import stop
from dsjob.errors import DsjobError, TransientError, UserCodeError
from dsjob.storage import sha256_file

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from pathlib import Path

    from dsjob.storage import OutputStore

LOGGER = logging.getLogger(__name__)

_STAMP = r"_(\d{8}_\d{6})(?:-(\d+))?"


@dataclass(frozen=True)
class Published:
    """One verified output object."""

    key: str
    uri: str
    size: int
    sha256: str
    records: int | None


@dataclass(frozen=True)
class PublishResult:
    """What a publish left behind."""

    objects: tuple[Published, ...]
    manifest_uri: str
    pruned: tuple[str, ...]


def manifest_key(prefix: str, run_id: str) -> str:
    """Where the manifest of `run_id` lives."""
    return f"{prefix}manifests/{run_id}.json"


def _split(name: str) -> tuple[str, str]:
    """`members.parquet` -> (`members`, `.parquet`); `a.csv.gz` -> (`a`, `.csv.gz`)."""
    stem, dot, ext = name.partition(".")
    return stem, (dot + ext) if dot else ""


def _free_key(store: OutputStore, prefix: str, stem: str, stamp: str, ext: str) -> str:
    key = f"{prefix}{stem}_{stamp}{ext}"
    n = 1
    while store.head(key) is not None:  # two runs in one second must not overwrite each other
        n += 1
        key = f"{prefix}{stem}_{stamp}-{n}{ext}"
    return key


def publish(
    store: OutputStore,
    output_dir: Path,
    *,
    prefix: str,
    started: datetime,
    run_id: str,
    metadata: Mapping[str, str],
    records: Mapping[str, int | None],
    keep_outputs: int,
    manifest: dict[str, Any],
) -> PublishResult:
    """Upload every file in `output_dir`, verify, write the manifest, prune.

    Args:
        store: the output store.
        output_dir: the files the step produced (subdirectories keep their path).
        prefix: the output prefix ("processed/").
        started: run start time (UTC); names carry its timestamp.
        run_id: the run id, in metadata and the manifest's name.
        metadata: object metadata common to every output.
        records: record count per file name relative to `output_dir`, when known.
        keep_outputs: previous outputs per stem to keep besides the new one.
        manifest: the run manifest so far; "outputs" is added here.
    """
    files = sorted(p for p in output_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserCodeError(f"the step produced no output files in {output_dir}")
    stamp = started.strftime("%Y%m%d_%H%M%S")
    uploaded: list[str] = []
    done: list[Published] = []
    try:
        for path in files:
            stop.checkpoint(f"before uploading {path.name}")
            rel = path.relative_to(output_dir)
            stem, ext = _split(rel.name)
            sub = rel.parent.as_posix() + "/" if rel.parent.as_posix() != "." else ""
            key = _free_key(store, prefix + sub, stem, stamp, ext)
            digest = sha256_file(path)
            count = records.get(rel.as_posix())
            meta = {**metadata, "run-id": run_id, "sha256": digest}
            if count is not None:
                meta["record-count"] = str(count)
            uploaded.append(key)
            store.put_file(path, key, meta, digest)
            done.append(_verify(store, key, path.stat().st_size, digest, count))
        manifest = {**manifest, "outputs": [o.__dict__ for o in done]}
        mkey = manifest_key(prefix, run_id)
        stop.checkpoint("before writing the run manifest")
        store.put_bytes(
            mkey, json.dumps(manifest, indent=2, default=str).encode(), "application/json"
        )
    except BaseException:
        _rollback(store, uploaded)
        raise
    LOGGER.info("manifest written", extra={"manifest": store.uri(mkey)})
    pruned = () if stop.skip("the prune of older outputs") else prune(store, done, keep_outputs)
    return PublishResult(tuple(done), store.uri(mkey), pruned)


def _verify(store: OutputStore, key: str, size: int, digest: str, count: int | None) -> Published:
    info = store.head(key)
    if info is None:
        raise TransientError(f"uploaded {store.uri(key)} but it is not there on read-back")
    if info.size != size:
        raise TransientError(f"{store.uri(key)}: {info.size} bytes stored, {size} sent")
    stored_sha = info.sha256 or info.metadata.get("sha256")
    if stored_sha != digest:
        raise TransientError(f"{store.uri(key)}: checksum mismatch after upload")
    LOGGER.info("published", extra={"uri": store.uri(key), "bytes": size})
    return Published(key, store.uri(key), size, digest, count)


def _rollback(store: OutputStore, keys: list[str]) -> None:
    """Remove this run's own partial uploads; never touches earlier outputs."""
    if not keys:
        return
    try:
        store.delete(keys)
        LOGGER.warning("removed this run's unpublished uploads", extra={"keys": keys})
    except DsjobError:
        LOGGER.warning("could not remove this run's partial uploads", extra={"keys": keys})


def prune(store: OutputStore, new: list[Published], keep: int) -> tuple[str, ...]:
    """Delete outputs of the same stem and extension older than the newest `keep`+1."""
    doomed: list[str] = []
    for obj in new:
        folder, _, name = obj.key.rpartition("/")
        folder = f"{folder}/" if folder else ""
        match = re.fullmatch(r"(.+?)" + _STAMP + r"(\..*)?", name)
        if match is None:  # pragma: no cover - publish always writes stamped names
            continue
        stem, ext = match.group(1), match.group(4) or ""
        pattern = re.compile(re.escape(stem) + _STAMP + re.escape(ext))
        siblings = []
        for key in store.list_keys(f"{folder}{stem}_"):
            found = pattern.fullmatch(key[len(folder) :])
            if found:
                siblings.append(((found.group(1), int(found.group(2) or 1)), key))
        siblings.sort(reverse=True)
        doomed.extend(key for _, key in siblings[keep + 1 :] if key != obj.key)
    if doomed:
        store.delete(doomed)
        LOGGER.info("pruned old outputs", extra={"deleted": doomed})
    return tuple(doomed)
