"""Push a model as a KServe modelcar with oras, each layer fed to the registry from the model's files: no layer tar
is written, so a push needs no room beyond the base image and the config.

Contract: push_modelcar(target, base, work_dir, files, origins, ...) pulls the base image (oci_copy.pull_base),
plans the model's layers (modelcar_layers.plan_layers, the budget what MAX_IMAGE_LAYERS leaves beside the base
and the signature), pushes them with a LayerPusher, then the signature layer, config and manifest, and verifies
the result (oci_copy.verify_pushed); it returns the image by digest. The files are either already under `landed`
(dir_to_modelcar: a fetched source or a volume read in place, left as they are) or come from a `fetch`, which is
shown the plan first and answers with the layers it need not bring (a re-sync's) and the Download that brings the
rest (pipeline.py: S3). The image is byte for byte the one build_modelcar + push_layout make of the same files.

Used by destinations/oci.py (backend oras) and pipeline.py (S3 -> OCI); imports neither.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import modelpack
from .clients.distribution import RegistryClient
from .errors import TransferError
from .files import human
from .layer_push import Download, LayerPusher
from .locations import FileEntry, OciLocation, Origin, Published
from .modelcar import SIGNATURE_FILE, ModelcarImage, base_image, created_time, finish_image
from .modelcar_layers import (
    MAX_IMAGE_LAYERS,
    MODEL_LAYER_BUDGET,
    ModelcarLayer,
    check_layer_count,
    layer_titles,
    model_files,
    plan_layers,
    write_layer,
)
from .oci_access import registry_access
from .oci_copy import pull_base, push_tag, repo_path, verify_pushed
from .oci_layout import OCI_MANIFEST, Layout

log = logging.getLogger("modelsync.modelcar_push")

_REF = "modelsync"


@dataclass(frozen=True)
class Planned:
    """What push_modelcar has decided before any model byte moves, shown to a fetch."""
    job_dir: Path                          # the push's own directory (removed at the end); a download goes here
    client: RegistryClient                 # of the target
    tag: str
    layers: dict[str, tuple[str, ...]]     # title -> the layer's files, in plan order
    base_layers: int


# The layers (by title) the target has already (not brought, not pushed), and the Download for the others.
Fetch = Callable[[Planned], tuple[dict[str, ModelcarLayer], Download]]


def dir_to_modelcar(model_dir: Path, target: OciLocation, base: OciLocation | None, work_dir: Path,
                    source_annotation: str | None = None, *, platform: str = "linux/amd64",
                    created: dt.datetime | None = None, origins: Mapping[str, Origin] | None = None,
                    signature: Path | None = None, hashes: Mapping[str, str] | None = None,
                    oci_format: str = "modelcar") -> Published:
    """The modelcar of the files already in model_dir (a fetched source, or a volume read in place) pushed: each
    layer hashed from the files, then fed to `oras blob push` from them, so no layer tar is written and model_dir
    is left as it was. The same image, byte for byte, as build_modelcar + push_layout.
    signature: the model's model.sig, in a layer of its own (a model.sig at the model's root is left out).
    hashes: the files' sha256 if the fetch that wrote them took them (LayerPusher: not read for them again)."""
    push_tag(target)  # refused before the model is read
    files = {rel: path.stat().st_size for rel, path in model_files(model_dir)
             if signature is None or rel != SIGNATURE_FILE}
    sign_model = (lambda _files: signature.read_bytes()) if signature is not None else None
    return push_modelcar(target, base, work_dir, files, dict(origins or {}), landed=model_dir,
                         source_annotation=source_annotation, platform=platform, sign_model=sign_model,
                         created=created, hashes=hashes, oci_format=oci_format)


