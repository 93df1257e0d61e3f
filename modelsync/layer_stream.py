"""A layer blob read as tar members, hashed on the way: what layer_extract.py's TreeWriter applies.

:class:`HashingReader` reads a blob (a file, or a registry download's stdout) and hashes every byte in a thread of
its own, so the blob's digest is known when the last member is read. Uncompressed layers are parsed here directly
(:func:`plain_tar`: each data byte is read once into one buffer; tarfile's stream mode copies it several times);
gzip layers go through tarfile (:func:`tarfile_data`). Either way a member comes with a callable that yields its
data as chunks, each valid until the next is asked for.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal, Protocol

from .errors import TransferError

COPY_BUF = 4 << 20
TarMode = Literal["r|", "r|gz"]
_COMPRESSION: dict[str, TarMode] = {"": "r|", "+gzip": "r|gz"}
Chunk = bytes | memoryview
Chunks = Callable[[], Iterator[Chunk]]



def read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    """n bytes from read, fewer only at the end of the stream (a pipe or a response returns what it has)."""
    parts, left = [], n
    while left > 0 and (data := read(left)):
        parts.append(data)
        left -= len(data)
    return b"".join(parts)

class Stream(Protocol):
    """What a blob is read from: a file opened "rb", a child's stdout, io.BytesIO (all io.BufferedIOBase)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class TarReader(Protocol):
    """What plain_tar reads by: HashingReader, or any stream that hands out exact reads and data reads (the
    returned future, if any, is waited for before the view is read into again)."""

    def read_exact(self, n: int) -> bytes: ...

    def readinto_hashed(self, view: memoryview) -> tuple[int, Future[None] | None]: ...


class HashingReader:
    """Reads through fp, hashing what passes in a thread of its own (hashlib lets go of the GIL), so the blob's
    hash and the files' run on two cores. `digest()` waits for the last update."""

    def __init__(self, fp: Stream):
        self._fp = fp
        self._sha = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="layer-hash")
        self._last: Future[None] | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._fp.read(n)
        if self._last is not None:
            self._last.result()  # in order, one update at a time
        self._last = self._hasher.submit(self._sha.update, data)
        return data

    def read_exact(self, n: int) -> bytes:
        return read_exact(self.read, n)

    def readinto_hashed(self, view: memoryview) -> tuple[int, Future[None] | None]:
        """Up to len(view) bytes read into view; their hash is under way in the returned future, which must be
        waited for before view is written again."""
        if self._last is not None:
            self._last.result()  # the bytes hashed before them, and view free to be written
        n = self._fp.readinto(view)
        if not n:
            return 0, None
        self._last = self._hasher.submit(self._sha.update, view[:n])
        return n, self._last

    def digest(self) -> str:
        if self._last is not None:
            self._last.result()
        self._hasher.shutdown()
        return "sha256:" + self._sha.hexdigest()


def tar_mode(media_type: str) -> TarMode:
    """tarfile stream mode for a layer media type; zstd (not in Python 3.11's stdlib) and others are refused."""
    for suffix, mode in _COMPRESSION.items():
        if media_type.endswith("tar" + suffix):
            return mode
    raise TransferError(f"layer type {media_type} is not supported (only uncompressed or gzip tar layers)")


def tarfile_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Chunks:
    """A member's data as tarfile reads it."""
    def chunks() -> Iterator[Chunk]:
        src = tar.extractfile(member)
        assert src is not None
        while chunk := src.read(COPY_BUF):
            yield chunk
    return chunks


_SPARSE = (tarfile.GNUTYPE_SPARSE,)


def plain_tar(reader: TarReader) -> Iterator[tuple[tarfile.TarInfo, Chunks]]:
    """The members of an uncompressed tar stream, each with its data as chunks read straight into one buffer
    (tarfile's stream mode copies every byte several times on the way). Headers are parsed by tarfile itself
    (TarInfo.frombuf: checksums, base-256 sizes); GNU long names and links and pax path, linkpath and size
    records are applied to the next member as tarfile applies them; sparse files are refused. Data a member's
    consumer does not read is skipped; the end blocks and whatever follows are left to the caller."""
    buf = memoryview(bytearray(COPY_BUF))
    long_name = long_link = None
    pax: dict[str, str] = {}
    while True:
        block = reader.read_exact(tarfile.BLOCKSIZE)
        if not block:
            return
        if len(block) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError("unexpected end of data")
        if block == bytes(tarfile.BLOCKSIZE):
            return  # end of archive
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(str(exc)) from None
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE):
            payload = _payload(reader, info.size)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = _nul_terminated(payload)
            elif info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = _nul_terminated(payload)
            elif info.type != tarfile.XGLTYPE:  # global pax headers set nothing a layer entry uses
                pax.update(_pax_records(payload))
            continue
        if info.type in _SPARSE or any(key.startswith("GNU.sparse") for key in pax):
            raise TransferError(f"layer entry {info.name!r}: sparse files are not supported")
        info.name = pax.get("path", long_name or info.name)
        info.linkname = pax.get("linkpath", long_link or info.linkname)
        if "size" in pax:
            info.size = int(pax["size"])
        long_name = long_link = None
        pax = {}
        size = info.size if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES else 0
        left = [size]

        def chunks(left: list[int] = left) -> Iterator[Chunk]:
            while left[0] > 0:
                n, hashed = reader.readinto_hashed(buf[:min(len(buf), left[0])])
                if not n:
                    raise tarfile.ReadError("unexpected end of data")
                left[0] -= n
                yield buf[:n]
                if hashed is not None:
                    hashed.result()  # buf is read into again next
        yield info, chunks
        for _ in chunks():  # what the consumer left unread
            pass
        if size % tarfile.BLOCKSIZE:
            if len(reader.read_exact(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)) < tarfile.BLOCKSIZE - \
                    size % tarfile.BLOCKSIZE:
                raise tarfile.ReadError("unexpected end of data")


def _payload(reader: TarReader, size: int) -> bytes:
    """A long name's or pax header's data, with its padding read past."""
    if size > 1 << 20:
        raise tarfile.ReadError("a tar extended header over 1 MiB")
    data = reader.read_exact(size + (-size % tarfile.BLOCKSIZE))
    if len(data) < size + (-size % tarfile.BLOCKSIZE):
        raise tarfile.ReadError("unexpected end of data")
    return data[:size]


def _pax_records(data: bytes) -> dict[str, str]:
    """`LENGTH KEY=VALUE\n` records (POSIX pax) as a dict, values decoded as UTF-8."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.ReadError("invalid pax header") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise tarfile.ReadError("invalid pax header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _nul_terminated(data: bytes) -> str:
    """A GNU long name or link: the text up to its first NUL (what tarfile's own nts() reads)."""
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
