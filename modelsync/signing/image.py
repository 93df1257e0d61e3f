"""The image's signature, as cosign v3 makes and finds one (its "new bundle format"), so `cosign verify` accepts it.

What is signed: a DSSE envelope over an in-toto v1 statement whose one subject is the image manifest's digest,
predicate type https://sigstore.dev/cosign/sign/v1 and an empty predicate. Verifiers check that digest against the
image they resolved, so a signature copied onto another image does not verify: the binding is the statement, not
an annotation.

Where it goes: a sigstore bundle v0.3 (JSON) as the one layer of an OCI 1.1 artifact manifest whose `subject` is
the image (config: the empty descriptor `{}`; artifactType application/vnd.dev.sigstore.bundle.v0.3+json), put by
its digest. A registry with the referrers API indexes it itself; one without (distribution v3) gets the referrers
tag schema: tag `sha256-<hex of the image digest>` in the same repository holds an image index of the referrers,
read, extended and written back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..clients.distribution import RegistryClient
from ..errors import TransferError
from ..locations import OciLocation
from ..oci_copy import repo_path
from ..oci_layout import OCI_INDEX, OCI_MANIFEST

if TYPE_CHECKING:  # imported when a signature is made
    from sigstore.models import Bundle
    from sigstore.sign import Signer

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def statement(name: str, digest: str) -> bytes:
    """The statement cosign signs for an image: its manifest digest as the subject."""
    algorithm, hexdigest = digest.split(":", 1)
    return _compact({"_type": STATEMENT_TYPE,
                     "subject": [{"name": name, "digest": {algorithm: hexdigest}, "annotations": {}}],
                     "predicateType": SIGN_PREDICATE, "predicate": {}})


def sign(signer: Signer, target: OciLocation, digest: str) -> Bundle:
    """The bundle of the image's signature (sigstore.sign.Signer.sign_dsse)."""
    from sigstore.dsse import Statement

    return signer.sign_dsse(Statement(statement(target.repository, digest)))


def attach(target: OciLocation, digest: str, bundle: Bundle) -> str:
    """Put the bundle beside the image as its referrer; the referrer manifest's digest."""
    client, repo = RegistryClient(target), repo_path(target)
    subject = client.manifest(repo, digest)
    if subject.digest != digest:
        raise TransferError(f"{target.repository}@{digest}: the registry serves a different manifest")
    data = bundle.to_json().encode()
    client.put_blob(repo, EMPTY)
    layer = client.put_blob(repo, data)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = _compact({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": EMPTY_TYPE, "size": len(EMPTY), "digest": _digest(EMPTY),
                   "artifactType": BUNDLE_TYPE},
        "layers": [{"mediaType": BUNDLE_TYPE, "size": len(data), "digest": layer}],
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                        "dev.sigstore.bundle.predicateType": SIGN_PREDICATE,
                        "org.opencontainers.image.created": created},
        "subject": {"mediaType": subject.media_type, "size": len(subject.data), "digest": digest},
        "artifactType": BUNDLE_TYPE,
    })
    referrer = _digest(manifest)
    client.put_manifest(repo, referrer, manifest, OCI_MANIFEST)
    if not client.has_referrers_api(repo, digest):
        _add_to_fallback_index(client, repo, digest, {"mediaType": OCI_MANIFEST, "size": len(manifest),
                                                      "digest": referrer, "artifactType": BUNDLE_TYPE})
    return referrer


def _add_to_fallback_index(client: RegistryClient, repo: str, digest: str, entry: dict[str, Any]) -> None:
    tag = digest.replace(":", "-", 1)  # the referrers tag schema
    found = client.find_manifest(repo, tag)
    if found is None:
        entries = [entry]
    else:
        index = found.json()
        if index.get("mediaType") != OCI_INDEX or index.get("schemaVersion") != 2:
            raise TransferError(f"{client.location.repository}:{tag} is not a referrers index "
                                f"({index.get('mediaType')}); cannot attach the signature")
        entries = list(index.get("manifests") or [])
        if any(e.get("digest") == entry["digest"] for e in entries):
            return
        entries.append(entry)
    entries.sort(key=lambda e: e.get("digest", ""))
    client.put_manifest(repo, tag, _compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
                        OCI_INDEX)


def bundles(target: OciLocation, digest: str) -> list[bytes]:
    """Every sigstore bundle attached to the image (referrers API, else the tag schema), unverified."""
    client, repo = RegistryClient(target), repo_path(target)
    out = []
    for entry in client.referrers(repo, digest):
        if entry.get("artifactType") not in (None, BUNDLE_TYPE):
            continue
        layers = client.manifest(repo, entry["digest"]).json().get("layers") or []
        if len(layers) == 1 and str(layers[0].get("mediaType", "")).startswith("application/vnd.dev.sigstore.bundle"):
            out.append(client.blob(repo, layers[0]["digest"]))
    return out


def _compact(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