def push_modelcar(target: OciLocation, base: OciLocation | None, work_dir: Path, files: dict[str, int],
                  origins: Mapping[str, Origin], *, landed: Path | None = None, fetch: Fetch | None = None,
                  source_annotation: str | None = None, platform: str = "linux/amd64",
                  created: dt.datetime | None = None,
                  sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
                  on_pushed: Callable[[ModelcarLayer], None] | None = None,
                  hashes: Mapping[str, str] | None = None,
                  scan_file: Callable[[str, Path], None] | None = None, oci_format: str = "modelcar") -> Published:
    """Plan, (fetch,) hash and push the layers of files, then config and manifest; verified. With landed the
    files are there already (nothing fetched, nothing reused, nothing deleted); else fetch brings them.

    sign_model: called with every file's sha256 once all model layers are pushed (their bytes hashed on the way),
    it returns model.sig, which goes up in a layer of its own before the manifest.
    on_pushed: called with each model layer pushed by this run, once its blob is in the repository.
    scan_file(rel, path): called on each file once it is on disk, before its layer is hashed and pushed (the
    pickle check; it raises to stop the push).
    oci_format: modelcar, modelpack (raw layers, no base image) or hybrid (the modelcar and a ModelPack manifest
    over its layers in one index, which the result names): modelpack.py."""
    tag = push_tag(target)
    signing = sign_model is not None
    created_at = created_time(created)
    work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix="pipeline-", dir=work_dir))
    try:
        raw = oci_format == "modelpack"  # an artifact of raw files: no base image, one layer per file
        base_dir = None if raw else pull_base(base, job_dir, work_dir, "oras", platform)
        base_layers, config = base_image(base_dir, platform)
        if raw:
            groups = modelpack.plan_raw(files)
            titles = [group[0] for group in groups]
        else:
            budget = max(1, min(MODEL_LAYER_BUDGET, MAX_IMAGE_LAYERS - len(base_layers) - signing))
            groups = plan_layers(sorted(files.items()), budget)
            titles = layer_titles(groups)
            check_layer_count(len(base_layers), len(groups) + signing)
        client = RegistryClient(target)
        download: Download | None = None
        reused: dict[str, ModelcarLayer] = {}
        if fetch is not None:
            reused, download = fetch(Planned(job_dir, client, tag, dict(zip(titles, groups, strict=True)),
                                             len(base_layers)))
        else:
            log.info("pipeline: %d file(s), %s, in %d layer(s) (%d to push) on %d base layer(s)", len(files),
                     human(sum(files.values())), len(groups), len(groups), len(base_layers),
                     extra={"fields": {"files": len(files), "layers": len(groups)}})
        todo = [(group, title) for group, title in zip(groups, titles, strict=True) if title not in reused]
        start = time.monotonic()
        with registry_access(target, work_dir) as access:
            pusher = LayerPusher(files, target, access, client, job_dir, landed=landed, download=download,
                                 on_pushed=on_pushed, hashes=hashes, check_file=scan_file, raw=raw)
            base_blobs = [(d["digest"], d["size"], Layout(base_dir).blob_path(d["digest"])) for d in base_layers
                          if client.find_blob(repo_path(target), d["digest"]) != d["size"]] \
                if base_dir is not None else []
            done = {**pusher.go(todo, base_blobs), **reused}
            layers = [done[title] for title in titles]
            signature = signature_layer(pusher, sign_model, layers, raw) if sign_model is not None else None
            if raw:
                image = modelpack.finish_modelpack(pusher.layout, _REF, layers, created_at, source_annotation,
                                                   origins or None, signature)
            else:
                image = finish_image(pusher.layout, _REF, config, base_layers, layers, created_at,
                                     source_annotation, origins or None, signature)
                if oci_format == "hybrid":
                    image = modelpack.finish_hybrid(pusher.layout, _REF, image, platform, created_at,
                                                    source_annotation)
            finish_push(pusher, image, tag)
        total = sum(files.values())
        elapsed = time.monotonic() - start
        peak = download.peak if download is not None else 0
        log.info("pipeline: %s pushed as %s in %.1fs (%.0f MB/s)%s", human(total), image.manifest_digest, elapsed,
                 total / 1e6 / max(elapsed, 1e-6), "" if download is None else f", at most {human(peak)} in flight",
                 extra={"fields": {"peak_in_flight_bytes": peak}})
        verify_pushed(image, target, tag)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return Published(uri=f"oci://{target.repository}@{image.manifest_digest}", digest=image.manifest_digest,
                     files=image.files)


def signature_layer(pusher: LayerPusher, sign_model: Callable[[tuple[FileEntry, ...]], bytes],
                     layers: list[ModelcarLayer], raw: bool = False) -> ModelcarLayer:
    """model.sig over every file's sha256 (hashed as the layers were written), in its own layer, pushed: a tar
    of /models/model.sig, or (raw, ModelPack) the file itself."""
    signed = tuple(f for layer in layers for f in layer.files)
    if raw:
        data = sign_model(signed)
        desc = pusher.layout.add_bytes(data, "application/octet-stream")
        layer = ModelcarLayer(SIGNATURE_FILE, desc["digest"], len(data),
                              (FileEntry(SIGNATURE_FILE, len(data), desc["digest"].split(":", 1)[1]),))
        pusher.push_blob(layer.digest, pusher.layout.blob_path(layer.digest))
        return layer
    path = pusher.layout.root.parent / SIGNATURE_FILE
    path.write_bytes(sign_model(signed))
    layer = write_layer([(SIGNATURE_FILE, path)], pusher.layout, SIGNATURE_FILE)
    path.unlink()
    pusher.push_blob(layer.digest, pusher.layout.blob_path(layer.digest))
    return layer


def finish_push(pusher: LayerPusher, image: ModelcarImage, tag: str) -> None:
    """Config blobs pushed, every blob HEAD-verified in the registry, then the manifest pushed under tag (a
    hybrid: its two manifests by digest, then the index under tag)."""
    try:
        client, repo = pusher.client, repo_path(pusher.target)
        for _, manifest in image.manifests:
            config = manifest["config"]
            if client.find_blob(repo, config["digest"]) != config["size"]:  # a re-sync's may be there already
                pusher.push_blob(config["digest"], pusher.layout.blob_path(config["digest"]))
            for blob in (config, *manifest["layers"]):
                size = client.blob_size(repo, blob["digest"])
                if size != blob["size"]:
                    raise TransferError(f"{pusher.repo}: blob {blob['digest'][:19]} is {size} bytes, expected "
                                        f"{blob['size']}")
        for digest, _ in image.parts:
            pusher.oras("push of a manifest", ["manifest", "push", *pusher.access.oras_args(), "--media-type",
                                               OCI_MANIFEST, f"{pusher.repo}@{digest}",
                                               str(pusher.layout.blob_path(digest))])
        pusher.oras("push of the manifest", ["manifest", "push", *pusher.access.oras_args(), "--media-type",
                                             image.media_type, f"{pusher.repo}:{tag}",
                                             str(pusher.layout.blob_path(image.manifest_digest))])
    except BaseException:
        pusher.group.stop()
        raise
