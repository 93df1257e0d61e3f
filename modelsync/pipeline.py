"""S3 -> OCI as one pipeline: a sync costs about the slower of download and push, not their sum, and the storage
path holds only what is in flight.

    S3 listing -> plan_layers -> one `aws s3 cp --recursive` downloads the files (its parallel ranged GETs) ->
    as each layer's files land: file and layer hashed in one read -> `oras blob push --size N repo@digest -` fed
    the layer tar (header, the file's bytes by sendfile, padding), then the files are deleted -> every blob
    HEAD-verified -> config + manifest pushed last -> verify_pushed

Why this shape (bench/PIPELINE-STUDY.md, 2 cores): an aws CLI process costs ~0.6 s of CPU to start, more than
the download of a 128 MiB file, so one process downloads many files (one per BATCH_FILES; a re-sync's filters).
A file is written once, by aws; the layer tar is never written: its header and padding go straight into oras's
stdin around the file's bytes, so the file is read twice from the page cache (hash, push) and never copied.
oras is given the digest (`repo@digest`) so it does not hash again.

- In-flight bytes (files on disk not yet pushed, partial downloads included) are kept under
  --max-in-flight-bytes (default two of the largest layer plus WINDOW): while the pipeline's directory holds that
  much, the aws process is paused (SIGSTOP) and resumed (SIGCONT) once a push has freed room. It is never left
  paused when nothing would free room (the next layer lacks a file and every hashed layer is pushed), so a layer
  larger than the cap still goes through (alone).
- The layers, config and manifest are byte for byte those build_modelcar makes of the same files (same plan,
  modelcar.layer_parts), so the manifest digest is the one of the fetch-then-publish path.
- Three threads: download (aws runs, retried after a transient failure for the files not yet there), layers
  (hash in plan order), push; the main thread supervises and paces aws. Any error (or SIGTERM, raised in the main
  thread) stops every child tool of the Group and all threads; job.run then removes the workspace and marks the
  artifact ABANDONED.

Re-sync: each model layer records where its files came from (object URL, size, ETag, sha256: the layer
descriptor's modelcar.SOURCE_RECORD annotation). Before downloading, the manifest now at the target tag is read;
a planned layer whose files all match a record by path, URL, size and ETag, and whose blob the repository still
has (one HEAD), is reused as it is: not downloaded, not pushed. The manifest is the one a full sync of the same
bytes makes (the record is part of it, built from the same facts).

Used by job.transfer for source s3 -> destination oci with the oras backend (skopeo cannot push single blobs);
every other pair keeps fetch-then-publish, and with oras its modelcar is pushed by the same code from the files
already there (dir_to_modelcar: nothing downloaded, nothing reused, the files left as they are).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from . import aws, modelcar, tools
from .awscli_plugin.modelsync_no_expect import CONCURRENCY_ENV
from .destinations.oci import OciDestination, is_scratch, verify_pushed
from .distribution import RegistryClient
from .errors import TransferError
from .files import disk_bytes, human, require_free_space
from .locations import FileEntry, OciLocation, Published, S3Location
from .oci_access import registry_access
from .oci_copy import PUSH_TIMEOUT, oras_transient, pull_to_layout, repo_path
from .oci_layout import OCI_MANIFEST, Layout
from .progress import watch
from .sources.s3 import list_s3

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.pipeline")

AWS_REQUESTS = 6                          # parallel GETs of the pipeline's aws (its chunks are 8 MiB) ...
WINDOW = 64 << 20                         # ... which fit in this room beside two layers (the default cap)
BATCH_FILES = 500                         # --include filters per aws process (argv stays far below its limit)
PACE_SECONDS = 0.01                       # how often the download directory is measured (pause / resume aws)
PACE_SLACK = 16 << 20                     # what aws may write between two measures (1.6 GB/s)
READ_BUF = 4 << 20                        # the hashing read
_REF = "modelsync"
_STOP_WAIT = 30.0
STALL_SECONDS = 30.0                      # an oras run reading and writing nothing this long is stopped (no timeout
                                          # of its own: a registry gone silent would hold it for PUSH_TIMEOUT)

Layers = list[tuple[tuple[str, ...], str]]  # (files of a layer, its title), in plan order


# ---- the pair's entry points (job.PIPELINES) ----------------------------------------------------------------------


def applies(source: object, destination: object) -> bool:
    """S3 to an OCI registry. The pipeline pushes single blobs with oras; with the skopeo backend the job keeps
    fetch-then-publish."""
    return isinstance(source, S3Location) and isinstance(destination, OciDestination) and \
        destination.backend == "oras"


def storage_needed(destination: OciDestination, files: dict[str, int], max_in_flight: int | None) -> int:
    """The least the storage path must hold: the files of the largest layer (all on disk before it is pushed).
    The base image comes on top (a few MiB for busybox)."""
    return _largest_layer(files, modelcar.plan_layers(sorted(files.items()), modelcar.MODEL_LAYER_BUDGET))


def _largest_layer(files: Mapping[str, int], groups: Sequence[Sequence[str]]) -> int:
    return max((sum(files[rel] for rel in group) for group in groups), default=0)


def transfer(source: S3Location, destination: OciDestination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None) -> Published:
    return s3_to_modelcar(source, destination.image, destination.base, ws.work, max_in_flight,
                          source_annotation=public_source, sign_model=sign_model)


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


# ---- the pipeline -------------------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """This thread stops because another part failed (that part's error is the one reported)."""


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
    kind, files, origins = list_s3(loc)
    if sign_model is not None and files.pop(modelcar.SIGNATURE_FILE, None) is not None:
        log.warning("the source's %s is left out: this job's signature replaces it", modelcar.SIGNATURE_FILE)
    return _to_modelcar(target, base, work_dir, files, origins, loc=loc, kind=kind, max_in_flight=max_in_flight,
                        source_annotation=source_annotation, platform=platform, sign_model=sign_model)


def dir_to_modelcar(model_dir: Path, target: OciLocation, base: OciLocation | None, work_dir: Path,
                    source_annotation: str | None = None, *, platform: str = "linux/amd64",
                    created: dt.datetime | None = None, origins: Mapping[str, modelcar.Origin] | None = None,
                    signature: Path | None = None) -> Published:
    """The modelcar of the files already in model_dir (a fetched source, or a volume read in place) pushed as the
    pipeline pushes: each layer hashed from the files, then fed to `oras blob push` from them, so no layer tar is
    written and model_dir is left as it was. The same image, byte for byte, as build_modelcar + push_layout.
    signature: the model's model.sig, in a layer of its own (a model.sig at the model's root is left out)."""
    if target.digest:
        raise TransferError(f"destination {target.reference}: give a tag, not a digest (the digest is computed)")
    files = {rel: path.stat().st_size for rel, path in modelcar.model_files(model_dir)
             if signature is None or rel != modelcar.SIGNATURE_FILE}
    sign_model = (lambda _files: signature.read_bytes()) if signature is not None else None
    return _to_modelcar(target, base, work_dir, files, dict(origins or {}), landed=model_dir,
                        source_annotation=source_annotation, platform=platform, sign_model=sign_model,
                        created=created)


def _to_modelcar(target: OciLocation, base: OciLocation | None, work_dir: Path, files: dict[str, int],
                 origins: Mapping[str, modelcar.Origin], *, loc: S3Location | None = None, kind: str = "",
                 landed: Path | None = None, max_in_flight: int | None = None, source_annotation: str | None = None,
                 platform: str = "linux/amd64", created: dt.datetime | None = None,
                 sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None) -> Published:
    """Plan, (download,) hash and push the layers of files, then config and manifest; verified. With landed the
    files are there already (nothing downloaded, nothing reused, nothing deleted); else they come from loc."""
    tag = target.tag or "latest"
    signing = sign_model is not None
    created_at = modelcar.created_time(created)
    work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix="pipeline-", dir=work_dir))
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
        modelcar.check_layer_count(len(base_layers), len(groups) + signing)
        client = RegistryClient(target)
        reused = {} if landed is not None else \
            reusable_layers(client, target, tag, dict(zip(titles, groups, strict=True)), files, origins)
        todo = [(group, title) for group, title in zip(groups, titles, strict=True) if title not in reused]
        need = 0 if landed is not None else _largest_layer(files, [group for group, _ in todo])
        require_free_space(job_dir, need, "the pipeline's largest layer in flight")
        cap = max_in_flight or 2 * need + WINDOW  # one layer pushed while the next lands
        log.info("pipeline: %d file(s), %s, in %d layer(s) (%d to %s) on %d base layer(s)%s", len(files),
                 human(sum(files.values())), len(groups), len(todo), "push" if landed else "download",
                 len(base_layers), "" if landed else f"; at most {human(cap)} in flight",
                 extra={"fields": {"files": len(files), "layers": len(groups), "max_in_flight_bytes": cap}})
        if need > cap:
            log.warning("the largest layer (%s) is over --max-in-flight-bytes (%s): it goes alone", human(need),
                        human(cap))
        start = time.monotonic()
        with registry_access(target, work_dir) as access:
            run = _Run(loc, kind, files, target, access, job_dir, cap, client, landed)
            base_blobs = [(d["digest"], d["size"], Layout(base_dir).blob_path(d["digest"])) for d in base_layers
                          if client.find_blob(repo_path(target), d["digest"]) != d["size"]] \
                if base_dir is not None else []
            done = {**run.go(todo, base_blobs), **reused}
            layers = [done[title] for title in titles]
            signature = run.signature_layer(sign_model, layers) if sign_model is not None else None
            image = modelcar.finish_image(run.layout, _REF, config, base_layers, layers, created_at,
                                          source_annotation, origins or None, signature)
            run.finish(image, tag)
        total = sum(files.values())
        elapsed = time.monotonic() - start
        log.info("pipeline: %s pushed as %s in %.1fs (%.0f MB/s)%s", human(total), image.manifest_digest, elapsed,
                 total / 1e6 / max(elapsed, 1e-6), "" if landed else f", at most {human(run.peak)} in flight",
                 extra={"fields": {"peak_in_flight_bytes": run.peak}})
        verify_pushed(image, target, tag)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return Published(uri=f"oci://{target.repository}@{image.manifest_digest}", digest=image.manifest_digest,
                     files=image.files)


