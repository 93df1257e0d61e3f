"""The bench's memory sampling: a fork of the job that has not exec'd yet counts by its own pages, not by the
job's pages it shares (which summed RSS would count twice), and is an ordinary process again once it execs."""

from __future__ import annotations

import os

from bench.__main__ import _rss, _tree, _unexeced_fork, _uss
from tests.support.faults import wait_for

MIB = 1 << 20


def test_a_fork_before_its_exec_counts_by_its_own_pages() -> None:
    held = bytearray(64 * MIB)
    for at in range(0, len(held), 4096):
        held[at] = 1  # resident in this process, so in its fork's RSS too
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits for the word, then execs a small program
        try:
            os.close(go_w)
            os.read(go_r, 1)
            os.execv("/bin/sleep", ["sleep", "5"])
        finally:
            os._exit(127)
    os.close(go_r)
    try:
        tree = _tree(os.getpid())
        assert tree[pid] == os.getpid()
        assert _unexeced_fork(pid, os.getpid())
        assert _rss(pid) > 60 * MIB  # what summed RSS used to add for it
        assert _uss(pid) < 16 * MIB  # what it holds of its own
        assert not _unexeced_fork(os.getpid(), tree[os.getpid()])  # the root of the tree is not a fork

        os.write(go_w, b"x")
        wait_for(lambda: os.readlink(f"/proc/{pid}/exe").endswith("sleep"), 10, "the child's exec")
        assert not _unexeced_fork(pid, os.getpid())
        assert _rss(pid) < 16 * MIB
    finally:
        os.close(go_w)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    del held
