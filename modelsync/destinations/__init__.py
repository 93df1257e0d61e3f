"""Destination types: one module each, listed once in TYPES. A destination type's module has

    WRITTEN_AS: tuple[str, ...]                 the --destination-type values that name it
    SETTINGS: tuple[Setting, ...]               its settings (destination_...), shown in --help and the README
    read_files(raw) -> stores.Filled            settings its credentials files give
    validate(given) -> list[str]                its settings' problems (the spec's required-when rules), one line each
    spec(given) -> Spec                         its settings, typed and frozen, built once; everything below takes it
    storage_parts(spec) -> tuple[str, ...]      what it keeps in the storage path besides a download (free space)
    preflight(spec, job, files, reads_from) -> dict
                                                before the claim: reachable with the credentials and CA given,
                                                nothing of anyone else's in the way, not inside the directory a
                                                source reads in place (reads_from); facts for the log and --dry-run
    publish(spec, fetched, ws, job, source, signature=None) -> Published
                                                the files published and verified; URI (+ digest) for the registry;
                                                signature: a model.sig file to publish at the model's root
    describe(spec) -> str                       where the model goes, no secrets (logs, the job's identity)
    model_name(spec) -> str                     the name its signature gives the model (the last part of where)
    image(spec) -> OciLocation | None           the image published, signed once pushed; None: not an image

Adding a type is one new module plus its line in TYPES: settings, --help, the README table, validation, --dry-run
and the job find it here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..locations import Fetched, OciLocation, Published
from ..setting import Given
from ..stores import StorageType
from . import local, oci, s3

if TYPE_CHECKING:
    from ..workspace import Workspace


class DestinationType(StorageType, Protocol):
    """What the job asks of a destination type's module, besides what every type has (stores.StorageType)."""
    def storage_parts(self, spec: Any) -> tuple[str, ...]: ...
    def preflight(self, spec: Any, job: str, files: dict[str, int] | None,
                  reads_from: Path | None) -> dict[str, Any]: ...
    def publish(self, spec: Any, fetched: Fetched, ws: Workspace, job: str, source: str | None,
                signature: Path | None = None) -> Published: ...
    def model_name(self, spec: Any) -> str: ...
    def image(self, spec: Any) -> OciLocation | None: ...


TYPES: tuple[DestinationType, ...] = (oci, s3, local)
NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for t in TYPES for name in t.WRITTEN_AS))


def of(given: Given) -> DestinationType:
    written = given.values["destination_type"]
    return next(t for t in TYPES if written in t.WRITTEN_AS)
