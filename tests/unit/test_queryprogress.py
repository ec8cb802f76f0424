"""The built-in step's query progress line, driven by a real DuckDB query."""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING

from dsjob.processing import ProcessSettings, connect
from dsjob.queryprogress import QueryProgress

if TYPE_CHECKING:
    from pathlib import Path

# Slow enough (0.4 s idle, a few seconds on a loaded 2-core machine) for several 0.1 s polls.
SLOW = "SELECT sum(hash(i)) FROM range(80000000) t(i)"


def run_slow(tmp_path: Path, bar: QueryProgress, *, attach: bool) -> None:
    settings = ProcessSettings(threads=1, on_connect=bar.attach if attach else None)
    with connect(settings, tmp_path) as con:
        worker = threading.Thread(target=lambda: con.execute(SLOW).fetchall())
        worker.start()
        # Polled far more often than the job's 0.1 s, so a fast machine still sees frames.
        while worker.is_alive():
            worker.join(0.005)
            bar.poll()
    bar.finish()


def test_enabled_draws_a_percentage_line_and_ends_it(tmp_path: Path) -> None:
    """When enabled, the waiting thread draws `processing [##  ]  NN%` frames, then one newline."""
    out = io.StringIO()
    run_slow(tmp_path, QueryProgress("processing", enabled=True, stream=out), attach=True)
    text = out.getvalue()
    frames = [f for f in text.split("\r") if f]
    assert frames, "no progress drawn"
    assert all(f.startswith("processing [") for f in frames)
    assert any(int(f.split("]")[1].strip(" %\n")) > 0 for f in frames), text
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    """When disabled, nothing at all is written, even with a connection attached."""
    out = io.StringIO()
    run_slow(tmp_path, QueryProgress("processing", enabled=False, stream=out), attach=True)
    assert out.getvalue() == ""


def test_without_on_connect_duckdb_tracks_no_progress(tmp_path: Path) -> None:
    """Without `on_connect` the connection keeps DuckDB's progress tracking off, as before."""
    with connect(ProcessSettings(threads=1), tmp_path) as con:
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (False,)
    with connect(ProcessSettings(threads=1, on_connect=lambda _c: None), tmp_path) as con:
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (True,)
        assert con.execute("SELECT current_setting('enable_progress_bar_print')").fetchone() == (
            False,
        )
