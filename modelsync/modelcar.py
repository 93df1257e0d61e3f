"""Build a KServe modelcar image as an OCI image layout, in pure Python.

The image is a base image (busybox by default: KServe's modelcar sidecar needs a shell) plus one layer per model
file holding `models/<path>`. One layer per file means an unchanged file keeps its layer digest across versions,
so re-pushing a model only uploads what changed, and the registry deduplicates shared files.

Layers are uncompressed tars (`application/vnd.oci.image.layer.v1.tar`): model weights hardly compress, and for an
uncompressed layer the digest equals the diff_id, so any tool can check it without inflating. Each layer is
deterministic: entries `models/`, each parent directory, then the file; dirs 0755, files 0644, uid/gid 0, empty
user/group names, mtime 0, POSIX pax format (only when a name is non-ASCII/long or a size is >= 8 GiB does a pax
record appear, and it never carries atime/ctime), so the same file at the same path always gives the same digest.

`base=None` means `scratch`: no base layers, a minimal config. Such an image has no shell and will not run as a
KServe modelcar sidecar, but it is a valid carrier of the files (e.g. for `oras pull` or fetch_oci).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import queue
import stat
import threading
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import TransferError
from .locations import FileEntry
from .oci_layout import (IMAGE_CONFIG_TYPES, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, TITLE, HashingWriter, Layout,
                         canonical_json, descriptor, parse_platform)

log = logging.getLogger("modelsync.modelcar")

MODELS_DIR = "models"
LAYER_MTIME = 0
DIR_MODE = 0o755
FILE_MODE = 0o644
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
_COPY_BUF = 4 << 20
# Container runtimes stack every layer as an overlay lower dir; past ~120 layers some refuse to mount the image.
LAYER_WARNING = 120


@dataclass(frozen=True)
class ModelcarLayer:
    path: str          # the file's path relative to the model directory (POSIX)
    digest: str        # sha256:... of the layer tar (== its diff_id)
    size: int          # bytes of the layer tar
    file: FileEntry    # the file inside it


@dataclass(frozen=True)
class ModelcarImage:
    layout: Path
    tag: str
    manifest_digest: str
    manifest: dict[str, Any]
    layers: tuple[ModelcarLayer, ...]   # the model layers only (base layers come first in the manifest)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return tuple(layer.file for layer in self.layers)


def layer_headers(relpath: str, size: int) -> list[tarfile.TarInfo]:
    """The tar headers of one file's layer: `models/`, each parent directory, then the file itself."""
    parts = PurePosixPath(MODELS_DIR, relpath).parts
    infos = []
    for depth in range(1, len(parts)):
        infos.append(_info("/".join(parts[:depth]), tarfile.DIRTYPE, DIR_MODE, 0))
    infos.append(_info("/".join(parts), tarfile.REGTYPE, FILE_MODE, size))
    return infos


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, LAYER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_file_layer(src: Path, relpath: str, layout: Layout) -> ModelcarLayer:
    """Stream src into a layer blob of layout, hashing the file and the tar as the bytes go by."""
    size = src.stat().st_size
    tmp = layout.staging_file(hashlib.sha256(relpath.encode()).hexdigest()[:16])
    file_sha = hashlib.sha256()
    with open(src, "rb") as fin, open(tmp, "wb") as raw:
        out = HashingWriter(raw)
        for info in layer_headers(relpath, size):
            out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))
        _copy_hashed(fin, out, size, file_sha, relpath)
        out.write(bytes(-size % tarfile.BLOCKSIZE))                 # pad the data to a whole block
        out.write(bytes(2 * tarfile.BLOCKSIZE))                     # end-of-archive marker
        out.write(bytes(-out.size % tarfile.RECORDSIZE))            # and to a whole record, as tar(1) does
    layout.commit_blob(tmp, out.digest)
    return ModelcarLayer(relpath, out.digest, out.size, FileEntry(relpath, size, file_sha.hexdigest()))


