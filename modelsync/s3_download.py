"""The S3 side of the pipelines (S3 -> OCI, S3 -> S3): the objects are read by this process, with streamed
GETs of boto3, into a directory while a LayerPusher (layer_push.py) or the S3 -> S3 relay takes them, and no more
is started than the cap on in-flight bytes allows.

Contract: S3Download(loc, kind, files, dest, cap, origins) creates dest; run(consumer, wanted) (the consumer's
download thread) returns once every wanted file has landed whole at its relative path under dest (moved there
from the partial directory beside it, with the object's LastModified as its time, as `aws s3 cp` leaves it) or
was taken already; pace(consumer) (its main thread) records the peak, the most the job directory held.

Why not `aws s3 cp` here (fetch-then-publish still uses it): through an 800 Mbit/s link aws spent 12.4 CPU-s
per GiB downloaded (its threads read the slow sockets in small pieces), while a boto3 GET read in 1 MiB pieces
took 0.9 CPU-s per GiB at the same 91 MiB/s (bench/PIPELINE-STUDY.md). On 2 cores that CPU was
what kept the shaped S3 -> OCI sync at 1.43 x the slower of download and push.

How: the files go in the consumer's order. A file of PART bytes or less is one GET; a larger one is fetched in
PART-sized ranges, REQUESTS of them at a time across all files, each written where it belongs in the partial
file (os.pwrite). Every GET names the listed ETag (If-Match), so a file is never made of two versions of an
object, and an object changed since the listing fails the sync in one line. A range cut mid-way is asked again
from the byte it reached, up to retry.RANGES tries with growing waits: a flapping link or a store restarting is
survived, one cutting every connection fails the sync in bounded time.

Pacing: a file is started only when what the job directory holds, plus what the files already started still have
to write, plus the file itself fits the cap (--max-in-flight-bytes, default in_flight_cap: two of the largest
layer plus WINDOW). Nothing is ever paused mid-object (a store may close a connection left idle). When nothing
is being downloaded and nothing would free room (consumer.stuck(): the next layer lacks a file and every hashed
layer is pushed), the next file starts anyway, so a layer larger than the cap still goes through (alone).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from .clients import aws
from .errors import TransferError
from .files import disk_bytes, human, is_no_space
from .layer_push import PACE_SECONDS, Cancelled
from .locations import Origin, S3Location
from .retry import RANGES, Transient

log = logging.getLogger("modelsync.s3_download")

REQUESTS = 4                              # GETs at a time (ranges of big files, or small files)
PART = 64 << 20                           # a file larger than this is fetched in ranges of this size
STUCK_AFTER = 0.25                        # seconds after a file landed before consumer.stuck() is believed
CHUNK = 1 << 20                           # what one read of a response asks for
WINDOW = 64 << 20                         # the room the default cap keeps beside two layers
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "500", "502", "503", "504"}


class Consumer(Protocol):
    """What the download asks of the one it feeds: layer_push.LayerPusher, or s3_s3_pipeline's relay."""

    taken: set[str]              # files consumed already (not fetched again)
    stopping: threading.Event

    def check(self) -> None:
        """Raise once the transfer is stopping."""

    def stuck(self) -> bool:
        """Nothing would free room: the next file must start even past the cap."""


def in_flight_cap(largest_layer: int, max_in_flight: int | None = None) -> int:
    """The cap on in-flight bytes: the one given, else room for one layer pushed while the next lands."""
    return max_in_flight or 2 * largest_layer + WINDOW


@dataclass
class _File:
    """One object on its way: the partial file its ranges are written into, the ranges not yet done."""
    rel: str
    key: str
    size: int
    partial: Path
    fd: int
    pending: int
    written: int = 0
    broken: bool = False                  # a range failed or was dropped
    lock: threading.Lock = field(default_factory=threading.Lock)


