"""Apply image layers to a directory safely: only one subtree (`models/`), nothing escapes it.

Refused (TransferError, the whole fetch fails): absolute member names, `..` anywhere, links whose target leaves
the subtree, writing through a symlink, device files and FIFOs. Entries outside the subtree (the base image's
/bin, /etc, ...) are skipped unread. Modes are not taken from the image: dirs 0755, files 0644.

Whiteouts (image-spec layer.md) act on lower layers only, applied in one streaming pass: `.wh.NAME` deletes NAME,
`.wh..wh..opq` empties its directory, in both cases sparing what the current layer itself wrote. Each blob is
hashed as it is read (layer_stream.py, which also parses the tar) and must match its descriptor's digest.

A pipeline (oci_s3_pipeline.py) passes a Landing: asked for room before each file is written, told once it is
whole (it may then move the file away and leave an empty one: the entry stays, so whiteouts and later layers see
the tree as it is), and asked to copy a hard link's source, whose bytes may be elsewhere by then.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from .beneath import Beneath, LinkRefused
from .errors import TransferError
from .files import SpaceBudget, is_no_space, safe_relative
from .layer_stream import COPY_BUF, Chunks, HashingReader, Stream, plain_tar, tar_mode, tarfile_data
from .locations import FileEntry

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class Landing(Protocol):
    """What a pipeline does with each file as the layers are applied."""

    def room(self, size: int) -> None:
        """Before a file of size bytes is written (may wait for room; raises to stop the extraction)."""

    def landed(self, rel: str, path: Path) -> None:
        """The file at rel is whole at path, its sha256 taken."""

    def copy(self, tree: Beneath, source: str, rel: str) -> None:
        """A hard link: source's bytes (written by an earlier entry) copied to rel in tree."""


class TreeWriter:
    """Applies layers in order to dest; `subtree` ('models') is stripped, entries outside it are ignored.

    subtree None keeps every entry's full path (an ORAS directory archive extracted under dest).
    """

    def __init__(self, dest: Path, subtree: str | None, landing: Landing | None = None):
        self.dest = dest
        self.landing = landing
        self.subtree = subtree
        self.files: dict[str, FileEntry] = {}   # regular files (and hard links) written, by relative path
        self.links: dict[str, str] = {}         # symlink path -> normalized relative target
        self._this_layer: set[str] = set()
        self.tree = Beneath(dest, "the image's layers", create=True, hint="the image is refused")
        self._space = SpaceBudget(dest, "unpacking the layers")

    # ---- driving -----------------------------------------------------------------------------------------

    def apply(self, blob: Path | Stream, media_type: str, digest: str) -> None:
        """Apply one layer, read from a blob file or a stream (a registry download's stdout)."""
        if isinstance(blob, Path):
            with open(blob, "rb") as raw:
                self.apply(raw, media_type, digest)
            return
        self._this_layer = set()
        self._space = SpaceBudget(self.dest, "unpacking the layers")  # bytes written vs. the space free now
        reader = HashingReader(blob)
        mode = tar_mode(media_type)
        try:
            if mode == "r|":  # uncompressed: read directly, each byte copied once
                for member, data in plain_tar(reader):
                    self._entry(member, data)
            else:
                # a stream mode only ever reads fileobj; typeshed's _Fileobj also asks for write, seek, tell, close
                with tarfile.open(fileobj=reader, mode=mode, bufsize=COPY_BUF) as tar:  # type: ignore[call-overload]
                    for member in tar:
                        self._entry(member, tarfile_data(tar, member))
            while reader.read(COPY_BUF):  # the tar's trailing padding is part of the digest
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

    def _entry(self, member: tarfile.TarInfo, data: Chunks) -> None:
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

    def _write(self, data: Chunks, member: tarfile.TarInfo, rel: str) -> None:
        if self.landing is not None:
            self.landing.room(member.size)
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
        if self.landing is not None:
            self.landing.landed(rel, self.dest / rel)

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
        if self.landing is not None:
            self.landing.room(self.files[source].size)
            self.landing.copy(self.tree, source, rel)
        else:
            copy_file(self.tree, source, rel)
        self.files[rel] = FileEntry(rel, self.files[source].size, self.files[source].sha256)
        if self.landing is not None:
            self.landing.landed(rel, self.dest / rel)

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


def copy_file(tree: Beneath, source: str, rel: str) -> None:
    """A hard link's copy (a later write to one must not change the other), never through a symlink."""
    with os.fdopen(tree.open_read(source), "rb") as src, os.fdopen(tree.create(rel), "wb") as out:
        shutil.copyfileobj(src, out, COPY_BUF)


def write_blob(src: Path | Stream, tree: Beneath, rel: str, digest: str, size: int) -> str:
    """Copy an artifact blob (a file, or a stream) to tree's rel (never through a symlink), checking digest and
    size; return the sha256 hex."""
    sha = hashlib.sha256()
    written = 0
    space = SpaceBudget(tree.root, "writing the artifact files")
    fd = tree.create(rel)
    try:
        with (open(src, "rb") if isinstance(src, Path) else contextlib.nullcontext(src)) as fin, \
                os.fdopen(fd, "wb") as out:
            while chunk := fin.read(COPY_BUF):
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
