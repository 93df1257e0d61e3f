"""Build a KServe modelcar image as an OCI image layout, in pure Python: the image around the model's layers.

The image is a base image (busybox by default: KServe's modelcar sidecar needs a shell) plus the model's layers
holding `models/<path>` (which files share a layer and the bytes of each layer tar: modelcar_layers.py). This
module writes the rest: the config (the base's, with one diff_id and history line per model layer), the manifest
(base layers, model layers, the signature's; each model layer titled and, for S3 sources, carrying its source
record), and the layout's index. build_modelcar writes a whole image into a layout (the skopeo path);
finish_image writes only config and manifest around layers already pushed (modelcar_push.py, the oras path), so
both give the same manifest digest for the same files.

`base=None` means `scratch`: no base layers, a minimal config. Such an image has no shell and will not run as a
KServe modelcar sidecar, but it is a valid carrier of the files (e.g. for `oras pull` or fetch_oci).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TransferError
from .locations import FileEntry, Origin
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
from .modelcar_layers import MODELS_DIR as MODELS_DIR  # noqa: PLC0414 -- re-exported: sources/oci.py reads it here
from .oci_layout import (
    IMAGE_CONFIG_TYPES,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    TITLE,
    Layout,
    canonical_json,
    descriptor,
    parse_platform,
)
from .signing.model import SIGNATURE_NAME

log = logging.getLogger("modelsync.modelcar")

SIGNATURE_FILE = SIGNATURE_NAME  # /models/model.sig: its own, last layer
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
# olot's per-layer content annotations (olot/constants.py, olot 1.2.1): the file a layer holds, as olot writes them.
CONTENT_DIGEST = "olot.layer.content.digest"      # sha256 of the file itself, not of the layer tar
CONTENT_TYPE = "olot.layer.content.type"          # file | directory
CONTENT_PATH = "olot.layer.content.inlayerpath"   # where it lands in the container, /models/<path>
CONTENT_NAME = "olot.layer.content.name"          # the file's name
# A multi-file layer's config history entry lists its paths up to about this many characters.
HISTORY_CHARS = 400
# Where a layer's bytes came from (S3 sources): a compact JSON list, one object per file in path order,
# {"etag", "path", "sha256", "size", "url"}. A later sync of the same tag reuses the layer without downloading
# when every file's url, size and ETag are unchanged and the registry still has the blob (resync.py).
SOURCE_RECORD = "io.modelsync.source.files"
# A layer whose record would be longer than this (a pack of very many small files) gets none: the manifest stays
# far below registries' size limits (distribution: 4 MiB) with 64 such layers; such a pack is simply re-downloaded.
SOURCE_RECORD_CHARS = 32 << 10


@dataclass(frozen=True)
class ModelcarImage:
    layout: Path
    tag: str
    manifest_digest: str
    manifest: dict[str, Any]
    layers: tuple[ModelcarLayer, ...]   # the model layers only (base layers come first in the manifest)
    signature: ModelcarLayer | None = None  # /models/model.sig, the last layer, when the job signs
    media_type: str = OCI_MANIFEST          # of manifest_digest's document: an index for a hybrid (modelpack.py)
    parts: tuple[tuple[str, dict[str, Any]], ...] = ()  # an index's manifests (digest, document), in its order

    @property
    def manifests(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """Every image manifest pushed: the index's parts, or the one manifest."""
        return self.parts or ((self.manifest_digest, self.manifest),)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """Every model file, one entry each, in path order."""
        return tuple(sorted((f for layer in self.layers for f in layer.files), key=lambda f: f.path))


def _created_by(layer: ModelcarLayer) -> str:
    """The config history line of a layer: what it holds, the list shortened to about HISTORY_CHARS."""
    paths = [f.path for f in layer.files]
    if len(paths) == 1:
        return f"modelsync: COPY {paths[0]} /{MODELS_DIR}/{paths[0]}"
    shown: list[str] = []
    for path in paths:
        if shown and sum(len(p) + 2 for p in shown) + len(path) > HISTORY_CHARS:
            break
        shown.append(path)
    listed = ", ".join(shown) + (f", ... ({len(paths) - len(shown)} more)" if len(shown) < len(paths) else "")
    return f"modelsync: COPY {len(paths)} files /{MODELS_DIR}/: {listed}"


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def source_date_epoch() -> dt.datetime | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) pins `created`, making the whole image, not just its layers,
    reproducible: a restarted job then pushes the very same manifest digest. Validation (validate.py) asks this
    too, so a value that is not a whole number of seconds is refused before anything is claimed."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", value):
        raise TransferError(f"SOURCE_DATE_EPOCH: {value[:40]!r} is not a number of seconds since 1970 (as "
                            f"reproducible-builds.org defines it); unset it or give e.g. 1700000000")
    return dt.datetime.fromtimestamp(int(value), dt.UTC)


