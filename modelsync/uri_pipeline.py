"""URL (a tar) -> OCI as a pipeline: each large file of the archive is pushed as its own layer while the rest of the
archive still downloads, so a sync costs about the slower of download and push, and the storage path holds what
is in flight plus the small files (pushed at the end).

    GET of the URL -> the tar unpacked as it arrives (sources/uri.stream_tar, uri_archive: the same safety rules,
    each file hashed as it is written) -> a file whose layer is already certain goes to the LayerPusher (layer
    hashed, `oras blob push`, file deleted) while the next ones land -> at the end of the archive: the whole plan
    (modelcar_layers.plan_layers), the other files' layers pushed -> config + manifest -> verified

The crux: the layer plan needs the listing, which a streamed tar reveals only as it goes, and a second pass (a HEAD
cannot list a tar) would download it twice. What plan_layers makes of a file does not need the whole listing when
the file is large: with at most `budget` files every file is a layer of its own; past it, every file of at least a
threshold T is, where T is LARGE_FILE_BYTES (64 MiB) doubled until fewer than `budget` files reach it. So a file
of S bytes is alone in the final plan once S >= 64 MiB and fewer than `budget` files of the whole archive can reach
the first T <= S. For an uncompressed tar of known length that is certain as the file's header comes: the files seen
so far are counted, and the ones still to come can be at most (bytes left) // T. For a model such as 8 x 128 MiB, or
a 140 GB one of 5 GB shards, every shard is certain from the first byte. Smaller files (configs, tokenizers) are
alone only if the archive has at most `budget` files, and packed in path order otherwise: they stay on disk until
the archive has ended, then go up. The image is byte for byte the one fetch-then-publish makes of the same URL (the
same plan, the same layer bytes, `created` the newest member's time, as the unpacked files' dates say).

Where this cannot be certain, it is a guess checked at the end: a compressed tar (.tar.gz: its unpacked length is
not known before its end) or a tar without Content-Length counts only the files seen so far, a lower bound of T.
A large file pushed on that guess that the final plan packs after all (only for an archive with more than `budget`
files of 64 MiB or more) is found when the archive has ended: the job then fetches, then publishes (a second
download), and says so. (A file the threshold packs may still end as a pack of its own, the same layer: the
final plan, not the threshold, is the test.) So do, as soon as they come, a link in the archive (a symlink's file is
its target's bytes, which may be pushed and gone by then) and a file that comes again after its first copy was
pushed.

Scratch: a file is deleted once its layer is pushed; before a file's data is read the download waits (it stops
reading the response) while the files on disk and that file would pass the cap (--max-in-flight-bytes, default two
of the largest file seen plus s3_download.WINDOW), unless no pushed file would free room. The small files stay until
the end: a model of many small files holds them all, as fetch-then-publish would. A server that drops a connection
idle for long (a push slower than the download) ends the download with the one-line truncation error.

Not pipelined (fetch-then-publish, as before): a single file (one layer, whose digest oras needs before its push:
nothing to overlap beyond the hashing the download does already) and a zip (its listing is the central directory
at the end; this server-agnostic first round does not rely on ranged GETs to read it first).

Measured (`python -m bench --only uri --files 8 --size 128Mi`, loopback, 2 cores shared with another bench run at
the time, so a rough figure): 8 x 128 MiB + 5 small files as one tar from a local HTTP server: this pipeline
15.6 s, 258 MiB peak scratch (2 x 128 + 64 = 320 allowed), 5.3 CPU-s; fetch-then-publish 24.4 s, 1026 MiB,
6.5 CPU-s; by hand `curl | tar x` 10.6 s then `oras push` 9.0 s (sum 19.6 s). Every shard was certain from its
header (1 GiB // 64 MiB = 16 < 63), so all 8 went up while the archive downloaded.

Used by job.PIPELINES for a URI source naming a tar to an OCI destination pushed with oras.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import pipeline
from .clients.distribution import RegistryClient
from .destinations.oci import OciDestination
from .errors import TransferError
from .files import disk_bytes, human
from .layer_push import PACE_SECONDS, LayerPusher, Layers
from .locations import FileEntry, OciLocation, Published, UriLocation
from .modelcar import SIGNATURE_FILE, base_image, created_time, finish_image
from .modelcar_layers import (
    LARGE_FILE_BYTES,
    MAX_IMAGE_LAYERS,
    MODEL_LAYER_BUDGET,
    check_layer_count,
    layer_titles,
    plan_layers,
)
from .modelcar_push import finish_push, signature_layer
from .oci_access import RegistryAccess, registry_access
from .oci_copy import pull_base, push_tag, repo_path, verify_pushed
from .oci_layout import Layout
from .resume import Resume
from .s3_download import in_flight_cap
from .sources import uri

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.uri_pipeline")

_REF = "modelsync"
Layer = tuple[tuple[str, ...], str]  # a layer's files and its title


class NotStreamable(Exception):
    """The archive cannot be pipelined after all (a link, a pushed file again, a guessed layer packed): the job
    fetches, then publishes."""


# ---- the pair's entry points (job.PIPELINES) ----------------------------------------------------------------------


def applies(source: object, destination: object) -> bool:
    """A URL naming a tar (.tar, .tar.gz, .tgz) to a modelcar pushed with oras (a ModelPack or hybrid image from a
    URL is fetched, then published: this pipeline writes modelcar layers only)."""
    return isinstance(source, UriLocation) and uri.is_tar(source) and isinstance(destination, OciDestination) and \
        destination.backend == "oras" and destination.format == "modelcar"


def storage_needed(destination: OciDestination, files: dict[str, int], max_in_flight: int | None) -> int:
    """As S3 -> OCI (a URL has no listing before its download, so the job never asks)."""
    return pipeline.storage_needed(destination, files, max_in_flight)


def transfer(source: UriLocation, destination: OciDestination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
             resume: Resume | None = None,
             scan_file: Callable[[str, Path], None] | None = None) -> Published | None:
    """The pipeline; None when the archive turns out not to be pipelinable (NotStreamable: fetch, then publish).
    resume is not used: a URL's files have no source record an earlier image could be matched by."""
    target, tag = destination.image, push_tag(destination.image)
    signing = sign_model is not None
    ws.work.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix="pipeline-", dir=ws.work))
    try:
        base_dir = pull_base(destination.base, job_dir, ws.work, "oras", "linux/amd64")
        base_layers, config = base_image(base_dir, "linux/amd64")
        check_layer_count(len(base_layers), 1 + signing)
        budget = max(1, min(MODEL_LAYER_BUDGET, MAX_IMAGE_LAYERS - len(base_layers) - signing))
        client = RegistryClient(target)
        tar = TarDownload(source, job_dir / "download", budget, signing, max_in_flight)
        start = time.monotonic()
        with registry_access(target, ws.work) as access:
            pusher = _StreamPusher(tar, target, access, client, job_dir, scan_file)
            for d in base_layers:  # a few MiB, before the download starts (the pusher's progress: the model's)
                if base_dir is not None and client.find_blob(repo_path(target), d["digest"]) != d["size"]:
                    pusher.push_blob(d["digest"], Layout(base_dir).blob_path(d["digest"]))
            try:
                done = pusher.go([], [])
            except NotStreamable as exc:
                log.warning("%s: %s; fetch, then publish (a second download)", uri.public_url(source.url), exc)
                return None
            check_layer_count(len(base_layers), len(tar.plan) + signing)
            layers = [done[title] for _, title in tar.plan]
            signature = signature_layer(pusher, sign_model, layers) if sign_model is not None else None
            newest = max(tar.mtimes.values())
            image = finish_image(pusher.layout, _REF, config, base_layers, layers,
                                 created_time(dt.datetime.fromtimestamp(newest, dt.UTC)), public_source, None,
                                 signature)
            finish_push(pusher, image, tag)
        total, elapsed = sum(tar.sizes.values()), time.monotonic() - start
        log.info("pipeline: %s in %d layer(s) (%d pushed while the archive downloaded) as %s in %.1fs, at most %s "
                 "in flight", human(total), len(tar.plan), len(tar.early), image.manifest_digest, elapsed,
                 human(tar.peak), extra={"fields": {"layers": len(tar.plan), "early_layers": len(tar.early),
                                                    "peak_in_flight_bytes": tar.peak}})
        verify_pushed(image, target, tag)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return Published(uri=f"oci://{target.repository}@{image.manifest_digest}", digest=image.manifest_digest,
                     files=image.files)


