"""S3 -> S3 as a pipeline: object i+1 downloads while object i uploads, so a sync costs about the slower of the two,
and the storage path holds only what is in flight.

    S3 listing (sources/s3.list_s3) -> the objects read by this process, paced (s3_download.S3Download) -> as
    each lands whole: checked (the job's pickle scan), hashed (the published files' sha256, as fetch_s3's inventory)
    and handed to an S3Uploader (s3_upload.py), which uploads it in the next batch and deletes it -> model.sig (when
    signing), every object verified, leftovers removed (destinations/s3.finish_s3)

The result is fetch-then-publish's: the same files in the same order (fetch_s3's inventory walks the directory),
each object written by the same `aws s3 cp --recursive` publish_s3 runs (same keys, bytes, content types and
modelsync-job metadata), the same verification and removal of what is not the model.

Pacing is the S3 -> OCI pipeline's (s3_download.py): a file starts downloading only when the job directory
(downloads, partial files and the batch being uploaded) and the file fit the cap (--max-in-flight-bytes, default
two of the largest file plus s3_download.WINDOW), unless nothing would free room. Used by job.PIPELINES for an S3
source to an S3 destination.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .destinations.s3 import S3Destination, finish_s3
from .errors import TransferError
from .files import human, require_free_space, sha256_file
from .layer_push import PACE_SECONDS, STOP_WAIT, Cancelled, guarded
from .locations import FileEntry, Published, S3Location
from .resume import Resume
from .s3_download import S3Download, in_flight_cap
from .s3_upload import S3Uploader
from .signing.model import SIGNATURE_NAME
from .sources.s3 import list_s3

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.s3_s3_pipeline")


def applies(source: object, destination: object) -> bool:
    return isinstance(source, S3Location) and isinstance(destination, S3Destination)


def storage_needed(destination: S3Destination, files: dict[str, int], max_in_flight: int | None) -> int:
    """The largest file: it is on disk whole before it goes up."""
    return max(files.values(), default=0)


def transfer(source: S3Location, destination: S3Destination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
             resume: Resume | None = None,
             scan_file: Callable[[str, Path], None] | None = None) -> Published:
    start = time.monotonic()
    kind, files, origins = list_s3(source)
    if sign_model is not None and files.pop(SIGNATURE_NAME, None) is not None:
        log.warning("the source's %s is left out: this job's signature replaces it", SIGNATURE_NAME)
    largest = max(files.values(), default=0)
    require_free_space(ws.work, largest, "the pipeline's largest file in flight")
    cap = in_flight_cap(largest, max_in_flight)
    loc = destination.location
    log.info("pipeline: %d file(s), %s, from %s to s3://%s/%s; at most %s in flight", len(files),
             human(sum(files.values())), source.url, loc.bucket, loc.key, human(cap),
             extra={"fields": {"files": len(files), "max_in_flight_bytes": cap}})
    job_dir = ws.work / "s3-s3"
    job_dir.mkdir(parents=True)
    relay = _Relay(files, S3Download(source, kind, files, job_dir / "download", cap, origins),
                   S3Uploader(loc, job, job_dir / "outbox", cap, at_once=1), scan_file)  # s3_upload.py: why 1
    hashes = relay.go()
    entries = tuple(FileEntry(rel, files[rel], hashes[rel]) for rel in sorted(files, key=_walk_order))
    signature = None
    if sign_model is not None:
        signature = ws.work / "signature" / SIGNATURE_NAME
        signature.parent.mkdir(parents=True, exist_ok=True)
        signature.write_bytes(sign_model(entries))
    published = finish_s3(loc, entries, job, destination.replace, signature)
    log.info("pipeline: %d file(s), %s, in %.1fs (%d upload batch(es); the storage path held at most %s)",
             len(entries), human(sum(files.values())), time.monotonic() - start, relay.uploader.batches,
             human(relay.download.peak))
    return published


def _walk_order(rel: str) -> list[tuple[int, str]]:
    """files.listing's order (os.walk, sorted): a directory's files before its subdirectories."""
    parts = rel.split("/")
    return [(1, part) for part in parts[:-1]] + [(0, parts[-1])]


class _Relay:
    """The download (its own thread, paced from the main thread), the hand-over of each landed file (its own
    thread: scanned, hashed, moved into the uploader's next batch) and the uploads (s3_upload.py). Any error, or
    SIGTERM in the main thread, stops all three."""

    def __init__(self, files: dict[str, int], download: S3Download, uploader: S3Uploader,
                 scan_file: Callable[[str, Path], None] | None):
        self.files, self.download, self.uploader, self.scan_file = files, download, uploader, scan_file
        self.taken: set[str] = set()     # files handed to the uploader (S3Download does not fetch them again)
        self.hashes: dict[str, str] = {}
        self.stopping = threading.Event()
        self.downloaded = threading.Event()
        self.waiting = False             # the hand-over's last look found no file landed whole
        self.errors: list[BaseException] = []

    def go(self) -> dict[str, str]:
        """Every file uploaded; their sha256."""
        threads = [threading.Thread(target=guarded(self, self._download), name="pipeline-download", daemon=True),
                   threading.Thread(target=guarded(self, self._hand_over), name="pipeline-hand-over", daemon=True)]
        self.uploader.start()
        try:
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                self.download.pace(self)
                if self.uploader.errors:
                    raise self.uploader.errors[0]
                time.sleep(PACE_SECONDS)  # the main thread stays responsive to SIGTERM (job.Interrupted)
            if self.errors:
                raise self.errors[0]
            self.uploader.finish()
        except BaseException:
            self.stop()
            for thread in threads:
                thread.join(STOP_WAIT)
            raise
        return self.hashes

    # ---- what S3Download asks of the one it feeds (as of layer_push.LayerPusher) ----------------------------------

    def check(self) -> None:
        if self.stopping.is_set():
            raise Cancelled()

    def stuck(self) -> bool:
        """Nothing would free room: the hand-over waits for a file to land and none is waiting to be uploaded or
        going up (a paused download must go on)."""
        return self.waiting and self.uploader.idle()

    # ---- the threads ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        self.uploader.stop()

    def _download(self) -> None:
        try:
            self.download.run(self, list(self.files))
        finally:
            self.downloaded.set()

    def _hand_over(self) -> None:
        """Each file once it has landed whole (S3Download moves it into place complete): scanned, hashed, moved
        into the next batch."""
        dest = self.download.dest
        while len(self.taken) < len(self.files):
            self.check()
            done = self.downloaded.is_set()  # read before the look: a file that lands just after is seen
            landed = [rel for rel in _regular_files(dest) if rel in self.files and rel not in self.taken
                      and self._whole(dest / rel, rel)]
            self.waiting = not landed
            for rel in landed:
                self.check()
                if self.scan_file is not None:  # raises to stop the transfer: nothing of this file goes up
                    self.scan_file(rel, dest / rel)
                self.hashes[rel] = sha256_file(dest / rel)
                self.uploader.add(rel, dest / rel)
                self.taken.add(rel)
            if not landed:
                if done:
                    missing = sorted(set(self.files) - self.taken)
                    raise TransferError(f"{self.download.source} is incomplete: {', '.join(missing[:5])} missing or "
                                        f"of the wrong size")
                time.sleep(PACE_SECONDS)


    def _whole(self, path: Path, rel: str) -> bool:
        try:
            return path.stat().st_size == self.files[rel]
        except FileNotFoundError:
            return False


def _regular_files(root: Path) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/") for name in names]
    return out

