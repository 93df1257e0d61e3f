"""model.sig attached to the image in the registry, where rh-model-signing finds it: its unmodified CLI
(`model_signing verify sigstore <image-ref> --identity .. --identity-provider ..`, rh-model-signing 1.0.5) then
verifies the image by reference, without pulling the model's layers.

What that verifier does (read in its model_signing/_oci/ and verifying.Config.verify_image):
  1. resolves the reference to a manifest digest (a tag: sha256 of the manifest re-serialised compactly with
     ASCII escapes, which is the real digest for our canonical, ASCII-only manifests; give `@sha256:..` otherwise);
  2. fetches the signature: the referrers API (`GET /v2/<repo>/referrers/<digest>`, entries of artifactType
     application/vnd.model-signing.signature.v0.1, the artifact's first layer is the bundle), else the manifest
     tagged `sha256-<hex>.sig`, its first layer; a sigstore bundle must carry a certificate;
  3. verifies the bundle (Fulcio chain, transparency log, identity and issuer) and reads its DSSE statement: an
     in-toto statement of predicate https://model_signing/signature/v1.0, exactly model.sig's (signing/model.py);
  4. lists the image's files from the layers that carry olot's content keys (modelcar.layer_annotations): a `file`
     layer gives `olot.layer.content.inlayerpath` less `/models/` and `olot.layer.content.digest`; a `directory`
     layer (our shared layers) is pulled and every regular file in its tar hashed (path less `models/`); layers
     without the keys (the base image's, model.sig's own) are not listed;
  5. compares the two {path: sha256} lists, nothing else (not the model name, not the serialization).

So the bundle of model.sig goes up unchanged, once: as an OCI 1.1 artifact whose `subject` is the image (what a
registry with the referrers API indexes, and what the referrers tag schema index lists), and, when the registry has
no referrers API (distribution v3), the same manifest under the tag `sha256-<hex>.sig` as well, which is where the
verifier looks then. Before it goes up the image's one-file layers are checked against the statement, so an image
that this verifier would refuse is not given a signature it can find.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from .. import modelpack
from ..clients.distribution import RegistryClient
from ..errors import TransferError
from ..locations import OciLocation
from ..oci_copy import repo_path
from ..oci_layout import INDEX_TYPES, OCI_MANIFEST
from . import image, model

ARTIFACT_TYPE = "application/vnd.model-signing.signature.v0.1"
CONFIG_TYPE = "application/vnd.model-signing.signature.v0.1.config+json"
BUNDLE_TYPE = image.BUNDLE_TYPE  # application/vnd.dev.sigstore.bundle.v0.3+json
CONFIG = b"{}"
TITLE = "org.opencontainers.image.title"
CONTENT_TYPE, CONTENT_DIGEST, CONTENT_PATH = ("olot.layer.content.type", "olot.layer.content.digest",
                                              "olot.layer.content.inlayerpath")
MODELS_PREFIX = "/models/"


class Mismatch(ValueError):
    """The image's annotated files are not the files the statement signs."""


def sig_tag(digest: str) -> str:
    """The tag rh-model-signing reads without a referrers API: `sha256-<hex>.sig`."""
    return digest.replace(":", "-", 1) + ".sig"


def modelcar_of(target: OciLocation, digest: str) -> str | None:
    """The manifest rh-model-signing can verify for what digest names: the modelcar itself, the modelcar entry of a
    hybrid index (modelpack.py; the other entry is the ModelPack manifest), None for a ModelPack artifact (its raw
    layers carry no olot keys, and this verifier lists the model's files from those)."""
    client, repo = RegistryClient(target), repo_path(target)
    found = client.manifest(repo, digest)
    doc = found.json()
    if found.media_type in INDEX_TYPES or doc.get("manifests") is not None:
        entries = [e for e in doc.get("manifests") or []
                   if (e.get("annotations") or {}).get(modelpack.MANIFEST_KIND) != "modelpack"
                   and e.get("artifactType") != modelpack.ARTIFACT_TYPE]
        return str(entries[0]["digest"]) if len(entries) == 1 else None
    return None if doc.get("artifactType") == modelpack.ARTIFACT_TYPE else digest


