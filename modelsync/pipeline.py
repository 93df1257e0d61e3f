"""S3 -> OCI as one pipeline: a sync costs about the slower of download and push, not their sum, and the storage
path holds only what is in flight.

    S3 listing -> plan_layers -> [download file k: `aws s3 cp s3://… -` -> tar header, bytes, padding written to the
    layer file, file and layer hashed on the way] -> [push layer k-1: `oras blob push repo@digest FILE`, then the
    file is deleted] ... every blob HEAD-verified -> config + manifest pushed last -> verify_pushed

- Each large file (>= STREAM_BYTES) is streamed by its own `aws s3 cp … -` straight into its layer file: written
  once, never read back before the push. Smaller files, whose aws start-up (~0.6 s) would cost more than the copy,
  are downloaded in batches (one `aws s3 cp --recursive` with --include filters) and layered with write_layer.
- In-flight bytes (layer files not yet pushed, batch downloads) are bounded by --max-in-flight-bytes (default two
  of the largest file); a layer larger than the cap goes alone.
- The layers, config and manifest are byte for byte those build_modelcar makes of the same files (same functions,
  same plan), so the manifest digest is the one of the fetch-then-publish path.
- One thread downloads, one pushes; the main thread supervises. Any error (or SIGTERM, raised in the main thread)
  stops every child tool of the Group and both threads; job.run then removes the workspace and marks the
  artifact ABANDONED.

Re-sync: each model layer records where its files came from (object URL, size, ETag, sha256: the layer
descriptor's modelcar.SOURCE_RECORD annotation). Before downloading, the manifest now at the target tag is read;
a planned layer whose files all match a record by path, URL, size and ETag, and whose blob the repository still
has (one HEAD), is reused as it is: not downloaded, not pushed. The manifest is the one a full sync of the same
bytes makes (the record is part of it, built from the same facts).

Used by job.transfer for source s3 -> destination oci with the oras backend (skopeo cannot push single blobs);
every other pair keeps fetch-then-publish.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import aws, endpoints, modelcar, tools
from .destinations.oci import is_scratch, verify_pushed
from .distribution import RegistryClient
from .errors import TransferError
from .files import dir_bytes, human, require_free_space
from .locations import FileEntry, OciLocation, Published, S3Location
from .oci_access import registry_access
from .oci_copy import PUSH_TIMEOUT, oras_transient, pull_to_layout, repo_path
from .oci_layout import OCI_MANIFEST, Layout
from .progress import watch
from .sources.s3 import list_s3

if TYPE_CHECKING:
    from .config import Config
    from .workspace import Workspace

log = logging.getLogger("modelsync.pipeline")

STREAM_BYTES = modelcar.LARGE_FILE_BYTES  # a file this big is streamed by an aws process of its own
BATCH_BYTES = 256 << 20                   # smaller files: one aws --recursive per batch of about this many bytes
BATCH_FILES = 500                         # --include filters per aws process (argv stays far below its limit)
AWS_STARTUP = 0.5                         # seconds an aws process takes to start (bench/PIPELINE-STUDY.md: 0.63)
_REF = "modelsync"
_STOP_WAIT = 30.0
STALL_SECONDS = 30.0                      # an oras run reading and writing nothing this long is stopped (no timeout
                                          # of its own: a registry gone silent would hold it for PUSH_TIMEOUT)


# ---- the pair's entry points (job.PIPELINES) ----------------------------------------------------------------------


def applies(cfg: Config) -> bool:
    """The pipeline pushes single blobs with oras; with the skopeo backend the job keeps fetch-then-publish."""
    return cfg.destination_oci_backend == "oras"


def storage_needed(cfg: Config, files: dict[str, int]) -> int:
    """The least the storage path must hold: the largest item in flight (a streamed layer, or a batch's
    downloaded files plus their layers). The base image comes on top (a few MiB for busybox)."""
    return max(item.footprint for item in _items(files, modelcar.MODEL_LAYER_BUDGET))


def transfer(cfg: Config, ws: Workspace, job: str, source: str | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None) -> Published:
    return s3_to_modelcar(endpoints.s3(cfg, "source"), endpoints.oci(cfg, "destination"), endpoints.base_image(cfg),
                          ws.work, cfg.max_in_flight_bytes, source_annotation=source, sign_model=sign_model)


# ---- the plan -----------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One unit of download: a streamed file (one layer) or a batch of small files (one or more layers)."""
    layers: list[tuple[tuple[str, ...], str]]      # (files of the layer, its title)
    streamed: bool
    file_bytes: int                                # the downloaded files (batches only: they are kept a while)
    layer_bytes: list[int] = field(default_factory=list)

    @property
    def footprint(self) -> int:
        return (0 if self.streamed else self.file_bytes) + sum(self.layer_bytes)


