"""The model's signature in the OpenSSF model-signing format (what `model_signing verify sigstore` reads).

An in-toto v1 statement with predicate type https://model_signing/signature/v1.0:

    subject    [{name: the model's name, digest: {sha256: sha256 over every file's raw sha256, in path order}}]
    predicate  {serialization: {method: files, hash_type: sha256, allow_symlinks: false, ignore_paths: [...]},
                resources: [{name: relative path, algorithm: sha256, digest: hex}, ...]  (path order)}

signed as DSSE in a sigstore bundle v0.3 and written as `model.sig` at the model's root. The files' sha256 come
from the transfer (each byte was hashed as it moved): the model is never read again to sign it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..locations import FileEntry

SIGNATURE_NAME = "model.sig"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# Recorded as ignored, so a verifier hashing the directory skips them: the signature itself, and the record a
# volume destination keeps of what the job wrote (destinations/local.py).
IGNORED = (SIGNATURE_NAME, ".modelsync-files.json")


def signed_files(files: Iterable[FileEntry]) -> list[FileEntry]:
    """The files the signature covers: all but a model.sig at the root (a signature the source carried is
    replaced by this job's), in path order."""
    return sorted((f for f in files if f.path != SIGNATURE_NAME), key=lambda f: f.path)


def statement(name: str, files: Sequence[FileEntry]) -> dict[str, Any]:
    """The in-toto statement for files (path, sha256)."""
    resources = [{"name": f.path, "algorithm": "sha256", "digest": f.sha256} for f in signed_files(files)]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": list(IGNORED)},
            "resources": resources,
        },
    }


def manifest_of(payload: bytes) -> dict[str, str]:
    """{path: sha256 hex} from a verified statement's payload; ValueError unless it is this format and
    self-consistent (the subject's digest is the digest of its resources)."""
    doc = json.loads(payload)
    if doc.get("_type") != STATEMENT_TYPE or doc.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"not a model-signing v1.0 statement (predicate {doc.get('predicateType')!r})")
    resources = doc["predicate"]["resources"]
    if any(r.get("algorithm") != "sha256" for r in resources):
        raise ValueError("only sha256 file manifests are understood")
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    subjects = doc.get("subject") or []
    if len(subjects) != 1 or subjects[0].get("digest", {}).get("sha256") != root:
        raise ValueError("the statement's subject digest does not match its files")
    return {r["name"]: r["digest"] for r in resources}