# ---- which layers are certain before the archive ends -------------------------------------------------------------


def lone_threshold(reaching: Callable[[int], int], budget: int) -> int:
    """The least threshold past LARGE_FILE_BYTES that plan_layers would settle on for a listing with more than
    `budget` files, given reaching(t): how many files (at most) have t bytes or more: LARGE_FILE_BYTES doubled until
    fewer than `budget` reach it. A file of at least this many bytes is a layer of its own in any such plan, and in
    any plan of at most `budget` files (each file alone), whenever reaching() counts at least the listing's files."""
    threshold = LARGE_FILE_BYTES
    while reaching(threshold) > budget - 1:
        threshold *= 2
    return threshold


class TarDownload:
    """The download side: the tar streamed into dest (uri.stream_tar), each member told here (uri_archive.Landing):
    a file certain to be a layer of its own goes to the pusher as it lands, the others wait for the end."""

    def __init__(self, loc: UriLocation, dest: Path, budget: int, signing: bool, max_in_flight: int | None):
        self.loc, self.dest, self.budget, self.signing, self.max_in_flight = loc, dest, budget, signing, max_in_flight
        self.source = f"the download of {uri.public_url(loc.url)}"
        self.dest.mkdir(parents=True)
        self.peak = 0
        self.files: dict[str, int] = {}      # the pusher's sizes of the files handed to it
        self.sizes: dict[str, int] = {}      # every model file landed (the listing, as it grows)
        self.mtimes: dict[str, float] = {}   # their members' times: the newest is the image's `created`
        self.early: dict[str, int] = {}      # files pushed as a layer of their own before the archive ended
        self.alone: dict[str, bool] = {}     # the decision made at a member's header, until it lands
        self.feed: queue.Queue[Layer | None] = queue.Queue()  # layers to hash and push, in the order they come
        self.plan: list[Layer] = []          # the final plan, once the archive has ended
        self.largest = 0
        self._pusher: LayerPusher | None = None

    def run(self, pusher: LayerPusher, wanted: list[str]) -> None:
        """The whole archive (wanted: nothing, the files are not known before); then the final plan, and the layers
        not pushed yet handed to the pusher."""
        self._pusher = pusher
        uri.stream_tar(self.loc, self.dest, self)
        if not self.sizes:
            raise TransferError(f"no files found in {uri.public_url(self.loc.url)}: nothing to sync")
        groups = plan_layers(sorted(self.sizes.items()), self.budget)
        lone = {group[0] for group in groups if len(group) == 1}
        if wrong := sorted(set(self.early) - lone):
            raise NotStreamable(f"the plan packs {wrong[0]}, pushed as a layer of its own (more large files than "
                                f"the {self.budget} layers)")
        self.plan = list(zip(groups, layer_titles(groups), strict=True))
        for group, title in self.plan:
            if not (len(group) == 1 and group[0] in self.early):
                self.feed.put((group, title))
        self.feed.put(None)

    def pace(self, pusher: LayerPusher) -> None:
        self.peak = max(self.peak, disk_bytes(self.dest.parent))

    # ---- uri_archive.Landing: each member as it comes ------------------------------------------------------------

    def header(self, member: tarfile.TarInfo, rel: str, left: int | None) -> None:
        if member.issym() or member.islnk():
            raise NotStreamable(f"archive member '{rel}' is a link")
        if not member.isreg():
            return
        if rel in self.early:
            raise NotStreamable(f"archive member '{rel}' comes again after its first copy was pushed")
        size = member.size
        self.largest = max(self.largest, size)
        self._wait_for_room(size)
        if self.signing and rel == SIGNATURE_FILE:
            return
        others = [s for name, s in self.sizes.items() if name != rel]
        if left is not None:  # the files seen, and at most left // t more of t bytes (this one's data included)
            bound = lone_threshold(lambda t: sum(s >= t for s in others) + left // t, self.budget)
        else:  # a guess: the files seen so far, this one too; checked against the final plan (run)
            bound = lone_threshold(lambda t: sum(s >= t for s in [*others, size]), self.budget)
        self.alone[rel] = size >= bound

    def landed(self, rel: str, member: tarfile.TarInfo, sha256: str) -> None:
        if self.signing and rel == SIGNATURE_FILE:
            log.warning("the source's %s is left out: this job's signature replaces it", SIGNATURE_FILE)
            (self.dest / rel).unlink()
            return
        pusher = self._pusher
        assert pusher is not None
        self.sizes[rel], self.mtimes[rel] = member.size, member.mtime
        self.files[rel] = member.size
        pusher.hashes[rel] = sha256  # hashed as it was written: the pusher hashes it for its layer only
        if self.alone.pop(rel, False):
            self.early[rel] = member.size
            self.feed.put(((rel,), rel))

    def _wait_for_room(self, size: int) -> None:
        """Before a file's data is read: while the files on disk and it would pass the cap, and a pushed file will
        free room, the response is not read (the server's sending waits)."""
        pusher = self._pusher
        assert pusher is not None
        cap = in_flight_cap(self.largest, self.max_in_flight)
        while disk_bytes(self.dest) + size > cap and any((self.dest / rel).exists() for rel in self.early):
            pusher.check()
            time.sleep(PACE_SECONDS / 2)
        pusher.check()


class _StreamPusher(LayerPusher):
    """A LayerPusher whose layers come as the archive determines them (TarDownload.feed) instead of from a plan
    made before the download; the files it pushes are deleted once pushed, as for any Download."""

    def __init__(self, tar: TarDownload, target: OciLocation, access: RegistryAccess, client: RegistryClient,
                 job_dir: Path,
                 check_file: Callable[[str, Path], None] | None):
        super().__init__(tar.files, target, access, client, job_dir, download=tar, check_file=check_file)
        self.tar = tar

    def _hash_layers(self, layers: Layers) -> None:
        super()._hash_layers(cast(Layers, iter(self.tar.feed.get, None)))  # read once, in order, as they come

    def _download(self, wanted: list[str]) -> None:
        try:
            self.tar.run(self, wanted)
        finally:
            self.downloaded.set()

    def stop(self) -> None:
        super().stop()
        self.tar.feed.put(None)  # the layer thread, waiting for the next layer, ends
