"""Publishing to a local store: names, verification, manifest last, pruning."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest

from dsjob.errors import TransientError, UserCodeError
from dsjob.publish import publish
from dsjob.storage import LocalStore

pytestmark = pytest.mark.unit


def produce(tmp_path: Path, body: str = "id\n1\n") -> Path:
    out = tmp_path / "work" / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "members.csv").write_text(body)
    return out


def do_publish(store: LocalStore, out: Path, when: datetime, run_id: str, keep: int = 0):
    return publish(
        store,
        out,
        prefix="processed/",
        started=when,
        run_id=run_id,
        metadata={"dataset": "members"},
        records={"members.csv": 1},
        keep_outputs=keep,
        manifest={"run_id": run_id},
    )


T1 = datetime(2026, 1, 15, 9, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 2, 15, 9, 0, 0, tzinfo=UTC)
T3 = datetime(2026, 3, 15, 9, 0, 0, tzinfo=UTC)


def test_names_are_timestamped_and_manifest_lists_outputs(tmp_path: Path) -> None:
    """Outputs get <stem>_YYYYMMDD_HHMMSS names; the manifest lists them with checksums."""
    store = LocalStore(tmp_path / "dest")
    result = do_publish(store, produce(tmp_path), T1, "r1")
    assert [o.key for o in result.objects] == ["processed/members_20260115_090000.csv"]
    manifest = json.loads((tmp_path / "dest/processed/manifests/r1.json").read_text())
    assert manifest["outputs"][0]["sha256"] == result.objects[0].sha256
    assert manifest["outputs"][0]["records"] == 1


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    """Older outputs of the same stem beyond keep-outputs are deleted after publishing."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path), T1, "r1")
    do_publish(store, produce(tmp_path), T2, "r2", keep=1)
    assert len(list((tmp_path / "dest/processed").glob("members_*.csv"))) == 2
    result = do_publish(store, produce(tmp_path), T3, "r3", keep=0)
    assert [p.name for p in (tmp_path / "dest/processed").glob("members_*.csv")] == [
        "members_20260315_090000.csv"
    ]
    assert len(result.pruned) == 2


def test_same_second_does_not_overwrite(tmp_path: Path) -> None:
    """Two runs in one second get distinct names; the older is pruned only after the new one."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path, "id\n1\n"), T1, "r1")
    result = do_publish(store, produce(tmp_path, "id\n2\n"), T1, "r2")
    assert result.objects[0].key == "processed/members_20260115_090000-2.csv"
    assert (tmp_path / "dest" / result.objects[0].key).read_text() == "id\n2\n"
    assert not (tmp_path / "dest/processed/members_20260115_090000.csv").exists()


def test_checksum_mismatch_rolls_back_and_keeps_old(tmp_path: Path) -> None:
    """A read-back that does not match fails transient, removes the new file, keeps the old."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path), T1, "r1")
    real_head = store.head

    def corrupt(key: str):
        info = real_head(key)
        return None if info is None else type(info)(info.size, "0" * 64, info.metadata)

    with mock.patch.object(store, "head", side_effect=corrupt), pytest.raises(TransientError):
        do_publish(store, produce(tmp_path), T2, "r2")
    names = sorted(p.name for p in (tmp_path / "dest/processed").rglob("*") if p.is_file())
    assert names == ["members_20260115_090000.csv", "r1.json"]


def test_empty_output_dir_is_a_user_code_error(tmp_path: Path) -> None:
    """A step that wrote nothing fails as user code and publishes nothing."""
    out = tmp_path / "empty"
    out.mkdir()
    with pytest.raises(UserCodeError):
        do_publish(LocalStore(tmp_path / "dest"), out, T1, "r1")
    assert not (tmp_path / "dest").exists()
