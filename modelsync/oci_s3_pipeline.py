"""OCI -> S3 as a pipeline: each file of the image is uploaded while the next layers download, so a sync costs about
the slower of the two, and the storage path holds only what is in flight.

    the image's manifest (sources/oci.remote_manifest) -> each layer read in parallel ranged GETs (blob_read.py)
    into the extraction (sources/oci.stream_oci, layer_extract.TreeWriter: whiteouts, links, digests checked) ->
    each file, once written whole and hashed, checked (the job's pickle scan) and moved to an S3Uploader
    (s3_upload.py), an empty file left in its place, uploaded in the next batch and deleted -> the files symlinks
    lead to uploaded
    again under the links' names -> model.sig (when signing), every object verified, leftovers removed
    (destinations/s3.finish_s3)

The result is fetch-then-publish's for the same image: the same files (TreeWriter.entries(), links as the file they
lead to), each object written by the same `aws s3 cp --recursive` publish_s3 runs (so the same keys, bytes,
content types and modelsync-job metadata), the same verification and removal of what is not the model. A file a
later layer removes or replaces was perhaps uploaded already: the replacement goes up after it (a batch waits for
one going up that holds the same path), a removed one is one of this job's own leftovers that finish_s3 deletes.
The empty file left in the tree keeps the tree's shape, so later layers see the tree they would have seen; a hard
link is copied from its source's bytes where they are (the upload's batch, or its object once up), a symlink's
target is read back from its object at the end.

Scratch: before each file is written the extraction waits while the files not yet uploaded and that one would pass
the cap (--max-in-flight-bytes, default two of the largest layer plus s3_download.WINDOW: one file uploaded while
the next lands), unless none is waiting (a file larger than the cap goes alone). Used by job.PIPELINES for an oci
source read with oras (the default backend) to an S3 destination.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .beneath import Beneath
from .clients import aws
from .clients.distribution import RegistryClient
from .destinations.s3 import S3Destination, finish_s3
from .errors import TransferError
from .files import human, require_free_space
from .layer_stream import COPY_BUF
from .locations import FileEntry, Published, S3Location
from .oci_copy import qualified, repo_path
from .resume import Resume
from .s3_download import in_flight_cap
from .s3_upload import S3Uploader
from .signing.model import SIGNATURE_NAME
from .sources.oci import OciSource, remote_manifest, stream_oci

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.oci_s3_pipeline")

# The files are known only once the layers are read: job.check_space leaves the room to transfer(), which checks
# the largest layer once the manifest is read.
LISTED_ON_THE_WAY = True


def applies(source: object, destination: object) -> bool:
    return isinstance(source, OciSource) and isinstance(destination, S3Destination) and source.backend == "oras"


def storage_needed(destination: S3Destination, files: dict[str, int] | None, max_in_flight: int | None) -> int:
    """The largest file (known only on the way for an image: transfer() checks the largest layer)."""
    return max((files or {}).values(), default=0)


def transfer(source: OciSource, destination: S3Destination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
             resume: Resume | None = None,
             scan_file: Callable[[str, Path], None] | None = None,
             platform: str = "linux/amd64") -> Published:
    src = qualified(source.image)
    loc = destination.location
    start = time.monotonic()
    manifest = remote_manifest(RegistryClient(src), repo_path(src), src.lookup, platform, src.reference)
    largest = max((int(layer.get("size", 0)) for layer in manifest.get("layers") or []), default=0)
    require_free_space(ws.work, largest, "the pipeline's largest layer in flight")
    cap = in_flight_cap(largest, max_in_flight)
    job_dir = ws.work / "oci-s3"
    job_dir.mkdir(parents=True)
    log.info("pipeline: %d layer(s) of %s to s3://%s/%s; at most %s in flight", len(manifest.get("layers") or []),
             src.reference, loc.bucket, loc.key, human(cap), extra={"fields": {"max_in_flight_bytes": cap}})
    uploader = S3Uploader(loc, job, job_dir / "outbox", cap, at_once=2).start()  # s3_upload.py: why 2 here
    landing = _Landing(uploader, loc, scan_file)
    try:
        tree_dir = job_dir / "tree"
        files = stream_oci(src, manifest, tree_dir, landing)  # names checked, none: refused
        _upload_links(landing, files, tree_dir, job_dir / "links")
        uploader.finish()
    except BaseException:
        uploader.stop()
        raise
    entries = tuple(files)
    signature = None
    if sign_model is not None:
        if any(f.path == SIGNATURE_NAME for f in entries):
            log.warning("the source's %s is left out: this job's signature replaces it", SIGNATURE_NAME)
            entries = tuple(f for f in entries if f.path != SIGNATURE_NAME)
        signature = ws.work / "signature" / SIGNATURE_NAME
        signature.parent.mkdir(parents=True, exist_ok=True)
        signature.write_bytes(sign_model(entries))
    published = finish_s3(loc, entries, job, destination.replace, signature)
    log.info("pipeline: %d file(s), %s, in %.1fs (%d upload batch(es), at most %s in flight)", len(entries),
             human(sum(f.size for f in entries)), time.monotonic() - start, uploader.batches, human(uploader.peak))
    return published


class _Landing:
    """The extraction's hand on each file (layer_extract.Landing): room waited for, the file scanned and handed to
    the uploader; a hard link copied from its source's bytes, on disk or (once uploaded) in the destination."""

    def __init__(self, uploader: S3Uploader, loc: S3Location, scan_file: Callable[[str, Path], None] | None):
        self.uploader, self.loc, self.scan_file = uploader, loc, scan_file

    def room(self, size: int) -> None:
        self.uploader.room(size)

    def landed(self, rel: str, path: Path, placeholder: bool = True) -> None:
        if self.scan_file is not None:  # raises to stop the transfer: nothing of this file goes up
            self.scan_file(rel, path)
        self.uploader.add(rel, path)
        if placeholder:  # the tree keeps its entry (a later layer's whiteout or write finds it), without the bytes
            path.touch()

    def copy(self, tree: Beneath, source: str, rel: str) -> None:
        fd = tree.create(rel)
        try:
            with os.fdopen(fd, "wb") as out:
                with self.uploader.lock:  # the upload thread deletes a batch's files only under this lock
                    where = self.uploader.source_of(source)
                    if where is not None:
                        with open(where, "rb") as src:
                            shutil.copyfileobj(src, out, COPY_BUF)
                if where is None:  # up already
                    download_object(self.loc, source, out)
        except BaseException:
            tree.unlink(rel)
            raise

    def write_object(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            download_object(self.loc, rel, out)


def _upload_links(landing: _Landing, files: list[FileEntry], tree_dir: Path, links_dir: Path) -> None:
    """Each symlink leading to a file, uploaded under its own name with the bytes of the file it leads to (as aws
    follows it in fetch-then-publish's upload); those bytes are read back from the file's object, up by then.
    TreeWriter made sure every link stays inside the tree."""
    root = os.path.realpath(tree_dir)
    links = [f for f in files if (tree_dir / f.path).is_symlink()]
    if links:
        landing.uploader.drain()
    for entry in links:
        target = Path(os.path.relpath(os.path.realpath(tree_dir / entry.path), root)).as_posix()
        path = links_dir / entry.path
        landing.room(entry.size)
        landing.write_object(target, path)
        landing.landed(entry.path, path, placeholder=False)


def download_object(loc: S3Location, rel: str, out: Any) -> None:
    """The object at rel under loc's prefix, written to out."""
    key = (loc.key.strip("/") + "/" if loc.key.strip("/") else "") + rel
    try:
        body = aws.client(loc).get_object(Bucket=loc.bucket, Key=key)["Body"]
        while chunk := body.read(COPY_BUF):
            out.write(chunk)
    except (ClientError, BotoCoreError) as exc:
        raise TransferError(f"cannot read back s3://{loc.bucket}/{key}: {aws.describe_error(exc, loc)}") from None