class S3Download:
    """The paced download of one sync: the files started and not landed (their room reserved), the peak."""

    def __init__(self, loc: S3Location, kind: str, files: dict[str, int], dest: Path, cap: int,
                 origins: Mapping[str, Origin] | None = None):
        self.loc, self.kind, self.files, self.dest, self.cap = loc, kind, files, dest, cap
        self.origins = dict(origins or {})
        self.source = f"the download from {loc.url}"  # for errors
        self.dest.mkdir()
        self.partials = dest.with_name(dest.name + ".partial")  # beside dest: no name of the model can clash
        self.partials.mkdir()
        self.peak = 0
        self.prefix = "" if kind == "object" else (loc.key.rstrip("/") + "/" if loc.key.strip("/") else "")
        self._lock = threading.Lock()
        self._open: dict[str, _File] = {}   # started, not landed
        self._count = 0
        self._last_landed = 0.0
        self._work: queue.Queue[tuple[_File, int, int] | None] = queue.Queue()
        self._failed: list[BaseException] = []  # the GET threads' errors, the first raised by run()

    # ---- the download thread ------------------------------------------------------------------------------------

    def run(self, consumer: Consumer, wanted: list[str]) -> None:
        """Every wanted file not taken already, in order, each started once there is room for it; returns when all
        have landed. The GET threads are daemons: a stalled read cannot hold up the job's exit."""
        client = aws.client(self.loc)
        workers = [threading.Thread(target=self._worker, args=(client, consumer), name="s3-get", daemon=True)
                   for _ in range(REQUESTS)]
        for worker in workers:
            worker.start()
        try:
            for rel in wanted:
                if rel in consumer.taken or self._landed(rel):
                    continue
                if not self._room_for(rel, consumer):
                    log.debug("%s would pass the cap of %s in flight: the download waits for the push", rel,
                              human(self.cap))
                    while not self._room_for(rel, consumer):
                        time.sleep(PACE_SECONDS / 2)
                for piece in self._start(rel):
                    self._work.put(piece)
            while True:
                self._check(consumer)
                with self._lock:
                    if not self._open:
                        break
                time.sleep(PACE_SECONDS / 2)
        finally:
            for _ in workers:
                self._work.put(None)  # after what is queued: skipped once the sync fails or stops

    def _check(self, consumer: Consumer) -> None:
        consumer.check()
        if self._failed:
            raise self._failed[0]

    def _landed(self, rel: str) -> bool:
        try:
            return (self.dest / rel).stat().st_size == self.files[rel]
        except FileNotFoundError:
            return False

    def _room_for(self, rel: str, consumer: Consumer) -> bool:
        """The file fits beside what is on disk and what the files started still have to write, or nothing is
        under way and nothing would free room."""
        self._check(consumer)
        with self._lock:
            busy = bool(self._open)
            owed = sum(f.size - f.written for f in self._open.values())
        used = disk_bytes(self.dest.parent)
        if used + owed + self.files[rel] <= self.cap:
            return True
        # stuck() is believed only once the consumer has had time to see the last file landed (it looks every
        # PACE_SECONDS; STUCK_AFTER leaves room for a loaded machine): before that, its `waiting` may be about a
        # file that has landed unseen, and starting one more would pass the cap
        return not busy and time.monotonic() - self._last_landed > STUCK_AFTER and consumer.stuck()

    def _start(self, rel: str) -> list[tuple[_File, int, int]]:
        """The file's partial file and its ranges (one for a file of PART bytes or less, none for an empty one)."""
        size = self.files[rel]
        key = self.loc.key if self.kind == "object" else self.prefix + rel
        with self._lock:
            self._count += 1
            partial = self.partials / str(self._count)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        ranges = [(start, min(size, start + PART)) for start in range(0, size, PART)]
        f = _File(rel, key, size, partial, fd, len(ranges))
        with self._lock:
            self._open[rel] = f
        if not ranges:
            self._land(f)
        return [(f, start, end) for start, end in ranges]

    # ---- the GET threads ---------------------------------------------------------------------------------------

    def _worker(self, client: Any, consumer: Consumer) -> None:
        """Ranges off the queue until its end mark; once the sync has failed or stops, each is only dropped."""
        while (piece := self._work.get()) is not None:
            f, start, end = piece
            done = False
            try:
                if not self._failed and not consumer.stopping.is_set():
                    self._get(client, f, start, end, consumer)
                    done = True
            except Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 -- raised by run(), in the download thread
                self._failed.append(exc)
            self._range_done(f, done, consumer)

    def _range_done(self, f: _File, done: bool, consumer: Consumer) -> None:
        """The last range of a file lands it, whole; a file with a range not done is dropped."""
        with f.lock:
            f.pending -= 1
            f.broken = f.broken or not done
            if f.pending:
                return
        try:
            if f.broken or self._failed or consumer.stopping.is_set():
                self._drop(f)
            else:
                self._land(f)
        except BaseException as exc:  # noqa: BLE001
            self._failed.append(exc)

    def _get(self, client: Any, f: _File, start: int, end: int, consumer: Consumer) -> None:
        """One range of f into its place in the partial file, asked again from where a cut left it."""
        at = [start]
        where = f"s3://{self.loc.bucket}/{f.key}"

        def once() -> None:
            consumer.check()
            args: dict[str, Any] = {"Bucket": self.loc.bucket, "Key": f.key}
            if start or end < f.size or at[0] > start:
                args["Range"] = f"bytes={at[0]}-{end - 1}"
            origin = self.origins.get(f.rel)
            if origin is not None:
                args["IfMatch"] = f'"{origin.etag}"'
            try:
                body = client.get_object(**args)["Body"]
                try:
                    while at[0] < end:
                        chunk = body.read(min(CHUNK, end - at[0]))
                        if not chunk:
                            raise Transient(f"{where}: the response ended at byte {at[0]} of {end}")
                        self._write(f, chunk, at[0])
                        at[0] += len(chunk)
                        consumer.check()
                finally:
                    body.close()
            except ClientError as exc:
                raise self._refused(exc, f, where) from None
            except (BotoCoreError, Urllib3Error, ConnectionError, TimeoutError) as exc:
                raise Transient(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

        RANGES.call(f"download of {where}", once, wait=consumer.stopping.wait, logger=log,
                    give_up=lambda exc, tries: TransferError(f"download of {where} failed after {tries} tries: "
                                                             f"{exc}"))

    def _write(self, f: _File, chunk: bytes, at: int) -> None:
        try:
            os.pwrite(f.fd, chunk, at)
        except OSError as exc:
            if is_no_space(exc):
                raise TransferError(f"{self.source}: the storage path is full ({exc.strerror}); give "
                                    f"MODEL_SYNC_STORAGE_PATH (--storage-path) a larger volume") from None
            raise
        with f.lock:
            f.written += len(chunk)

    def _refused(self, exc: ClientError, f: _File, where: str) -> Exception:
        """A store's answer: busy or failing (tried again), or a failure of the sync in one line."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
        if code in _TRANSIENT_CODES:
            return Transient(f"{where}: {code}")
        if code in ("PreconditionFailed", "412", "InvalidRange", "416", "NoSuchKey", "404"):
            return TransferError(f"{where} changed during the sync ({code}: not the object listed, ETag "
                                 f"{self.origins[f.rel].etag if f.rel in self.origins else 'none'}); run the job "
                                 f"again once the source is complete")
        return aws.failure(exc, self.loc, "download of")

    def _land(self, f: _File) -> None:
        """The whole file: its time set to the object's LastModified, moved to its place under dest."""
        os.close(f.fd)
        origin = self.origins.get(f.rel)
        if origin is not None and origin.modified is not None:
            os.utime(f.partial, (int(origin.modified), int(origin.modified)))
        final = self.dest / f.rel
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f.partial, final)
        log.debug("landed %s (%s)", f.rel, human(f.size))
        with self._lock:
            self._open.pop(f.rel, None)
            self._last_landed = time.monotonic()

    def _drop(self, f: _File) -> None:
        """After a failure or a stop: the partial file closed and removed (never used: only room taken)."""
        os.close(f.fd)
        f.partial.unlink(missing_ok=True)
        with self._lock:
            self._open.pop(f.rel, None)

    # ---- the consumer's main thread ----------------------------------------------------------------------------

    def pace(self, consumer: Consumer) -> None:
        """The peak: the most the job directory (downloads, partial files, and what is beside them) held."""
        self.peak = max(self.peak, disk_bytes(self.dest.parent))
