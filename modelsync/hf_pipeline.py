"""hf:// -> OCI as a pipeline: each file of the revision is downloaded from the Hub while the layers before it are
hashed and pushed, so a sync costs about the slower of the two, and the storage path holds only what is in flight.

    the Hub's listing of the revision (hf.snapshot: files, sizes, content ids, date) -> pipeline.push_through: the
    layers an earlier image or attempt has reused (resync.py, resume.py), the others downloaded file by file in layer
    order (HfDownload, below: hf.download_file, a GET of the Hub's resolve route moved into place whole) and pushed
    as they land (layer_push.py) -> config + manifest -> verified

The image is the one fetch-then-publish makes of the same revision: the same plan, each layer's source record
(hf.origins_of: the file in the repository and its LFS sha256 or git blob id) and `created` the revision's date.
A revision whose listing lacks a size (the Hub did not say) goes fetch-then-publish instead.

Pacing: the download is Python in this process, so instead of pausing a child (s3_download.py) it waits before each
file while the files on disk and that file would pass the cap (--max-in-flight-bytes, default two of the largest
layer plus s3_download.WINDOW), unless nothing would free room (LayerPusher.stuck).

Used by job.PIPELINES for an hf:// source to an OCI destination pushed with oras.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import pipeline
from .destinations.oci import OciDestination
from .files import disk_bytes
from .layer_push import PACE_SECONDS, LayerPusher
from .locations import FileEntry, Published
from .modelcar import SIGNATURE_FILE
from .oci_copy import push_tag
from .resume import Resume
from .sources import hf
from .sources.hf import HfSource

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.hf_pipeline")


def applies(source: object, destination: object) -> bool:
    return isinstance(source, HfSource) and isinstance(destination, OciDestination) and destination.backend == "oras"


def storage_needed(destination: OciDestination, files: dict[str, int], max_in_flight: int | None) -> int:
    return pipeline.storage_needed(destination, files, max_in_flight)


def transfer(source: HfSource, destination: OciDestination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
             resume: Resume | None = None,
             scan_file: Callable[[str, Path], None] | None = None) -> Published | None:
    """The pipeline; None when the Hub did not give every file's size (the job then fetches, then publishes)."""
    target = destination.image
    push_tag(target)
    snap = hf.snapshot(source, "download of")
    if any(size is None for size in snap.files.values()):
        log.info("the Hub did not give every file's size: fetch, then publish")
        return None
    files = {name: int(size) for name, size in snap.files.items() if size is not None}
    if sign_model is not None and files.pop(SIGNATURE_FILE, None) is not None:
        log.warning("the source's %s is left out: this job's signature replaces it", SIGNATURE_FILE)
    origins = {k: v for k, v in hf.origins_of(source, snap).items() if k in files}
    return pipeline.push_through(
        target, destination.base, ws.work, files, origins, hf.revision_time(snap), max_in_flight,
        lambda dest, cap: HfDownload(source, snap.commit, files, dest, cap),
        source_annotation=public_source, platform="linux/amd64", sign_model=sign_model, resume=resume,
        scan_file=scan_file, oci_format=destination.format)


class HfDownload:
    """The Hub side of one sync: the files, one by one in the pusher's order, into dest; paced by waiting."""

    def __init__(self, src: HfSource, commit: str | None, files: dict[str, int], dest: Path, cap: int):
        self.src, self.commit, self.files, self.dest, self.cap = src, commit, files, dest, cap
        self.source = f"the download of {src.ref}"
        self.peak = 0
        dest.mkdir(parents=True, exist_ok=True)

    def run(self, pusher: LayerPusher, wanted: list[str]) -> None:
        for name in wanted:
            while (disk_bytes(self.dest) + self.files[name] > self.cap and not pusher.stuck()
                   and name not in pusher.taken):
                pusher.check()
                time.sleep(PACE_SECONDS / 2)
            pusher.check()
            if name not in pusher.taken:
                hf.download_file(self.src, self.commit, name, self.dest, self.files[name])

    def pace(self, pusher: LayerPusher) -> None:
        self.peak = max(self.peak, disk_bytes(self.dest.parent))