class _Run:
    """One pipeline's state: the download, layer and push threads, their children, the pacing of aws."""

    def __init__(self, loc: S3Location | None, kind: str, files: dict[str, int], target: OciLocation, access,
                 job_dir: Path, cap: int, client: RegistryClient, landed: Path | None = None):
        self.loc, self.kind, self.files, self.target, self.access = loc, kind, files, target, access
        self.client, self.cap = client, cap
        self.layout = Layout(job_dir / "image")  # config, manifest, the signature layer (model layers never)
        self.layout.init()
        self.landed = landed is not None  # the files are there already: nothing to download, nothing to delete
        self.dest = landed if landed is not None else job_dir / "download"
        self.source = f"the download from {loc.url}" if loc is not None else str(landed)  # for errors
        self.dest.mkdir(exist_ok=self.landed)
        self.repo = target.repository
        self.group = tools.Group()
        self.pushes: queue.Queue[tuple | None] = queue.Queue()
        self.layers: dict[str, modelcar.ModelcarLayer] = {}
        self.taken: set[str] = set()       # files hashed into a layer (deleted once it is pushed)
        self.pushed_bytes = 0
        self.peak = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.downloaded = threading.Event()  # no aws process will run any more (done, or failed)
        self.waiting = False                 # the layer thread waits for a file aws has not finished
        self.unpushed = 0                    # hashed layers whose files are still on disk
        self.aws: tools.Child | None = None
        if loc is not None:
            self.aws_env = {**aws.cli_env(loc), CONCURRENCY_ENV: str(AWS_REQUESTS)}
            self.aws_flags = aws.cli_flags(loc)
            self.prefix = "" if kind == "object" else (loc.key.rstrip("/") + "/" if loc.key.strip("/") else "")
        else:
            self.downloaded.set()

    # ---- supervision ------------------------------------------------------------------------------------------

    def go(self, layers: Layers, base_blobs: list[tuple[str, int, Path]]) -> dict[str, modelcar.ModelcarLayer]:
        """Run the threads to the end; the layers made, by title. Any error stops everything."""
        for digest, size, path in base_blobs:
            self.pushes.put(("blob", digest, size, path))
        wanted = [rel for group, _ in layers for rel in group]
        threads = [threading.Thread(target=self._guard(self._hash_layers, layers), name="pipeline-layers",
                                    daemon=True),
                   threading.Thread(target=self._guard(self._push), name="pipeline-push", daemon=True)]
        if not self.landed:
            threads.append(threading.Thread(target=self._guard(self._download, wanted), name="pipeline-download",
                                            daemon=True))
        total = sum(modelcar.layer_tar_size([(rel, self.files[rel]) for rel in group]) for group, _ in layers) \
            + sum(size for _, size, _ in base_blobs)
        try:
            label = f"push {self.repo}:{self.target.tag or 'latest'}" if self.landed else "download + push"
            with watch(label, total, lambda: self.pushed_bytes):
                for thread in threads:
                    thread.start()
                while any(thread.is_alive() for thread in threads):
                    self._pace()
                    time.sleep(PACE_SECONDS)  # the main thread stays responsive to SIGTERM (job.Interrupted)
        except BaseException:
            self.stop()
            for thread in threads:
                thread.join(_STOP_WAIT)
            raise
        if self.errors:
            raise self.errors[0]
        return dict(self.layers)

    def _pace(self) -> None:
        """Pause aws while the download directory holds the cap, unless nothing would free room: the layer
        thread waits for a file and every hashed layer is pushed. So a layer larger than the cap still goes
        through (alone). With the default cap a layer lands while the one before is pushed: aws's parallel GETs
        reach at most AWS_REQUESTS chunks (48 MiB) past the file, within the WINDOW kept beside two layers. The
        peak is what the storage path held for the pipeline."""
        if self.landed:
            return  # nothing downloaded: nothing to pace (and dest's parent is not ours to measure)
        used = disk_bytes(self.dest.parent)  # the downloads, and the base image and the config beside them
        self.peak = max(self.peak, used)
        child = self.aws
        if child is None:
            return
        stuck = self.waiting and not self.unpushed  # nothing would free room: aws must go on
        if used >= self.cap - PACE_SLACK and not stuck and not self.stopping.is_set():
            if not child.paused:
                log.debug("in flight %s >= %s: the download waits for the push", human(used), human(self.cap))
            child.pause()
        else:
            child.resume()

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
        self.group.stop()
        self.pushes.put(None)

    def _check(self) -> None:
        if self.stopping.is_set():
            raise _Cancelled()

    # ---- download ---------------------------------------------------------------------------------------------

    def _download(self, wanted: list[str]) -> None:
        """aws runs until every wanted file has landed (or been taken); after a transient failure the next run
        asks only for the files still missing, its partial files removed first."""
        everything = self.kind == "prefix" and set(wanted) == set(self.files)
        first = [True]

        def once() -> None:
            self._check()
            missing = [rel for rel in wanted if rel not in self.taken and not (self.dest / rel).exists()]
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
                self._check()
                child = self.group.spawn("aws", [*args, *self.aws_flags], env=self.aws_env)
                self.aws = child
                try:
                    child.wait(PUSH_TIMEOUT)
                finally:
                    self.aws = None
                    self.group.finish(child)

        try:
            if wanted:
                aws.retry_download(f"download from {self.loc.url}", once, self.stopping.wait)
        finally:
            self.downloaded.set()

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

    # ---- layers: hashed as their files land -------------------------------------------------------------------

    def _hash_layers(self, layers: Layers) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="pipeline-hash") as second:
            for group, title in layers:
                for rel in group:
                    self._await(rel)
                parts = modelcar.layer_parts([(rel, self.files[rel]) for rel in group])
                layer = self._hash(parts, title, second)
                planned = modelcar.layer_tar_size([(rel, self.files[rel]) for rel in group])
                if layer.size != planned:
                    raise TransferError(f"layer {title}: {layer.size} bytes, {planned} planned (the source changed "
                                        f"during the sync?)")
                self.taken.update(group)
                with self.lock:
                    self.unpushed += 1
                self.pushes.put(("layer", layer, parts))
        self.pushes.put(None)  # after the last layer: the pusher ends once the queue is drained

    def _await(self, rel: str) -> None:
        """Until rel has landed whole (aws renames a file into place once it is complete)."""
        path = self.dest / rel
        try:
            while True:
                self._check()
                done = self.downloaded.is_set()  # read before the look: a file that lands just after is seen
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    if done:
                        raise TransferError(f"{self.source} is incomplete: {rel} is missing") from None
                    self.waiting = True
                    time.sleep(PACE_SECONDS / 2)
                    continue
                if size != self.files[rel]:
                    raise TransferError(f"{self.source}: {rel} is {size} bytes, {self.files[rel]} listed (the "
                                        f"source changed during the sync?)")
                return
        finally:
            self.waiting = False

    def _hash(self, parts: list[bytes | str], title: str, second: ThreadPoolExecutor) -> modelcar.ModelcarLayer:
        """The layer's digest and size and each file's sha256, in one read of each file (the two hashes on two
        cores: hashlib lets go of the GIL)."""
        layer_sha, size, entries = hashlib.sha256(), 0, []
        buf = memoryview(bytearray(READ_BUF))
        for part in parts:
            if isinstance(part, bytes):
                layer_sha.update(part)
                size += len(part)
                continue
            file_sha, left = hashlib.sha256(), self.files[part]
            with open(self.dest / part, "rb") as f:
                while left > 0:
                    self._check()
                    n = f.readinto(buf[:min(READ_BUF, left)])
                    if not n:
                        raise TransferError(f"{self.source}: {part} shrank while being read")
                    chunk = buf[:n]
                    other = second.submit(file_sha.update, chunk)
                    layer_sha.update(chunk)
                    other.result()
                    left -= n
            size += self.files[part]
            entries.append(FileEntry(part, self.files[part], file_sha.hexdigest()))
        return modelcar.ModelcarLayer(title, "sha256:" + layer_sha.hexdigest(), size, tuple(entries))

    # ---- push -------------------------------------------------------------------------------------------------

    def _push(self) -> None:
        while (job := self.pushes.get()) is not None:
            self._check()
            if job[0] == "blob":  # a base image blob, from its layout
                _, digest, size, path = job
                self._push_blob(digest, path)
            else:
                _, layer, parts = job
                start = time.monotonic()
                if self.client.find_blob(repo_path(self.target), layer.digest) == layer.size:
                    log.debug("layer %s is in the registry already", layer.title)
                else:
                    self._oras(f"push of layer {layer.title}",
                               ["blob", "push", "--no-tty", *self.access.oras_args(), "--size", str(layer.size),
                                f"{self.repo}@{layer.digest}", "-"], feed=parts)
                    log.debug("pushed layer %s (%s) in %.1fs", layer.title, human(layer.size),
                              time.monotonic() - start)
                for part in parts:
                    if isinstance(part, str) and not self.landed:
                        (self.dest / part).unlink()
                with self.lock:
                    self.unpushed -= 1
                self.layers[layer.title] = layer
                size = layer.size
            self.pushed_bytes += size

    def _oras(self, what: str, args: list[str], feed: list[bytes | str] | None = None) -> None:
        """oras through the group, run again after a transient failure (a cut upload, a registry restarting);
        with feed, its stdin gets those parts (bytes, and files of the download directory by sendfile)."""
        def once() -> None:
            self._check()
            if feed is None:
                self.group.run("oras", args, timeout=PUSH_TIMEOUT, stall=STALL_SECONDS)
                return
            child = self.group.spawn("oras", args, stdin=True)
            fed: list[BaseException] = []
            feeder = threading.Thread(target=self._feed, args=(feed, child, fed), name="pipeline-feed", daemon=True)
            feeder.start()
            try:
                child.wait(PUSH_TIMEOUT, STALL_SECONDS)
            finally:
                self.group.finish(child)  # a feeder blocked on a full pipe gets EPIPE and ends
                feeder.join(_STOP_WAIT)
            if fed:
                raise fed[0]
        tools.retry(what, once, oras_transient, self.stopping.wait)

    def _feed(self, parts: list[bytes | str], child: tools.Child, errors: list[BaseException]) -> None:
        assert child.proc.stdin is not None
        fd = child.proc.stdin.fileno()
        try:
            for part in parts:
                if isinstance(part, bytes):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view):]
                    continue
                with open(self.dest / part, "rb") as f:
                    offset, left = 0, self.files[part]
                    while left > 0:
                        sent = os.sendfile(fd, f.fileno(), offset, min(left, 1 << 30))
                        if sent == 0:
                            raise TransferError(f"{self.source}: {part} shrank while being pushed")
                        offset += sent
                        left -= sent
        except BrokenPipeError:
            pass  # oras ended early: its exit status and stderr say why
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                errors.append(exc)
        except BaseException as exc:
            errors.append(exc)
        finally:
            try:
                child.proc.stdin.close()
            except OSError:
                pass

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


def _glob_literal(path: str) -> str:
    """An aws CLI --include pattern (fnmatch) matching exactly path: *, ? and [ each as a one-character class."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)
