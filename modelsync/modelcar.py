"""Build a KServe modelcar image as an OCI image layout, in pure Python.

The image is a base image (busybox by default: KServe's modelcar sidecar needs a shell) plus the model's layers
holding `models/<path>`. plan_layers() decides which files share a layer, from the listing's paths and sizes alone:
while the model fits the layer budget every file has a layer of its own; past it, large files keep their own layer
and small files are packed together in path order (see the constants below). A file alone in its layer keeps the
same layer digest across versions, so re-pushing a model only uploads what changed and the registry deduplicates
shared files.

Layers are uncompressed tars (`application/vnd.oci.image.layer.v1.tar`): model weights hardly compress, and for an
uncompressed layer the digest equals the diff_id, so any tool can check it without inflating. Each layer is
deterministic: `models/`, each parent directory once, then the files in path order; dirs 0755, files 0644,
uid/gid 0, empty user/group names, mtime 0. Headers are GNU tar format, the one every runtime and scanner reads
for any size: a size of 8 GiB or more goes in the header's size field base-256 encoded (POSIX pax would put 0
there and the size in a pax record, which Clair rejects as "bad block"), a name over 100 bytes in a GNU longname
entry before its header; UTF-8 names are stored as their UTF-8 bytes. No pax record is ever written, so the same
files at the same paths always give the same digest.

`base=None` means `scratch`: no base layers, a minimal config. Such an image has no shell and will not run as a
KServe modelcar sidecar, but it is a valid carrier of the files (e.g. for `oras pull` or fetch_oci).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import queue
import re
import stat
import threading
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import TransferError
from .locations import FileEntry
from .signing.model import SIGNATURE_NAME as SIGNATURE_FILE  # /models/model.sig: its own, last layer
from .oci_layout import (IMAGE_CONFIG_TYPES, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, TITLE, HashingWriter, Layout,
                         canonical_json, descriptor, parse_platform)

log = logging.getLogger("modelsync.modelcar")

MODELS_DIR = "models"
LAYER_MTIME = 0
DIR_MODE = 0o755
FILE_MODE = 0o644
TAR_FORMAT = tarfile.GNU_FORMAT
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
_COPY_BUF = 4 << 20

# Layer counts. A container runtime stacks every layer as one overlay lower directory, and the mount fails past a
# limit: measured on this project's stack, podman (overlay storage) refused 151 layers ("max depth exceeded") and
# containerd + runc failed at 500 ("mount options is too long", a limit that falls as its snapshot ids grow).
# MAX_IMAGE_LAYERS (base + model) is refused before any push; it stays well below podman's limit.
MAX_IMAGE_LAYERS = 100
# Model layers at most, leaving 36 for the base under MAX_IMAGE_LAYERS (busybox has 1 layer, distro and python
# bases about 1-20). A base with more lowers the budget to what is left of MAX_IMAGE_LAYERS.
MODEL_LAYER_BUDGET = 64
# Past the budget, a file of at least this many bytes keeps a layer of its own (weight shards are 100s of MiB to
# GiBs: a re-sync reuses every unchanged one); smaller files (configs, tokenizers, small shards) are packed.
LARGE_FILE_BYTES = 64 << 20
# A shared layer is closed once it holds this many bytes (it passes it by less than one small file), unless the
# small files are so many bytes that the budget needs bigger packs.
PACK_BYTES = 256 << 20
# A multi-file layer's config history entry lists its paths up to about this many characters.
HISTORY_CHARS = 400
# The title annotation of a multi-file layer (oras pull saves each titled layer's tar under its title).
PACK_TITLE = "modelcar-layer-{index:03d}.tar"
# Where a layer's bytes came from (S3 sources): a compact JSON list, one object per file in path order,
# {"etag", "path", "sha256", "size", "url"}. A later sync of the same tag reuses the layer without downloading
# when every file's url, size and ETag are unchanged and the registry still has the blob (pipeline.py).
SOURCE_RECORD = "io.modelsync.source.files"
# A layer whose record would be longer than this (a pack of very many small files) gets none: the manifest stays
# far below registries' size limits (distribution: 4 MiB) with 64 such layers; such a pack is simply re-downloaded.
SOURCE_RECORD_CHARS = 32 << 10


@dataclass(frozen=True)
class ModelcarLayer:
    title: str                     # its org.opencontainers.image.title: the file's path, or PACK_TITLE if shared
    digest: str                    # sha256:... of the layer tar (== its diff_id)
    size: int                      # bytes of the layer tar
    files: tuple[FileEntry, ...]   # the files inside it, in path order


@dataclass(frozen=True)
class ModelcarImage:
    layout: Path
    tag: str
    manifest_digest: str
    manifest: dict[str, Any]
    layers: tuple[ModelcarLayer, ...]   # the model layers only (base layers come first in the manifest)
    signature: ModelcarLayer | None = None  # /models/model.sig, the last layer, when the job signs

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """Every model file, one entry each, in path order."""
        return tuple(sorted((f for layer in self.layers for f in layer.files), key=lambda f: f.path))


# ---- which files share a layer ----------------------------------------------------------------------------------


def plan_layers(listing: Sequence[tuple[str, int]], budget: int = MODEL_LAYER_BUDGET) -> list[tuple[str, ...]]:
    """Group the files of a listing [(relative path, size)] into at most `budget` layers; a pure function.

    Files of at least a threshold size get a layer each; the others are packed in path order, a pack closed once
    it holds `pack` bytes. The threshold starts at 0 (every file alone: finest reuse, the layout of earlier
    versions) and, if that is over budget, is LARGE_FILE_BYTES, doubled until the layers fit; `pack` is PACK_BYTES
    or, if the small files need it, their total spread over the layers left. Groups are ordered by first path.
    """
    files = sorted(listing)
    if len({path for path, _ in files}) != len(files):
        raise ValueError("the listing names a file twice")
    if budget < 1:
        raise ValueError(f"a layer budget of {budget} holds no file")
    largest = max((size for _, size in files), default=0)
    threshold = 0
    while True:
        groups = _group(files, threshold, budget)
        if groups is not None:
            return sorted(groups)
        threshold = LARGE_FILE_BYTES if threshold == 0 else threshold * 2
        if threshold > 2 * largest + LARGE_FILE_BYTES:  # unreachable: with every file small, one pack always fits
            raise AssertionError("plan_layers did not converge")


def _group(files: list[tuple[str, int]], threshold: int, budget: int) -> list[tuple[str, ...]] | None:
    """The groups for this threshold, None if they exceed the budget."""
    alone = [(path,) for path, size in files if size >= threshold]
    small = [(path, size) for path, size in files if size < threshold]
    room = budget - len(alone)
    if room < 0 or (small and room < 1):
        return None
    total = sum(size for _, size in small)
    # every closed pack holds >= pack bytes, so there are at most total // pack + 1 packs <= room
    pack = max(PACK_BYTES, math.ceil(total / (room - 1))) if room > 1 else math.inf
    packs: list[tuple[str, ...]] = []
    current: list[str] = []
    held = 0
    for path, size in small:
        current.append(path)
        held += size
        if held >= pack:
            packs.append(tuple(current))
            current, held = [], 0
    if current:
        packs.append(tuple(current))
    return alone + packs if len(alone) + len(packs) <= budget else None


def check_layer_count(base_layers: int, model_layers: int) -> None:
    """Refuse (TransferError) an image with more layers than container runtimes can be counted on to mount."""
    total = base_layers + model_layers
    if total > MAX_IMAGE_LAYERS:
        raise TransferError(f"the modelcar would have {total} layers ({base_layers} base + {model_layers} model), "
                            f"over the limit of {MAX_IMAGE_LAYERS} that container runtimes can mount; "
                            f"use a base image with fewer layers")


# ---- layer tars ---------------------------------------------------------------------------------------------------


def layer_members(files: Sequence[tuple[str, int]]) -> list[tarfile.TarInfo]:
    """The tar members of one layer: `models/`, each parent directory once, then the files, all in path order."""
    dirs: set[str] = set()
    for relpath, _ in files:
        parts = PurePosixPath(MODELS_DIR, relpath).parts
        dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    infos = [_info(name, tarfile.DIRTYPE, DIR_MODE, 0) for name in sorted(dirs)]
    infos += [_info(f"{MODELS_DIR}/{relpath}", tarfile.REGTYPE, FILE_MODE, size) for relpath, size in sorted(files)]
    return infos


def tar_header(info: tarfile.TarInfo) -> bytes:
    """One member's header blocks as written into layers (GNU format: base-256 sizes, longname entries)."""
    return info.tobuf(TAR_FORMAT, "utf-8", "strict")


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, LAYER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer(files: Sequence[tuple[str, Path]], layout: Layout, title: str) -> ModelcarLayer:
    """Stream the files [(relative path, source)] into one layer blob of layout, hashing files and tar on the way."""
    files = sorted(files)
    key = hashlib.sha256("\0".join(rel for rel, _ in files).encode()).hexdigest()[:16]
    tmp = layout.staging_file(key)
    entries: list[FileEntry] = []
    sources = {f"{MODELS_DIR}/{rel}": (rel, src) for rel, src in files}
    with open(tmp, "wb") as raw:
        out = HashingWriter(raw)
        for info in layer_members([(rel, 0) for rel, _ in files]):
            if not info.isreg():
                out.write(tar_header(info))
                continue
            rel, src = sources[info.name]
            with open(src, "rb") as fin:  # one file open at a time: a pack may hold thousands
                info.size = os.fstat(fin.fileno()).st_size  # the size as of now, not as listed
                out.write(tar_header(info))
                file_sha = hashlib.sha256()
                _copy_hashed(fin, out, info.size, file_sha, rel)
            out.write(bytes(-info.size % tarfile.BLOCKSIZE))  # pad the data to a whole block
            entries.append(FileEntry(rel, info.size, file_sha.hexdigest()))
        _end_archive(out)
    layout.commit_blob(tmp, out.digest)
    return ModelcarLayer(title, out.digest, out.size, tuple(entries))


