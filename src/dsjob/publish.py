"""Publish without losing anything: create, verify, commit with a manifest, then prune.

The protocol, as reusable pieces (the fan-out's commit phase calls the same ones):

``upload_verified(store, path, key, metadata) -> Published`` (in ``verify.py``)
    Creates `key` only if it is free (``ConflictError`` if another run has it),
    then compares the checksum the *store* reports for the stored bytes with the
    CRC32 dsjob computed locally before sending. The ``sha256`` that dsjob writes
    into the metadata is kept for users and never trusted as evidence.
``upload_outputs(store, files, prefix=..., stamp=..., ...) -> list[Published]``
    Names each file ``<stem>_<stamp>[-N]<ext>``, taking the next ``-N`` when a
    name is taken, and uploads it with ``upload_verified``.
``commit(store, *, prefix, run_id, dataset, outputs, manifest, keep_outputs) -> PublishResult``
    (in ``commit.py``) Writes ``<prefix>manifests/<run-id>.json`` (the commit;
    created once per run id), then the current pointer ``<prefix>current/<dataset>.json``
    (last write, compare-and-swap), then deletes outputs of runs that fell out of
    the pointer's history and orphans of dead runs (``history.py``, ``orphans.py``).
``rollback(store, keys)``
    Removes this run's own uncommitted uploads, nothing else.

``publish(...)`` strings these together for one ordinary run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dsjob import history, lease, stop
from dsjob.commit import (
    PublishResult,
    already_published,
    commit,
    finish,
    manifest_key,
    write_manifest,
)
from dsjob.errors import ConflictError, DsjobError, TransientError, UserCodeError
from dsjob.storage import digest_file
from dsjob.verify import Published, part_size_of, upload_verified

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from dsjob.storage import OutputStore

__all__ = [
    "PublishResult",
    "Published",
    "already_published",
    "commit",
    "finish",
    "manifest_key",
    "publish",
    "rollback",
    "upload_outputs",
    "upload_verified",
    "write_manifest",
]

LOGGER = logging.getLogger(__name__)

MAX_NAME_TRIES = 100


def _split(name: str) -> tuple[str, str]:
    """`members.parquet` -> (`members`, `.parquet`); `a.csv.gz` -> (`a`, `.csv.gz`)."""
    stem, dot, ext = name.partition(".")
    return stem, (dot + ext) if dot else ""


def upload_outputs(
    store: OutputStore,
    files: Sequence[tuple[Path, str]],
    *,
    prefix: str,
    stamp: str,
    metadata: Mapping[str, str],
    records: Mapping[str, int | None],
    uploaded: list[str],
    checkpoint: Callable[[str], None] = stop.checkpoint,
) -> list[Published]:
    """Upload each (path, relative name) under a free timestamped name.

    Args:
        store: the output store.
        files: local files and their names relative to the output dir.
        prefix: the output prefix ("processed/").
        stamp: ``YYYYMMDD_HHMMSS`` of the run's start.
        metadata: object metadata common to every output (includes run-id, and the
            attempt's token as ``attempt``: what marks an object as this attempt's).
        records: record count per relative name, when known.
        uploaded: every key this run created is appended here (for a rollback).
        checkpoint: called before each upload with what comes next (raises when the
            job was asked to stop).
    """
    done: list[Published] = []
    for path, rel in files:
        checkpoint(f"before uploading {rel}")
        folder, _, name = rel.rpartition("/")
        stem, ext = _split(name)
        base = f"{prefix}{folder + '/' if folder else ''}{stem}_{stamp}"
        digests = digest_file(path, part_size_of(store))
        for n in range(1, MAX_NAME_TRIES + 1):
            key = f"{base}{'' if n == 1 else f'-{n}'}{ext}"
            # A file of many parts asks first: a taken name would cost every part before
            # the Complete's 412. One part costs about what the HEAD does, so it just tries.
            if len(digests.part_crc32s) > 1 and store.head(key) is not None:
                continue
            try:
                done.append(
                    upload_verified(
                        store, path, key, metadata, records=records.get(rel), digests=digests
                    )
                )
            except ConflictError:
                continue  # another run's object: never ours to roll back
            except BaseException:
                # The create may have failed before, at or after S3 stored the object, and
                # the name may be another run's (two runs of one second share a stamp): only
                # an object that carries this attempt's token is ours to roll back.
                if _ours(store, key, metadata):
                    uploaded.append(key)
                raise
            uploaded.append(key)
            break
        else:
            raise ConflictError(f"no free name for {rel} after {MAX_NAME_TRIES} tries")
    return done


def _ours(store: OutputStore, key: str, metadata: Mapping[str, str]) -> bool:
    """Whether `key` holds this attempt's object (its ``attempt`` metadata), asked after a failure.

    An answer that cannot be had counts as "not ours": the object is then left for the
    next successful run's orphan removal (``orphans.py``), never deleted blind.
    """
    token = metadata.get("attempt")
    if not token:
        return False  # no attempt token: nothing marks any object as this attempt's
    try:
        info = store.head(key)
    except DsjobError:
        LOGGER.warning("could not tell whether a failed upload was stored", extra={"key": key})
        return False
    return info is not None and info.metadata.get("attempt") == token


def rollback(store: OutputStore, keys: list[str]) -> bool:
    """Remove this run's own uncommitted uploads; never touches anything else.

    Returns:
        Whether nothing of them is left (False when the delete failed).
    """
    if not keys:
        return True
    try:
        store.delete(keys)
    except DsjobError:
        LOGGER.warning("could not remove this run's partial uploads", extra={"keys": keys})
        return False  # their lease stays until it expires
    LOGGER.warning("removed this run's unpublished uploads", extra={"keys": keys})
    return True


def publish(
    store: OutputStore,
    output_dir: Path,
    *,
    prefix: str,
    stamp: str,
    run_id: str,
    dataset: str,
    metadata: Mapping[str, str],
    records: Mapping[str, int | None],
    keep_outputs: int,
    manifest: dict[str, Any],
    checkpoint: Callable[[str], None] = stop.checkpoint,
) -> PublishResult:
    """Upload every file in `output_dir`, verify each, commit, prune.

    If anything fails before the manifest is written, this run's own uploads are
    removed and every earlier output stays where it was; after it, nothing is
    removed (the run is committed; a re-run of its id finishes the pointer and the
    prune). When another attempt of the same run id commits first, this one
    removes its uploads and reports that commit (``already_published``). The run
    holds a lease (``lease.py``) from before its first upload until then.

    A failure once the manifest's create was sent (its answer lost, the read-back
    failed) is judged by the manifest itself (``_commit_state``): this attempt's
    means committed, so nothing is removed and the commit is finished; one that
    cannot be read keeps everything and exits 5, for a re-run of the id to settle.
    """
    files = sorted(p for p in output_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserCodeError(f"the step produced no output files in {output_dir}")
    named = [(p, p.relative_to(output_dir).as_posix()) for p in files]
    if all(p.stat().st_size == 0 or records.get(rel) == 0 for p, rel in named):
        raise UserCodeError(
            f"every output in {output_dir} is empty (0 bytes or 0 rows): nothing published, "
            "earlier outputs kept"
        )
    uploaded: list[str] = []
    done: list[Published] = []
    held = lease.Lease(store, prefix, dataset, run_id, ttl_s=lease.ttl_seconds())
    meta = {**metadata, "run-id": run_id, "dataset": dataset, "attempt": held.token}
    sent: list[bool] = []  # set once the manifest's create may have reached the store

    def fence() -> None:
        held.confirm()
        sent.append(True)

    held.start()
    try:
        done = upload_outputs(
            store,
            named,
            prefix=prefix,
            stamp=stamp,
            metadata=meta,
            records=records,
            uploaded=uploaded,
            checkpoint=checkpoint,
        )
        checkpoint("before writing the run manifest")  # the last moment to publish nothing
        body, found = write_manifest(
            store,
            prefix=prefix,
            run_id=run_id,
            dataset=dataset,
            outputs=done,
            manifest=manifest,
            fence=fence,
        )
    except BaseException as exc:
        settled = _settle(
            store,
            exc,
            held=held,
            prefix=prefix,
            run_id=run_id,
            done=done,
            uploaded=uploaded,
            sent=bool(sent),
            keep=keep_outputs,
        )
        if settled is None:
            raise
        return settled
    # Committed: the manifest speaks for this run now. Nothing is rolled back from here
    # on, and the lease goes in the same delete as the prune.
    held.stop(release=False)
    return finish(store, prefix, body, keep_outputs, found=found, release=(held.key,))


def _settle(
    store: OutputStore,
    exc: BaseException,
    *,
    held: lease.Lease,
    prefix: str,
    run_id: str,
    done: Sequence[Published],
    uploaded: list[str],
    sent: bool,
    keep: int,
) -> PublishResult | None:
    """After a failed publish: roll back, report a commit, or keep everything (None: re-raise).

    Before the manifest's create was sent nothing of this attempt can be committed, so
    its uploads go (a twin's commit is reported when the failure was transient). After
    it, the manifest decides (``_commit_state``).
    """
    if not (sent or isinstance(exc, TransientError)):
        held.stop(release=rollback(store, uploaded))
        return None
    state, stored = _commit_state(store, prefix, run_id, done, uploaded)
    if not sent and state == "unknown":
        state = "none"  # no manifest can list uploads made before it was sent
    uri = store.uri(manifest_key(prefix, run_id))
    if state == "ours":
        # This attempt's create stored the manifest but its answer, or the read-back,
        # was lost: the run is committed and its outputs are the manifest's now.
        held.stop(release=False)
        if not isinstance(exc, Exception):
            return None  # asked to stop: committed, and a re-run of the run id finishes it
        LOGGER.warning(
            "the manifest was stored although its write failed: the run is committed",
            extra={"manifest": uri, "error": str(exc)},
        )
        return finish(store, prefix, stored, keep, release=(held.key,))
    if state == "unknown":
        held.stop(release=False)  # the lease keeps the outputs from orphan removal
        msg = (
            f"{uri}: could not tell whether run {run_id} committed, so its outputs are "
            f"kept; run it again with the same run id to finish or replace it ({exc})"
        )
        raise TransientError(msg) from exc
    held.stop(release=rollback(store, uploaded))
    if state == "twin":
        # A twin attempt of this run id (a duplicate delivery) committed first; it
        # removes this one's objects as its orphans: report its commit.
        return already_published(store, prefix, run_id, keep)
    if isinstance(exc, history.AlreadyCommittedError):  # its manifest is gone again
        raise TransientError(f"{uri} was taken, then vanished") from exc
    return None


def _commit_state(
    store: OutputStore,
    prefix: str,
    run_id: str,
    done: Sequence[Published],
    uploaded: Sequence[str],
) -> tuple[str, dict[str, Any]]:
    """After a failed publish: whose manifest, if any, commits `run_id` now.

    "none": no manifest, so this attempt's uploads are its own to roll back;
    "twin": another attempt's manifest, listing none of this attempt's keys;
    "ours": this attempt's, listing exactly its outputs (key and ETag): its create
    stored it although the answer was lost, so rolling back would delete what the
    manifest promises; "unknown": the manifest cannot be read or matches neither,
    and nothing may be deleted. S3 reads are strongly consistent after a write
    (S3 User Guide, "Amazon S3 data consistency model"), so "none" is final.
    Returns the state and the manifest read ({} when there is none to read).
    """
    try:
        stored = history.read_manifest(store, manifest_key(prefix, run_id))
    except DsjobError:
        LOGGER.warning("could not read the run's manifest after a failure", extra={"run": run_id})
        return "unknown", {}
    if stored is None:
        return "none", {}
    try:
        listed = {(str(o["key"]), str(o["etag"])) for o in stored.get("outputs", [])}
    except (KeyError, TypeError):
        return "unknown", stored
    if listed and listed == {(o.key, o.etag) for o in done}:
        return "ours", stored
    return ("twin" if not {key for key, _ in listed} & set(uploaded) else "unknown"), stored
