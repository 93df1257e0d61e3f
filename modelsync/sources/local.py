"""A model already mounted in the pod (a PVC or any directory): read in place, nothing copied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import endpoints
from ..errors import TransferError
from ..files import inventory
from ..files import listing as files_listing
from ..locations import FileEntry, LocalLocation
from ..requirements import problem, require_path

if TYPE_CHECKING:
    from ..config import Config
    from ..workspace import Workspace


def read_local(loc: LocalLocation) -> tuple[Path, tuple[FileEntry, ...]]:
    """The directory to publish from and its files. A single file is published from its parent, alone."""
    path = loc.path
    if path.is_file():
        raise TransferError(f"source path '{path}' is a file; point MODEL_SYNC_SOURCE_PATH at the model's directory")
    if not path.is_dir():
        raise TransferError(f"source path '{path}' does not exist or is not a directory")
    return path, inventory(path)


# ---- the source type (see sources/__init__.py) -------------------------------------------------------------------

READS_IN_PLACE = True


def validate(cfg: Config) -> list[str]:
    problems = require_path(cfg, "source", cfg.source_type)
    path = cfg.values.get("source_path")
    if path and not Path(path).exists():
        problems.append(problem("source_path", f"'{path}' does not exist"))
    return problems


def listing(cfg: Config) -> dict[str, int] | None:
    return files_listing(endpoints.local(cfg, "source").path)  # sizes only: hashing waits for the transfer


def facts(cfg: Config) -> dict[str, str]:
    return {"path": str(cfg.source_path)}


def fetch(cfg: Config, ws: Workspace) -> tuple[Path, tuple[FileEntry, ...]]:
    return read_local(endpoints.local(cfg, "source"))


def describe(cfg: Config) -> str:
    return str(cfg.source_path)


def public_source(cfg: Config) -> str | None:
    return None  # a path inside the pod means nothing to someone reading the image
