"""s3_download's pacing room: what aws may write before the next look is kept below the cap, growing with what it
wrote in the last interval (late looks on a loaded machine) but never past WINDOW (one late look must not pause the
download for good while two layers would fit)."""

from __future__ import annotations

from modelsync.s3_download import PACE_SLACK, WINDOW, S3Download

MIB = 1 << 20


def _download() -> S3Download:
    d = S3Download.__new__(S3Download)  # only the pacing state: no aws, no directory
    d._last = (0.0, 0)
    return d


def test_the_room_follows_the_last_interval_between_its_bounds():
    d = _download()
    assert d._slack(1.0, 10 * MIB) == PACE_SLACK                # the first look knows no rate yet
    assert d._slack(1.01, 11 * MIB) == PACE_SLACK               # 1 MiB in 10 ms: the fixed room
    assert d._slack(1.05, 31 * MIB) == 40 * MIB                 # 20 MiB since the last look: twice that
    assert d._slack(1.50, 331 * MIB) == WINDOW                  # a late look after 300 MiB: no more than WINDOW
    assert d._slack(1.51, 100 * MIB) == PACE_SLACK              # a push freed room: the fixed room again
