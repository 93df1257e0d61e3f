"""Fetch a model from an OCI registry: a modelcar image (ours or any with `/models`) or an ORAS artifact.

The tool (skopeo or oras) copies the image into an OCI layout in the work dir; Python then reads the blobs:
- an image (image config media type): its layers are applied in order, whiteouts included, keeping only the
  `models/` tree, which becomes dest_dir (layer_extract.py refuses anything that would escape it);
- an artifact (any other config type, e.g. what `oras push` makes): each layer annotated with
  `org.opencontainers.image.title` is written at that path under dest_dir; a layer oras marked for unpacking
  (`io.deis.oras.content.unpack`, a pushed directory) is extracted there instead.
skopeo (1.9) cannot copy artifacts, so with backend "skopeo" an artifact is fetched with oras.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import endpoints
from ..distribution import RegistryClient
from ..errors import TransferError
from ..layer_extract import TreeWriter, write_blob
from ..locations import FileEntry, OciLocation
from ..modelcar import MODELS_DIR
from ..oci_access import check_backend
from ..oci_copy import pull_to_layout, qualified, repo_path
from ..oci_layout import IMAGE_CONFIG_TYPES, INDEX_TYPES, TITLE, Layout
from ..requirements import require_oci

if TYPE_CHECKING:
    from ..config import Config
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.oci")

ORAS_UNPACK = "io.deis.oras.content.unpack"
_REF = "fetched"


def fetch_oci(src: OciLocation, dest_dir: Path, work_dir: Path, backend: str = "skopeo", *,
              platform: str = "linux/amd64") -> list[FileEntry]:
    """Bring the files of the image or artifact src into dest_dir; return them (paths relative to dest_dir)."""
    check_backend(backend)
    src = qualified(src)
    if backend == "skopeo" and _is_artifact(src, platform):
        log.info("%s is an artifact, not an image: fetching it with oras", src.reference)
        backend = "oras"
    work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix="oci-fetch-", dir=work_dir))
    try:
        pull_to_layout(src, job_dir / "layout", _REF, work_dir, backend, platform)
        start = time.monotonic()
        layout = Layout(job_dir / "layout")
        _, manifest = layout.resolve_manifest(platform)
        if manifest["config"]["mediaType"] in IMAGE_CONFIG_TYPES:
            files = _extract_image(layout, manifest, dest_dir, src)
        else:
            files = _place_artifact(layout, manifest, dest_dir, src)
        log.info("extracted %d files from %s in %.1fs", len(files), src.reference, time.monotonic() - start)
        return files
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _is_artifact(src: OciLocation, platform: str) -> bool:
    """Peek at the manifest over HTTP: is its config something other than a container image config?"""
    client = RegistryClient(src)
    repo = repo_path(src)
    remote = client.manifest(repo, src.digest or src.tag or "latest")
    doc = remote.json()
    if remote.media_type in INDEX_TYPES or "manifests" in doc:
        return False  # an index of images; skopeo narrows it to the platform
    return (doc.get("config") or {}).get("mediaType") not in IMAGE_CONFIG_TYPES


def _extract_image(layout: Layout, manifest: dict[str, Any], dest_dir: Path, src: OciLocation) -> list[FileEntry]:
    tree = TreeWriter(dest_dir, MODELS_DIR)
    for layer in manifest.get("layers") or []:
        tree.apply(layout.blob_path(layer["digest"]), layer["mediaType"], layer["digest"])
    files = tree.entries()
    if not files:
        raise TransferError(f"{src.reference}: the image has no files under /{MODELS_DIR}: not a modelcar")
    return files


def _place_artifact(layout: Layout, manifest: dict[str, Any], dest_dir: Path,
                    src: OciLocation) -> list[FileEntry]:
    tree = TreeWriter(dest_dir, None)
    files: list[FileEntry] = []
    for layer in manifest.get("layers") or []:
        annotations = layer.get("annotations") or {}
        title = annotations.get(TITLE)
        if not title:
            log.warning("%s: layer %s has no title annotation: skipped", src.reference, layer["digest"][:19])
            continue
        rel = tree.relative(title)  # refuses absolute paths and '..'
        if not rel:
            raise TransferError(f"{src.reference}: layer title {title!r} names no file")
        blob = layout.blob_path(layer["digest"])
        if annotations.get(ORAS_UNPACK) == "true":
            tree.apply(blob, layer["mediaType"], layer["digest"])  # a directory oras packed as tar.gz
            continue
        sha = write_blob(blob, tree.prepare(rel), layer["digest"], layer["size"])
        files.append(FileEntry(rel, layer["size"], sha))
    files = sorted({f.path: f for f in files + tree.entries()}.values(), key=lambda e: e.path)
    if not files:
        raise TransferError(f"{src.reference}: the artifact has no titled layers to fetch")
    return files


# ---- the source type (see sources/__init__.py) -------------------------------------------------------------------

READS_IN_PLACE = False


def validate(cfg: Config) -> list[str]:
    return require_oci(cfg, "source")


def listing(cfg: Config) -> dict[str, int] | None:
    return None  # known once the image's layers are read


def facts(cfg: Config) -> dict[str, object]:
    """Before the claim: the image is there and readable with the credentials and CA given (an authenticated read
    of its manifest); its layers' bytes bound what the storage path must hold."""
    loc = qualified(endpoints.oci(cfg, "source"))
    found = RegistryClient(loc).manifest(repo_path(loc), loc.digest or loc.tag or "latest")
    doc = found.json()
    described: dict[str, object] = {"credentials": f"user {loc.username}" if loc.username else "anonymous",
                                    "image": f"{loc.repository}@{found.digest}"}
    if "layers" in doc:
        described["bytes"] = sum(int(layer.get("size", 0)) for layer in doc["layers"])
    return described


def fetch(cfg: Config, ws: Workspace) -> tuple[Path, tuple[FileEntry, ...]]:
    ws.model.mkdir(parents=True, exist_ok=True)
    return ws.model, tuple(fetch_oci(endpoints.oci(cfg, "source"), ws.model, ws.work, cfg.destination_oci_backend))


def describe(cfg: Config) -> str:
    return f"oci://{endpoints.oci(cfg, 'source').reference}"


def public_source(cfg: Config) -> str | None:
    return describe(cfg)
