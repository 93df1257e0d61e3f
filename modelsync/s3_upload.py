"""The S3 side of the pipelines to an S3 destination (oci_s3_pipeline.py, s3_s3_pipeline.py): files handed over as
they land are uploaded in batches, one or two at a time, from a thread of their own, while the next files
download.

Contract: S3Uploader(loc, job, job_dir, cap, at_once=1).start(); the producer calls room(size) before it writes a
file of size bytes (waits while the files not yet uploaded and that one would pass the cap, unless none is
waiting: a file larger than the cap goes alone) and add(rel, path) once the file is whole (it is moved into the
next batch); drain() waits for the files added so far, finish() for the last batch, both raising the first upload
error; stop() (any thread) ends the aws children and the thread. room() and add() raise the upload's error, so a
refused upload stops the download within a file.

Each batch is one `aws s3 cp --recursive` of a directory holding the files at their relative paths
(destinations/s3.upload_command, the very call publish_s3 makes: the same keys, bytes, content types, multipart
sizes and modelsync-job metadata as fetch-then-publish). A batch is whatever landed while the ones before went up:
one file of a large model at a time, many small files in one aws process. at_once batches go up at once: one
aws process leaves the link idle while it lists, starts and completes its multipart uploads and sends its last
parts alone, so OCI -> S3 gives 2 (through an 800 Mbit/s link, 8 x 128 MiB: 15.6 s against 17.5 s with 1);
S3 -> S3 gives 1 (2 took it from 19.9 to 22.6 s: two uploads starve its own S3 download of the link's other
direction, and hold the room it needs under the cap). The batches going up share UPLOAD_REQUESTS: two aws
processes of 6 requests each put OCI -> S3's processes at 319-335 MiB of summed RSS, two of 3 at 295-299 MiB
(target 300), in the same time. An aws CLI costs ~0.5 CPU-s before its first request, so
the next batch's aws is started ahead and waits, imported, for "go" on its stdin (awscli_plugin: GO_ENV) before
it lists its directory; at most PROCESSES aws processes live at once, the one waiting included. The aws started
for a batch that never comes is told nothing and ends.

A file is renamed into the batch (no hard link: the storage path's use is what its files' blocks say) and deleted
once its batch is up; source_of(rel) says where the bytes of a file not yet up are. A file added again under the
same path before its batch went up replaces the earlier one (a later layer's version of it); a batch holding a
path that a batch going up holds waits for it, so the last version added is the one the prefix ends with.
Nothing is half-written: aws completes a multipart upload only when all its parts are up; a stopped batch leaves
no object of the file it was uploading.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import tools
from .awscli_plugin.modelsync_no_expect import GO, GO_ENV
from .destinations.s3 import upload_command
from .errors import TransferError
from .files import human
from .locations import S3Location

log = logging.getLogger("modelsync.s3_upload")

WAIT_SECONDS = 0.01
# The upload's parallel requests (aws's default 10), shared by the batches going up at once: each holds an 8 MiB
# part, and a download runs beside it; with 10 the S3 -> S3 pipeline's processes peaked at 306 MiB (target 300)
# through the shaped link.
UPLOAD_REQUESTS = 6
# One aws process uploads 128 MiB through an 800 Mbit/s link at 1.53 s a file when it is given four, 1.7-1.9 s
# when given one (listing, multipart start and end, its last parts alone on the link): with two batches going up
# (at_once=2), one's start and end overlap the other's middle.
PROCESSES = 2  # aws processes alive at once: going up, or started ahead and waiting


@dataclass
class _Going:
    """A batch going up: its aws, its directory, its files (rel -> (path, size)), when it started."""
    aws: tools.Child
    batch: Path
    files: dict[str, tuple[Path, int]]
    start: float


class S3Uploader:
    """One sync's uploads: the batch being filled, the ones going up, the bytes not yet uploaded."""

    def __init__(self, loc: S3Location, job: str, job_dir: Path, cap: int, group: tools.Group | None = None,
                 at_once: int = 1):
        self.loc, self.job, self.cap, self.at_once = loc, job, cap, min(at_once, PROCESSES)
        self.job_dir = job_dir
        self.group = group or tools.Group()
        self.lock = threading.Condition()
        self.pending: dict[str, tuple[Path, int]] = {}  # the batch being filled: rel -> (its link in the batch, size)
        self.uploading: dict[str, tuple[Path, int]] = {}  # the batches going up: rel -> (its path, size)
        self.uploaded: set[str] = set()                 # every rel whose latest version is up
        self.in_flight = 0                              # bytes added and not yet uploaded
        self.peak = 0
        self.batches = 0
        self.errors: list[BaseException] = []
        self.closed = False
        self.stopping = threading.Event()
        self._serial = 0
        self._batch = self._new_batch()
        self._thread = threading.Thread(target=self._run, name="pipeline-upload", daemon=True)

    def start(self) -> S3Uploader:
        self._thread.start()
        return self

    # ---- the producer's side ----------------------------------------------------------------------------------

    def room(self, size: int) -> None:
        """Until a file of size bytes fits beside those not yet uploaded (or none is left to upload)."""
        with self.lock:
            if self.in_flight and self.in_flight + size > self.cap:
                log.debug("in flight %s + %s > %s: the download waits for the upload", human(self.in_flight),
                          human(size), human(self.cap))
            while self.in_flight and self.in_flight + size > self.cap:
                self._check()
                self.lock.wait(WAIT_SECONDS * 10)
            self._check()

    def add(self, rel: str, path: Path) -> None:
        """rel (whole at path) moved into the next batch."""
        size = path.stat().st_size
        with self.lock:
            self._check()
            target = self._batch / rel
            earlier = self.pending.pop(rel, None)
            if earlier is not None:  # a later version before the batch went up: it replaces the earlier
                self._release(earlier[0], earlier[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            self.pending[rel] = (target, size)
            self.uploaded.discard(rel)
            self.in_flight += size
            self.peak = max(self.peak, self.in_flight)
            self.lock.notify_all()

    def source_of(self, rel: str) -> Path | None:
        """Where rel's bytes are while they are not up yet (hold self.lock: the upload thread deletes them once up
        only under it); None once up."""
        found = self.pending.get(rel) or self.uploading.get(rel)
        return found[0] if found is not None else None

    def idle(self) -> bool:
        """Nothing added is waiting or going up (a paced download must go on: nothing would free room)."""
        with self.lock:
            return not self.pending and not self.uploading

    def drain(self) -> None:
        """Until every file added so far is up."""
        with self.lock:
            while self.pending or self.uploading:
                self._check()
                self.lock.wait(WAIT_SECONDS * 10)
            self._check()

    def finish(self) -> None:
        """Every file added is up; the first upload error otherwise."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        while self._thread.is_alive():
            self._thread.join(WAIT_SECONDS * 10)  # the main thread stays responsive to SIGTERM
        if self.errors:
            raise self.errors[0]
        log.debug("uploaded in %d batch(es); at most %s in flight", self.batches, human(self.peak))

    def stop(self) -> None:
        self.stopping.set()
        self.group.stop()
        with self.lock:
            self.lock.notify_all()
        self._thread.join(30)

    def _check(self) -> None:
        if self.errors:
            raise self.errors[0]
        if self.stopping.is_set():
            raise TransferError("the upload was stopped")

    # ---- the upload thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        """Takes each batch once it may go up (fewer than at_once going up, none of its paths among theirs), tells
        its aws to go, reaps the ones that end. At most PROCESSES aws processes live: those going up, plus the one
        started ahead for the batch being filled while there is room for it."""
        ready: tools.Child | None = None  # the aws of self._batch, started and waiting for go
        going: list[_Going] = []
        try:
            while True:
                for done in [g for g in going if g.aws.poll() is not None]:
                    going.remove(done)
                    self._ended(done)
                with self.lock:
                    if self.stopping.is_set():
                        return
                    take = (bool(self.pending) and len(going) < self.at_once
                            and self.uploading.keys().isdisjoint(self.pending))
                    if take:
                        batch, files = self._batch, self.pending
                        self._batch, self.pending = self._new_batch(), {}
                        self.uploading.update(files)
                    elif self.closed and not self.pending and not going:
                        return
                if take:
                    aws, ready = ready or self._start_aws(batch), None
                    going.append(_Going(aws, batch, files, time.monotonic()))
                    self._go(aws)
                if ready is None and len(going) < PROCESSES:
                    ready = self._start_aws(self._batch)  # imports while the others go up
                if not take:
                    with self.lock:
                        self.lock.wait(WAIT_SECONDS)
        except BaseException as exc:  # noqa: BLE001 -- raised to the producer by room(), add() and finish()
            with self.lock:
                if not self.stopping.is_set():
                    self.errors.append(exc)
                self.lock.notify_all()
        finally:
            for left in ([ready] if ready is not None else []) + [g.aws for g in going]:
                self._dismiss(left)

    def _start_aws(self, batch: Path) -> tools.Child:
        args, env = upload_command(batch, self.loc, self.job, UPLOAD_REQUESTS // self.at_once)
        return self.group.spawn("aws", args, env={**env, GO_ENV: "1"}, stdin=True)

    @staticmethod
    def _go(aws: tools.Child) -> None:
        """The batch's aws lists its directory now and uploads it (one that ended already says why when reaped)."""
        assert aws.stdin is not None
        try:
            aws.stdin.write(GO)
            aws.stdin.close()
        except BrokenPipeError:
            pass

    def _ended(self, done: _Going) -> None:
        """A batch's aws has ended: ToolError (its stderr) unless it succeeded; else its files are up."""
        try:
            done.aws.wait()
        finally:
            self.group.finish(done.aws)
        self.batches += 1
        log.debug("uploaded %d file(s), %s, in %.1fs", len(done.files), human(sum(s for _, s in done.files.values())),
                  time.monotonic() - done.start)
        with self.lock:
            for rel, (link, size) in done.files.items():
                self._release(link, size)
                del self.uploading[rel]
                if rel not in self.pending:
                    self.uploaded.add(rel)
            self.lock.notify_all()
        shutil.rmtree(done.batch, ignore_errors=True)

    def _dismiss(self, aws: tools.Child) -> None:
        """An aws whose batch never came, or that must stop: end of file on its stdin ends one waiting for go
        (having sent nothing), SIGTERM one going up."""
        assert aws.stdin is not None
        try:
            aws.stdin.close()
        except OSError:
            pass
        self.group.finish(aws)

    def _release(self, path: Path, size: int) -> None:
        path.unlink(missing_ok=True)
        self.in_flight -= size

    def _new_batch(self) -> Path:
        self._serial += 1
        path = self.job_dir / f"upload-{self._serial}"
        path.mkdir(parents=True)
        return path
