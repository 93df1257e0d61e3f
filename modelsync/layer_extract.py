"""Apply image layers to a directory safely: only one subtree (`models/`), nothing escapes it.

Refused (TransferError, the whole fetch fails): absolute member names, `..` anywhere, links whose target leaves
the subtree, writing through a symlink, device files and FIFOs. Entries outside the subtree (the base image's
/bin, /etc, ...) are skipped unread. Modes are not taken from the image: dirs 0755, files 0644.

Whiteouts (image-spec layer.md) act on lower layers only, applied in one streaming pass: `.wh.NAME` deletes NAME,
`.wh..wh..opq` empties its directory, in both cases sparing what the current layer itself wrote. Each blob is
hashed as it is read and must match its descriptor's digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from .beneath import Beneath, LinkRefused
from .errors import TransferError
from .files import SpaceBudget, is_no_space, safe_relative
from .locations import FileEntry

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_COPY_BUF = 4 << 20
_COMPRESSION = {"": "r|", "+gzip": "r|gz"}


class _HashingReader:
    """Reads through fp, hashing what passes in a thread of its own (hashlib lets go of the GIL), so the blob's
    hash and the files' run on two cores. `digest()` waits for the last update."""

    def __init__(self, fp: BinaryIO):
        self._fp = fp
        self._sha = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="layer-hash")
        self._last: Future | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._fp.read(n)
        if self._last is not None:
            self._last.result()  # in order, one update at a time
        self._last = self._hasher.submit(self._sha.update, data)
        return data

    def read_exact(self, n: int) -> bytes:
        """n bytes, fewer only at the end of the stream (a pipe returns what it has)."""
        parts, left = [], n
        while left > 0 and (data := self.read(left)):
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def readinto_hashed(self, view: memoryview) -> tuple[int, Future | None]:
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


def tar_mode(media_type: str) -> str:
    """tarfile stream mode for a layer media type; zstd (not in Python 3.11's stdlib) and others are refused."""
    for suffix, mode in _COMPRESSION.items():
        if media_type.endswith("tar" + suffix):
            return mode
    raise TransferError(f"layer type {media_type} is not supported (only uncompressed or gzip tar layers)")


