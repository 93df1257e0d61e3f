"""Reading and writing OCI image layout directories (image-spec "image-layout.md"): blobs, index.json, platforms.

Shared by modelcar.py (build), destinations/oci.py (push) and sources/oci.py (pull). Docker v2 schema 2
manifests, as `oras cp` leaves them in a layout, are converted to their OCI equivalents here so nothing
downstream needs to know Docker media types.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from .errors import TransferError

OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
IMAGE_CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
# Docker v2s2 -> OCI media types (image-spec "media-types.md", compatibility matrix)
_DOCKER_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER_TAR,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}

Descriptor = dict[str, Any]
_CHUNK = 1 << 20


def oci_media_type(media_type: str) -> str:
    return _DOCKER_TO_OCI.get(media_type, media_type)


def canonical_json(doc: Any) -> bytes:
    """Stable bytes for a JSON document we author, so the same content always gets the same digest. ASCII only
    (non-ASCII characters as \\u escapes): a client that re-encodes a parsed manifest to find its digest, as
    rh-model-signing 1.0.5 does (json.dumps with compact separators, key order kept), then gets our bytes back even
    for a file name in another script; with raw UTF-8 it resolved such an image's tag to a wrong digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_platform(platform: str) -> tuple[str, str, str | None]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise TransferError(f"platform '{platform}' is not os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


class HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through, so blobs are digested while written."""

    def __init__(self, fp: BinaryIO):
        self._fp = fp
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.size += len(data)
        return self._fp.write(data)

    def flush(self) -> None:
        self._fp.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


class Layout:
    """One OCI layout directory on disk."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- writing -------------------------------------------------------------------------------------------

    def init(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))

    def blob_path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
            raise TransferError(f"unsupported or malformed digest '{digest}'")
        return self.root / "blobs" / "sha256" / hexpart

    def staging_file(self, name: str) -> Path:
        """A temporary path inside the layout (same filesystem, so the final rename is atomic and free)."""
        return self.root / "blobs" / f".tmp-{name}-{os.getpid()}"

    def commit_blob(self, tmp: Path, digest: str) -> Path:
        final = self.blob_path(digest)
        os.replace(tmp, final)
        return final

    def add_bytes(self, data: bytes, media_type: str, annotations: dict[str, str] | None = None) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return descriptor(media_type, digest, len(data), annotations)

    def import_blob(self, other: Layout, digest: str) -> None:
        """Bring a blob from another layout: a hard link when both are on one filesystem, else a copy."""
        dst = self.blob_path(digest)
        if dst.exists():
            return
        src = other.blob_path(digest)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    def write_index(self, manifest: Descriptor, ref_name: str) -> None:
        entry = dict(manifest)
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: ref_name}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
        (self.root / "index.json").write_text(json.dumps(index, indent=2))

    # ---- reading -------------------------------------------------------------------------------------------

    def read_json(self, digest: str) -> dict[str, Any]:
        data = self.read_verified(digest)
        try:
            found: dict[str, Any] = json.loads(data)
        except ValueError:
            raise TransferError(f"blob {digest[:19]} in {self.root} is not JSON") from None
        return found

    def read_verified(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except OSError as exc:
            raise TransferError(f"blob {digest[:19]} missing from OCI layout {self.root}: {exc.strerror}") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise TransferError(f"blob {digest[:19]} in {self.root} does not match its digest")
        return data

    def index(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise TransferError(f"{self.root} is not an OCI layout (index.json: {exc})") from None
        return found

    def resolve_manifest(self, platform: str = "linux/amd64") -> tuple[Descriptor, dict[str, Any]]:
        """The image manifest this layout holds for platform, following nested indexes; OCI media types."""
        return self._pick(self.index(), platform, depth=0)

    def _pick(self, index: dict[str, Any], platform: str, depth: int) -> tuple[Descriptor, dict[str, Any]]:
        if depth > 4:
            raise TransferError(f"{self.root}: indexes nested too deep")
        entries = index.get("manifests") or []
        if not entries:
            raise TransferError(f"{self.root}: the index lists no manifests")
        chosen = match_platform(entries, platform) if len(entries) > 1 else entries[0]
        if chosen is None:
            raise TransferError(f"{self.root}: no manifest for platform {platform}")
        doc = self.read_json(chosen["digest"])
        media_type = doc.get("mediaType") or chosen.get("mediaType")
        if media_type in INDEX_TYPES or "manifests" in doc:
            return self._pick(doc, platform, depth + 1)
        return chosen, to_oci_manifest(doc)


def match_platform(entries: list[Descriptor], platform: str) -> Descriptor | None:
    os_name, arch, variant = parse_platform(platform)
    for entry in entries:
        p = entry.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch and variant in (None, p.get("variant")):
            return entry
    return None


def descriptor(media_type: str, digest: str, size: int, annotations: dict[str, str] | None = None) -> Descriptor:
    desc: Descriptor = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        desc["annotations"] = dict(annotations)
    return desc


def to_oci_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of an image manifest with Docker v2s2 media types replaced by OCI ones (digests unchanged)."""
    out: dict[str, Any] = json.loads(json.dumps(manifest))
    out["mediaType"] = oci_media_type(out.get("mediaType") or OCI_MANIFEST)
    out["config"]["mediaType"] = oci_media_type(out["config"]["mediaType"])
    for layer in out.get("layers") or []:
        layer["mediaType"] = oci_media_type(layer["mediaType"])
    return out
