"""The S3 side of the S3 -> OCI pipeline: one `aws s3 cp` downloads the files into a directory while a
LayerPusher (layer_push.py) hashes, pushes and deletes them, paced so the directory stays under a cap.

Contract: S3Download(loc, kind, files, dest, cap) creates dest; run(pusher, wanted) (the pusher's download thread;
the pusher: a LayerPusher, or any Consumer, as s3_s3_pipeline's)
returns once every wanted file has landed at its relative path under dest or was already taken into a layer; it
runs aws again after a transient failure for the files still missing, their partial files removed first.
pace(pusher) (the pusher's main thread, every layer_push.PACE_SECONDS) pauses and resumes aws; peak is the most
the job directory held.

Why (bench/PIPELINE-STUDY.md, 2 cores): an aws CLI process costs ~0.6 s of CPU to start, more than the download
of a 128 MiB file, so one process downloads many files (one per BATCH_FILES; a re-sync's filters). A file is
written once, by aws (its parallel ranged GETs); the pusher reads it from the page cache.

In-flight bytes (files on disk not yet pushed, partial downloads included) are kept under the cap
(--max-in-flight-bytes, default in_flight_cap: two of the largest layer plus WINDOW): while the job directory
holds that much, the aws process is paused (SIGSTOP) and resumed (SIGCONT) once a push has freed room. It is never
left paused when nothing would free room (LayerPusher.stuck: the next layer lacks a file and every hashed layer is
pushed), so a layer larger than the cap still goes through (alone).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from . import tools
from .awscli_plugin.modelsync_no_expect import CONCURRENCY_ENV
from .clients import aws
from .files import disk_bytes, human
from .locations import S3Location
from .oci_copy import PUSH_TIMEOUT

log = logging.getLogger("modelsync.s3_download")

AWS_REQUESTS = 6                          # parallel GETs of the pipeline's aws (its chunks are 8 MiB) ...
WINDOW = 64 << 20                         # ... which fit in this room beside two layers (the default cap)
BATCH_FILES = 500                         # --include filters per aws process (argv stays far below its limit)
PACE_SLACK = 16 << 20                     # what aws may write between two measures (1.6 GB/s)


class Consumer(Protocol):
    """What the download asks of the one it feeds: layer_push.LayerPusher, or s3_s3_pipeline's relay."""

    taken: set[str]              # files consumed already (not fetched again after a failure)
    group: tools.Group           # aws runs in it (stopped with the rest)
    stopping: threading.Event

    def check(self) -> None:
        """Raise once the transfer is stopping."""

    def stuck(self) -> bool:
        """Nothing would free room: a paused download must go on."""


def in_flight_cap(largest_layer: int, max_in_flight: int | None = None) -> int:
    """The cap on in-flight bytes: the one given, else room for one layer pushed while the next lands."""
    return max_in_flight or 2 * largest_layer + WINDOW


class S3Download:
    """The paced download of one sync: the aws process now running (to pause), the peak measured."""

    def __init__(self, loc: S3Location, kind: str, files: dict[str, int], dest: Path, cap: int):
        self.loc, self.kind, self.files, self.dest, self.cap = loc, kind, files, dest, cap
        self.source = f"the download from {loc.url}"  # for errors
        self.dest.mkdir()
        self.peak = 0
        self._last = (0.0, 0)  # the time and bytes of pace's last look
        self.aws: tools.Child | None = None
        self.aws_env = {**aws.cli_env(loc), CONCURRENCY_ENV: str(AWS_REQUESTS)}
        self.aws_flags = aws.cli_flags(loc)
        self.prefix = "" if kind == "object" else (loc.key.rstrip("/") + "/" if loc.key.strip("/") else "")

    def run(self, pusher: Consumer, wanted: list[str]) -> None:
        """aws runs until every wanted file has landed (or been taken); after a transient failure the next run
        asks only for the files still missing, its partial files removed first."""
        everything = self.kind == "prefix" and set(wanted) == set(self.files)
        first = [True]

        def once() -> None:
            pusher.check()
            missing = [rel for rel in wanted if rel not in pusher.taken and not (self.dest / rel).exists()]
            if not first[0]:
                self._remove_partials(set(wanted))
            if self.kind == "object":
                batches = [["s3", "cp", self.loc.url, str(self.dest / wanted[0])]] if missing else []
            elif everything and first[0]:  # no filters: aws matches none of them against every key
                batches = [["s3", "cp", f"s3://{self.loc.bucket}/{self.prefix}", str(self.dest), "--recursive"]]
            else:
                batches = [["s3", "cp", f"s3://{self.loc.bucket}/{self.prefix}", str(self.dest), "--recursive",
                            "--exclude", "*",
                            *[arg for rel in missing[at:at + BATCH_FILES] for arg in ("--include", _glob_literal(rel))]]
                           for at in range(0, len(missing), BATCH_FILES)]
            first[0] = False
            for args in batches:
                pusher.check()
                child = pusher.group.spawn("aws", [*args, *self.aws_flags], env=self.aws_env)
                self.aws = child
                try:
                    child.wait(PUSH_TIMEOUT)
                finally:
                    self.aws = None
                    pusher.group.finish(child)

        aws.retry_download(f"download from {self.loc.url}", once, pusher.stopping.wait)

    def pace(self, pusher: Consumer) -> None:
        """Pause aws while the job directory holds the cap, unless nothing would free room (pusher.stuck()). So a
        layer larger than the cap still goes through (alone). With the default cap a layer lands while the one
        before is pushed: aws's parallel GETs reach at most AWS_REQUESTS chunks (48 MiB) past the file, within the
        WINDOW kept beside two layers. The peak is what the storage path held for the pipeline."""
        used = disk_bytes(self.dest.parent)  # the downloads, and the base image and the config beside them
        self.peak = max(self.peak, used)
        now = time.monotonic()
        slack = self._slack(now, used)
        child = self.aws
        if child is None:
            return
        if used >= self.cap - slack and not pusher.stuck() and not pusher.stopping.is_set():
            if not child.paused:
                log.debug("in flight %s >= %s: the download waits for the push", human(used), human(self.cap))
            child.pause()
        else:
            child.resume()

    def _slack(self, now: float, used: int) -> int:
        """Room kept below the cap for what aws writes before the next look: PACE_SLACK, or twice what it wrote
        during the last interval when that is more, at most WINDOW. On a loaded machine the looks come late
        (measured: 164 MiB under a 150 MiB cap with two test runs beside the job, the fixed slack alone), and the
        room grows with the gap instead of the cap being passed; bounded, so one late look (a pause of this
        process) cannot make the room swallow the second layer the cap is there to allow."""
        last_time, last_used = self._last
        self._last = (now, used)
        return min(WINDOW, max(PACE_SLACK, 2 * (used - last_used))) if last_time else PACE_SLACK

    def _remove_partials(self, wanted: set[str]) -> None:
        """Files a failed aws run left half-written (its temporary names): not ours to push, only room taken."""
        for dirpath, _, names in os.walk(self.dest):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.relpath(path, self.dest).replace(os.sep, "/") not in wanted:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass


def _glob_literal(path: str) -> str:
    """An aws CLI --include pattern (fnmatch) matching exactly path: *, ? and [ each as a one-character class."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)
