"""Unpack a URI source's .zip, .tar, .tar.gz/.tgz archive safely, each file's sha256 taken as it is written.

Safe means: no member lands outside the model directory (no '..', no absolute names), no link points outside it,
no device or fifo is created. A refused member stops the job and names the member; whatever the unpacking added to
the directory is removed again on any failure.

A tar is read once, front to back, as a stream (unpack_tar: straight from the HTTP response, never written whole
to disk; unpack: from a file): each member is checked when its header comes (its name, its kind, its name against
the names before it, its declared size against the space left) and written before the next is read. An
uncompressed tar's data is read into one buffer and written from it (layer_stream.plain_tar: tarfile's stream mode
copies every byte several times); gzip, bzip2 and xz tars, recognised by their first bytes, go through tarfile. A
zip needs its central directory, so it is unpacked from the downloaded file, all members checked first.

A pipeline (uri_pipeline.py) passes a Landing to unpack_tar: it is told of each member's header before its data
is read (it may wait there, or stop the unpacking) and of each file once written whole, and it deletes files as
their layers are pushed; the space is then checked member by member instead of for the whole archive.

Space: an uncompressed tar's length (when the server gives it) and a zip's declared sizes are checked before
anything is written, a tar member's declared size before it is written, and the bytes as they are written (a zip
member may not write more than it declares). A file system that fills anyway (ENOSPC) gives the same one-line
error.

Hashes (measured, bench: 8 x 128 MiB, URI -> OCI): hashing each file while it is written, in a thread of its own
(hashlib lets go of the GIL), saves listing the model by reading every file again; reading the tar from the
response instead of from a downloaded copy saves writing and reading the archive once more.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import shutil
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, TypeVar

from ..beneath import Beneath, LinkRefused
from ..errors import TransferError
from ..files import SpaceBudget, check_listing, is_no_space, model_path, safe_relative, shown
from ..layer_stream import Chunk, Chunks, plain_tar, read_exact, tarfile_data

_CHUNK = 1024 * 1024
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
TARS = (".tar", ".tar.gz", ".tgz")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: what tarfile's "r|*" recognises
T = TypeVar("T")


class Landing(Protocol):
    """Told of each member as a streamed tar unpacks (uri_pipeline.py: files pushed while the rest downloads)."""

    def header(self, member: tarfile.TarInfo, rel: str, left: int | None) -> None:
        """A member's header has come, its data not yet read (raise to stop). left: the bytes of the tar still to
        come, this member's data included, when known (an uncompressed tar of a known length), else None."""

    def landed(self, rel: str, member: tarfile.TarInfo, sha256: str) -> None:
        """A regular file is written whole and dated, its sha256 taken as it was written."""


