"""Fetch a model from an OCI registry: a modelcar image (ours or any with `/models`) or an ORAS artifact.

With oras (the default backend) nothing is copied first: the manifest is read over HTTP (an index narrowed to
the platform) and each layer is read by this process in parallel ranged GETs (blob_read.py: through a slow link
`oras blob fetch`, one stream, lost half its rate to an upload going the other way) straight into the
extraction, its digest checked on the way, so the storage path holds the files once. With skopeo the image is
copied into an OCI layout in the work dir first. Python then reads the blobs:
- an image (image config media type): its layers are applied in order, whiteouts included, keeping only the
  `models/` tree, which becomes dest_dir (layer_extract.py refuses anything that would escape it);
- an artifact (any other config type, e.g. what `oras push` makes): each layer annotated with
  `org.opencontainers.image.title` is written at that path under dest_dir; a layer oras marked for unpacking
  (`io.deis.oras.content.unpack`, a pushed directory) is extracted there instead. A CNCF ModelPack artifact
  (modelpack.py) is one: a raw layer is the file itself, written at its `org.cncf.model.filepath`; a ModelPack
  tar layer is extracted. What modctl v0.1.1 builds is one too, in the legacy CNAI names the spec had before it
  moved to the CNCF (`application/vnd.cnai.model.<role>.v1.raw|tar`, `org.cnai.model.filepath`; modctl's own
  extract reads both): read the same way. A hybrid index (modelcar + ModelPack) is narrowed to the platform: the
  modelcar.
skopeo (1.9) cannot copy artifacts, so with backend "skopeo" an artifact is fetched with oras.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import modelpack, tools
from ..blob_read import BlobReader
from ..clients.distribution import RegistryClient
from ..errors import TransferError
from ..files import check_listing, date_files, human, safe_relative
from ..layer_extract import Landing, TreeWriter, write_blob
from ..layer_stream import Stream
from ..locations import Fetched, FileEntry, OciLocation
from ..modelcar import CREATED, MODELS_DIR
from ..oci_access import check_backend
from ..oci_copy import pull_to_layout, qualified, repo_path
from ..oci_layout import IMAGE_CONFIG_TYPES, INDEX_TYPES, TITLE, Layout, match_platform, to_oci_manifest
from ..progress import watch
from ..setting import Given
from ..stores import Filled
from ..stores import oci as oci_store

if TYPE_CHECKING:
    from ..metadata import Metadata
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.oci")

ORAS_UNPACK = "io.deis.oras.content.unpack"
CNAI_FILEPATH = "org.cnai.model.filepath"  # modctl v0.1.1's (legacy CNAI) name of modelpack.FILEPATH
_CNAI_TYPES = frozenset(t.replace(".cncf.model.", ".cnai.model.") for t in modelpack.MEDIA_TYPES)
# the ModelPack layers that are tars to extract (CNCF and CNAI); a raw one is the file, any other layer by its title
MODEL_TARS = frozenset(t for t in modelpack.MEDIA_TYPES | _CNAI_TYPES if t.endswith(".tar"))
_REF = "fetched"
LAYER_POLICY = tools.POLICY  # a layer read again from its start: as a tool's run is (retry.py)


def fetch_oci(src: OciLocation, dest_dir: Path, work_dir: Path, backend: str = "skopeo", *,
              platform: str = "linux/amd64") -> list[FileEntry]:
    """Bring the files of the image or artifact src into dest_dir; return them (paths relative to dest_dir)."""
    check_backend(backend)
    src = qualified(src)
    if backend == "skopeo" and _is_artifact(src, platform):
        log.info("%s is an artifact, not an image: fetching it with oras", src.reference)
        backend = "oras"
    work_dir.mkdir(parents=True, exist_ok=True)
    if backend == "oras":
        return _stream_oci(src, dest_dir, platform)
    job_dir = Path(tempfile.mkdtemp(prefix="oci-fetch-", dir=work_dir))
    try:
        pull_to_layout(src, job_dir / "layout", _REF, work_dir, backend, platform)
        start = time.monotonic()
        layout = Layout(job_dir / "layout")
        _, manifest = layout.resolve_manifest(platform)
        blob = _from_layout(layout)
        if manifest["config"]["mediaType"] in IMAGE_CONFIG_TYPES:
            files = _extract_image(manifest, dest_dir, src, blob)
        else:
            files = _place_artifact(manifest, dest_dir, src, blob)
        log.info("extracted %d files from %s in %.1fs", len(files), src.reference, time.monotonic() - start)
        return files
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _stream_oci(src: OciLocation, dest_dir: Path, platform: str) -> list[FileEntry]:
    """fetch_oci with oras: the manifest read over HTTP, each layer streamed from the registry into place."""
    manifest = remote_manifest(RegistryClient(src), repo_path(src), src.lookup, platform, src.reference)
    return stream_oci(src, manifest, dest_dir)


def stream_oci(src: OciLocation, manifest: dict[str, Any], dest_dir: Path,
               landing: Landing | None = None) -> list[FileEntry]:
    """The files of the image or artifact (src's manifest, read by remote_manifest) into dest_dir, each layer
    read by this process in ranged GETs (blob_read.py) straight into the extraction; landing: a pipeline's hand on
    each file as it is written (layer_extract.Landing; oci_s3_pipeline.py)."""
    start = time.monotonic()
    layers = manifest.get("layers") or []
    total = sum(int(layer.get("size", 0)) for layer in layers)
    client, repo = RegistryClient(src), repo_path(src)
    done = [0]
    reading: list[BlobReader | None] = [None]

    def progress() -> int:
        return done[0] + (reading[0].position if reading[0] is not None else 0)

    def blob(layer: dict[str, Any], use: Use) -> None:
        """use(stream) on the layer's bytes as they arrive; the whole layer again after a transient failure that
        its ranges could not ride out alone (a registry that ignores Range, cut mid-blob)."""
        def once() -> None:
            with BlobReader(client, repo, layer["digest"], int(layer.get("size", 0))) as stream:
                reading[0] = stream
                try:
                    use(stream)
                    if stream.read(1):
                        raise TransferError(f"{src.reference}: layer {layer['digest'][:19]} is longer than its "
                                            f"{layer['size']} bytes")
                finally:
                    reading[0] = None
        LAYER_POLICY.call(f"read of layer {layer['digest'][:19]}", once, logger=log,
                          give_up=lambda exc, tries: TransferError(f"{exc} (gave up after {tries} tries)"))
        done[0] += int(layer.get("size", 0))

    with watch(f"pull {src.reference}", total, progress):
        if manifest["config"]["mediaType"] in IMAGE_CONFIG_TYPES:
            files = _extract_image(manifest, dest_dir, src, blob, landing)
        else:
            files = _place_artifact(manifest, dest_dir, src, blob, landing)
    log.info("streamed %d files (%s) from %s in %.1fs", len(files), human(total), src.reference,
             time.monotonic() - start)
    return files


def remote_manifest(client: RegistryClient, repo: str, reference: str, platform: str, name: str) -> dict[str, Any]:
    """The image manifest at reference (an index narrowed to platform, nested at most 4 deep), OCI media types."""
    found = client.manifest(repo, reference)
    for _ in range(5):
        doc = found.json()
        if found.media_type not in INDEX_TYPES and "manifests" not in doc:
            return to_oci_manifest(doc)
        entries = doc.get("manifests") or []
        chosen = match_platform(entries, platform) if len(entries) > 1 else (entries[0] if entries else None)
        if chosen is None:
            raise TransferError(f"{name}: no manifest for platform {platform}")
        found = client.manifest(repo, chosen["digest"])
        if found.digest != chosen["digest"]:
            raise TransferError(f"{name}: manifest {chosen['digest'][:19]} does not match its digest")
    raise TransferError(f"{name}: indexes nested too deep")


def _is_artifact(src: OciLocation, platform: str) -> bool:
    """Peek at the manifest over HTTP: is its config something other than a container image config?"""
    client = RegistryClient(src)
    repo = repo_path(src)
    remote = client.manifest(repo, src.lookup)
    doc = remote.json()
    if remote.media_type in INDEX_TYPES or "manifests" in doc:
        return False  # an index of images; skopeo narrows it to the platform
    return (doc.get("config") or {}).get("mediaType") not in IMAGE_CONFIG_TYPES


Use = Callable[[Stream], None]
Blob = Callable[[dict[str, Any], Use], None]


def _from_layout(layout: Layout) -> Blob:
    """blob(layer, use) for the extraction: use(stream) on the layer's blob file in layout."""
    def blob(layer: dict[str, Any], use: Use) -> None:
        with open(layout.blob_path(layer["digest"]), "rb") as stream:
            use(stream)
    return blob


def _apply(tree: TreeWriter, layer: dict[str, Any], stream: Stream) -> None:
    tree.apply(stream, layer["mediaType"], layer["digest"])


def _write(tree: TreeWriter, layer: dict[str, Any], rel: str, sha: list[str], stream: Stream) -> None:
    sha.append(write_blob(stream, tree.tree, rel, layer["digest"], layer["size"]))


def _extract_image(manifest: dict[str, Any], dest_dir: Path, src: OciLocation, blob: Blob,
                   landing: Landing | None = None) -> list[FileEntry]:
    tree = TreeWriter(dest_dir, MODELS_DIR, landing)
    for layer in manifest.get("layers") or []:
        blob(layer, partial(_apply, tree, layer))
    files = tree.entries()
    check_listing([f.path for f in files], "layer entry")
    if not files:
        raise TransferError(f"{src.reference}: the image has no files under /{MODELS_DIR}: not a modelcar")
    return files


def _place_artifact(manifest: dict[str, Any], dest_dir: Path, src: OciLocation, blob: Blob,
                    landing: Landing | None = None) -> list[FileEntry]:
    tree = TreeWriter(dest_dir, None, landing)
    files: list[FileEntry] = []
    for layer in manifest.get("layers") or []:
        annotations = layer.get("annotations") or {}
        if layer.get("mediaType") in MODEL_TARS:
            blob(layer, partial(_apply, tree, layer))  # a ModelPack tar layer: its entries name the files
            continue
        title = _layer_path(annotations)
        if not title:
            log.warning("%s: layer %s has no title annotation: skipped", src.reference, layer["digest"][:19])
            continue
        rel = tree.relative(title)  # refuses absolute paths and '..'
        if not rel:
            raise TransferError(f"{src.reference}: layer title {title!r} names no file")
        if annotations.get(ORAS_UNPACK) == "true":  # a directory oras packed as tar.gz
            blob(layer, partial(_apply, tree, layer))
            continue
        tree.prepare(rel)
        if landing is not None:
            landing.room(int(layer["size"]))
        sha: list[str] = []
        blob(layer, partial(_write, tree, layer, rel, sha))
        files.append(FileEntry(rel, layer["size"], sha[0]))
        if landing is not None:
            landing.landed(rel, dest_dir / rel)
    files = sorted({f.path: f for f in files + tree.entries()}.values(), key=lambda e: e.path)
    check_listing([f.path for f in files], "layer title")
    if not files:
        raise TransferError(f"{src.reference}: the artifact has no titled layers to fetch")
    return files


def _layer_path(annotations: Mapping[str, str]) -> str | None:
    """Where an artifact layer's file goes: a ModelPack layer's `org.cncf.model.filepath` (or modctl's
    `org.cnai.model.filepath`), else its title."""
    return annotations.get(modelpack.FILEPATH) or annotations.get(CNAI_FILEPATH) or annotations.get(TITLE)


# ---- the source type (see sources/__init__.py) -------------------------------------------------------------------

WRITTEN_AS = ("oci",)
SETTINGS = (*oci_store.settings("source"), oci_store.BACKEND)


@dataclass(frozen=True)
class OciSource:
    image: OciLocation
    backend: str  # the tool that pulls a modelcar (oras or skopeo); artifacts are read over HTTP


def claims(given: Given) -> bool:
    return True


def read_files(raw: Mapping[str, str]) -> Filled:
    return oci_store.read_files(raw, "source")


def validate(given: Given) -> list[str]:
    return oci_store.validate(given, "source")


def spec(given: Given) -> OciSource:
    return OciSource(oci_store.location(given, "source"), given.values[oci_store.BACKEND.name])


def in_place(src: OciSource) -> Path | None:
    return None


def listing(src: OciSource) -> dict[str, int] | None:
    return None  # known once the image's layers are read


def facts(src: OciSource) -> dict[str, object]:
    """Before the claim: the image is there and readable with the credentials and CA given (an authenticated read
    of its manifest); its layers' bytes bound what the storage path must hold."""
    loc = qualified(src.image)
    found = RegistryClient(loc).manifest(repo_path(loc), loc.lookup)
    doc = found.json()
    described: dict[str, object] = {"credentials": f"user {loc.username}" if loc.username else "anonymous",
                                    "image": f"{loc.repository}@{found.digest}"}
    if "layers" in doc:
        described["bytes"] = sum(int(layer.get("size", 0)) for layer in doc["layers"])
        # an artifact names its files in the manifest: their names are checked now, a modelcar's as it is read
        if (doc.get("config") or {}).get("mediaType") not in IMAGE_CONFIG_TYPES:
            titles = [_layer_path(layer.get("annotations") or {}) for layer in doc["layers"]
                      if layer.get("mediaType") not in MODEL_TARS]
            check_listing([safe_relative(t, "layer title") for t in titles if t], "layer title")
    return described


def fetch(src: OciSource, ws: Workspace) -> Fetched:
    ws.model.mkdir(parents=True, exist_ok=True)
    files = tuple(fetch_oci(src.image, ws.model, ws.work, src.backend))
    date_files(ws.model, (f.path for f in files), image_time(src.image))  # the image's date: the same image
    return Fetched(ws.model, files)


def image_time(src: OciLocation, platform: str = "linux/amd64") -> float | None:
    """The source image's `org.opencontainers.image.created` annotation (modelcars and most images carry it),
    POSIX seconds; None when it has none or it cannot be read (the files then keep their extraction time)."""
    try:
        manifest = remote_manifest(RegistryClient(src), repo_path(src), src.lookup, platform, src.reference)
        value = str((manifest.get("annotations") or {}).get(CREATED) or "")
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None
    except (TransferError, ValueError):
        return None


def describe(src: OciSource) -> str:
    return f"oci://{src.image.reference}"


def public_source(src: OciSource) -> str | None:
    return describe(src)


def metadata(src: OciSource, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    return meta
