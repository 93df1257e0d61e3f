"""A source type that exists only for the tests: a model packed as one local tar file, with a Secret dir holding
the tar's expected sha256. It is what a newcomer writes to add a type: this one module, plus its line in
modelsync.sources.TYPES (tests/stack/test_new_type.py adds that line in a child process). Nothing else in modelsync
names it, yet --help, the README table, validation, --dry-run and the job find it."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelsync import credentials
from modelsync.errors import TransferError
from modelsync.files import inventory
from modelsync.files import listing as list_dir
from modelsync.locations import Fetched
from modelsync.metadata import Metadata
from modelsync.setting import Given, Setting, problem, require
from modelsync.stores import Filled
from modelsync.workspace import Workspace

WRITTEN_AS = ("tarball",)
CREDENTIALS = Setting("source_tarball_credentials_path", "Mounted Secret dir with SHA256, the tar file's digest",
                      kind="path", group="source")
PATH = Setting("source_tarball_path", 'A model as one tar file, when --source-type is "tarball"', kind="path",
               group="source")
SHA256 = Setting("source_tarball_sha256", "sha256 (hex) the tar file must have", secret=True, group="source")
SETTINGS = (CREDENTIALS, PATH, SHA256)


@dataclass(frozen=True)
class TarballSource:
    path: Path
    sha256: str | None


def claims(given: Given) -> bool:
    return True


def read_files(raw: Mapping[str, str]) -> Filled:
    path = raw.get(CREDENTIALS.name)
    if not path:
        return Filled()
    found = credentials.read_secret_dir(path, CREDENTIALS.label)
    return Filled(values={SHA256.name: found["SHA256"]} if found.get("SHA256") else {})


def validate(given: Given) -> list[str]:
    problems = require(given, [PATH], 'source type is "tarball"', file_key="SHA256", cred=CREDENTIALS)
    path = given.values.get(PATH.name)
    if path and not Path(path).is_file():
        problems.append(problem(PATH, f"'{path}' is not a file"))
    return problems


def spec(given: Given) -> TarballSource:
    digest = given.values.get(SHA256.name)
    return TarballSource(Path(given.values[PATH.name]), digest.reveal().strip() if digest else None)


def in_place(src: TarballSource) -> Path | None:
    return None


def listing(src: TarballSource) -> dict[str, int] | None:
    with tarfile.open(src.path) as tar:
        return {m.name: m.size for m in tar.getmembers() if m.isfile()}


def facts(src: TarballSource) -> dict[str, object]:
    return {"tar file": str(src.path), "checksum": "given" if src.sha256 else "none"}


def fetch(src: TarballSource, ws: Workspace) -> Fetched:
    if src.sha256 and hashlib.sha256(src.path.read_bytes()).hexdigest() != src.sha256:
        raise TransferError(f"{src.path}: sha256 is not the one given")
    ws.model.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src.path) as tar:
        tar.extractall(ws.model, filter="data")
    if set(list_dir(ws.model)) != set(listing(src) or {}):
        raise TransferError(f"{src.path}: unpacked files differ from its listing")
    return Fetched(ws.model, inventory(ws.model))


def describe(src: TarballSource) -> str:
    return f"tarball:{src.path}"


def public_source(src: TarballSource) -> str | None:
    return None


def metadata(src: TarballSource, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    return meta
