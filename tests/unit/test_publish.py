"""Publishing to a local store: names, conditional creates, manifest and pointer, pruning."""

from __future__ import annotations

import base64
import json
import zlib
from typing import TYPE_CHECKING

import pytest

from dsjob.errors import ConfigError, ConflictError, MalformedInputError, UserCodeError
from dsjob.history import read_manifest
from dsjob.localstore import LocalStore
from dsjob.publish import PublishResult, publish
from dsjob.schedule import tick_run_id
from dsjob.storage import digest_file

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

T1, T2, T3 = "20260115_090000", "20260215_090000", "20260315_090000"


def produce(tmp_path: Path, body: str = "id\n1\n", name: str = "members.csv") -> Path:
    out = tmp_path / "work" / "output"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    (out / name).write_text(body)
    return out


def do_publish(
    store: LocalStore, out: Path, stamp: str, run_id: str, keep: int = 0
) -> PublishResult:
    return publish(
        store,
        out,
        prefix="processed/",
        stamp=stamp,
        run_id=run_id,
        dataset="members",
        metadata={"generated-at": "t"},
        records={"members.csv": 1},
        keep_outputs=keep,
        manifest={"run_id": run_id},
    )


def files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "processed").glob("members_*"))


def test_manifest_and_pointer_describe_the_outputs(tmp_path: Path) -> None:
    """Outputs get <stem>_<stamp> names; the manifest and current pointer list them."""
    store = LocalStore(tmp_path / "dest")
    result = do_publish(store, produce(tmp_path), T1, "r1")
    key = "processed/members_20260115_090000.csv"
    assert [o.key for o in result.objects] == [key]
    manifest = json.loads((tmp_path / "dest/processed/manifests/r1.json").read_text())
    data = (tmp_path / "dest" / key).read_bytes()
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert manifest["outputs"][0]["sha256"] == digest_file(tmp_path / "dest" / key).sha256
    assert manifest["outputs"][0]["crc32"] == crc
    assert (manifest["outputs"][0]["records"], manifest["dataset"], manifest["format"]) == (
        1,
        "members",
        1,
    )
    pointer = json.loads((tmp_path / "dest/processed/current/members.json").read_text())
    assert (pointer["run_id"], pointer["outputs"]) == ("r1", [key])
    assert pointer["manifest"] == "processed/manifests/r1.json"


def test_prune_keeps_the_newest_committed_and_never_the_runs_own(tmp_path: Path) -> None:
    """keep-outputs counts committed runs; the run's own new output always survives."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path), T1, "r1")
    do_publish(store, produce(tmp_path), T2, "r2", keep=1)
    assert files(tmp_path / "dest") == [
        "members_20260115_090000.csv",
        "members_20260215_090000.csv",
    ]
    result = do_publish(store, produce(tmp_path), T3, "r3", keep=0)
    assert files(tmp_path / "dest") == ["members_20260315_090000.csv"]
    assert len(result.pruned) == 2


def test_same_second_takes_the_next_name_and_never_overwrites(tmp_path: Path) -> None:
    """Two runs with one timestamp get -2; the first file keeps its bytes until it is pruned."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path, "id\n1\n"), T1, "r1", keep=1)
    result = do_publish(store, produce(tmp_path, "id\n2\n"), T1, "r2", keep=1)
    assert result.objects[0].key == "processed/members_20260115_090000-2.csv"
    assert (tmp_path / "dest" / result.objects[0].key).read_text() == "id\n2\n"
    assert (tmp_path / "dest/processed/members_20260115_090000.csv").read_text() == "id\n1\n"


def test_an_uncommitted_output_is_neither_pruned_nor_counted(tmp_path: Path) -> None:
    """A file no manifest lists (another run's upload) survives prune and keeps nothing out."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path), T1, "r1")
    stray = tmp_path / "dest/processed/members_20260201_000000.csv"
    stray.write_text("id\n9\n")
    do_publish(store, produce(tmp_path), T3, "r3", keep=1)
    assert files(tmp_path / "dest") == [
        "members_20260115_090000.csv",
        "members_20260201_000000.csv",
        "members_20260315_090000.csv",
    ]


def test_local_creates_are_exclusive(tmp_path: Path) -> None:
    """Creating a key that exists raises ConflictError and leaves the file as it was."""
    store = LocalStore(tmp_path / "dest")
    store.create_bytes("a.json", b"first", "application/json")
    with pytest.raises(ConflictError):
        store.create_bytes("a.json", b"second", "application/json")
    assert (tmp_path / "dest/a.json").read_bytes() == b"first"


def test_same_run_id_committed_elsewhere_reports_that_commit(tmp_path: Path) -> None:
    """A second attempt of a committed run id removes its own upload and reports the first."""
    store = LocalStore(tmp_path / "dest")
    first = do_publish(store, produce(tmp_path, "id\n1\n"), T1, "dup")
    # The manifest exists already, so the second attempt's conditional create loses.
    second = do_publish(store, produce(tmp_path, "id\n2\n"), T2, "dup")
    assert second.already_published
    assert second.objects == first.objects
    assert files(tmp_path / "dest") == ["members_20260115_090000.csv"]


@pytest.mark.parametrize("name", ["empty.csv", "rows.csv"])
def test_empty_outputs_are_a_user_code_error(tmp_path: Path, name: str) -> None:
    """A step whose every output is 0 bytes or 0 rows fails as user code and prunes nothing."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path), T1, "r1")
    out = produce(tmp_path, "" if name == "empty.csv" else "id\n", name)
    with pytest.raises(UserCodeError, match="empty"):
        publish(
            store, out, prefix="processed/", stamp=T2, run_id="r2", dataset="members",
            metadata={}, records={name: 0 if name == "rows.csv" else None},
            keep_outputs=0, manifest={},
        )  # fmt: skip
    assert files(tmp_path / "dest") == ["members_20260115_090000.csv"]


