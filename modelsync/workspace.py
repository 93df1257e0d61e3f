"""Working directories that belong to one running job, even when many jobs share the directory they live in.

A job's directory is named ``<prefix><key>-<random>``: the key says which job it is (the same across restarts),
the random part keeps two jobs with the same key apart. The owner holds an exclusive ``flock`` on ``.lock`` inside
it for as long as it runs; the kernel drops the lock when the process dies, however it dies. So at start a job
removes directories of its own key whose lock it can take (an earlier attempt of the same job that crashed) and
never touches a directory whose owner is alive, nor one of another key.

The directory is made under a temporary name, locked, then renamed into place, so no one can see it unlocked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
from pathlib import Path

from .beneath import Beneath, LinkRefused
from .errors import TransferError

log = logging.getLogger("modelsync.workspace")
LOCK = ".lock"


class Workspace:
    """A locked directory of this job's own; `release()` removes it."""

    def __init__(self, root: Path, lock_fd: int):
        self.root = root
        self._fd: int | None = lock_fd
        # where each fetched file came from, when the source knows (S3: URL + ETag); an OCI destination records it

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def release(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(parent: Path, prefix: str, key: str, what: str) -> Workspace:
    """A new locked directory under parent, after removing crashed attempts of the same key.

    Everything below parent is made, opened and removed relative to parent's descriptor, never through a link
    (beneath.py): a symlink under a shared volume cannot send the job's files or its deletions elsewhere. The
    directory is private to the job's user (0700). `what` names the setting behind parent, for the one-line error
    when it cannot be written."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        top = Beneath(parent, what)
    except OSError as exc:
        raise TransferError(f"{what}: cannot write to '{parent}' ({exc.strerror or exc}); give it a writable "
                            f"volume") from None
    with top:
        try:
            clear_stale(top, f"{prefix}{key}-")
            tmp = f"{prefix}new-{secrets.token_hex(6)}"
            os.mkdir(tmp, 0o700, dir_fd=top.fd)
            with top.directory(tmp) as own:
                fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=own)
        except OSError as exc:
            raise TransferError(f"{what}: cannot write to '{parent}' ({exc.strerror or exc}); give it a writable "
                                f"volume") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"pid {os.getpid()} host {os.uname().nodename}\n".encode())
            name = f"{prefix}{key}-{tmp.rsplit('-', 1)[1]}"
            os.rename(tmp, name, src_dir_fd=top.fd, dst_dir_fd=top.fd)
        except OSError as exc:
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True, dir_fd=top.fd)
            raise TransferError(f"{what}: cannot lock a working directory in '{parent}' ({exc.strerror or exc})"
                                ) from None
        return Workspace(top.root / name, fd)


def clear_stale(top: Beneath, prefix: str) -> None:
    """Remove directories named prefix* under top whose owner is gone (their lock can be taken); leave live ones,
    and anything that is not a real directory (a link is never followed nor removed)."""
    for name in sorted(os.listdir(top.fd)):
        if not name.startswith(prefix):
            continue
        try:
            with top.directory(name) as own:
                try:
                    fd: int | None = os.open(LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=own)
                except FileNotFoundError:
                    fd = None  # no lock file: never completed its set-up, or half removed
        except (OSError, LinkRefused):
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log.info("removing %s, left by an earlier attempt of this job", top.root / name)
            shutil.rmtree(name, ignore_errors=True, dir_fd=top.fd)
        except BlockingIOError:
            log.debug("%s belongs to a running job; left alone", top.root / name)
        finally:
            if fd is not None:
                os.close(fd)