def _items(files: dict[str, int], budget: int, reused: Collection[str] = ()) -> list[_Item]:
    """The download plan; layers titled in `reused` are left out (a re-sync takes them from the registry)."""
    groups = modelcar.plan_layers(sorted(files.items()), budget)
    items: list[_Item] = []
    batch: _Item | None = None
    for group, title in zip(groups, modelcar.layer_titles(groups), strict=True):
        if title in reused:
            continue
        size = modelcar.layer_tar_size([(rel, files[rel]) for rel in group])
        if len(group) == 1 and files[group[0]] >= STREAM_BYTES:
            items.append(_Item([(group, title)], True, files[group[0]], [size]))
            continue
        if batch is None or batch.file_bytes >= BATCH_BYTES:
            batch = _Item([], False, 0)
            items.append(batch)
        batch.layers.append((group, title))
        batch.layer_bytes.append(size)
        batch.file_bytes += sum(files[rel] for rel in group)
    return items


# ---- re-sync: layers the destination already has ------------------------------------------------------------------


def reusable_layers(client: RegistryClient, target: OciLocation, tag: str, groups: Mapping[str, tuple[str, ...]],
                    files: Mapping[str, int], origins: Mapping[str, modelcar.Origin]) -> dict[str, modelcar.ModelcarLayer]:
    """The planned layers (by title) that need no download: the image now at target:tag recorded the same files
    from the same objects (path, URL, size and ETag all equal: modelcar.SOURCE_RECORD), and the repository still
    has that blob, of the planned size. A missing tag is a first sync; an unreadable manifest or record is
    ignored (everything is downloaded). The files' sha256 come from the record."""
    repo = repo_path(target)
    try:
        previous = client.find_manifest(repo, tag)
    except TransferError as exc:
        log.warning("re-sync: cannot read %s:%s (%s); every file is downloaded", target.repository, tag, exc)
        return {}
    if previous is None:
        log.info("re-sync: %s:%s does not exist yet; every file is downloaded", target.repository, tag)
        return {}
    records: dict[tuple, tuple[str, int, tuple[FileEntry, ...]]] = {}
    try:
        layers = previous.json().get("layers") or []
    except ValueError:
        layers = []
    for layer in layers:
        text = (layer.get("annotations") or {}).get(modelcar.SOURCE_RECORD) if isinstance(layer, dict) else None
        if not text:
            continue
        try:
            entries = sorted(json.loads(text), key=lambda e: e["path"])
            key = tuple((e["path"], e["url"], int(e["size"]), e["etag"]) for e in entries)
            found = tuple(FileEntry(e["path"], int(e["size"]), _sha_hex(e["sha256"])) for e in entries)
            records[key] = (str(layer["digest"]), int(layer["size"]), found)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a record this version wrote: ignored, never trusted
    reused: dict[str, modelcar.ModelcarLayer] = {}
    for title, group in groups.items():
        if any(rel not in origins for rel in group):
            continue
        key = tuple((rel, origins[rel].url, files[rel], origins[rel].etag) for rel in sorted(group))
        if key not in records:
            continue
        digest, size, found = records[key]
        if size != modelcar.layer_tar_size([(rel, files[rel]) for rel in group]):
            continue
        try:
            present = client.find_blob(repo, digest)
        except TransferError:
            present = None
        if present != size:
            log.info("re-sync: %s is unchanged but its blob %s is not in %s: downloaded again", title, digest[:19],
                     target.repository)
            continue
        reused[title] = modelcar.ModelcarLayer(title, digest, size, found)
    if records:
        kept = sum(layer.size for layer in reused.values())
        log.info("re-sync: %d of %d layer(s) (%s) unchanged since %s (same objects, sizes and ETags) and present in "
                 "the registry: not downloaded", len(reused), len(groups), human(kept), previous.digest,
                 extra={"fields": {"reused_layers": len(reused), "reused_bytes": kept}})
    return reused


