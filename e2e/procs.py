"""Processes the local stack starts: start one in its own process group, is a pid still ours, stop a whole group
for sure, the tail of its log.

Each server runs in its own process group (start_new_session), so stopping the group also stops whatever the
server forked. Linux only: it reads /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(argv: list[str], env: dict[str, str] | None, cwd: Path, log: Path) -> subprocess.Popen:
    """Start argv in its own session (so its whole process group can be stopped), env added to ours, stdin closed,
    stdout and stderr appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def alive(pid: int, match: str) -> bool:
    """Alive and still ours: the pid may have been reused by an unrelated process after a reboot."""
    return match in _cmdline(pid) and not _is_zombie(pid)


def stop_group(pgid: int, proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the group; SIGKILL it if it is still there after timeout; return once it is gone."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_exists(pgid, proc):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_exists(pgid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        proc.poll()  # reap our own child, else its zombie keeps the group "alive"
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a group whose only members are zombies of a process that is not ours: nothing left to stop
    return any(_pgid_of(p) == pgid and not _is_zombie(p) for p in _pids())


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        # the command name (field 2) may hold spaces: split after its closing parenthesis
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pgid_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def _is_zombie(pid: int) -> bool:
    fields = _stat(pid)
    return not fields or fields[0] == "Z"