def _copy_hashed(fin: BinaryIO, out: HashingWriter, size: int, file_sha: Any, relpath: str) -> None:
    """Copy exactly size bytes, the file's hash taken in a reader thread while this one hashes and writes the tar.

    hashlib and file I/O release the GIL, so the two sha256 passes run on two cores (about twice as fast).
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)

    def reader() -> None:
        try:
            left = size
            while left > 0:
                data = fin.read(min(_COPY_BUF, left))
                if not data:
                    raise TransferError(f"{relpath}: file shrank while being read")
                file_sha.update(data)
                left -= len(data)
                chunks.put(data)
            chunks.put(None)
        except BaseException as exc:  # handed to the writer, which re-raises it
            chunks.put(exc)

    thread = threading.Thread(target=reader, name="modelcar-read", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            out.write(item)
    finally:
        # unblock a reader stuck on a full queue if the writer failed
        while thread.is_alive():
            try:
                chunks.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def model_files(model_dir: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, absolute path) of every regular file under model_dir, sorted by path.

    Symlinks to regular files are stored as the file they point to (KServe reads plain files); anything else that
    is not a regular file or directory is refused rather than silently dropped.
    """
    found = []
    for root, dirs, names in os.walk(model_dir):
        dirs.sort()
        if linked := [d for d in dirs if Path(root, d).is_symlink()]:
            # os.walk does not enter them; refusing beats publishing a model with a directory silently missing
            raise TransferError(f"{Path(root, linked[0]).relative_to(model_dir)}: a symlink to a directory; "
                                f"copy the directory in instead")
        for name in names:
            path = Path(root, name)
            rel = path.relative_to(model_dir).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise TransferError(f"file name {rel!r} is not valid UTF-8; rename it") from None
            if not stat.S_ISREG(path.stat().st_mode):
                raise TransferError(f"{rel}: not a regular file; a modelcar holds only files and directories")
            found.append((rel, path))
    if not found:
        raise TransferError(f"{model_dir}: no files to put in the modelcar")
    return sorted(found)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _source_date_epoch() -> dt.datetime | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) pins `created`, making the whole image, not just its layers,
    reproducible: a restarted job then pushes the very same manifest digest."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc)
    except ValueError:
        raise TransferError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None


def _scratch_config(platform: str) -> dict[str, Any]:
    os_name, arch, variant = parse_platform(platform)
    config: dict[str, Any] = {"architecture": arch, "os": os_name, "config": {},
                              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if variant:
        config["variant"] = variant
    return config


def build_modelcar(model_dir: Path, out_dir: Path, base_dir: Path | None = None, *, platform: str = "linux/amd64",
                   tag: str = "latest", created: dt.datetime | None = None,
                   source: str | None = None) -> ModelcarImage:
    """Write the modelcar image for model_dir into the OCI layout out_dir (created if needed) and return it.

    base_dir is an OCI layout holding the base image (an index is narrowed to `platform`); None means scratch.
    """
    out = Layout(out_dir)
    out.init()
    created_at = _rfc3339(created or _source_date_epoch() or dt.datetime.now(dt.timezone.utc))
    base_layers, config = _base(out, base_dir, platform)
    files = model_files(model_dir)
    if len(base_layers) + len(files) > LAYER_WARNING:
        log.warning("the modelcar will have %d layers (one per file); some container runtimes refuse images with "
                    "more than about %d", len(base_layers) + len(files), LAYER_WARNING)

    layers = []
    for rel, path in files:
        start = time.monotonic()
        layer = write_file_layer(path, rel, out)
        log.debug("layer %s %s (%d bytes, %.1fs)", rel, layer.digest[:19], layer.size, time.monotonic() - start)
        layers.append(layer)

    config["created"] = created_at
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", [])
    config["rootfs"]["diff_ids"].extend(layer.digest for layer in layers)  # uncompressed: diff_id == digest
    history = config.setdefault("history", [])
    for layer in layers:
        history.append({"created": created_at, "created_by": f"modelsync: COPY {layer.path} /{MODELS_DIR}/{layer.path}"})
    config_desc = out.add_bytes(canonical_json(config), OCI_CONFIG)

    annotations = {CREATED: created_at}
    if source:
        annotations[SOURCE] = source
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": base_layers + [descriptor(OCI_LAYER_TAR, lay.digest, lay.size, {TITLE: lay.path}) for lay in layers],
        "annotations": annotations,
    }
    manifest_desc = out.add_bytes(canonical_json(manifest), OCI_MANIFEST)
    out.write_index(manifest_desc, tag)
    return ModelcarImage(out_dir, tag, manifest_desc["digest"], manifest, tuple(layers))


def _base(out: Layout, base_dir: Path | None, platform: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The base image's layer descriptors (blobs brought into out) and a copy of its config; scratch if None."""
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
        out.import_blob(base, layer["digest"])
        layers.append({k: v for k, v in layer.items() if k in ("mediaType", "digest", "size", "annotations", "urls")})
    if len(config.get("rootfs", {}).get("diff_ids", [])) != len(layers):
        raise TransferError(f"base image in {base_dir}: config lists {len(config['rootfs']['diff_ids'])} diff_ids "
                            f"for {len(layers)} layers")
    return layers, config