class Readable(Protocol):
    """A file opened "rb", or a response that maps its own failures to a TransferError."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


# ---- entry points -------------------------------------------------------------------------------------------------

def unpack(download: Path, name: str, dest: Path, sha256: str | None = None) -> dict[str, str]:
    """Unpack (or move) the downloaded file into dest and remove it; the sha256 of each file written (relative
    path -> hex; sha256, the download's own, for a file moved as it is). On failure, whatever this added to dest
    is removed again."""
    lower = name.lower()

    def into(budget: SpaceBudget) -> dict[str, str]:
        if lower.endswith(".zip") or (not lower.endswith(ARCHIVES) and zipfile.is_zipfile(download)):
            return _unzip(download, dest, budget)
        if lower.endswith(TARS):
            with open(download, "rb") as archive:
                return _untar(archive, dest, budget)
        rel = safe_relative(name, "URL file name")
        with Beneath(dest, "the download") as tree, Beneath(download.parent, "the download") as work:
            tree.replace_from(work, download.name, rel)
        return {rel: sha256} if sha256 else {}

    known = _guarded(dest, into)
    download.unlink(missing_ok=True)  # unpacked: the archive's space is free for what follows
    return known


def unpack_tar(stream: Readable, dest: Path, length: int = 0, finish: Callable[[], None] | None = None,
               landing: Landing | None = None) -> dict[str, str]:
    """A tar read from stream (length: its bytes, if known) unpacked into dest as it comes; then finish() (the
    caller's check that the whole stream came), still under the same rule: on failure, whatever this added to dest
    is removed again. The sha256 of each file written.

    landing: told of each member (Landing); its files leave dest as they are pushed, so the space needed is then
    checked file by file (each member's declared size, then the bytes as written), not for the whole archive."""
    def into(budget: SpaceBudget) -> dict[str, str]:
        known = _untar(stream, dest, budget, length, landing)
        if finish is not None:
            finish()
        return known
    return _guarded(dest, into)


def _guarded(dest: Path, unpacking: Callable[[SpaceBudget], T]) -> T:
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    budget = SpaceBudget(dest, "the unpacked archive")
    try:
        return unpacking(budget)
    except OSError as exc:
        _remove_new(dest, before)
        if is_no_space(exc):
            raise budget.error(exc) from None
        raise TransferError(f"unpacking the download into '{dest}' failed: {exc}") from None
    except BaseException:
        _remove_new(dest, before)
        raise


def _remove_new(dest: Path, before: set[str]) -> None:
    for name in set(os.listdir(dest)) - before:
        path = dest / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _tree(dest: Path) -> Beneath:
    return Beneath(dest, "the unpacked archive", hint="the archive is refused")


class _Hashes:
    """Each file's sha256 from its bytes as they are written, hashed in a thread of its own (hashlib lets go of the
    GIL) while the next write goes on."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unpack-hash")

    def write(self, rel: str, chunks: Iterable[Chunk], out: IO[bytes], budget: SpaceBudget) -> None:
        """chunks (each valid until the next is asked for) written to out, counted against budget, hashed."""
        self.known.pop(rel, None)
        sha = hashlib.sha256()
        for chunk in chunks:
            budget.add(len(chunk))
            hashed: Future[None] = self._pool.submit(sha.update, chunk)
            try:
                out.write(chunk)
            finally:
                hashed.result()
        self.known[rel] = sha.hexdigest()

    def forget(self, rel: str) -> None:
        self.known.pop(rel, None)

    def close(self) -> None:
        self._pool.shutdown()


# ---- tar: one pass, member by member ------------------------------------------------------------------------------

class _Stream:
    """A Readable read once, its first bytes looked at before they are handed out; what plain_tar reads by."""

    def __init__(self, raw: Readable):
        self._raw, self._head = raw, b""
        self.count = 0  # bytes read from raw

    def peek(self, n: int) -> bytes:
        self._head = self.read_exact(n)
        return self._head

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = (self._head, b"") if n < 0 or n >= len(self._head) else (self._head[:n],
                                                                                       self._head[n:])
            return data
        data = self._raw.read(n)
        self.count += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        n = self._raw.readinto(view) or 0
        self.count += n
        return n

    def read_exact(self, n: int) -> bytes:
        return read_exact(self.read, n)

    def readinto_hashed(self, view: memoryview) -> tuple[int, Future[None] | None]:
        return self.readinto(view), None  # the files are hashed as they are written (_Hashes), not the stream


class _Names:
    """check_listing's rules, applied to each name as it comes: the same name again is a later copy of the file
    (tar(1) keeps the last), another spelling of it or a file where a directory is needed is refused."""

    def __init__(self, what: str):
        self.what = what
        self.seen: dict[str, str] = {}
        self.under: dict[str, str] = {}  # each parent directory of a name seen -> that name

    def add(self, name: str) -> None:
        model_path(name, self.what)
        key = unicodedata.normalize("NFC", name)
        if key in self.seen:
            if self.seen[key] != name:
                check_listing([self.seen[key], name], self.what)  # raises: the same file, spelt twice
            return
        if key in self.under:
            check_listing([name, self.under[key]], self.what)  # raises: a file cannot also be a directory
        head = key.rpartition("/")[0]
        while head:
            if head in self.seen:
                check_listing([self.seen[head], name], self.what)
            self.under.setdefault(head, name)
            head = head.rpartition("/")[0]
        self.seen[key] = name


def _untar(raw: Readable, dest: Path, budget: SpaceBudget, length: int = 0, landing: Landing | None = None
           ) -> dict[str, str]:
    """Member by member, by our own rules (tarfile's extraction filters are missing from Debian 12's Python
    3.11.2): only files, directories and links that stay inside dest, never written through a link (beneath.py);
    modes 0644/0755, no owners, no setuid; a hard link becomes a copy. A member's data is exactly member.size
    bytes, counted as it is written."""
    stream = _Stream(raw)
    names = _Names("archive member")
    hashes = _Hashes()
    try:
        with _tree(dest) as tree:
            compressed = stream.peek(tarfile.BLOCKSIZE).startswith(_COMPRESSED)
            if length and not compressed and landing is None:
                budget.need(length)  # an uncompressed tar unpacks to no more than its length (links aside)
            links: set[str] = set()
            for member, data in _members(stream, compressed):
                _check_tar_member(member)
                if member.isreg() or member.islnk():
                    names.add(safe_relative(member.name, "archive member"))
                if member.isreg():  # a landing's files leave as they are pushed: each must fit, not their sum
                    budget.need(member.size if landing is not None else budget.written + member.size)
                if landing is not None and not (member.isdir() and member.name.strip("/.") == ""):
                    landing.header(member, safe_relative(member.name, "archive member"),
                                   length - stream.count if length and not compressed else None)
                try:
                    _extract_member(member, data, tree, budget, links, hashes)
                except LinkRefused as exc:
                    raise TransferError(f"refusing archive member '{shown(member.name)}': {exc}") from None
                if landing is not None and member.isreg():
                    rel = safe_relative(member.name, "archive member")
                    landing.landed(rel, member, hashes.known[rel])
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise TransferError(f"the downloaded archive is not a readable tar: {exc}") from None
    finally:
        hashes.close()
    return hashes.known


def _members(stream: _Stream, compressed: bool) -> Iterator[tuple[tarfile.TarInfo, Chunks]]:
    if not compressed:
        for member, data in plain_tar(stream):
            if member.isdir():
                member.name = member.name.rstrip("/")  # as tarfile does (plain_tar keeps a long name's slash)
            yield member, data
        return
    with tarfile.open(fileobj=stream, mode="r|*", bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
        for member in tar:
            yield member, tarfile_data(tar, member)


def _extract_member(member: tarfile.TarInfo, data: Chunks, tree: Beneath, budget: SpaceBudget, links: set[str],
                    hashes: _Hashes) -> None:
    if member.isdir() and member.name.strip("/.") == "":
        return
    rel = safe_relative(member.name, "archive member")
    hashes.forget(rel)
    if rel in links:  # a later member of the same name wins, as tar(1) does; only the archive's own link goes
        tree.remove_link(rel)
        links.discard(rel)
    if member.isdir():
        with tree.directory(rel, create=True) as fd:
            os.fchmod(fd, 0o755)
        return
    if member.issym():
        if tree.check_file(rel) is not None:
            tree.unlink(rel)
        tree.symlink(rel, member.linkname)
        links.add(rel)
        return
    if member.islnk():  # a copy: a later write to one must not change the other
        source = safe_relative(member.linkname, f"link target of archive member '{member.name}'")
        if source in links or tree.check_file(source) is None:
            raise TransferError(f"refusing archive member '{member.name}': hard link to no file")
        src_fd = tree.open_read(source)
        with os.fdopen(src_fd, "rb") as src, os.fdopen(tree.create(rel), "wb") as out:
            budget.add(os.fstat(src_fd).st_size)
            shutil.copyfileobj(src, out, _CHUNK)
            _dated(out, member.mtime)
        return
    if not member.isreg():
        raise TransferError(f"refusing archive member '{member.name}': not a regular file, directory or link")
    with os.fdopen(tree.create(rel, 0o755 if member.mode & 0o100 else 0o644), "wb") as out:
        hashes.write(rel, data(), out, budget)
        _dated(out, member.mtime)


def _dated(out: IO[bytes], mtime: float) -> None:
    """The member's time onto the file written (flushed first, so no later write moves it): an image built from
    the unpacked files takes the newest as its `created` (locations.Fetched.newest), so the same archive gives
    the same image."""
    out.flush()
    os.utime(out.fileno(), (mtime, mtime))


def _check_tar_member(member: tarfile.TarInfo) -> None:
    if member.isdir() and member.name.strip("/.") == "":
        return  # the archive's own root, "./"
    safe_relative(member.name, "archive member")
    if member.isdev() or member.isfifo():
        raise TransferError(f"refusing archive member '{member.name}': device or fifo")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.name).parent / member.linkname if member.issym() else PurePosixPath(
            member.linkname)
        if PurePosixPath(member.linkname).is_absolute():
            raise TransferError(f"refusing archive member '{member.name}': link to an absolute path")
        safe_relative(str(target), f"link target of archive member '{member.name}'")


# ---- zip: from the downloaded file --------------------------------------------------------------------------------

def _zip_member_is_dir(info: zipfile.ZipInfo) -> bool:
    """Whether the member is a directory; refuses anything but regular files and directories.

    The file type sits in the Unix mode (external_attr >> 16). Members without one (zipfile's writestr(), many
    Windows zippers: permission bits only, or 0) are files, or directories when the name ends in '/'.
    """
    if info.flag_bits & 0x1:
        raise TransferError(f"refusing archive member '{info.filename}': encrypted")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFDIR:
        return True
    if kind in (0, stat.S_IFREG):
        return info.is_dir()
    raise TransferError(f"refusing archive member '{info.filename}': not a regular file or dir")


def _unzip(archive: Path, dest: Path, budget: SpaceBudget) -> dict[str, str]:
    hashes = _Hashes()
    try:
        with zipfile.ZipFile(archive) as zf, _tree(dest) as tree:
            members = []
            for info in zf.infolist():
                if info.is_dir() and info.filename.strip("/.") == "":
                    continue
                members.append((info, safe_relative(info.filename, "archive member"), _zip_member_is_dir(info)))
            check_listing({rel for _, rel, is_dir in members if not is_dir}, "archive member")
            budget.need(sum(info.file_size for info, _, is_dir in members if not is_dir))
            for info, rel, is_dir in members:
                try:
                    _unzip_member(zf, info, rel, is_dir, tree, budget, hashes)
                except LinkRefused as exc:
                    raise TransferError(f"refusing archive member '{shown(info.filename)}': {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise TransferError(f"the downloaded archive is not a readable zip: {exc}") from None
    finally:
        hashes.close()
    return hashes.known


def _unzip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: str, is_dir: bool, tree: Beneath,
                  budget: SpaceBudget, hashes: _Hashes) -> None:
    if is_dir:
        with tree.directory(rel, create=True):
            return

    def chunks(src: IO[bytes]) -> Iterator[bytes]:
        written = 0
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise TransferError(f"refusing archive member '{info.filename}': it holds more than the "
                                    f"{info.file_size} bytes it declares")
            yield chunk

    with zf.open(info) as src, os.fdopen(tree.create(rel), "wb") as out:
        hashes.write(rel, chunks(src), out, budget)
        _dated(out, calendar.timegm((*info.date_time, 0, 0, 0)))  # a zip's times have no zone: read as UTC