def layer_parts(files: Sequence[tuple[str, int]]) -> list[bytes | str]:
    """The layer tar of files [(relative path, size)] as its parts in order: literal bytes (headers, padding, the
    end blocks) and, for each file, its relative path standing for its `size` bytes. With the files' bytes put in,
    it is byte for byte what write_layer writes of the same files, and layer_tar_size long."""
    parts: list[bytes | str] = []
    head = bytearray()
    size = 0
    for info in layer_members(files):
        head += tar_header(info)
        if info.isreg():
            parts += [bytes(head), info.name[len(MODELS_DIR) + 1:]]
            size += len(head) + info.size
            head = bytearray(bytes(-info.size % tarfile.BLOCKSIZE))
    head += bytes(2 * tarfile.BLOCKSIZE)                        # end-of-archive marker
    size += len(head)
    head += bytes(-size % tarfile.RECORDSIZE)                   # and to a whole record, as tar(1) does
    parts.append(bytes(head))
    return parts


def layer_tar_size(files: Sequence[tuple[str, int]]) -> int:
    """Bytes of the layer tar of files [(relative path, size)], as write_layer makes it."""
    size = sum(len(tar_header(info)) + info.size + (-info.size % tarfile.BLOCKSIZE) for info in layer_members(files))
    size += 2 * tarfile.BLOCKSIZE
    return size + (-size % tarfile.RECORDSIZE)