class TreeWriter:
    """Applies layers in order to dest; `subtree` ('models') is stripped, entries outside it are ignored.

    subtree None keeps every entry's full path (an ORAS directory archive extracted under dest).
    """

    def __init__(self, dest: Path, subtree: str | None):
        self.dest = dest
        self.subtree = subtree
        self.files: dict[str, FileEntry] = {}   # regular files (and hard links) written, by relative path
        self.links: dict[str, str] = {}         # symlink path -> normalized relative target
        self._this_layer: set[str] = set()
        self.tree = Beneath(dest, "the image's layers", create=True, hint="the image is refused")
        self._space = SpaceBudget(dest, "unpacking the layers")

    # ---- driving -----------------------------------------------------------------------------------------

    def apply(self, blob: Path | BinaryIO, media_type: str, digest: str) -> None:
        """Apply one layer, read from a blob file or a stream (a registry download's stdout)."""
        if isinstance(blob, Path):
            with open(blob, "rb") as raw:
                self.apply(raw, media_type, digest)
            return
        self._this_layer = set()
        self._space = SpaceBudget(self.dest, "unpacking the layers")  # bytes written vs. the space free now
        reader = _HashingReader(blob)
        mode = tar_mode(media_type)
        try:
            if mode == "r|":  # uncompressed: read directly, each byte copied once
                for member, data in _plain_tar(reader):
                    self._entry(member, data)
            else:
                with tarfile.open(fileobj=reader, mode=mode, bufsize=_COPY_BUF) as tar:
                    for member in tar:
                        self._entry(member, _tarfile_data(tar, member))
            while reader.read(_COPY_BUF):  # the tar's trailing padding is part of the digest
                pass
        except (tarfile.TarError, EOFError, OSError) as exc:
            if is_no_space(exc):
                raise self._space.error(exc) from None
            raise TransferError(f"layer {digest[:19]} is not a readable tar: {exc}") from None
        finally:
            found = reader.digest()
        if found != digest:
            raise TransferError(f"layer {digest[:19]} does not match its digest")

    def entries(self) -> list[FileEntry]:
        """Every file now in the tree: regular files, and symlinks as the file they lead to."""
        out = dict(self.files)
        for path in self.links:
            target = self._follow(path)
            if target in self.files:
                out[path] = FileEntry(path, self.files[target].size, self.files[target].sha256)
        return sorted(out.values(), key=lambda e: e.path)

    # ---- one member --------------------------------------------------------------------------------------

    def _entry(self, member: tarfile.TarInfo, data: Callable[[], Iterator[Chunk]]) -> None:
        rel = self.relative(member.name)
        if rel is None:
            return
        if rel == "":
            return  # the subtree root itself
        parent, base = posixpath.split(rel)
        if base == OPAQUE:
            self._clear(parent)
            return
        if base.startswith(WHITEOUT):
            self._remove(posixpath.join(parent, base[len(WHITEOUT):]))
            return
        there = self.prepare(rel, directory=member.isdir())
        self._this_layer.add(rel)
        if member.isdir():
            if not there:
                with self.tree.directory(rel, create=True):
                    pass
        elif member.isreg():
            self._write(data, member, rel)
        elif member.issym():
            self._symlink(rel, member.linkname)
        elif member.islnk():
            self._hardlink(rel, member.linkname)
        else:
            raise TransferError(f"layer entry {member.name!r}: device files, FIFOs and other special files "
                                f"are refused")

    def relative(self, name: str) -> str | None:
        """The entry's path relative to dest, None when outside the subtree; refuses unsafe names (files.py)."""
        if name.strip("/.") == "":
            return ""  # the archive's own root, "./"
        parts = safe_relative(name, "layer entry").split("/")
        if self.subtree is not None:
            if not parts or parts[0] != self.subtree:
                return None
            parts = parts[1:]
        return "/".join(parts)

    def prepare(self, rel: str, directory: bool = False) -> bool:
        """dest/rel ready for an entry: its parents real directories (a lower layer's file in the way goes; a link
        is refused: nothing is written through one) and whatever a lower layer left at rel gone, but a directory
        when the entry is one too. True when that directory is there."""
        head = rel.rpartition("/")[0]
        if head:
            try:
                with self.tree.directory(head, create=True):  # one walk down, the usual case
                    pass
            except LinkRefused as exc:
                if exc.is_link:
                    raise TransferError(f"layer entry {rel!r} would be written through a symlink: refused") from None
                self._clear_way(rel, head)
        st = self._lstat(rel, rel)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            if directory:
                return True
            self._rmtree(rel)
        elif stat.S_ISLNK(st.st_mode):
            self.tree.remove_link(rel)
        else:
            self.tree.unlink(rel)
        self._forget(rel)
        return False

    def _clear_way(self, rel: str, head: str) -> None:
        """A lower layer's file where rel needs a directory: removed, component by component, then the
        directories made."""
        parts = head.split("/")
        for i in range(1, len(parts) + 1):
            way = "/".join(parts[:i])
            st = self._lstat(rel, way)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise TransferError(f"layer entry {rel!r} would be written through a symlink: refused")
            if st is not None and not stat.S_ISDIR(st.st_mode):
                self.tree.unlink(way)
                self._forget(way)
        with self.tree.directory(head, create=True):
            pass

    def _lstat(self, rel: str, path: str) -> os.stat_result | None:
        try:
            return self.tree.lstat(path)
        except LinkRefused:
            raise TransferError(f"layer entry {rel!r} would be written through a symlink: refused") from None

    def _is_dir(self, rel: str) -> bool:
        st = self.tree.lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def _rmtree(self, rel: str) -> None:
        with self.tree.parent(rel) as (fd, name):
            shutil.rmtree(name, dir_fd=fd)

    def _write(self, data: Callable[[], Iterator[Chunk]], member: tarfile.TarInfo, rel: str) -> None:
        sha = hashlib.sha256()
        fd = self.tree.create(rel)
        try:
            with os.fdopen(fd, "wb") as out, ThreadPoolExecutor(1, thread_name_prefix="file-hash") as hasher:
                for chunk in data():  # each chunk valid until the next is asked for
                    hashed = hasher.submit(sha.update, chunk)  # hashed while this thread writes (GIL let go)
                    self._space.add(len(chunk))
                    out.write(chunk)
                    hashed.result()
        except BaseException:
            self.tree.unlink(rel)  # no half-written file
            raise
        self.files[rel] = FileEntry(rel, member.size, sha.hexdigest())

    def _symlink(self, rel: str, linkname: str) -> None:
        if linkname.startswith("/"):
            # absolute targets name the image's filesystem: /models/x is fine, anything else leaves the tree
            resolved = self.relative(linkname.lstrip("/")) if self.subtree else None
        else:
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), linkname))
            resolved = None if joined == ".." or joined.startswith("../") else joined
        if not resolved:  # None: outside; "": the tree root itself, which no model file needs
            raise TransferError(f"layer entry {rel!r}: symlink to {linkname!r} points outside the tree: refused")
        self.tree.symlink(rel, posixpath.relpath(resolved, posixpath.dirname(rel) or "."))
        self.links[rel] = resolved

    def _hardlink(self, rel: str, linkname: str) -> None:
        source = self.relative(linkname)
        if not source or source not in self.files:
            raise TransferError(f"layer entry {rel!r}: hard link to {linkname!r} outside the tree or to no file")
        self._space.add(self.files[source].size)
        # a copy: a later write to one must not change the other
        with os.fdopen(self.tree.open_read(source), "rb") as src, os.fdopen(self.tree.create(rel), "wb") as out:
            shutil.copyfileobj(src, out, _COPY_BUF)
        self.files[rel] = FileEntry(rel, self.files[source].size, self.files[source].sha256)

    # ---- whiteouts -------------------------------------------------------------------------------------------

    def _remove(self, rel: str) -> None:
        if rel in self._this_layer:
            return
        st = self.tree.lstat(rel)
        if st is not None and stat.S_ISLNK(st.st_mode):
            self.tree.remove_link(rel)
        elif st is not None and stat.S_ISDIR(st.st_mode):
            self._rmtree(rel)
        elif st is not None:
            self.tree.unlink(rel)
        self._forget(rel)

    def _clear(self, rel: str) -> None:
        if rel and not self._is_dir(rel):
            return
        with self.tree.directory(rel) as fd:
            children = os.listdir(fd)
        for child in children:
            self._remove(posixpath.join(rel, child) if rel else child)

    def _forget(self, rel: str) -> None:
        for table in (self.files, self.links):
            for key in [k for k in table if k == rel or k.startswith(rel + "/")]:
                del table[key]

    def _follow(self, rel: str, depth: int = 0) -> str:
        target = self.links.get(rel)
        return rel if target is None or depth > 16 else self._follow(target, depth + 1)


