"""A one-line progress display for the built-in DuckDB step, polled by the thread that waits."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import duckdb


class QueryProgress:
    """Holds the step's connection (set from the worker thread) and draws its query progress.

    DuckDB reports the running query's progress from another thread through
    ``query_progress()`` (a percentage, -1 when no query runs); each of the
    step's queries starts again from 0.
    """

    def __init__(self, label: str, *, enabled: bool, stream: TextIO | None = None) -> None:
        """Args: label: what runs; enabled: draw at all (TTY text mode); stream: default stderr."""
        self._label, self._enabled, self._stream = label, enabled, stream
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._last_pct = -1
        self._drawn = False

    @property
    def enabled(self) -> bool:
        """Whether anything is drawn."""
        return self._enabled

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Remember the connection to poll (a `ProcessSettings.on_connect` callback)."""
        with self._lock:
            self._con = con

    def poll(self) -> None:
        """Redraw the line when the running query's percentage has moved."""
        if not self._enabled:
            return
        import duckdb  # noqa: PLC0415 - already loaded once a connection is attached

        with self._lock:
            con = self._con
        if con is None:
            return
        try:
            pct = int(con.query_progress())
        except duckdb.Error:  # the step closed its connection between two polls
            return
        if pct < 0 or pct == self._last_pct:
            return
        self._last_pct = min(pct, 100)
        out = self._stream or sys.stderr
        bar = "#" * (self._last_pct // 4)
        out.write(f"\r{self._label} [{bar:<25}] {self._last_pct:3d}%")
        out.flush()
        self._drawn = True

    def finish(self) -> None:
        """End the line, if one was drawn, so the next log line starts clean."""
        if self._drawn:
            out = self._stream or sys.stderr
            out.write("\n")
            out.flush()
            self._drawn = False
