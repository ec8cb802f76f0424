"""Which uncommitted outputs are orphans, on the local store (the same protocol as on S3).

Ages are set with os.utime; the store's clock is the newest object listed, so each
test also writes something now.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import pytest

from dsjob import lease, orphans
from dsjob.errors import MalformedInputError
from dsjob.localstore import LocalStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

TTL = 5.0


def _output(store: LocalStore, key: str, run_id: str, dataset: str = "members") -> None:
    store.create_bytes(key, b"x", "text/plain")
    store._meta(key).write_text(json.dumps({"run-id": run_id, "dataset": dataset}))


def _lease(store: LocalStore, run_id: str, age: float) -> str:
    held = lease.Lease(store, "p/", "members", run_id, ttl_s=TTL)
    held._etag = held._write(None)
    _age(store, held.key, age)
    return held.key


def _age(store: LocalStore, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.root / key, (then, then))


def _find(store: LocalStore, run_id: str = "me") -> orphans.Found:
    return orphans.find(store, "p/", run_id, "members", exclude=set(), ttl_s=TTL)


def test_objects_listed_after_another_datasets_or_a_live_runs_are_still_judged(
    tmp_path: Path,
) -> None:
    """Skipping another dataset's object or a live run's does not end the search.

    Kills ``break`` in place of either ``continue``.
    """
    store = LocalStore(tmp_path)
    _output(store, "p/a_other.csv", "dead", dataset="others")
    _lease(store, "live", 1)
    _output(store, "p/b_live.csv", "live")
    dead = _lease(store, "dead", 10)
    _output(store, "p/c_dead.csv", "dead")
    found = _find(store)
    assert (found.orphans, found.leases) == (("p/c_dead.csv",), (dead,))


def test_a_committed_run_whose_pointer_write_failed_keeps_its_outputs(tmp_path: Path) -> None:
    """A run with a manifest but no pointer yet (exit 5 at the pointer) is no orphan owner.

    Its lease is stale (kept at stop after the commit), so it is claimed, but its
    outputs are committed: its retry moves the pointer to them. Kills a committed
    check that is always false or looks only at this run's own id.
    """
    store = LocalStore(tmp_path)
    stale = _lease(store, "late", 10)
    _output(store, "p/members_1.csv", "late")
    store.create_bytes("p/manifests/late.json", b'{"run_id": "late"}', "application/json")
    found = _find(store)
    assert (found.orphans, found.leases) == ((), (stale,))
    assert (tmp_path / "p/members_1.csv").is_file()


def test_a_stale_lease_whose_run_left_no_object_is_claimed_too(tmp_path: Path) -> None:
    """A dead run that stored nothing still has its lease claimed, to go with the commit.

    Kills the final pass over the leases asking about no owner.
    """
    store = LocalStore(tmp_path)
    stale = _lease(store, "empty", 10)
    _lease(store, "me", 0)
    assert _find(store).leases == (stale,)


def test_an_earlier_attempts_stale_lease_is_claimed_and_this_attempts_is_not(
    tmp_path: Path,
) -> None:
    """Of two leases of this run id, the stale one (a killed attempt's) is claimed.

    Kills skipping the earlier attempts' leases, claiming the fresh one instead, and
    claiming no key.
    """
    store = LocalStore(tmp_path)
    old = _lease(store, "me", 10)
    mine = _lease(store, "me", 0)
    assert _find(store).leases == (old,)
    assert json.loads((tmp_path / mine).read_text())["state"] == "live"


def test_a_lease_a_dead_claimer_left_is_taken_as_claimed(tmp_path: Path) -> None:
    """A stale lease already marked claimed (its claimer died before cleaning) is not re-claimed.

    Its run's object is an orphan, the lease goes with it, and the first claim stays
    on record. Kills every change to the ``state == "claimed"`` test and its answer.
    """
    store = LocalStore(tmp_path)
    key = f"p/_leases/members/dead.{'0' * 8}.json"
    claimed = lease.body("dead", "members", TTL, state="claimed", by="first")
    store.swap_bytes(key, claimed, "application/json", None)
    _age(store, key, 10)
    _output(store, "p/members_1.csv", "dead")
    found = _find(store)
    assert (found.orphans, found.leases) == (("p/members_1.csv",), (key,))
    assert json.loads((tmp_path / key).read_text())["claimed_by"] == "first"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]"])
def test_an_unreadable_stale_lease_is_claimed(tmp_path: Path, body: bytes) -> None:
    """A stale lease that is not a JSON object is claimed on this run's own lease time.

    Its run's object is an orphan; the claim names no run or dataset and this run's
    0.5 s lease time. Kills ``held = None`` for unreadable JSON, a dict check that lets
    a list through, and any other default for the missing run id, dataset or lease time.
    """
    store = LocalStore(tmp_path)
    key = f"p/_leases/members/dead.{'0' * 8}.json"
    store.swap_bytes(key, body, "application/json", None)
    _age(store, key, 1.8)  # past 0.5 s + 1 s slack, not past 1 s + 1 s
    _output(store, "p/members_1.csv", "dead")
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=0.5)
    assert (found.orphans, found.leases) == (("p/members_1.csv",), (key,))
    assert json.loads((tmp_path / key).read_text()) == {
        "run_id": "",
        "dataset": "",
        "state": "claimed",
        "ttl_s": 0.5,
        "seq": 0,
        "claimed_by": "me",
    }


def test_a_lease_within_its_time_and_the_clocks_rounding_is_fresh(tmp_path: Path) -> None:
    """5.5 s after a 5 s lease's last write its run is still alive: S3's clock has whole seconds.

    Kills a slack taken off the lease time instead of added to it.
    """
    store = LocalStore(tmp_path)
    _lease(store, "slow", TTL + 0.5)
    _output(store, "p/members_1.csv", "slow")
    found = _find(store)
    assert (found.orphans, found.leases) == ((), ())


def test_a_corrupt_pointer_stops_the_search_naming_it(tmp_path: Path) -> None:
    """A current pointer that is not JSON exits 3 naming it, before anything is judged.

    Kills every change to how the pointer is found and parsed (its key, its store, its name).
    """
    store = LocalStore(tmp_path)
    store.create_bytes("p/current/members.json", b"[1,", "application/json")
    _output(store, "p/members_1.csv", "dead")
    uri = store.uri("p/current/members.json")
    with pytest.raises(MalformedInputError, match=rf"^pointer {uri} is not valid JSON"):
        _find(store)
