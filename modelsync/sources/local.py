"""A model already mounted in the pod (a PVC or any directory): read in place, nothing copied."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransferError
from ..files import inventory
from ..files import listing as files_listing
from ..locations import Fetched, FileEntry, LocalLocation
from ..setting import Given, problem
from ..stores import Filled, volume

if TYPE_CHECKING:
    from ..metadata import Metadata
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

WRITTEN_AS = ("pvc", "local")
SETTINGS = volume.settings("source")


def claims(given: Given) -> bool:
    return True


def read_files(raw: Mapping[str, str]) -> Filled:
    return Filled()


def validate(given: Given) -> list[str]:
    problems = volume.validate(given, "source")
    path = given.values.get(volume.setting("source").name)
    if path and not Path(path).exists():
        problems.append(problem(volume.setting("source"), f"'{path}' does not exist"))
    return problems


def spec(given: Given) -> LocalLocation:
    return volume.location(given, "source")


def in_place(loc: LocalLocation) -> Path | None:
    return loc.path  # read where it is: a destination must not write into it


def listing(loc: LocalLocation) -> dict[str, int] | None:
    return files_listing(loc.path)  # sizes only: hashing waits for the transfer


def facts(loc: LocalLocation) -> dict[str, object]:
    return {"path": str(loc.path)}


def fetch(loc: LocalLocation, ws: Workspace) -> Fetched:
    return Fetched(*read_local(loc))


def describe(loc: LocalLocation) -> str:
    return str(loc.path)


def public_source(loc: LocalLocation) -> str | None:
    return None  # a path inside the pod means nothing to someone reading the image


def metadata(loc: LocalLocation, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    return meta
