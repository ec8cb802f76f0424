"""Find and kill every process a script started, including ones that escaped with setsid.

Two ways, chosen once per script run and named in the log:

- **cgroup**: where a cgroup is writable (cgroup v2, or the v1 freezer
  hierarchy), the script starts in a cgroup of its own; at the end every member
  is killed (v2 ``cgroup.kill``; v1: freeze, SIGKILL every task, thaw), whatever
  session or parent it has.
- **process tree** otherwise (an unprivileged container): this process becomes
  a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, so orphans of the script
  are reparented here instead of to init), and the script's environment carries
  a random tag. At the end, every process that descends from the script, or
  carries the tag, is stopped, then killed, and reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger(__name__)

TAG_ENV = "DSJOB_PROCESS_TAG"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_PR_SET_CHILD_SUBREAPER = 36
_SETTLE_S = 5.0
# The shim waits for one byte on an inherited pipe (sent once it is in its cgroup),
# then becomes the script: nothing the script does can run outside the cgroup.
_SHIM = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "go = os.read(fd, 1)\n"
    "os.close(fd)\n"
    "if go != b'1':\n"
    "    sys.exit(125)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


class Reaper:
    """Where one script's processes live, and how to kill all of them.

    Attributes:
        kind: "cgroup v2", "cgroup v1 freezer" or "process tree", for the log.
        tag: the value of ``DSJOB_PROCESS_TAG`` in the script's environment.
    """

    def __init__(self, cgroup_root: Path | None = CGROUP_ROOT) -> None:
        """Args: cgroup_root: the cgroup mount point; None forces the process-tree way."""
        self.tag = secrets.token_hex(8)
        self._group: Path | None = None
        self._v2 = False
        if cgroup_root is not None:
            self._group, self._v2 = _make_group(cgroup_root, f"dsjob-{os.getpid()}-{self.tag}")
        if self._group is None:
            _become_subreaper()
        self.kind = (
            "process tree"
            if self._group is None
            else "cgroup v2"
            if self._v2
            else "cgroup v1 freezer"
        )

    def command(self, argv: list[str], go_fd: int | None) -> list[str]:
        """The command line to start: ``argv`` itself, or the shim that waits on ``go_fd``."""
        if self._group is None or go_fd is None:
            return argv
        return [argv[0], "-c", _SHIM, str(go_fd), *argv[1:]]

    @property
    def uses_cgroup(self) -> bool:
        """True when the script runs in a cgroup of its own."""
        return self._group is not None

    def adopt(self, pid: int) -> None:
        """Put the just-started ``pid`` into the cgroup (falls back to the process tree)."""
        if self._group is None:
            return
        try:
            (self._group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            LOGGER.warning(
                "cannot move the script into its cgroup; tracking its process tree instead",
                extra={"cgroup": str(self._group), "error": str(exc)},
            )
            self._remove_group()
            _become_subreaper()
            self.kind = "process tree"

    def kill_all(self, leader: int) -> int:
        """SIGKILL every process of the script that is still alive; return how many.

        Args:
            leader: the script's own pid, left for ``Popen.wait()`` to reap.
        """
        if self._group is not None:
            killed = _kill_group(self._group, v2=self._v2)
            self._remove_group()
            return killed
        return _kill_tree(self.tag, leader)

    def _remove_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()


def _make_group(root: Path, name: str) -> tuple[Path | None, bool]:
    """Create a cgroup below this process's own one; (None, False) when none is writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, False
    where = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        where[controllers] = path
    candidates = []
    if (root / "cgroup.controllers").exists() and "" in where:  # unified (v2) mount
        candidates.append((root / where[""].lstrip("/") / name, True))
    for controllers, path in where.items():
        if "freezer" in controllers.split(","):
            candidates.append((root / "freezer" / path.lstrip("/") / name, False))
    for group, v2 in candidates:
        try:
            group.mkdir()
        except OSError:
            continue
        return group, v2
    return None, False


def _become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        LOGGER.warning("cannot become a child subreaper; escaped processes may survive")


def _pids(group: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    return []


def _kill_group(group: Path, *, v2: bool) -> int:
    pids = _pids(group)
    if v2 and (group / "cgroup.kill").exists():
        # cgroup.kill (Linux 5.14+) kills every member at once, forks included.
        (group / "cgroup.kill").write_text("1")
    else:
        # Frozen tasks cannot fork, so the list read while frozen is complete.
        state = group / ("cgroup.freeze" if v2 else "freezer.state")
        state.write_text("1" if v2 else "FROZEN")
        pids = _pids(group)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        state.write_text("0" if v2 else "THAWED")
    deadline = time.monotonic() + _SETTLE_S
    while _pids(group) and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(pids)


def _proc_table() -> dict[int, tuple[int, bytes]]:
    """Map pid -> (parent pid, environ) for every process this user can see."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields follow the last ')'.
        fields = stat.rsplit(b")", 1)[1].split()
        if fields[0] == b"Z":
            continue
        table[int(entry.name)] = (int(fields[1]), environ)
    return table


def _tree_members(tag: str) -> set[int]:
    """Processes carrying the tag, and their descendants (a child may have cleared its env).

    Only the tag identifies the script's processes: a pid alone may have been reused.
    """
    table = _proc_table()
    marker = f"{TAG_ENV}={tag}".encode()
    found = {pid for pid, (_, env) in table.items() if marker in env.split(b"\0")}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(more)
        found |= more
    found.discard(os.getpid())
    return found


def _kill_tree(tag: str, leader: int) -> int:
    # Stop first, until no new member shows up, so nothing forks while we kill.
    stopped: set[int] = set()
    while members := _tree_members(tag) - stopped:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= members
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Orphans were reparented to us (subreaper): reap them, leaving no zombie.
    for pid in stopped - {leader}:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return len(stopped)