def attach(target: OciLocation, digest: str, bundle: bytes | None) -> tuple[str, str | None]:
    """Put model.sig's bundle (or, when None, the one inside the image's model.sig layer) beside the image (a
    modelcar manifest: modelcar_of); the artifact manifest's digest and the `.sig` tag when one was written (a
    registry without the referrers API)."""
    client, repo = RegistryClient(target), repo_path(target)
    subject = client.manifest(repo, digest)
    if subject.digest != digest:
        raise TransferError(f"{target.repository}@{digest}: the registry serves a different manifest")
    manifest = subject.json()
    data = bundle if bundle is not None else _bundle_in_image(client, repo, manifest)
    check_files(manifest, _payload(data))
    client.put_blob(repo, CONFIG)
    layer = client.put_blob(repo, data)
    artifact = image._compact({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(CONFIG), "digest": image._digest(CONFIG)},
        "layers": [{"mediaType": BUNDLE_TYPE, "size": len(data), "digest": layer}],
        "subject": {"mediaType": subject.media_type, "size": len(subject.data), "digest": digest},
        "annotations": {"dev.sigstore.model-signing.artifact-type": ARTIFACT_TYPE},
    })
    referrer = image._digest(artifact)
    client.put_manifest(repo, referrer, artifact, OCI_MANIFEST)
    if client.has_referrers_api(repo, digest):
        return referrer, None
    image._add_to_fallback_index(client, repo, digest, {"mediaType": OCI_MANIFEST, "size": len(artifact),
                                                        "digest": referrer, "artifactType": ARTIFACT_TYPE})
    tag = sig_tag(digest)
    client.put_manifest(repo, tag, artifact, OCI_MANIFEST)
    return referrer, tag


def check_files(manifest: dict[str, Any], payload: bytes) -> None:
    """Mismatch unless every one-file olot layer names a file the statement signs with the same sha256, and, when
    the image has no shared (`directory`) layer, the statement signs no other file."""
    signed = model.manifest_of(payload)
    listed: dict[str, str] = {}
    shared = False
    for layer in manifest.get("layers") or []:
        notes = layer.get("annotations") or {}
        kind = notes.get(CONTENT_TYPE)
        if kind == "directory":
            shared = True
        elif kind == "file":
            path = str(notes.get(CONTENT_PATH, "")).removeprefix(MODELS_PREFIX).lstrip("/")
            listed[path] = str(notes.get(CONTENT_DIGEST, "")).removeprefix("sha256:")
    wrong = sorted(p for p, d in listed.items() if signed.get(p) != d)
    unlisted = [] if shared else sorted(set(signed) - set(listed))
    if wrong or unlisted:
        raise Mismatch(f"the image's layers do not list the files model.sig signs (differ: {_few(wrong)}; "
                       f"not in a layer: {_few(unlisted)})")


def _payload(bundle: bytes) -> bytes:
    import base64

    envelope = json.loads(bundle).get("dsseEnvelope") or {}
    if "payload" not in envelope:
        raise Mismatch("model.sig's bundle holds no DSSE statement")
    return base64.b64decode(envelope["payload"])


def _bundle_in_image(client: RegistryClient, repo: str, manifest: dict[str, Any]) -> bytes:
    """model.sig out of the image's layer titled model.sig (its last)."""
    for layer in reversed(manifest.get("layers") or []):
        if (layer.get("annotations") or {}).get(TITLE) == model.SIGNATURE_NAME:
            with tarfile.open(fileobj=io.BytesIO(client.blob(repo, layer["digest"]))) as tar:
                for member in tar:
                    if member.isfile() and member.name.rsplit("/", 1)[-1] == model.SIGNATURE_NAME:
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            return extracted.read()
    raise Mismatch(f"the image has no {model.SIGNATURE_NAME} layer to attach")


def _few(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "") if paths else "none"
