"""Publishing to a local store: names, metadata, orphans and finished retries, as users see them."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import pytest

from dsjob.errors import ConflictError
from dsjob.localstore import LocalStore
from dsjob.publish import publish
from dsjob.storage import digest_file

if TYPE_CHECKING:
    from pathlib import Path

    from dsjob.publish import PublishResult

pytestmark = pytest.mark.unit

T1, T2 = "20260115_090000", "20260215_090000"


def output_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    out = tmp_path / "output"
    for rel, body in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(body)
    return out


def run(
    store: LocalStore, out: Path, stamp: str, run_id: str, *, keep: int = 0, rows: int = 1
) -> PublishResult:
    records: dict[str, int | None] = {
        p.relative_to(out).as_posix(): rows for p in out.rglob("*") if p.is_file()
    }
    return publish(
        store, out, prefix="processed/", stamp=stamp, run_id=run_id, dataset="members",
        metadata={"generated-at": "t"}, records=records, keep_outputs=keep, manifest={},
    )  # fmt: skip


def meta(root: Path, key: str) -> dict[str, str]:
    path = root / key
    loaded: dict[str, str] = json.loads(path.with_name(f".{path.name}.meta").read_text())
    return loaded


def test_names_keep_folders_and_double_extensions(tmp_path: Path) -> None:
    """sub/a.csv.gz -> processed/sub/a_<stamp>.csv.gz; a file without extension gets none."""
    store = LocalStore(tmp_path / "dest")
    out = output_dir(tmp_path, {"sub/a.csv.gz": "x", "README": "y"})
    result = run(store, out, T1, "r1")
    assert sorted(o.key for o in result.objects) == [
        "processed/README_20260115_090000",
        "processed/sub/a_20260115_090000.csv.gz",
    ]


def test_hidden_files_are_not_published(tmp_path: Path) -> None:
    """A dot-file in the output dir (an editor's or a tool's) is left out of the run."""
    store = LocalStore(tmp_path / "dest")
    out = output_dir(tmp_path, {"a.csv": "id\n1\n", ".a.csv.swp": "junk"})
    result = run(store, out, T1, "r1")
    assert [o.key for o in result.objects] == ["processed/a_20260115_090000.csv"]
    assert not any(".swp" in p.name for p in (tmp_path / "dest").rglob("*"))


def test_outputs_carry_run_dataset_checksum_and_count_metadata(tmp_path: Path) -> None:
    """Each output's metadata names its run, dataset, SHA-256 and record count."""
    store = LocalStore(tmp_path / "dest")
    out = output_dir(tmp_path, {"a.csv": "id\n1\n2\n"})
    key = run(store, out, T1, "r1", rows=2).objects[0].key
    got = meta(tmp_path / "dest", key)
    leases = list((tmp_path / "dest").rglob("_leases/members/r1.*.json"))
    assert leases == []  # released; the attempt token is 8 hex digits
    assert len(got.pop("attempt")) == 8
    assert got == {
        "generated-at": "t",
        "run-id": "r1",
        "dataset": "members",
        "sha256": digest_file(out / "a.csv").sha256,
        "record-count": "2",
    }


def test_the_hundredth_name_is_the_last_tried(tmp_path: Path) -> None:
    """With 99 names taken the run takes -100; with 100 taken it fails and publishes nothing."""
    dest = tmp_path / "dest"
    (dest / "processed").mkdir(parents=True)
    (dest / "processed/a_20260115_090000.csv").write_text("taken")
    for n in range(2, 100):
        (dest / f"processed/a_20260115_090000-{n}.csv").write_text("taken")
    store = LocalStore(dest)
    result = run(store, output_dir(tmp_path, {"a.csv": "id\n1\n"}), T1, "r1", keep=5)
    assert result.objects[0].key == "processed/a_20260115_090000-100.csv"
    with pytest.raises(ConflictError, match=r"no free name for a\.csv after 100 tries"):
        run(store, output_dir(tmp_path, {"a.csv": "id\n1\n"}), T1, "r2", keep=5)
    assert not (dest / "processed/manifests/r2.json").exists()


def test_an_earlier_attempts_upload_is_removed_and_listed_as_an_orphan(tmp_path: Path) -> None:
    """An output a killed attempt of the same run id left is deleted and named in the manifest."""
    dest = tmp_path / "dest"
    store = LocalStore(dest)
    stray = dest / "stray.csv"
    dest.mkdir()
    stray.write_text("id\n9\n")
    orphan = "processed/a_20260101_000000.csv"
    store.create_file(stray, orphan, {"dataset": "members", "run-id": "r1"}, digest_file(stray))
    other = "processed/b_20260101_000000.csv"
    store.create_file(stray, other, {"dataset": "others", "run-id": "r1"}, digest_file(stray))
    result = run(store, output_dir(tmp_path, {"a.csv": "id\n1\n"}), T1, "r1")
    assert result.orphans == (orphan,)
    assert not (dest / orphan).exists()
    assert (dest / other).exists()  # another dataset's output is not this run's to delete
    manifest = json.loads((dest / "processed/manifests/r1.json").read_text())
    assert manifest["orphans_removed"] == [orphan]


def test_a_retry_of_a_committed_run_moves_the_pointer_and_prunes(tmp_path: Path) -> None:
    """A run id whose manifest is written but whose pointer is not is finished by its retry."""
    dest = tmp_path / "dest"
    store = LocalStore(dest)
    first = run(store, output_dir(tmp_path, {"a.csv": "id\n1\n"}), T1, "r1")
    pointer = dest / "processed/current/members.json"
    before = pointer.read_bytes()
    old_key = first.objects[0].key
    old_bytes, old_meta = (dest / old_key).read_bytes(), meta(dest, old_key)
    second = run(store, output_dir(tmp_path, {"a.csv": "id\n2\n"}), T2, "r2")
    # As if r2 had stopped right after its manifest: old pointer, r1's output still there.
    pointer.write_bytes(before)
    (dest / old_key).write_bytes(old_bytes)
    old_path = dest / old_key
    old_path.with_name(f".{old_path.name}.meta").write_text(json.dumps(old_meta))
    retry = run(store, output_dir(tmp_path, {"a.csv": "id\n3\n"}), T2, "r2")
    assert retry.already_published
    assert retry.objects == second.objects
    assert retry.pruned == (old_key,)
    assert retry.manifest_uri == str(dest / "processed/manifests/r2.json")
    assert not (dest / old_key).exists()
    current = json.loads(pointer.read_text())
    assert (current["run_id"], current["outputs"]) == ("r2", [second.objects[0].key])
    assert current["pending_delete"] == []


def test_another_runs_upload_is_an_orphan_only_once_it_is_a_day_old(tmp_path: Path) -> None:
    """An uncommitted output of another run is deleted after 24 h, kept while it may be running."""
    dest = tmp_path / "dest"
    store = LocalStore(dest)
    dest.mkdir()
    stray = dest / "stray.csv"
    stray.write_text("id\n9\n")
    old, young = "processed/a_20260101_000000.csv", "processed/a_20260102_000000.csv"
    for key in (old, young):
        store.create_file(stray, key, {"dataset": "members", "run-id": "gone"}, digest_file(stray))
    day_and_a_minute_ago = time.time() - 24 * 3600 - 60
    os.utime(dest / old, (day_and_a_minute_ago, day_and_a_minute_ago))
    result = run(store, output_dir(tmp_path, {"a.csv": "id\n1\n"}), T1, "r1")
    assert result.orphans == (old,)
    assert not (dest / old).exists()
    assert (dest / young).exists()