@pytest.mark.parametrize(
    ("body", "message"), [(b"[1,", "not valid JSON"), (b'{"format": 2}', "format 2")]
)
def test_unreadable_manifest_is_an_input_error(tmp_path: Path, body: bytes, message: str) -> None:
    """A corrupt or newer-format manifest raises exit-3 MalformedInputError naming the file."""
    store = LocalStore(tmp_path)
    store.create_bytes("m.json", body, "application/json")
    with pytest.raises(MalformedInputError, match=message) as caught:
        read_manifest(store, "m.json")
    assert str(tmp_path / "m.json") in str(caught.value)


@pytest.mark.parametrize(
    ("tick", "run_id"),
    [
        ("2027-01-01T00:00:00Z", "monthly-2027-01"),
        ("2027-12-31T23:59:59+00:00", "monthly-2027-12"),
        ("2027-02-15T09:00:00", "monthly-2027-02"),
    ],
)
def test_a_schedule_tick_names_its_run(tick: str, run_id: str) -> None:
    """The run id of a tick is its month: every delivery of one tick gets the same id."""
    assert tick_run_id(tick) == run_id


@pytest.mark.parametrize(
    ("tick", "message"),
    [
        ("next tuesday", "must be an ISO 8601 time"),
        # 2027-02-01T00:30+01:00 is still January in UTC: refused, not guessed.
        ("2027-02-01T00:30:00+01:00", "must be in UTC"),
    ],
)
def test_a_bad_schedule_tick_is_a_config_error(tick: str, message: str) -> None:
    """A scheduled-time that is not an ISO 8601 UTC time exits 2 and names the parameter."""
    with pytest.raises(ConfigError, match=f"scheduled-time {message}"):
        tick_run_id(tick)


def test_a_pruned_name_taken_again_is_not_deleted_twice(tmp_path: Path) -> None:
    """A pending delete of a name that another run has since taken leaves that run's file."""
    store = LocalStore(tmp_path / "dest")
    do_publish(store, produce(tmp_path, "id\n1\n"), T1, "r1")
    do_publish(store, produce(tmp_path, "id\n2\n"), T2, "r2")  # prunes r1's T1 file
    do_publish(store, produce(tmp_path, "id\n3\n"), T1, "r3", keep=1)  # takes the T1 name
    pointer_path = tmp_path / "dest/processed/current/members.json"
    pointer = json.loads(pointer_path.read_text())
    reused = "processed/members_20260115_090000.csv"
    # As if r2's delete of r1's file had failed: the name is still pending for r1.
    pointer["pending_delete"] = [{"key": reused, "run_id": "r1"}]
    pointer_path.write_text(json.dumps(pointer))
    do_publish(store, produce(tmp_path, "id\n4\n"), T3, "r4", keep=1)
    assert (tmp_path / "dest" / reused).read_text() == "id\n3\n"


def test_an_output_in_a_folder_keeps_the_folder_and_stamps_the_file_name(tmp_path: Path) -> None:
    """A `v1.2/data` output is published as `v1.2/data_<stamp>`: the folder is kept whole."""
    out = tmp_path / "work" / "output"
    (out / "v1.2").mkdir(parents=True)
    (out / "v1.2" / "data").write_text("id\n1\n")
    result = publish(
        LocalStore(tmp_path / "dest"),
        out,
        prefix="processed/",
        stamp=T1,
        run_id="nested",
        dataset="members",
        metadata={},
        records={},
        keep_outputs=0,
        manifest={"run_id": "nested"},
    )
    assert [o.key for o in result.objects] == [f"processed/v1.2/data_{T1}"]
    assert (tmp_path / "dest" / "processed" / "v1.2" / f"data_{T1}").read_text() == "id\n1\n"
