"""A registry blob read by this process in parallel ranged GETs, handed out as one stream (layer_stream.Stream):
how the oras backend reads an OCI source's layers into the extraction (sources/oci.stream_oci), for the OCI -> S3
pipeline and for fetch-then-publish alike.

Why not `oras blob fetch` (one stream per blob): through an 800 Mbit/s link one 512 MiB fetch took 5.6 s alone
but 12.4 s while an aws upload ran the other way, as it does in the OCI -> S3 pipeline (the upload's data queued
ahead of the fetch's ACKs); four ranged GETs took 5.7 s beside the same upload, for 0.6 CPU-s
(bench/PIPELINE-STUDY.md).

How: the first range's answer says whether the registry serves ranges (206, its Content-Range naming the size the
manifest gave). If it does, PART-sized ranges are fetched by STREAMS threads, never more than AHEAD parts held,
the reader's included (memory: AHEAD x PART), each one asked again from the byte it reached when cut
(retry.RANGES: a flapping link or a registry restarting is ridden out, one that cuts every connection fails the
read in bounded time). If it does not (200, the whole blob), that answer is read as one stream, and a cut raises
Transient for the caller to read the layer again. Nothing is checked here but sizes: the extraction hashes the
stream against the digest.
"""

from __future__ import annotations

import http.client
import logging
import queue
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .clients.distribution import RegistryClient
from .errors import TransferError
from .retry import RANGES, Transient
from .secret import mask

log = logging.getLogger("modelsync.blob_read")

STREAMS = 4                 # GETs at a time per blob
PART = 8 << 20              # bytes per ranged GET
AHEAD = STREAMS + 1         # parts fetched or held, the reader's included: the memory bound (the reader, writing
                            # to disk, is never the slower: one part done ahead is enough)
CHUNK = 1 << 20             # what one read of a response asks for
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_SPARE: list[bytearray] = []  # PART-sized buffers read out, for the next parts (of this blob or the next one):
_SPARE_LOCK = threading.Lock()  # allocating 8 MiB per part took the job's RSS from 199 to 283 MiB in make bench


class _Stopped(Exception):
    """The reader was closed: a GET thread drops its part."""


@dataclass
class _Part:
    index: int
    start: int
    size: int
    buf: bytearray | None = None
    got: int = 0
    done: bool = False
    error: BaseException | None = None


