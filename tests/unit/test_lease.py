"""The lease time setting, and leases and orphans on the local store (same protocol as S3)."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import pytest

from dsjob import lease, orphans
from dsjob.errors import ConfigError, TransientError
from dsjob.localstore import LocalStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("raw", "ttl"), [("", 120.0), ("2.5", 2.5), (" 30 ", 30.0), ("0.5", 0.5)])
def test_the_lease_time_comes_from_dsjob_lease_seconds(raw: str, ttl: float) -> None:
    """DSJOB_LEASE_SECONDS sets the lease time (any positive time); unset or blank means 120 s."""
    assert lease.ttl_seconds({"DSJOB_LEASE_SECONDS": raw}) == ttl
    assert lease.ttl_seconds({}) == lease.DEFAULT_TTL_S


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_lease_time_is_a_config_error_naming_the_variable(raw: str) -> None:
    """Zero, negative, non-finite or non-numeric lease times exit 2, naming the variable."""
    with pytest.raises(ConfigError, match="DSJOB_LEASE_SECONDS"):
        lease.ttl_seconds({"DSJOB_LEASE_SECONDS": raw})


def _output(store: LocalStore, key: str, run_id: str) -> None:
    store.create_bytes(key, b"x", "text/plain")
    store._meta(key).write_text(json.dumps({"run-id": run_id, "dataset": "members"}))


def _age(store: LocalStore, key: str, seconds: float) -> None:
    path = store.root / key
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_stale_lease_is_claimed_and_its_runs_outputs_are_orphans(tmp_path: Path) -> None:
    """A lease older than its time marks its run dead: claimed, its output listed as an orphan."""
    store = LocalStore(tmp_path)
    dead = lease.Lease(store, "p/", "members", "dead", ttl_s=5)
    dead._etag = dead._write(None)  # a lease its run stopped refreshing
    _output(store, "p/members_1.csv", "dead")
    _age(store, dead.key, 7)
    _age(store, "p/members_1.csv", 7)
    mine = lease.Lease(store, "p/", "members", "me", ttl_s=5)
    mine._etag = mine._write(None)
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=5)
    assert (found.orphans, found.leases) == (("p/members_1.csv",), (dead.key,))
    claimed = json.loads((tmp_path / dead.key).read_text())
    assert claimed == {
        "run_id": "dead",
        "dataset": "members",
        "state": "claimed",
        "ttl_s": 5,
        "seq": 0,
        "claimed_by": "me",
    }
    # 7 s: past the lease time plus slack (so claimable) but under twice the lease time,
    # where a confirm that trusted its last write for too long would not ask again.
    dead._sent -= 7
    with pytest.raises(TransientError, match="cannot commit"):
        dead.confirm()  # its run, were it still alive, learns it lost the lease


def test_a_fresh_lease_keeps_its_runs_outputs(tmp_path: Path) -> None:
    """A lease written within its time means a live run: nothing of it is an orphan."""
    store = LocalStore(tmp_path)
    live = lease.Lease(store, "p/", "members", "live", ttl_s=5)
    live._etag = live._write(None)
    assert json.loads((tmp_path / live.key).read_text()) == {
        "run_id": "live",
        "dataset": "members",
        "state": "live",
        "ttl_s": 5,
        "seq": 1,
    }
    _output(store, "p/members_1.csv", "live")
    _age(store, live.key, 3)  # younger than 5 s
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=5)
    assert (found.orphans, found.leases) == ((), ())
    live.confirm()  # still held


def test_without_a_lease_only_age_makes_an_orphan(tmp_path: Path) -> None:
    """An output whose run left no lease is an orphan only after ORPHAN_AGE."""
    store = LocalStore(tmp_path)
    _output(store, "p/young.csv", "old-dsjob")
    _output(store, "p/old.csv", "older-dsjob")
    _age(store, "p/old.csv", orphans.ORPHAN_AGE.total_seconds() + 60)
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=5)
    assert found.orphans == ("p/old.csv",)


def test_a_lease_is_judged_by_its_own_longer_time(tmp_path: Path) -> None:
    """A run with a 60 s lease, silent for 10 s, is alive to a run whose own lease time is 5 s.

    Kills a lease body without ``ttl_s`` (or with None) and a claim that reads another key.
    """
    store = LocalStore(tmp_path)
    slow = lease.Lease(store, "p/", "members", "slow", ttl_s=60)
    slow._etag = slow._write(None)
    _output(store, "p/members_1.csv", "slow")
    _age(store, slow.key, 10)
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=5)
    assert (found.orphans, found.leases) == ((), ())
    assert json.loads((tmp_path / slow.key).read_text())["state"] == "live"
    slow.confirm()


def test_a_dead_run_whose_id_has_dots_is_recognised_by_its_lease(tmp_path: Path) -> None:
    """Run ids may hold dots (`exec.7`): the stale lease `exec.7.<token>.json` still names it.

    Kills owner_of splitting on the first dot (or every dot) instead of the last two.
    """
    store = LocalStore(tmp_path)
    dead = lease.Lease(store, "p/", "members", "exec.7", ttl_s=5)
    dead._etag = dead._write(None)
    _output(store, "p/members_1.csv", "exec.7")  # written now: the store's clock reads now
    _age(store, dead.key, 10)
    found = orphans.find(store, "p/", "me", "members", exclude=set(), ttl_s=5)
    assert (found.orphans, found.leases) == (("p/members_1.csv",), (dead.key,))


def test_a_lease_kept_at_stop_stays_for_others_to_judge(tmp_path: Path) -> None:
    """stop(release=False) (uploads left behind) keeps the lease; release=True deletes it.

    Kills ``not release and self._lost``, which deleted a kept lease: the run's leftovers
    would then wait 24 h (no lease) instead of one lease time to be removed.
    """
    store = LocalStore(tmp_path)
    kept, gone = (lease.Lease(store, "p/", "members", r, ttl_s=60) for r in ("kept", "gone"))
    for held in (kept, gone):
        held.start()
    kept.stop(release=False)
    gone.stop(release=True)
    assert (tmp_path / kept.key).is_file()
    assert not (tmp_path / gone.key).exists()