def _scratch_config(platform: str) -> dict[str, Any]:
    os_name, arch, variant = parse_platform(platform)
    config: dict[str, Any] = {"architecture": arch, "os": os_name, "config": {},
                              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if variant:
        config["variant"] = variant
    return config


def build_modelcar(model_dir: Path, out_dir: Path, base_dir: Path | None = None, *, platform: str = "linux/amd64",
                   tag: str = "latest", created: dt.datetime | None = None,
                   source: str | None = None, origins: Mapping[str, Origin] | None = None,
                   signature: Path | None = None) -> ModelcarImage:
    """Write the modelcar image for model_dir into the OCI layout out_dir (created if needed) and return it.

    base_dir is an OCI layout holding the base image (an index is narrowed to `platform`); None means scratch.
    origins: where each file came from (S3 sources), recorded on its layer (SOURCE_RECORD).
    signature: a model.sig file, put at /models/model.sig in a layer of its own (the last); a model.sig at the
    model's root is then left out (this job's signature replaces one the source carried).
    """
    out = Layout(out_dir)
    out.init()
    created_at = created_time(created)
    base_layers, config = base_image(base_dir, platform, out)
    files = [(rel, path) for rel, path in model_files(model_dir) if signature is None or rel != SIGNATURE_FILE]
    sources = dict(files)
    budget = max(1, min(MODEL_LAYER_BUDGET, MAX_IMAGE_LAYERS - len(base_layers) - (signature is not None)))
    groups = plan_layers([(rel, path.stat().st_size) for rel, path in files], budget)
    check_layer_count(len(base_layers), len(groups) + (signature is not None))  # before any byte is copied
    log.info("modelcar: %d files in %d layers on %d base layers", len(files), len(groups), len(base_layers))

    layers = []
    for group, title in zip(groups, layer_titles(groups), strict=True):
        start = time.monotonic()
        layer = write_layer([(rel, sources[rel]) for rel in group], out, title)
        log.debug("layer %s %s (%d files, %d bytes, %.1fs)", title, layer.digest[:19], len(group), layer.size,
                  time.monotonic() - start)
        layers.append(layer)
    sig_layer = write_layer([(SIGNATURE_FILE, signature)], out, SIGNATURE_FILE) if signature is not None else None
    return finish_image(out, tag, config, base_layers, layers, created_at, source, origins, sig_layer)


def source_record(files: Sequence[FileEntry], origins: Mapping[str, Origin]) -> str | None:
    """The SOURCE_RECORD value of a layer holding files (path order), None if a file has no origin or the record
    would be too long. Deterministic: the same files from the same objects give the same text."""
    if not files or any(f.path not in origins for f in files):
        return None
    text = json.dumps([{"etag": origins[f.path].etag, "path": f.path, "sha256": f.sha256, "size": f.size,
                        "url": origins[f.path].url} for f in files],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= SOURCE_RECORD_CHARS else None


def layer_record(layer: ModelcarLayer, origins: Mapping[str, Origin] | None) -> dict[str, str]:
    record = source_record(layer.files, origins) if origins else None
    return {SOURCE_RECORD: record} if record else {}


def layer_annotations(layer: ModelcarLayer, origins: Mapping[str, Origin] | None) -> dict[str, str]:
    """A model layer's annotations: its title, the content keys olot writes (so tools that read them, e.g.
    rh-model-signing's image verification, find each file's sha256 without pulling the layer) and, with origins,
    its source record. A one-file layer is olot's `file` (its sha256, `/models/<path>`, its name); a shared layer
    is a `directory` under /models/ with no single digest, as olot marks a directory's tarball."""
    if len(layer.files) == 1:
        only = layer.files[0]
        content = {CONTENT_DIGEST: f"sha256:{only.sha256}", CONTENT_TYPE: "file",
                   CONTENT_PATH: f"/{MODELS_DIR}/{only.path}", CONTENT_NAME: only.path.rsplit("/", 1)[-1]}
    else:
        content = {CONTENT_TYPE: "directory", CONTENT_PATH: f"/{MODELS_DIR}/", CONTENT_NAME: layer.title}
    return {TITLE: layer.title, **content, **layer_record(layer, origins)}


def signature_annotations(layer: ModelcarLayer) -> dict[str, str]:
    """The model.sig layer's annotations: its title only. Not olot's content keys: they list the model's files, and
    rh-model-signing compares exactly that list (every olot `file` or `directory` layer) with the files model.sig
    signs, which cannot include model.sig itself; with the keys its image verification fails on an extra file."""
    return {TITLE: layer.title}


def created_time(created: dt.datetime | None = None) -> str:
    """The image's `created` (RFC 3339, UTC, seconds): SOURCE_DATE_EPOCH when set, else the given time (the
    source's newest modification: locations.Fetched.newest), else now. Only the last makes a new digest for the
    same content: every source that knows its files' times gives them."""
    return _rfc3339(source_date_epoch() or created or dt.datetime.now(dt.UTC))


def finish_image(out: Layout, tag: str, config: dict[str, Any], base_layers: list[dict[str, Any]],
                 model_layers: Sequence[ModelcarLayer], created_at: str, source: str | None,
                 origins: Mapping[str, Origin] | None = None,
                 signature: ModelcarLayer | None = None) -> ModelcarImage:
    """Config and manifest of the modelcar (base layers + the model's layers + its signature's) written into out,
    tagged.

    The model's layer blobs need not be in out: the pipeline pushes each as soon as it is written and deletes it.
    With origins, each layer whose files all have one carries their source record (SOURCE_RECORD).
    """
    layers = [*model_layers, *([signature] if signature is not None else [])]
    config = json.loads(json.dumps(config))  # the caller's copy stays as it was
    config["created"] = created_at
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", [])
    config["rootfs"]["diff_ids"].extend(layer.digest for layer in layers)  # uncompressed: diff_id == digest
    history = config.setdefault("history", [])
    history.extend({"created": created_at, "created_by": _created_by(layer)} for layer in layers)
    config_desc = out.add_bytes(canonical_json(config), OCI_CONFIG)

    annotations = {CREATED: created_at}
    if source:
        annotations[SOURCE] = source
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": base_layers + [descriptor(OCI_LAYER_TAR, lay.digest, lay.size, layer_annotations(lay, origins))
                                 for lay in model_layers]
                  + ([descriptor(OCI_LAYER_TAR, signature.digest, signature.size, signature_annotations(signature))]
                     if signature is not None else []),
        "annotations": annotations,
    }
    manifest_desc = out.add_bytes(canonical_json(manifest), OCI_MANIFEST)
    out.write_index(manifest_desc, tag)
    return ModelcarImage(out.root, tag, manifest_desc["digest"], manifest, tuple(model_layers), signature)


def base_image(base_dir: Path | None, platform: str,
               out: Layout | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The base image's layer descriptors and a copy of its config (scratch if base_dir is None); with out, the
    base layer blobs are brought into out as well."""
    if base_dir is None:
        return [], _scratch_config(platform)
    base = Layout(base_dir)
    _, manifest = base.resolve_manifest(platform)
    if manifest["config"]["mediaType"] not in IMAGE_CONFIG_TYPES:
        raise TransferError(f"base image in {base_dir} is not a container image "
                            f"(config type {manifest['config']['mediaType']})")
    config = base.read_json(manifest["config"]["digest"])
    layers = []
    for layer in manifest.get("layers") or []:
        if out is not None:
            out.import_blob(base, layer["digest"])
        layers.append({k: v for k, v in layer.items() if k in ("mediaType", "digest", "size", "annotations", "urls")})
    if len(config.get("rootfs", {}).get("diff_ids", [])) != len(layers):
        raise TransferError(f"base image in {base_dir}: config lists {len(config['rootfs']['diff_ids'])} diff_ids "
                            f"for {len(layers)} layers")
    return layers, config
