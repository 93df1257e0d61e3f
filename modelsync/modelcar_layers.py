"""The model's layers of a KServe modelcar: which files share a layer, and the bytes of each layer tar.

plan_layers() decides which files share a layer, from the listing's paths and sizes alone: while the model fits
the layer budget every file has a layer of its own; past it, large files keep their own layer and small files are
packed together in path order (see the constants below). A file alone in its layer keeps the same layer digest
across versions, so re-pushing a model only uploads what changed and the registry deduplicates shared files.

Layers are uncompressed tars (`application/vnd.oci.image.layer.v1.tar`): model weights hardly compress, and for an
uncompressed layer the digest equals the diff_id, so any tool can check it without inflating. Each layer is
deterministic: `models/`, each parent directory once, then the files in path order; dirs 0755, files 0644,
uid/gid 0, empty user/group names, mtime 0. Headers are GNU tar format, the one every runtime and scanner reads
for any size: a size of 8 GiB or more goes in the header's size field base-256 encoded (POSIX pax would put 0
there and the size in a pax record, which Clair rejects as "bad block"), a name over 100 bytes in a GNU longname
entry before its header; UTF-8 names are stored as their UTF-8 bytes. No pax record is ever written, so the same
files at the same paths always give the same digest.

A layer is either written into an OCI layout (write_layer: build_modelcar, the skopeo path) or described as its
parts (layer_parts: the tar's headers and padding around each file's bytes, which layer_push.py feeds to oras);
both give the same bytes, layer_tar_size long. Imports nothing of the image (modelcar.py builds on this).
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

from .errors import TransferError
from .locations import FileEntry
from .oci_layout import HashingWriter, Layout

MODELS_DIR = "models"
LAYER_MTIME = 0
DIR_MODE = 0o755
FILE_MODE = 0o644
TAR_FORMAT: Literal[1] = tarfile.GNU_FORMAT
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
# The title annotation of a multi-file layer (oras pull saves each titled layer's tar under its title).
PACK_TITLE = "modelcar-layer-{index:03d}.tar"


@dataclass(frozen=True)
class ModelcarLayer:
    title: str                     # its org.opencontainers.image.title: the file's path, or PACK_TITLE if shared
    digest: str                    # sha256:... of the layer tar (== its diff_id)
    size: int                      # bytes of the layer tar
    files: tuple[FileEntry, ...]   # the files inside it, in path order


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
    head += bytes(2 * tarfile.BLOCKSIZE)                        # end-of-archive marker, and nothing after it
    parts.append(bytes(head))
    return parts


def layer_tar_size(files: Sequence[tuple[str, int]]) -> int:
    """Bytes of the layer tar of files [(relative path, size)], as write_layer makes it."""
    size = sum(len(tar_header(info)) + info.size + (-info.size % tarfile.BLOCKSIZE) for info in layer_members(files))
    return size + 2 * tarfile.BLOCKSIZE


def _end_archive(out: HashingWriter) -> None:
    """The end-of-archive marker ends the layer: no padding to a 10 KiB record as tar(1) adds. A reader that stops
    at the marker and checks the digest of what it read (Go's archive/tar in modctl's `pull --extract-from-remote`,
    on a hybrid's ModelPack entry) then has read the whole blob; with the padding it refused the layer."""
    out.write(bytes(2 * tarfile.BLOCKSIZE))


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
        except BaseException as exc:  # noqa: BLE001 -- handed to the writer, which re-raises it
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
