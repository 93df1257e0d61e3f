"""Archives for the HTTP-source size checks, against a small real file system (FS_SIZE, a tmpfs): a zip of zeros
(a bomb: BOMB bytes, a few dozen KiB compressed) whose members are typed as regular files, and the storage path
setting the one-line space error must name."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

MiB = 1 << 20
FS_SIZE = 8 * MiB
BOMB = 64 * MiB  # zeros: a few dozen KiB compressed, eight times the file system
SETTING = "MODEL_SYNC_STORAGE_PATH (--storage-path)"


def regular_member(name: str) -> zipfile.ZipInfo:
    """A member typed as a regular file (what `zip` and ZipFile.write store), so the old code accepted it."""
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def zeros_zip(path: Path, name: str = "bomb.bin", size: int = BOMB) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(regular_member("ok.txt"), b"ok")
        zf.writestr(regular_member(name), bytes(size))