def _sha_hex(value: object) -> str:
    text = str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("not a sha256")
    return text


# ---- in-flight bytes ----------------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """This thread stops because another part failed (that part's error is the one reported)."""


class InFlight:
    """Bytes of the storage path in use by the pipeline, at most `cap`; an item larger than the cap waits until
    nothing else is in flight, then goes alone. `peak` is the most ever held."""

    def __init__(self, cap: int):
        self.cap, self.held, self.peak = cap, 0, 0
        self._cond = threading.Condition()
        self._cancelled = False

    def acquire(self, n: int) -> None:
        with self._cond:
            while not self._cancelled and self.held > 0 and self.held + n > self.cap:
                self._cond.wait(0.5)
            if self._cancelled:
                raise _Cancelled()
            self.held += n
            self.peak = max(self.peak, self.held)

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()


# ---- the pipeline -------------------------------------------------------------------------------------------------


def s3_to_modelcar(loc: S3Location, target: OciLocation, base: OciLocation | None, work_dir: Path,
                   max_in_flight: int | None = None, source_annotation: str | None = None, *,
                   platform: str = "linux/amd64",
                   sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None) -> Published:
    """The modelcar of the S3 files at loc pushed to target (tag: target's, default latest) and verified; the
    same image, digest and result as fetch_s3 + publish_modelcar.

    sign_model: called with every file's sha256 once all model layers are pushed (their bytes hashed on the way),
    it returns model.sig, which goes up in a layer of its own before the manifest (a model.sig at the source's
    root is left out: this signature replaces it)."""
    if target.digest:
        raise TransferError(f"destination {target.reference}: give a tag, not a digest (the digest is computed)")
    tag = target.tag or "latest"
    kind, files, origins = list_s3(loc)
    if sign_model is not None and files.pop(modelcar.SIGNATURE_FILE, None) is not None:
        log.warning("the source's %s is left out: this job's signature replaces it", modelcar.SIGNATURE_FILE)
    signing = sign_model is not None
    created_at = modelcar.created_time()
    work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = work_dir / "pipeline"
    job_dir.mkdir()
    try:
        base_dir = None
        if not is_scratch(base):
            assert base is not None
            base_dir = job_dir / "base"
            pull_to_layout(base, base_dir, "base", work_dir, "oras", platform)
        base_layers, config = modelcar.base_image(base_dir, platform)
        budget = max(1, min(modelcar.MODEL_LAYER_BUDGET, modelcar.MAX_IMAGE_LAYERS - len(base_layers) - signing))
        groups = modelcar.plan_layers(sorted(files.items()), budget)
        titles = modelcar.layer_titles(groups)
        layer_count = len(groups)
        modelcar.check_layer_count(len(base_layers), layer_count + signing)
        client = RegistryClient(target)
        reused = reusable_layers(client, target, tag, dict(zip(titles, groups, strict=True)), files, origins)
        items = _items(files, budget, reused)
        need = max((item.footprint for item in items), default=0)
        require_free_space(job_dir, need, "the pipeline's largest layer in flight")
        cap = max_in_flight or 2 * need  # two of the largest file (with its tar header): one pushed, one written
        log.info("pipeline: %d file(s), %s, in %d layer(s) (%d streamed, %d in %d batch(es)) on %d base layer(s); "
                 "at most %s in flight", len(files), human(sum(files.values())), layer_count,
                 sum(i.streamed for i in items), sum(len(i.layers) for i in items if not i.streamed),
                 sum(not i.streamed for i in items), len(base_layers), human(cap),
                 extra={"fields": {"files": len(files), "layers": layer_count, "max_in_flight_bytes": cap}})
        if need > cap:
            log.warning("the largest layer in flight (%s) is over --max-in-flight-bytes (%s): it goes alone",
                        human(need), human(cap))
        start = time.monotonic()
        with registry_access(target, work_dir) as access:
            run = _Run(loc, kind, files, target, access, Layout(job_dir / "image"), InFlight(cap), client)
            base_blobs = [(d["digest"], d["size"], Layout(base_dir).blob_path(d["digest"])) for d in base_layers
                          if client.find_blob(repo_path(target), d["digest"]) != d["size"]] \
                if base_dir is not None else []
            done = {**run.go(items, base_blobs), **reused}
            layers = [done[title] for title in titles]
            signature = run.signature_layer(sign_model, layers) if sign_model is not None else None
            image = modelcar.finish_image(run.layout, _REF, config, base_layers, layers, created_at,
                                          source_annotation, origins, signature)
            run.finish(image, tag)
        total = sum(files.values())
        elapsed = time.monotonic() - start
        log.info("pipeline: %s pushed as %s in %.1fs (%.0f MB/s), at most %s in flight", human(total),
                 image.manifest_digest, elapsed, total / 1e6 / max(elapsed, 1e-6), human(run.in_flight.peak))
        verify_pushed(image, target, tag)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return Published(uri=f"oci://{target.repository}@{image.manifest_digest}", digest=image.manifest_digest,
                     files=image.files)


