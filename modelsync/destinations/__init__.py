"""Destination types: one module each, found through TYPES. A destination type's module has

    storage_parts(cfg) -> tuple[str, ...]       what it keeps in the storage path besides a download (free space)
    validate(cfg) -> list[str]                  its settings' problems (the spec's required-when rules), one line each
    preflight(cfg, job, files) -> dict          before the claim: reachable with the credentials and CA given,
                                                nothing of anyone else's in the way; facts for the log and --dry-run
    publish(cfg, model dir, files, ws, job, source, signature=None) -> Published
                                                the files published and verified; URI (+ digest) for the registry;
                                                signature: a model.sig file to publish at the model's root
    describe(cfg) -> str                        where the model goes, no secrets (logs, the job's identity)

Adding a type is one new module plus its line in TYPES (and its name in settings.DESTINATION_TYPES).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from . import local, oci, s3

if TYPE_CHECKING:
    from ..config import Config

TYPES: dict[str, ModuleType] = {"oci": oci, "s3": s3, "pvc": local, "local": local}


def of(cfg: Config) -> ModuleType:
    return TYPES[cfg.destination_type]
