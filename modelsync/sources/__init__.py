"""Source types: one module each, listed once in TYPES. A source type's module has

    WRITTEN_AS: tuple[str, ...]                 the --source-type values that name it
    SETTINGS: tuple[Setting, ...]               its settings (source_...), shown in --help and the README
    claims(given) -> bool                       among types written alike, whether it takes these settings
                                                (hf takes "uri" with an hf:// URI; TYPES order decides)
    read_files(raw) -> stores.Filled            settings and keys its credentials files give
    validate(given) -> list[str]                its settings' problems (the spec's required-when rules), one line each
    spec(given) -> Spec                         its settings, typed and frozen, built once; everything below takes it
    in_place(spec) -> Path | None               the directory read in place (nothing copied into the storage path)
    listing(spec) -> dict[str, int] | None      its files and sizes, found without downloading (None: only the
                                                download can tell); preflight and the free-space check use it
    facts(spec) -> dict[str, object]            what preflight found out beyond the listing, for the log and
                                                --dry-run (e.g. which credentials are used); raises if unusable
    fetch(spec, ws) -> locations.Fetched        the files brought into the workspace (or read in place), inventoried
    describe(spec) -> str                       where the model comes from, no secrets (logs, the job's identity)
    public_source(spec) -> str | None           the same for readers of the published image, or None
    metadata(spec, meta, intent, scratch) -> Metadata
                                                the Model Registry metadata with what the source says of the model

Adding a type is one new module plus its line in TYPES: settings, --help, the README table, validation, --dry-run
and the job find it here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..locations import Fetched
from ..setting import Given
from ..stores import StorageType
from . import hf, local, oci, s3, uri

if TYPE_CHECKING:
    from ..metadata import Metadata
    from ..workspace import Workspace


class SourceType(StorageType, Protocol):
    """What the job asks of a source type's module, besides what every type has (stores.StorageType)."""
    def claims(self, given: Given) -> bool: ...
    def in_place(self, spec: Any) -> Path | None: ...
    def listing(self, spec: Any) -> dict[str, int] | None: ...
    def facts(self, spec: Any) -> dict[str, object]: ...
    def fetch(self, spec: Any, ws: Workspace) -> Fetched: ...
    def public_source(self, spec: Any) -> str | None: ...
    def metadata(self, spec: Any, meta: Metadata, kind: str, scratch: Path) -> Metadata: ...


TYPES: tuple[SourceType, ...] = (s3, oci, hf, uri, local)
NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for t in TYPES for name in t.WRITTEN_AS))


def of(given: Given) -> SourceType:
    """The type the settings name: the first in TYPES written as --source-type that claims them."""
    written = given.values["source_type"]
    return next(t for t in TYPES if written in t.WRITTEN_AS and t.claims(given))
