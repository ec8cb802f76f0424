"""The commit on its own (the fan-out's commit phase): manifest, pointer, prune, orphans."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from dsjob import commit, history
from dsjob.localstore import LocalStore
from dsjob.storage import digest_file
from dsjob.verify import upload_verified

if TYPE_CHECKING:
    from pathlib import Path

    from dsjob.verify import Published

pytestmark = pytest.mark.unit

PREFIX = "processed/"


def _part(store: LocalStore, tmp_path: Path, key: str, run_id: str) -> Published:
    path = tmp_path / "part.csv"
    path.write_text(f"id\n{run_id}\n")
    meta = {"run-id": run_id, "dataset": "members"}
    return upload_verified(store, path, key, meta, records=1, digests=digest_file(path))


def _commit(store: LocalStore, run_id: str, outputs: list[Published]) -> commit.PublishResult:
    return commit.commit(
        store,
        prefix=PREFIX,
        run_id=run_id,
        dataset="members",
        outputs=outputs,
        manifest={"inputs": [{"last_modified": datetime(2027, 1, 1, tzinfo=UTC)}]},
        keep_outputs=0,
    )


def test_a_commit_writes_the_manifest_moves_the_pointer_prunes_and_removes_orphans(
    tmp_path: Path,
) -> None:
    """commit() lists its outputs and orphans, points current at them, deletes the rest.

    Kills each argument of commit()'s two calls set to None or dropped (the orphans
    it found are deleted only when passed on) and a manifest JSON without default=str.
    """
    root = tmp_path / "dest"
    store = LocalStore(root)
    old = _part(store, tmp_path, "processed/members_1.csv", "old")
    _commit(store, "old", [old])
    orphan = _part(store, tmp_path, "processed/members_2.csv", "fan")  # a killed attempt's
    new = _part(store, tmp_path, "processed/members_3.csv", "fan")
    result = _commit(store, "fan", [new])
    assert result.manifest_uri == str(root / "processed/manifests/fan.json")
    assert (result.objects, result.pruned, result.orphans) == ((new,), (old.key,), (orphan.key,))
    assert sorted(p.name for p in (root / "processed").glob("members_*")) == ["members_3.csv"]
    manifest = json.loads((root / "processed/manifests/fan.json").read_text())
    assert (manifest["run_id"], manifest["dataset"]) == ("fan", "members")
    assert manifest["outputs"][0]["key"] == new.key
    assert manifest["orphans_removed"] == [orphan.key]
    assert manifest["inputs"] == [{"last_modified": "2027-01-01 00:00:00+00:00"}]  # str()
    pointer = json.loads((root / "processed/current/members.json").read_text())
    assert (pointer["run_id"], pointer["outputs"]) == ("fan", [new.key])


def test_a_retry_of_an_older_manifest_reports_it_and_finishes_nothing(tmp_path: Path) -> None:
    """A manifest without dataset or committed_at (older dsjob) is reported, nothing pruned.

    Kills ``pruned = None`` for that case.
    """
    store = LocalStore(tmp_path)
    store.create_bytes(
        "processed/manifests/old.json",
        json.dumps({"run_id": "old", "format": 1, "outputs": []}).encode(),
        "application/json",
    )
    result = commit.already_published(store, PREFIX, "old", 0)
    assert (result.already_published, result.pruned, result.objects) == (True, (), ())


def test_a_second_commit_of_one_run_id_raises_naming_the_run(tmp_path: Path) -> None:
    """The manifest exists already: AlreadyCommittedError names the run, the first stays.

    The fan-out's commit phase re-raises it when it cannot report the first commit, so
    its run id reaches the user. Kills ``AlreadyCommittedError(None)``.
    """
    store = LocalStore(tmp_path)
    first = _part(store, tmp_path, "processed/members_1.csv", "dup")
    _commit(store, "dup", [first])
    with pytest.raises(history.AlreadyCommittedError, match="dup"):
        _commit(store, "dup", [_part(store, tmp_path, "processed/members_2.csv", "dup")])
    manifest = json.loads((tmp_path / "processed/manifests/dup.json").read_text())
    assert [o["key"] for o in manifest["outputs"]] == [first.key]
