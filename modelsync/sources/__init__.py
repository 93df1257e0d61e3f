"""Source types: one module each, found through TYPES. A source type's module has

    READS_IN_PLACE: bool                        True when fetch copies nothing into the storage path
    validate(cfg) -> list[str]                  its settings' problems (the spec's required-when rules), one line each
    listing(cfg) -> dict[str, int] | None       its files and sizes, found without downloading (None: only the
                                                download can tell); preflight and the free-space check use it
    facts(cfg) -> dict[str, str]                what preflight found out beyond the listing, for the log and
                                                --dry-run (e.g. which credentials are used); raises if unusable
    fetch(cfg, ws) -> (model dir, files)        the files brought into the workspace (or read in place), inventoried
    describe(cfg) -> str                        where the model comes from, no secrets (logs, the job's identity)
    public_source(cfg) -> str | None            the same for readers of the published image, or None

Adding a type is one new module plus its line in TYPES (and its name in settings.SOURCE_TYPES).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from . import local, oci, s3, uri

if TYPE_CHECKING:
    from ..config import Config

TYPES: dict[str, ModuleType] = {"s3": s3, "oci": oci, "uri": uri, "pvc": local, "local": local}


def of(cfg: Config) -> ModuleType:
    return TYPES[cfg.source_type]
