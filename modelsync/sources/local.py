"""A model already mounted in the pod (a PVC or any directory): read in place, nothing copied."""

from __future__ import annotations

from pathlib import Path

from ..errors import TransferError
from ..files import inventory
from ..locations import FileEntry, LocalLocation


def read_local(loc: LocalLocation) -> tuple[Path, tuple[FileEntry, ...]]:
    """The directory to publish from and its files. A single file is published from its parent, alone."""
    path = loc.path
    if path.is_file():
        raise TransferError(f"source path '{path}' is a file; point MODEL_SYNC_SOURCE_PATH at the model's directory")
    if not path.is_dir():
        raise TransferError(f"source path '{path}' does not exist or is not a directory")
    return path, inventory(path)