class _Run:
    """One pipeline's state: the downloader and pusher threads, their children, the in-flight budget."""

    def __init__(self, loc: S3Location, kind: str, files: dict[str, int], target: OciLocation, access,
                 layout: Layout, in_flight: InFlight, client: RegistryClient):
        self.loc, self.kind, self.files, self.target, self.access = loc, kind, files, target, access
        self.client = client
        self.layout, self.in_flight = layout, in_flight
        self.layout.init()
        self.repo = target.repository
        self.group = tools.Group()
        self.pushes: queue.Queue[tuple[str, int, Path, bool] | None] = queue.Queue()
        self.layers: dict[str, modelcar.ModelcarLayer] = {}
        self.pushed_bytes = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.aws_env, self.aws_flags = aws.cli_env(loc), aws.cli_flags(loc)
        self.prefix = "" if kind == "object" else (loc.key.rstrip("/") + "/" if loc.key.strip("/") else "")

    # ---- supervision ------------------------------------------------------------------------------------------

    def go(self, items: list[_Item], base_blobs: list[tuple[str, int, Path]]) -> dict[str, modelcar.ModelcarLayer]:
        """Run both threads to the end; the layers made, by title. Any error stops everything."""
        for digest, size, path in base_blobs:
            self.pushes.put((digest, size, path, False))
        threads = [threading.Thread(target=self._guard(self._download, items), name="pipeline-download",
                                    daemon=True),
                   threading.Thread(target=self._guard(self._push), name="pipeline-push", daemon=True)]
        total = sum(size for item in items for size in item.layer_bytes) + sum(size for _, size, _ in base_blobs)
        try:
            with watch("download + push", total, lambda: self.pushed_bytes):
                for thread in threads:
                    thread.start()
                while any(thread.is_alive() for thread in threads):
                    for thread in threads:
                        thread.join(0.2)  # the main thread stays responsive to SIGTERM (job.Interrupted)
        except BaseException:
            self.stop()
            for thread in threads:
                thread.join(_STOP_WAIT)
            raise
        if self.errors:
            raise self.errors[0]
        return dict(self.layers)

    def _guard(self, fn, *args):
        def body() -> None:
            try:
                fn(*args)
            except _Cancelled:
                pass
            except BaseException as exc:
                if not self.stopping.is_set():
                    self.errors.append(exc)
                self.stop()
        return body

    def stop(self) -> None:
        """From any thread: no new work, every child tool ended, waiting threads woken."""
        self.stopping.set()
        self.in_flight.cancel()
        self.group.stop()
        self.pushes.put(None)

    def _check(self) -> None:
        if self.stopping.is_set():
            raise _Cancelled()

    # ---- download ---------------------------------------------------------------------------------------------

    def _download(self, items: list[_Item]) -> None:
        """Items in order. The aws process of the next streamed file is started near the end of the current one
        (_Tap): its start-up (~0.6 s, imports) then overlaps the copy instead of delaying the next download, and
        two aws processes in full flow hardly overlap (each holds ~110 MiB once downloading)."""
        streams = [number for number, item in enumerate(items) if item.streamed]
        started: dict[int, tools.Child] = {}
        try:
            for number, item in enumerate(items):
                self._check()
                if item.streamed:
                    child = started.pop(number, None) or self._spawn(item)
                    later = [n for n in streams if n > number][:1]

                    def prefetch(later: list[int] = later) -> None:
                        if later and later[0] not in started:
                            started[later[0]] = self._spawn(items[later[0]])
                    self.in_flight.acquire(item.footprint)
                    self._stream(item, child, prefetch)
                else:
                    self.in_flight.acquire(item.footprint)
                    self._batch(item, number)
        finally:
            for child in started.values():
                self.group.finish(child)
            self.pushes.put(None)  # after the last layer: the pusher ends once the queue is drained

    def _spawn(self, item: _Item) -> tools.Child:
        ((rel,), _), = item.layers
        return self.group.spawn("aws", ["s3", "cp", self._url(rel), "-", *self.aws_flags], env=self.aws_env,
                                stream=True)

    def _url(self, rel: str) -> str:
        return self.loc.url if self.kind == "object" else f"s3://{self.loc.bucket}/{self.prefix}{rel}"

    def _stream(self, item: _Item, child: tools.Child, near_end) -> None:
        ((rel,), title), = item.layers
        url = self._url(rel)
        start = time.monotonic()
        first = [child]

        def once() -> modelcar.ModelcarLayer:
            self._check()
            child = first.pop() if first else self._spawn(item)  # a retry: a new download, the layer rewritten
            try:
                assert child.stdout is not None
                try:
                    layer = modelcar.write_stream_layer(rel, self.files[rel],
                                                        _Tap(child.stdout, self.files[rel], near_end),
                                                        self.layout, title, f"the download of {url}")
                except TransferError:
                    self._check()
                    child.wait(_STOP_WAIT)  # a failed download says why on stderr: that error is the better one
                    raise
                child.wait(PUSH_TIMEOUT)
            finally:
                self.group.finish(child)
            return layer

        layer = aws.retry_download(f"download of {url}", once, self.stopping.wait)
        self._layer_done(layer, item.layer_bytes[0])
        log.debug("streamed %s into layer %s (%s, %.1fs)", rel, layer.digest[:19], human(layer.size),
                  time.monotonic() - start)

    def _batch(self, item: _Item, number: int) -> None:
        dest = self.layout.root.parent / f"batch-{number:04d}"
        dest.mkdir()
        rels = [rel for group, _ in item.layers for rel in group]

        def copy(args: list[str]) -> None:
            def once() -> None:
                self._check()
                self.group.run("aws", [*args, *self.aws_flags], env=self.aws_env, timeout=PUSH_TIMEOUT)
            aws.retry_download(f"download from {self.loc.url}", once, self.stopping.wait)

        if self.kind == "object":
            copy(["s3", "cp", self.loc.url, str(dest / rels[0])])
        else:
            for at in range(0, len(rels), BATCH_FILES):
                self._check()
                includes = [arg for rel in rels[at:at + BATCH_FILES] for arg in ("--include", _glob_literal(rel))]
                copy(["s3", "cp", f"s3://{self.loc.bucket}/{self.prefix}", str(dest), "--recursive", "--exclude", "*",
                      *includes])
        wrong = [rel for rel in rels if not (dest / rel).is_file() or (dest / rel).stat().st_size != self.files[rel]]
        if wrong:
            raise TransferError(f"download from {self.loc.url} is incomplete: {', '.join(wrong[:5])} missing or "
                                f"of the wrong size")
        for (group, title), size in zip(item.layers, item.layer_bytes, strict=True):
            self._check()
            layer = modelcar.write_layer([(rel, dest / rel) for rel in group], self.layout, title)
            self._layer_done(layer, size)
        shutil.rmtree(dest, ignore_errors=True)
        self.in_flight.release(item.file_bytes)

    def _layer_done(self, layer: modelcar.ModelcarLayer, planned: int) -> None:
        if layer.size != planned:
            raise TransferError(f"layer {layer.title}: {layer.size} bytes written, {planned} planned "
                                f"(the source changed during the sync?)")
        self.layers[layer.title] = layer
        self.pushes.put((layer.digest, layer.size, self.layout.blob_path(layer.digest), True))

    # ---- push -------------------------------------------------------------------------------------------------

    def _push(self) -> None:
        while (job := self.pushes.get()) is not None:
            self._check()
            digest, size, path, owned = job
            self._push_blob(digest, path)
            self.pushed_bytes += size
            if owned:  # a layer file of this pipeline (not a base image blob): gone once pushed
                path.unlink()
                self.in_flight.release(size)

    def _oras(self, what: str, args: list[str]) -> None:
        """oras through the group, run again after a transient failure (a cut upload, a registry restarting)."""
        def once() -> None:
            self._check()
            self.group.run("oras", args, timeout=PUSH_TIMEOUT, stall=STALL_SECONDS)
        tools.retry(what, once, oras_transient, self.stopping.wait)

    def _push_blob(self, digest: str, path: Path) -> None:
        start = time.monotonic()
        self._oras(f"push of blob {digest[:19]}", ["blob", "push", "--no-tty", *self.access.oras_args(),
                                                   f"{self.repo}@{digest}", str(path)])
        log.debug("pushed blob %s in %.1fs", digest[:19], time.monotonic() - start)

    # ---- last: the signature, config and manifest --------------------------------------------------------------

    def signature_layer(self, sign_model: Callable[[tuple[FileEntry, ...]], bytes],
                        layers: list[modelcar.ModelcarLayer]) -> modelcar.ModelcarLayer:
        """model.sig over every file's sha256 (hashed as the layers were written), in its own layer, pushed."""
        path = self.layout.root.parent / modelcar.SIGNATURE_FILE
        path.write_bytes(sign_model(tuple(f for layer in layers for f in layer.files)))
        layer = modelcar.write_layer([(modelcar.SIGNATURE_FILE, path)], self.layout, modelcar.SIGNATURE_FILE)
        path.unlink()
        self._push_blob(layer.digest, self.layout.blob_path(layer.digest))
        return layer


    def finish(self, image: modelcar.ModelcarImage, tag: str) -> None:
        """Config blob pushed, every blob HEAD-verified in the registry, then the manifest pushed under tag."""
        config = image.manifest["config"]
        try:
            client, repo = self.client, repo_path(self.target)
            if client.find_blob(repo, config["digest"]) != config["size"]:  # a re-sync's may be there already
                self._push_blob(config["digest"], self.layout.blob_path(config["digest"]))
            for blob in (config, *image.manifest["layers"]):
                size = client.blob_size(repo, blob["digest"])
                if size != blob["size"]:
                    raise TransferError(f"{self.repo}: blob {blob['digest'][:19]} is {size} bytes, expected "
                                        f"{blob['size']}")
            self._oras("push of the manifest", ["manifest", "push", *self.access.oras_args(), "--media-type",
                                                OCI_MANIFEST, f"{self.repo}:{tag}",
                                                str(self.layout.blob_path(image.manifest_digest))])
        except BaseException:
            self.group.stop()
            raise


class _Tap:
    """A byte stream read through, calling near_end once when what is left would take about AWS_STARTUP seconds
    at the rate seen so far (or at once if the stream ends first)."""

    def __init__(self, stream, size: int, near_end):
        self.stream, self.left, self.near_end = stream, size, near_end
        self.first: float | None = None
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if self.near_end is not None:
            now = time.monotonic()
            if self.first is None:
                self.first = now  # the rate counts from the first byte: the start-up is not part of it
            self.done += len(data)
            self.left -= len(data)
            rate = self.done / max(now - self.first, 1e-3)
            if not data or self.left <= rate * AWS_STARTUP:
                call, self.near_end = self.near_end, None
                call()
        return data


def _glob_literal(path: str) -> str:
    """An aws CLI --include pattern (fnmatch) matching exactly path: *, ? and [ each as a one-character class."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def scratch_bytes(work_dir: Path) -> int:
    """Bytes under the pipeline's directory (tests and the bench sample it)."""
    return dir_bytes(work_dir / "pipeline")
