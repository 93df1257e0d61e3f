"""The model as a set of files: safe relative paths, inventory with sizes and sha256, free-space checks."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

from .errors import TransferError
from .locations import FileEntry

_CHUNK = 4 * 1024 * 1024


def _path_problem(name: str) -> str | None:
    """Why name cannot be a model file's path (relative, POSIX, each component a plain name), or None."""
    if not name:
        return "an empty name"
    if "\x00" in name:
        return "a NUL in the name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character in the name"
    if "\\" in name:
        return "a backslash in the name"
    if name.startswith("/"):
        return "an absolute path, outside the model directory"
    parts = name.split("/")
    if ".." in parts:
        return "'..' would lead outside the model directory"
    if "" in parts:
        return "an empty path component ('//' or a trailing '/')"
    if "." in parts:
        return "a '.' path component"
    return None


def shown(name: str) -> str:
    """A name as it can be printed on one line (control characters escaped)."""
    return "".join(c if 32 <= ord(c) != 127 else f"\\x{ord(c):02x}" for c in name)


def model_path(name: str, what: str) -> str:
    """name, unchanged, when it is a model file's path; otherwise TransferError naming it (one line)."""
    problem = _path_problem(name)
    if problem:
        raise TransferError(f"refusing {what} '{shown(name)}': {problem}; rename it at the source")
    return name


def safe_relative(name: str, what: str) -> str:
    """An archive or layer entry's name as a model path: tar writes './' before names and '/' after directories,
    so those are taken off; anything else that model_path refuses is refused."""
    while name.startswith("./"):
        name = name[2:]
    if name.endswith("/") and not name.endswith("//"):
        name = name[:-1]
    return model_path(name, what)


def check_listing(names: Iterable[str], what: str) -> None:
    """A source's whole listing, before anything is claimed: every name a model path, and no two names for one
    file (equal once Unicode-normalised, or one a file and the other under it as a directory)."""
    seen: dict[str, str] = {}
    for name in names:
        model_path(name, what)
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            raise TransferError(f"refusing {what} '{shown(name)}': it names the same file as '{shown(seen[key])}' "
                                f"(the same once Unicode-normalised); rename one of them at the source")
        seen[key] = name
    for key, name in seen.items():
        head = key.rpartition("/")[0]
        while head:
            if head in seen:
                raise TransferError(f"refusing {what} '{shown(name)}': '{shown(seen[head])}' is a file, so it cannot "
                                    f"also be a directory; rename one of them at the source")
            head = head.rpartition("/")[0]


def date_files(root: Path, names: Iterable[str], when: float | None) -> None:
    """The source's date (POSIX seconds) onto the files it brought under root, which an image built from them takes
    as its `created` (locations.Fetched.newest): the same source, the same image. None: they keep their own. A
    link's own time is set, never its target's (a link in a model may point anywhere)."""
    if when is None:
        return
    for name in names:
        os.utime(root / name, (when, when), follow_symlinks=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listing(root: Path) -> dict[str, int]:
    """Every regular file under root (relative path -> size), sorted; symlinks must stay inside root."""
    root = root.resolve()
    files: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink() and not full.resolve().is_relative_to(root):
                raise TransferError(f"refusing '{rel}': a symlink pointing outside the model directory")
            if not full.is_file():
                raise TransferError(f"refusing '{rel}': not a regular file")
            files[rel] = full.stat().st_size
    check_listing(files, "file")
    if not files:
        raise TransferError(f"no files found in '{root}': nothing to sync")
    return files


def inventory(root: Path) -> tuple[FileEntry, ...]:
    """listing() plus each file's sha256."""
    return tuple(FileEntry(path=rel, size=size, sha256=sha256_file(root / rel)) for rel, size in listing(root).items())


def total_size(entries: Iterable[FileEntry]) -> int:
    return sum(e.size for e in entries)


SPACE_RESERVE = 1 << 20  # left free when unpacking: file-system overhead (blocks, inodes) the byte counts miss


# Where the room is missing, and what to do about it, for the one-line space errors.
STORAGE = ("storage path", "give MODEL_SYNC_STORAGE_PATH (--storage-path) a larger volume")
DESTINATION = ("destination path", "free space there or give MODEL_SYNC_DESTINATION_PATH (--destination-path) a "
                                   "larger volume")


def no_space(path: Path, needed: int, free: int, what: str = "the model", *, more_than: bool = False,
             reserve: int = 0, place: tuple[str, str] = STORAGE) -> TransferError:
    """The one-line error for a place (the storage path, a volume destination) that is (or would be) too small."""
    kept = f" (plus {human(reserve)} kept free)" if reserve else ""
    return TransferError(f"{place[0]} '{path}' has {human(free)} free but {what} needs "
                         f"{'more than ' if more_than else ''}{human(needed)}{kept}; {place[1]}")


def is_no_space(exc: BaseException) -> TypeGuard[OSError]:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def require_free_space(path: Path, needed: int, what: str = "the model", reserve: int = 0,
                       place: tuple[str, str] = STORAGE) -> None:
    """Fail before copying rather than an hour in with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if needed > free - reserve:
        raise no_space(path, needed, free, what, reserve=reserve, place=place)


class SpaceBudget:
    """Bytes about to be written under path, checked against the space free when counting began, minus a reserve.

    need(total) checks a declared total up front; add(n) is called before each write of n bytes and stops the
    writer once the count passes the free space: the disk is measured again then (files replaced meanwhile may
    have freed space), and only when it really lacks n bytes beyond the reserve is the write refused.
    """

    def __init__(self, path: Path, what: str, reserve: int = SPACE_RESERVE):
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.what, self.reserve = path, what, reserve
        self.free = shutil.disk_usage(path).free
        self.written = 0
        self._limit = self.free - reserve

    def need(self, total: int) -> None:
        if total > self.free - self.reserve:
            raise no_space(self.path, total, self.free, self.what, reserve=self.reserve)

    def add(self, n: int) -> None:
        self.written += n
        if self.written > self._limit:
            now = shutil.disk_usage(self.path).free
            if now - self.reserve < n:
                raise self.error()
            self._limit = self.written - n + now - self.reserve

    def error(self, exc: OSError | None = None) -> TransferError:
        """For a write refused by add(), or (exc) one the file system refused with ENOSPC/EDQUOT."""
        if exc is None:
            return no_space(self.path, self.written, self.free, self.what, more_than=True)
        return TransferError(f"storage path '{self.path}' is full ({exc.strerror}): {self.what} needs more than the "
                             f"{human(self.free)} that was free ({human(self.written)} written); "
                             f"give MODEL_SYNC_STORAGE_PATH (--storage-path) a larger volume")


def dir_bytes(root: Path) -> int:
    """Bytes currently under root (files being written included), for progress polling."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
            except FileNotFoundError:  # a temp file renamed under our feet
                pass
    return total


def disk_bytes(root: Path) -> int:
    """Bytes of disk the files under root take (allocated blocks: a ranged download -- s3_download.py, aws --
    writes a file's ranges out of order, so a half-downloaded file's size can be far ahead of what it holds). Each
    file counts once: one renamed during the walk from a directory walked already into one not yet walked (a
    pipeline's download into its upload batch) is seen twice, as is one linked twice."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except FileNotFoundError:  # renamed or deleted meanwhile
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
