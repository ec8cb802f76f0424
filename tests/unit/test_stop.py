"""Tests for dsjob.stop: real signals set a flag; checkpoints raise; a committed run finishes."""

from __future__ import annotations

import logging
import os
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from dsjob import stop
from dsjob.errors import InterruptedRunError, TerminatedError
from dsjob.localstore import LocalStore
from dsjob.publish import PublishResult, publish

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from dsjob.storage import Digests

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _handlers() -> Iterator[None]:
    """Install dsjob.stop for the test, restore pytest's handlers afterwards."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop.reset()
    stop.install()
    yield
    stop.reset()
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_sigterm_sets_the_flag_and_the_checkpoint_raises_143() -> None:
    """A real SIGTERM raises nothing by itself; the next checkpoint raises TerminatedError."""
    stop.checkpoint("before")  # nothing received yet: no error
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested() == signal.SIGTERM
    with pytest.raises(TerminatedError, match="received SIGTERM while uploading") as excinfo:
        stop.checkpoint("while uploading")
    assert excinfo.value.exit_code == 143


def test_sigint_raises_130_and_the_first_signal_wins() -> None:
    """Ctrl-C gives InterruptedRunError (130); a later SIGTERM does not change the reason."""
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(InterruptedRunError) as excinfo:
        stop.checkpoint()
    assert excinfo.value.exit_code == 130


def test_installed_reflects_the_live_handler() -> None:
    """installed() is false once someone else replaced the SIGTERM handler."""
    assert stop.installed()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert not stop.installed()


class _SignalAfterManifest(LocalStore):
    """A local store that delivers a real SIGTERM to this process right after the manifest."""

    def create_bytes(self, key: str, data: bytes, content_type: str) -> None:
        super().create_bytes(key, data, content_type)
        if "/manifests/" in f"/{key}":
            os.kill(os.getpid(), signal.SIGTERM)


def _publish(store: LocalStore, out: Path, when: datetime) -> PublishResult:
    records: Mapping[str, int | None] = {"members.csv": 1}
    return publish(
        store,
        out,
        prefix="processed/",
        stamp=when.strftime("%Y%m%d_%H%M%S"),
        run_id=when.strftime("r%m"),
        dataset="members",
        metadata={"dataset": "members"},
        records=records,
        keep_outputs=0,
        manifest={},
    )


def test_sigterm_after_the_manifest_finishes_and_skips_the_prune(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM after the commit returns the published result; only the prune is skipped."""
    out = tmp_path / "output"
    out.mkdir()
    (out / "members.csv").write_text("id\n1\n")
    first = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    assert _publish(LocalStore(tmp_path / "dest"), out, first).pruned == ()
    second = datetime(2026, 2, 15, 9, 0, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="dsjob.stop"):
        result = _publish(_SignalAfterManifest(tmp_path / "dest"), out, second)
    assert result.pruned == ()
    # the committed run as it is: its manifest and outputs (commit.finish's early return)
    assert result.manifest_uri == str(tmp_path / "dest/processed/manifests/r02.json")
    assert [o.key for o in result.objects] == ["processed/members_20260215_090000.csv"]
    assert "finishing without the prune" in caplog.text
    names = sorted(p.name for p in (tmp_path / "dest" / "processed").glob("members_*.csv"))
    assert names == ["members_20260115_090000.csv", "members_20260215_090000.csv"]


def test_sigterm_between_uploads_rolls_back(tmp_path: Path) -> None:
    """SIGTERM during an upload stops before the manifest and removes this run's uploads."""

    class _SignalOnUpload(LocalStore):
        def create_file(
            self, path: Path, key: str, metadata: Mapping[str, str], digests: Digests
        ) -> None:
            super().create_file(path, key, metadata, digests)
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "output"
    out.mkdir()
    (out / "a.csv").write_text("id\n1\n")
    (out / "b.csv").write_text("id\n2\n")
    with pytest.raises(TerminatedError, match=r"before uploading b\.csv"):
        _publish(_SignalOnUpload(tmp_path / "dest"), out, datetime(2026, 3, 1, tzinfo=UTC))
    left = [p for p in (tmp_path / "dest").rglob("*") if p.is_file()]
    assert [p for p in left if p.name != ".dsjob.lock"] == []  # the lease went with the uploads
