"""Progress of a long step: a rich bar on a TTY; on anything else (kubectl logs) a plain log line at least every
10 s with bytes done, total, rate and ETA. Bytes are either pushed (advance) or polled from a callable (watch),
which is how transfers done by a subprocess (aws, oras, skopeo) are followed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .clients import events
from .files import human

log = logging.getLogger("modelsync.progress")
INTERVAL = 10.0


class Progress:
    def __init__(self, label: str, total: int, interval: float | None = None, tty: bool | None = None):
        self.label, self.total = label, total
        self.interval = INTERVAL if interval is None else interval  # read at call time: tests shorten it
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._lock = threading.Lock()
        self._bar = None
        if sys.stderr.isatty() if tty is None else tty:
            from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn, TransferSpeedColumn
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress("[bold]{task.description}", BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total or None)

    def update(self, done: int) -> None:
        with self._lock:
            self.done = max(0, done)
            events.progress(self.label, self.done, self.total, self.line)
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done)
                return
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                log.info("%s", self.line(now))

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = self.done / elapsed
        if not self.total:  # size not known in advance (e.g. a pull before its manifest is read)
            return f"{self.label}: {human(self.done)}, {human(rate)}/s"
        pct = f" ({100 * self.done / self.total:.0f}%)"
        eta = f", ETA {(self.total - self.done) / rate:.0f}s" if rate > 0 and self.total >= self.done else ""
        return f"{self.label}: {human(self.done)} / {human(self.total)}{pct}, {human(rate)}/s{eta}"

    def close(self) -> float:
        """Stop; log the summary line; return the elapsed seconds."""
        elapsed = time.monotonic() - self.started
        if self._bar is not None:
            self._bar.stop()
        log.info("%s: %s in %.1fs (%s/s)", self.label, human(self.done), elapsed,
                 human(self.done / max(elapsed, 1e-6)))
        return elapsed


@contextmanager
def watch(label: str, total: int, measure: Callable[[], int], every: float = 1.0,
          interval: float | None = None) -> Iterator[Progress]:
    """Poll measure() every `every` seconds while the body runs (e.g. bytes under a download directory)."""
    progress = Progress(label, total, interval=interval)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every):
            try:
                progress.update(measure())
            except OSError:
                pass

    thread = threading.Thread(target=poll, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        try:
            progress.update(measure())
        except OSError:
            pass
        progress.close()
