"""Stop requests (SIGTERM, Ctrl-C) as a flag that the job checks at safe points.

A signal handler that raises can fire anywhere, including inside ``logging``'s
``emit()`` while stderr is blocked, where the exception is swallowed and the job
runs on to publish. So the handlers here only record the signal; the job calls
``checkpoint()`` where stopping is safe (between phases, between uploads, in its
wait loops), and ``checkpoint()`` raises the matching error.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from dsjob.errors import DsjobError, InterruptedRunError, TerminatedError

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["checkpoint", "error", "install", "installed", "requested", "reset", "skip"]

LOGGER = logging.getLogger(__name__)
_HANDLED = (signal.SIGTERM, signal.SIGINT)
# The first stop signal received; a second one does not change the reason.
_received: signal.Signals | None = None
_installed = False


def _handle(signum: int, frame: FrameType | None) -> None:
    """Record the signal, nothing else: no logging, no raising, no I/O."""
    del frame
    global _received  # noqa: PLW0603 -- a signal handler can only talk through module state
    if _received is None:
        _received = signal.Signals(signum)


def install() -> None:
    """Make SIGTERM and SIGINT set the stop flag (main thread only; idempotent)."""
    global _installed  # noqa: PLW0603 -- see _handle
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _HANDLED:
        signal.signal(signum, _handle)
    _installed = True


def installed() -> bool:
    """True when ``install()`` put the handlers in place and they are still there."""
    return _installed and signal.getsignal(signal.SIGTERM) is _handle


def requested() -> signal.Signals | None:
    """The stop signal received so far, or None."""
    return _received


def reset() -> None:
    """Forget a received signal (for a process that runs several jobs, and for tests)."""
    global _received  # noqa: PLW0603 -- see _handle
    _received = None


def error(during: str = "") -> DsjobError | None:
    """The error a checkpoint would raise now, or None.

    Args:
        during: what was going on, for the message ("while uploading ...").
    """
    if _received is None:
        return None
    what = f" {during}" if during else ""
    if _received == signal.SIGINT:
        return InterruptedRunError(f"interrupted (Ctrl-C){what}; stopped without publishing")
    return TerminatedError(f"received SIGTERM{what}; stopped without publishing")


def checkpoint(during: str = "") -> None:
    """Raise ``TerminatedError`` (SIGTERM) or ``InterruptedRunError`` (SIGINT) if one arrived.

    Args:
        during: what was going on, for the message.
    """
    exc = error(during)
    if exc is not None:
        raise exc


def skip(what: str) -> bool:
    """True, with a warning, when a stop arrived after the run was committed.

    Past the commit (the run manifest is written), stopping would leave the job
    reporting a failure for outputs that are published; so the job finishes and
    reports success, skipping only ``what`` (a prune the next run will redo).
    """
    if _received is None:
        return False
    LOGGER.warning(
        "stop requested after the run was committed; finishing without %s",
        what,
        extra={"signal": _received.name},
    )
    return True
