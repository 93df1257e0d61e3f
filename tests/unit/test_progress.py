"""Progress off a TTY (kubectl logs): plain lines with bytes done, total, rate and ETA, at most every interval."""

from __future__ import annotations

import logging
import time

from modelsync import progress
from modelsync.files import human


def test_line_has_done_total_percent_rate_and_eta():
    p = progress.Progress("upload", total=100 * 1024 * 1024, tty=False)
    p.started -= 10  # as if 10 s had passed
    p.update(25 * 1024 * 1024)
    line = p.line()
    assert line.startswith("upload: 25.0 MiB / 100.0 MiB (25%), 2.5 MiB/s")
    assert line.endswith("ETA 30s")


def test_plain_lines_are_rate_limited_to_the_interval(caplog):
    caplog.set_level(logging.INFO, logger="modelsync.progress")
    p = progress.Progress("download", total=1000, interval=0.2, tty=False)
    start = time.monotonic()
    for i in range(50):
        p.update(i * 10)
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    lines = [r.getMessage() for r in caplog.records]
    # at most one line per interval however slow the machine is, and far fewer than the 50 updates
    assert 1 <= len(lines) <= elapsed / 0.2 + 1 and len(lines) < 50
    assert all(m.startswith("download: ") for m in lines)


def test_watch_polls_the_measure_and_logs_a_summary(caplog):
    caplog.set_level(logging.INFO, logger="modelsync.progress")
    state = {"n": 0}
    with progress.watch("copy", total=300, measure=lambda: state["n"], every=0.01, interval=60):
        for _ in range(3):
            state["n"] += 100
            time.sleep(0.05)
    assert caplog.records[-1].getMessage().startswith("copy: 300 B in ")


def test_human_sizes():
    assert [human(n) for n in (0, 1023, 1024, 5 * 1024 ** 3)] == ["0 B", "1023 B", "1.0 KiB", "5.0 GiB"]


def test_oras_blob_lines_count_completed_blobs_once():
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import _PushedBytes
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    pushed = _PushedBytes({a: 100, b: 50}, OciLocation("127.0.0.1:1/x/y:1"))
    pushed.oras_line("Copying aaaaaaaaaaaa model.bin")
    assert pushed.total() == 0
    pushed.oras_line("Copied  aaaaaaaaaaaa model.bin")
    pushed.oras_line("Copied  aaaaaaaaaaaa model.bin")
    pushed.oras_line("Exists  bbbbbbbbbbbb config")
    assert pushed.total() == 150