class BlobReader:
    """The blob's bytes in order, read(n)/readinto(view) as a file's, fetched ahead in ranges (a context manager:
    leaving it stops the GETs). `position`: the bytes handed out so far."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int):
        self.client, self.repo, self.digest, self.size = client, repo, digest, size
        self.what = f"{client.location.registry}/{repo}@{digest[:19]}"
        self.position = 0
        self._single: Any = None                # the whole blob's answer, from a registry that ignores Range
        self._parts: dict[int, _Part] = {}
        self._count = -(-size // PART)
        self._next = 0                          # the next part to ask for
        self._offset = 0                        # in the reader's current part
        self._cond = threading.Condition()
        self._work: queue.Queue[tuple[_Part, Any] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> BlobReader:
        if self.size == 0:
            return self
        first = min(PART, self.size)
        resp = self.client.open_blob(self.repo, self.digest, 0, first - 1)
        if resp.status == 200:
            log.debug("%s: the registry ignores Range, the blob is read as one stream", self.what)
            self._single = resp
            return self
        self._check_range(resp, 0, first)
        for _ in range(min(STREAMS, self._count)):
            thread = threading.Thread(target=self._worker, name="blob-get", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._ask(resp)
        while self._next < min(AHEAD, self._count):
            self._ask()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._work.put(None)
        if self._single is not None:
            self._single.close()
        self._parts.clear()

    # ---- the reader --------------------------------------------------------------------------------------------

    def readinto(self, view: memoryview) -> int:
        if self._single is not None:
            return self._read_single(view)
        index = self.position // PART if self.position < self.size else None
        if index is None or not len(view):
            return 0
        part = self._wait(index)
        assert part.buf is not None
        n = min(len(view), part.size - self._offset)
        view[:n] = memoryview(part.buf)[self._offset:self._offset + n]
        self._offset += n
        self.position += n
        if self._offset == part.size:  # done with it: its buffer goes to the next part asked for
            del self._parts[index]
            _give_back(part.buf)
            part.buf = None
            self._offset = 0
            if self._next < self._count:
                self._ask()
        return n

    def read(self, size: int = -1, /) -> bytes:
        left = self.size - self.position if self._single is None else max(self.size - self.position, 1)
        want = left if size is None or size < 0 else min(size, left)
        if want <= 0:
            return b""
        buf = bytearray(want)
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def _wait(self, index: int) -> _Part:
        part = self._parts[index]
        with self._cond:
            while not part.done:
                self._cond.wait(0.2)  # the main thread still sees a signal (a SIGTERM stops the job)
        if part.error is not None:
            raise part.error
        return part

    def _read_single(self, view: memoryview) -> int:
        try:
            n = self._single.readinto(view)
        except (OSError, http.client.HTTPException) as err:
            raise Transient(f"{self.what}: read cut at byte {self.position}: {mask(str(err))}") from None
        if not n and self.position < self.size:
            raise Transient(f"{self.what}: read cut at byte {self.position} of {self.size}")
        self.position += n or 0
        return n or 0

    def _check_range(self, resp: Any, start: int, size: int) -> None:
        found = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
        if resp.status != 206 or found is None or int(found[1]) != start or int(found[2]) != start + size - 1:
            resp.close()
            raise TransferError(f"{self.what}: the registry answered bytes {start}-{start + size - 1} with "
                                f"{resp.status} {resp.headers.get('Content-Range') or '(no Content-Range)'}")
        if found[3] != "*" and int(found[3]) != self.size:
            resp.close()
            raise TransferError(f"{self.what}: the registry holds {found[3]} bytes, the manifest says {self.size}")

    # ---- the GET threads ---------------------------------------------------------------------------------------

    def _ask(self, resp: Any = None) -> None:
        start = self._next * PART
        part = _Part(self._next, start, min(PART, self.size - start), _take())
        self._parts[part.index] = part
        self._next += 1
        self._work.put((part, resp))

    def _worker(self) -> None:
        while (item := self._work.get()) is not None and not self._stopping.is_set():
            part, resp = item
            try:
                self._fetch(part, resp)
            except BaseException as exc:  # handed to the reader, raised when it reaches this part
                part.error = exc
            with self._cond:
                part.done = True
                self._cond.notify_all()

    def _fetch(self, part: _Part, resp: Any) -> None:
        assert part.buf is not None
        view = memoryview(part.buf)
        end = part.start + part.size - 1
        where = f"{self.what} bytes {part.start}-{end}"

        def once() -> None:
            nonlocal resp
            if self._stopping.is_set():
                raise _Stopped()
            if resp is None:
                resp = self.client.open_blob(self.repo, self.digest, part.start + part.got, end)
                self._check_range(resp, part.start + part.got, part.size - part.got)
            try:
                while part.got < part.size:
                    if self._stopping.is_set():
                        raise _Stopped()
                    n = resp.readinto(view[part.got:min(part.size, part.got + CHUNK)])
                    if not n:
                        raise Transient(f"cut at byte {part.start + part.got}")
                    part.got += n
            except (OSError, http.client.HTTPException) as err:
                raise Transient(f"cut at byte {part.start + part.got}: {mask(str(err))}") from None
            finally:
                resp.close()
                resp = None

        RANGES.call(f"read of {where}", once, wait=self._stopping.wait, logger=log,
                    give_up=lambda exc, tries: TransferError(f"read of {where} failed after {tries} tries: {exc}"))


def _take() -> bytearray:
    with _SPARE_LOCK:
        while _SPARE:
            if len(buf := _SPARE.pop()) == PART:
                return buf
    return bytearray(PART)


def _give_back(buf: bytearray | None) -> None:
    if buf is not None and len(buf) == PART:
        with _SPARE_LOCK:
            if len(_SPARE) < AHEAD:
                _SPARE.append(buf)