def _end_archive(out: HashingWriter) -> None:
    out.write(bytes(2 * tarfile.BLOCKSIZE))                     # end-of-archive marker
    out.write(bytes(-out.size % tarfile.RECORDSIZE))            # and to a whole record, as tar(1) does


def _copy_hashed(fin: BinaryIO, out: HashingWriter, size: int, file_sha: Any, relpath: str,
                 short: str = "file shrank while being read") -> None:
    """Copy exactly size bytes, the file's hash taken in a reader thread while this one hashes and writes the tar.

    hashlib and file I/O release the GIL, so the two sha256 passes run on two cores (about twice as fast).
    A file of one buffer or less is copied in this thread: a thread per small file would cost more than it saves.
    """
    if size <= _COPY_BUF:
        data = _read_exactly(fin, size)
        if len(data) < size:
            raise TransferError(f"{relpath}: {short}")
        file_sha.update(data)
        out.write(data)
        return
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)

    def reader() -> None:
        try:
            left = size
            while left > 0:
                data = _read_exactly(fin, min(_COPY_BUF, left))
                if not data:
                    raise TransferError(f"{relpath}: {short}")
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


def _read_exactly(fin: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at end of file: a pipe returns what it has, a file all that is asked for."""
    data = fin.read(n)
    if not data or len(data) == n:
        return data
    parts = [data]
    left = n - len(data)
    while left > 0 and (more := fin.read(left)):
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


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


def layer_titles(groups: Sequence[tuple[str, ...]]) -> list[str]:
    """The title annotation of each layer: a lone file's path (as in earlier versions, so `oras pull` saves the
    layer under the file's name); for a shared layer PACK_TITLE with the layer's position among the model layers,
    prefixed with `_` while it would clash with a model file or directory (oras would then overwrite one)."""
    taken = {path for group in groups for path in group}
    taken |= {str(parent) for path in taken for parent in PurePosixPath(path).parents}
    titles = []
    for index, group in enumerate(groups, start=1):
        title = group[0] if len(group) == 1 else PACK_TITLE.format(index=index)
        while len(group) > 1 and title in taken:
            title = "_" + title
        titles.append(title)
    return titles


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
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    return dt.datetime.fromtimestamp(int(value), dt.timezone.utc)


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


@dataclass(frozen=True)
class Origin:
    """Where a file's bytes came from: the object's URL and the ETag the listing gave (size: the layer's)."""
    url: str
    etag: str


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


def created_time(created: dt.datetime | None = None) -> str:
    """The image's `created`: the given time, else SOURCE_DATE_EPOCH, else now (RFC 3339, UTC, seconds)."""
    return _rfc3339(created or source_date_epoch() or dt.datetime.now(dt.timezone.utc))


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
        "layers": base_layers + [descriptor(OCI_LAYER_TAR, lay.digest, lay.size,
                                            {TITLE: lay.title, **layer_record(lay, origins)}) for lay in layers],
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
