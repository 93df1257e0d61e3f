"""The engine that pushes a modelcar's layers with oras straight from the model's files: each layer hashed as its
files are there, then fed to `oras blob push --size N repo@digest -` (tar header, the file's bytes by sendfile,
padding).

Contract: LayerPusher.go(layers, base_blobs) hashes the planned layers in plan order and pushes them (and the base
image's blobs the registry lacks) on two threads, the main thread supervising; it returns the layers made, by
title. The files are either there already (landed: nothing downloaded, nothing deleted) or brought by a Download
(s3_download.py) running on a third thread: a file is checked (check_file: the job's pickle scan) and hashed
once it has landed whole, and deleted once its layer is pushed; the Download reads the pusher's state (taken,
stuck()) to pace itself. Any error (or SIGTERM, raised in the main thread) stops every child tool of the Group
and all threads; the caller removes the job directory.
push_blob() and oras() (retried after a transient failure, stopped with the rest) then serve the rest of the
image: modelcar_push.py pushes the signature layer, config and manifest through them.

Why this shape (bench/PIPELINE-STUDY.md, 2 cores): the layer tar is never written: its header and padding go
straight into oras's stdin around the file's bytes, so a file is read twice from the page cache (hash, push) and
never copied. The file's and the layer's sha256 are taken in one read, on two cores (hashlib lets go of the
GIL). oras is given the digest (`repo@digest`) so it does not hash again. The bytes are those modelcar_layers
writes of the same files (layer_parts), so the manifest digest is the one of build_modelcar + push_layout.
With raw (a ModelPack artifact, modelpack.py) a layer is one file as it is: its sha256 is the layer digest,
taken in one read (none when the fetch took it already), and oras is fed the file alone.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import tools
from .clients.distribution import RegistryClient
from .errors import TransferError
from .files import human
from .locations import FileEntry, OciLocation
from .modelcar_layers import ModelcarLayer, layer_parts, layer_tar_size
from .oci_access import RegistryAccess
from .oci_copy import PUSH_TIMEOUT, oras_transient, repo_path
from .oci_layout import Layout
from .progress import watch

log = logging.getLogger("modelsync.layer_push")

PACE_SECONDS = 0.01                       # how often the main thread looks (and a Download paces)
READ_BUF = 4 << 20                        # the hashing read
STOP_WAIT = 30.0
STALL_SECONDS = 30.0                      # an oras run reading and writing nothing this long is stopped (no timeout
                                          # of its own: a registry gone silent would hold it for PUSH_TIMEOUT)

Layers = list[tuple[tuple[str, ...], str]]  # (files of a layer, its title), in plan order
Part = bytes | str                          # literal tar bytes, or a file's relative path standing for its bytes


class Cancelled(Exception):
    """This thread stops because another part failed (that part's error is the one reported)."""


class Supervised(Protocol):
    """What guarded needs of a pipeline whose threads it runs: a LayerPusher, s3_s3_pipeline's relay."""

    stopping: threading.Event
    errors: list[BaseException]

    def stop(self) -> None: ...


def guarded(owner: Supervised, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    """A thread's body: fn(*args); its first error (unless the pipeline is already stopping) kept in owner.errors
    for the main thread to raise, and the whole pipeline stopped; Cancelled ends it quietly."""
    def body() -> None:
        try:
            fn(*args)
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 -- the first error is raised by go(), in the main thread
            if not owner.stopping.is_set():
                owner.errors.append(exc)
            owner.stop()
    return body


class Download(Protocol):
    """Files brought onto disk while the pusher hashes and pushes them (s3_download.S3Download)."""

    dest: Path      # where each file lands, at its relative path, whole once it has its listed size
    source: str     # what it is, for errors ("the download from s3://...")
    peak: int       # the most bytes its directory held

    def run(self, pusher: LayerPusher, wanted: list[str]) -> None:
        """Until every wanted file has landed or been taken (pusher.taken); its own thread."""

    def pace(self, pusher: LayerPusher) -> None:
        """From the main thread every PACE_SECONDS."""


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    path: Path                     # a base image blob, in its layout


@dataclass(frozen=True)
class _Layer:
    layer: ModelcarLayer
    parts: list[Part]


class LayerPusher:
    """One push's state: the layer and push threads (and a Download's), their children, what is in flight."""

    def __init__(self, files: dict[str, int], target: OciLocation, access: RegistryAccess, client: RegistryClient,
                 job_dir: Path, *, landed: Path | None = None, download: Download | None = None,
                 on_pushed: Callable[[ModelcarLayer], None] | None = None, hashes: Mapping[str, str] | None = None,
                 check_file: Callable[[str, Path], None] | None = None, raw: bool = False):
        self.files, self.target, self.access, self.client = files, target, access, client
        self.raw = raw  # ModelPack: each layer is one file as it is (no tar), its digest the file's sha256
        self.on_pushed = on_pushed  # called (push thread) once a model layer's blob is in the repository
        self.hashes = dict(hashes or {})  # files' sha256 known already (taken as a fetch wrote them): not taken again
        self.check_file = check_file  # each file once it has landed, before its layer is hashed (job's pickle scan)
        self.layout = Layout(job_dir / "image")  # config, manifest, the signature layer (model layers never)
        self.layout.init()
        self.download = download
        if download is not None:
            self.dest, self.source = download.dest, download.source
        elif landed is not None:  # the files are there already: nothing to download, nothing to delete
            self.dest, self.source = landed, str(landed)
        else:
            raise ValueError("LayerPusher: the files are landed or downloaded")
        self.repo = target.repository
        self.group = tools.Group()
        self.pushes: queue.Queue[_Blob | _Layer | None] = queue.Queue()
        self.layers: dict[str, ModelcarLayer] = {}
        self.taken: set[str] = set()       # files hashed into a layer (deleted once it is pushed)
        self.pushed_bytes = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.downloaded = threading.Event()  # no download will run any more (done, failed, or none)
        self.waiting = False                 # the layer thread waits for a file not yet landed
        self.unpushed = 0                    # hashed layers whose files are still on disk
        if download is None:
            self.downloaded.set()

    # ---- supervision ------------------------------------------------------------------------------------------

    def go(self, layers: Layers, base_blobs: list[tuple[str, int, Path]]) -> dict[str, ModelcarLayer]:
        """Run the threads to the end; the layers made, by title. Any error stops everything."""
        for digest, size, path in base_blobs:
            self.pushes.put(_Blob(digest, size, path))
        wanted = [rel for group, _ in layers for rel in group]
        threads = [threading.Thread(target=guarded(self, self._hash_layers, layers), name="pipeline-layers",
                                    daemon=True),
                   threading.Thread(target=guarded(self, self._push), name="pipeline-push", daemon=True)]
        if self.download is not None:
            threads.append(threading.Thread(target=guarded(self, self._download, wanted), name="pipeline-download",
                                            daemon=True))
        total = sum(self.layer_size(group) for group, _ in layers) \
            + sum(size for _, size, _ in base_blobs)
        try:
            label = f"push {self.repo}:{self.target.tag or 'latest'}" if self.download is None else "download + push"
            with watch(label, total, lambda: self.pushed_bytes):
                for thread in threads:
                    thread.start()
                while any(thread.is_alive() for thread in threads):
                    if self.download is not None:
                        self.download.pace(self)
                    time.sleep(PACE_SECONDS)  # the main thread stays responsive to SIGTERM (job.Interrupted)
        except BaseException:
            self.stop()
            for thread in threads:
                thread.join(STOP_WAIT)
            raise
        if self.errors:
            raise self.errors[0]
        return dict(self.layers)

    def stuck(self) -> bool:
        """Nothing would free room: the layer thread waits for a file and every hashed layer is pushed (a paused
        download must go on)."""
        return self.waiting and not self.unpushed

    def stop(self) -> None:
        """From any thread: no new work, every child tool ended, waiting threads woken."""
        self.stopping.set()
        self.group.stop()
        self.pushes.put(None)

    def check(self) -> None:
        """Raise Cancelled once the push is stopping."""
        if self.stopping.is_set():
            raise Cancelled()

    def _download(self, wanted: list[str]) -> None:
        try:
            if wanted and self.download is not None:
                self.download.run(self, wanted)
        finally:
            self.downloaded.set()

    # ---- layers: hashed as their files are there --------------------------------------------------------------

    def _hash_layers(self, layers: Layers) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="pipeline-hash") as second:
            for group, title in layers:
                for rel in group:
                    self._await(rel)
                    if self.check_file is not None:  # raises to stop the push: nothing of this layer goes up
                        self.check_file(rel, self.dest / rel)
                parts: list[Part] = list(group) if self.raw else layer_parts([(rel, self.files[rel]) for rel in group])
                layer = self._hash(parts, title, second)
                planned = self.layer_size(group)
                if layer.size != planned:
                    raise TransferError(f"layer {title}: {layer.size} bytes, {planned} planned (the source changed "
                                        f"during the sync?)")
                self.taken.update(group)
                with self.lock:
                    self.unpushed += 1
                self.pushes.put(_Layer(layer, parts))
        self.pushes.put(None)  # after the last layer: the pusher ends once the queue is drained

    def layer_size(self, group: tuple[str, ...]) -> int:
        """Bytes of the layer of group: its tar, or (raw) the one file."""
        if self.raw:
            return sum(self.files[rel] for rel in group)
        return layer_tar_size([(rel, self.files[rel]) for rel in group])

    def _await(self, rel: str) -> None:
        """Until rel has landed whole (a Download moves a file into place once it is complete)."""
        path = self.dest / rel
        try:
            while True:
                self.check()
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

    def _hash(self, parts: list[Part], title: str, second: ThreadPoolExecutor) -> ModelcarLayer:
        """The layer's digest and size and each file's sha256, in one read of each file (the two hashes on two
        cores: hashlib lets go of the GIL); a file whose sha256 is known (self.hashes) is hashed for the layer
        only."""
        if self.raw:
            return self._hash_raw(str(parts[0]), title)
        layer_sha, size, entries = hashlib.sha256(), 0, []
        buf = memoryview(bytearray(READ_BUF))
        for part in parts:
            if isinstance(part, bytes):
                layer_sha.update(part)
                size += len(part)
                continue
            known = self.hashes.get(part)
            file_sha, left = (None if known else hashlib.sha256()), self.files[part]
            with open(self.dest / part, "rb") as f:
                while left > 0:
                    self.check()
                    n = f.readinto(buf[:min(READ_BUF, left)])
                    if not n:
                        raise TransferError(f"{self.source}: {part} shrank while being read")
                    chunk = buf[:n]
                    other = second.submit(file_sha.update, chunk) if file_sha is not None else None
                    layer_sha.update(chunk)
                    if other is not None:
                        other.result()
                    left -= n
            size += self.files[part]
            digest = file_sha.hexdigest() if file_sha is not None else str(known)
            entries.append(FileEntry(part, self.files[part], digest))
        return ModelcarLayer(title, "sha256:" + layer_sha.hexdigest(), size, tuple(entries))

    def _hash_raw(self, rel: str, title: str) -> ModelcarLayer:
        """A raw layer: the file's sha256 is the layer's digest, so it is taken once, and not at all when the
        fetch that wrote the file took it (self.hashes)."""
        known = self.hashes.get(rel)
        if known is None:
            file_sha, left = hashlib.sha256(), self.files[rel]
            buf = memoryview(bytearray(READ_BUF))
            with open(self.dest / rel, "rb") as f:
                while left > 0:
                    self.check()
                    n = f.readinto(buf[:min(READ_BUF, left)])
                    if not n:
                        raise TransferError(f"{self.source}: {rel} shrank while being read")
                    file_sha.update(buf[:n])
                    left -= n
            known = file_sha.hexdigest()
        size = self.files[rel]
        return ModelcarLayer(title, "sha256:" + known, size, (FileEntry(rel, size, known),))

    # ---- push -------------------------------------------------------------------------------------------------

    def _push(self) -> None:
        while (job := self.pushes.get()) is not None:
            self.check()
            if isinstance(job, _Blob):  # a base image blob, from its layout
                self.push_blob(job.digest, job.path)
                size = job.size
            else:
                layer, parts = job.layer, job.parts
                start = time.monotonic()
                if self.client.find_blob(repo_path(self.target), layer.digest) == layer.size:
                    log.debug("layer %s is in the registry already", layer.title)
                else:
                    self.oras(f"push of layer {layer.title}",
                               ["blob", "push", "--no-tty", *self.access.oras_args(), "--size", str(layer.size),
                                f"{self.repo}@{layer.digest}", "-"], feed=parts)
                    log.debug("pushed layer %s (%s) in %.1fs", layer.title, human(layer.size),
                              time.monotonic() - start)
                for part in parts:
                    if isinstance(part, str) and self.download is not None:
                        (self.dest / part).unlink()
                with self.lock:
                    self.unpushed -= 1
                self.layers[layer.title] = layer
                if self.on_pushed is not None:
                    self.on_pushed(layer)
                size = layer.size
            self.pushed_bytes += size

    def oras(self, what: str, args: list[str], feed: list[Part] | None = None) -> None:
        """oras through the group, run again after a transient failure (a cut upload, a registry restarting);
        with feed, its stdin gets those parts (bytes, and files of dest by sendfile)."""
        def once() -> None:
            self.check()
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
                feeder.join(STOP_WAIT)
            if fed:
                raise fed[0]
        tools.retry(what, once, oras_transient, self.stopping.wait)

    def _feed(self, parts: list[Part], child: tools.Child, errors: list[BaseException]) -> None:
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
        except BaseException as exc:  # noqa: BLE001 -- handed to the oras run, which raises it
            errors.append(exc)
        finally:
            try:
                child.proc.stdin.close()
            except OSError:
                pass

    def push_blob(self, digest: str, path: Path) -> None:
        start = time.monotonic()
        self.oras(f"push of blob {digest[:19]}", ["blob", "push", "--no-tty", *self.access.oras_args(),
                                                   f"{self.repo}@{digest}", str(path)])
        log.debug("pushed blob %s in %.1fs", digest[:19], time.monotonic() - start)
