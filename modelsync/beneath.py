"""Paths under a directory the job does not own, resolved without ever following a link.

Every write, rename and delete the job makes under such a directory (a volume destination and its record file, the
storage path, an archive or a layer being unpacked) goes through a `Beneath`: the root is opened once, and each
component below it is opened relative to its parent's descriptor with O_NOFOLLOW. A symbolic link anywhere below
the root, whether it was there before the job or swapped in while it runs, is refused with one line naming it:
never followed, never replaced, never deleted. The root itself is the user's to name (a mount path may well be a
link) and is resolved once, when opened.

Names passed in are model paths already checked by files.model_path (relative, no '..', no empty component).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import TransferError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkRefused(TransferError):
    """A component below the root is a symlink (is_link), or not a directory where one is needed."""

    def __init__(self, message: str, is_link: bool):
        super().__init__(message)
        self.is_link = is_link


class Beneath:
    """The directory `root`, held open; `what` names the setting behind it for the one-line errors."""

    def __init__(self, root: Path, what: str, *, create: bool = False, mode: int = 0o755,
                 hint: str = "remove it or choose another directory"):
        self.root = Path(os.path.realpath(root))
        self.what, self.hint = what, hint
        self.fd = -1
        if create:
            self.root.mkdir(parents=True, exist_ok=True, mode=mode)
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # ---- resolving -----------------------------------------------------------------------------------------

    def refused(self, rel: str, reason: str, is_link: bool = False) -> LinkRefused:
        return LinkRefused(f"{self.what}: '{self.root / rel}' {reason}; the job never writes through a link under "
                           f"'{self.root}': {self.hint}", is_link)

    def _link_error(self, parent_fd: int, name: str, rel: str) -> LinkRefused:
        try:
            target = os.readlink(name, dir_fd=parent_fd)
            return self.refused(rel, f"is a symbolic link (to '{target}')", is_link=True)
        except OSError:
            return self.refused(rel, "is not a directory")

    @contextmanager
    def directory(self, rel: str, *, create: bool = False, mode: int = 0o755) -> Iterator[int]:
        """A descriptor of the directory root/rel ("" is the root), every component opened without following
        links; with create, missing components are made. FileNotFoundError when one is missing otherwise."""
        fd = os.dup(self.fd)
        done = []
        try:
            for part in rel.split("/") if rel else ():
                done.append(part)
                try:
                    child = _open_dir(fd, part, create, mode)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._link_error(fd, part, "/".join(done)) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, rel: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of rel's directory, rel's last name)."""
        head, _, name = rel.rpartition("/")
        with self.directory(head, create=create) as fd:
            yield fd, name

    # ---- operations ------------------------------------------------------------------------------------------

    def lstat(self, rel: str) -> os.stat_result | None:
        """rel's own status (a link is not followed), None when it or a directory on the way is missing; refuses a
        link on the way."""
        try:
            with self.parent(rel) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def check_file(self, rel: str) -> os.stat_result | None:
        """lstat(rel), refusing anything there but a regular file."""
        try:
            with self.parent(rel) as (fd, name):
                return self._file_at(fd, name, rel)
        except FileNotFoundError:
            return None

    def _file_at(self, fd: int, name: str, rel: str) -> os.stat_result | None:
        """check_file for rel, whose directory is open as fd."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise self._link_error(fd, name, rel)
        if not stat.S_ISREG(st.st_mode):
            raise self.refused(rel, "is not a regular file")
        return st

    def create(self, rel: str, mode: int = 0o644) -> int:
        """A new file root/rel open for writing (parents made as needed); whatever was there is replaced only if
        it was a regular file (a link or a directory is refused). The caller closes the descriptor."""
        with self.parent(rel, create=True) as (fd, name):
            try:
                return os.open(name, _NEW, mode, dir_fd=fd)
            except FileExistsError:
                self._file_at(fd, name, rel)
                os.unlink(name, dir_fd=fd)
                return os.open(name, _NEW, mode, dir_fd=fd)

    def open_read(self, rel: str) -> int:
        """root/rel open for reading, refusing a link anywhere on the way or at the end."""
        with self.parent(rel) as (fd, name):
            try:
                return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._link_error(fd, name, rel) from None
                raise

    def unlink(self, rel: str) -> bool:
        """Delete the regular file root/rel (a link or anything else there is refused); False if it is gone."""
        try:
            with self.parent(rel) as (fd, name):
                if self._file_at(fd, name, rel) is None:
                    return False
                os.unlink(name, dir_fd=fd)
                return True
        except FileNotFoundError:
            return False

    def remove_link(self, rel: str) -> None:
        """Delete the symlink root/rel, one the job made itself (an unpacked archive's or layer's link); the link
        only, never what it leads to."""
        with self.parent(rel) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.unlink(name, dir_fd=fd)

    def symlink(self, rel: str, target: str) -> None:
        """A new symlink root/rel -> target (which the caller has checked stays inside)."""
        with self.parent(rel, create=True) as (fd, name):
            os.symlink(target, name, dir_fd=fd)

    def replace_from(self, source: Beneath, src_rel: str, rel: str) -> None:
        """Rename source's src_rel to root/rel (same file system): the file appears whole or not at all. A regular
        file there is replaced; a link or a directory is refused."""
        with source.parent(src_rel) as (src_fd, src_name), self.parent(rel, create=True) as (fd, name):
            self._file_at(fd, name, rel)
            os.replace(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd)

    def write_atomic(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """root/rel replaced by data: written beside it under a new name, then renamed over it."""
        tmp = f"{rel}.tmp-{os.getpid()}"
        out = self.create(tmp, mode)
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.replace_from(self, tmp, rel)
        except BaseException:
            self.unlink(tmp)
            raise


def _open_dir(fd: int, name: str, create: bool, mode: int) -> int:
    """The directory name under fd, opened without following a link; made first when missing and create."""
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, mode, dir_fd=fd)
    except FileExistsError:
        pass  # made meanwhile (or a link swapped in: the open below refuses it)
    return os.open(name, _DIR, dir_fd=fd)