Chunk = bytes | memoryview


def _tarfile_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], Iterator[Chunk]]:
    def chunks() -> Iterator[Chunk]:
        src = tar.extractfile(member)
        assert src is not None
        while chunk := src.read(_COPY_BUF):
            yield chunk
    return chunks


_SPARSE = (tarfile.GNUTYPE_SPARSE,)


def _plain_tar(reader: _HashingReader) -> Iterator[tuple[tarfile.TarInfo, Callable[[], Iterator[Chunk]]]]:
    """The members of an uncompressed tar stream, each with its data as chunks read straight into one buffer
    (tarfile's stream mode copies every byte several times on the way). Headers are parsed by tarfile itself
    (TarInfo.frombuf: checksums, base-256 sizes); GNU long names and links and pax path, linkpath and size
    records are applied to the next member as tarfile applies them; sparse files are refused. Data a member's
    consumer does not read is skipped; the end blocks and whatever follows are left to the caller."""
    buf = memoryview(bytearray(_COPY_BUF))
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
                long_name = tarfile.nts(payload, "utf-8", "surrogateescape")
            elif info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = tarfile.nts(payload, "utf-8", "surrogateescape")
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


def _payload(reader: _HashingReader, size: int) -> bytes:
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


def write_blob(src: Path | BinaryIO, tree: Beneath, rel: str, digest: str, size: int) -> str:
    """Copy an artifact blob (a file, or a stream) to tree's rel (never through a symlink), checking digest and
    size; return the sha256 hex."""
    sha = hashlib.sha256()
    written = 0
    space = SpaceBudget(tree.root, "writing the artifact files")
    fd = tree.create(rel)
    try:
        with (open(src, "rb") if isinstance(src, Path) else contextlib.nullcontext(src)) as fin, \
                os.fdopen(fd, "wb") as out:
            while chunk := fin.read(_COPY_BUF):
                sha.update(chunk)
                written += len(chunk)
                space.add(len(chunk))
                out.write(chunk)
    except BaseException as exc:
        tree.unlink(rel)
        if is_no_space(exc):
            raise space.error(exc) from None
        raise
    if "sha256:" + sha.hexdigest() != digest or written != size:
        tree.unlink(rel)
        raise TransferError(f"blob {digest[:19]} does not match its digest or size")
    return sha.hexdigest()
