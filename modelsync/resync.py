"""Re-sync planning for S3 -> OCI: which planned layers the destination already has, so they are neither
downloaded nor pushed again -- for the same tag, a new tag of the same model, or a restarted Job.

Each model layer records where its files came from (object URL, size, ETag, sha256: the layer descriptor's
modelcar.SOURCE_RECORD annotation). Before downloading, earlier layers are looked for, in this order, stopping
as soon as every planned layer has one:

1. the manifest now at the target tag (the same tag synced again);
2. the layers an interrupted attempt of this Job finished (`progress`: descriptors it recorded as it went,
   resume.py), so a restarted pod moves only what was not finished;
3. `hints`: the images the Model Registry names for this model (its latest LIVE version's artifact, when in
   the same repository), so a new version of a model reuses the previous one's layers;
4. the repository's other tags (at most MAX_TAGS manifests read).

A planned layer whose files all match a record by path, URL, size and ETag, of the planned size, and whose blob
the repository still has (one HEAD), is reused as it is. The manifest is the one a full sync of the same bytes
makes (the record is part of it, built from the same facts). Anything unreadable only costs a download: a record
is never trusted beyond what it states, and a record this version did not write is ignored.

Pure planning: reads the registry (manifest GETs, one HEAD per match), writes nothing.
Used by pipeline.py (S3 -> OCI with oras).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .clients.distribution import RegistryClient
from .errors import TransferError
from .files import human
from .locations import FileEntry, OciLocation, Origin
from .modelcar import SOURCE_RECORD
from .modelcar_layers import ModelcarLayer, layer_tar_size
from .oci_copy import repo_path
from .oci_layout import OCI_INDEX, OCI_MANIFEST

log = logging.getLogger("modelsync.resync")

# At most this many manifests of the repository's other tags are read looking for earlier layers (a GET each).
MAX_TAGS = 16

_Key = tuple[tuple[str, str, int, str], ...]  # (path, url, size, etag) of each file of a layer, in path order


@dataclass(frozen=True)
class _Record:
    digest: str
    size: int
    files: tuple[FileEntry, ...]
    where: str  # which image or attempt wrote it, for the log


def reusable_layers(client: RegistryClient, target: OciLocation, tag: str, groups: Mapping[str, tuple[str, ...]],
                    files: Mapping[str, int], origins: Mapping[str, Origin], *,
                    progress: Sequence[Mapping[str, Any]] = (), hints: Sequence[str] = (),
                    must_read: Callable[[str], bool] | None = None,
                    layer_size: Callable[[Sequence[tuple[str, int]]], int] = layer_tar_size,
                    ) -> dict[str, ModelcarLayer]:
    """The planned layers (by title) that need no download: an earlier image or attempt recorded the same files
    from the same objects (path, URL, size and ETag all equal: modelcar.SOURCE_RECORD), and the repository still
    has that blob, of the planned size. The files' sha256 come from the record.
    progress: layer descriptors an interrupted attempt recorded; hints: manifest references (digests or tags) in
    the target repository to look at after the tag; must_read: files whose bytes must be read in this run (the
    pickle check, scan.needs_reading): a layer holding one is downloaded whatever an earlier image recorded.
    layer_size: the planned layer's bytes from its files (a modelcar's tar; modelpack.raw_size for a raw
    ModelPack layer): a record of another size (a layer of the other format) is not this layer."""
    repo = repo_path(target)
    wanted: dict[_Key, str] = {}
    unread = 0
    for title, group in groups.items():
        if must_read is not None and any(must_read(rel) for rel in group):
            unread += 1
        elif all(rel in origins for rel in group):
            wanted[tuple((rel, origins[rel].url, files[rel], origins[rel].etag) for rel in sorted(group))] = title
    if unread:
        log.info("re-sync: %d layer(s) hold files the pickle check must read (not .safetensors, .json, ...): "
                 "downloaded whatever an earlier image holds", unread)
    if not wanted:
        return {}  # no layer whose every file has an origin (and may go unread): nothing could match
    reused: dict[str, ModelcarLayer] = {}
    gone: set[str] = set()  # blobs found missing: not asked again for another record of them
    for where, descriptors in _earlier(client, repo, target.repository, tag, progress, hints):
        for key, record in _records(descriptors, where).items():
            if (hit := wanted.get(key)) is None or hit in reused or record.size != layer_size(
                    [(rel, files[rel]) for rel in groups[hit]]):
                continue
            if record.digest in gone:
                continue
            try:
                present = client.find_blob(repo, record.digest)
            except TransferError:
                present = None
            if present != record.size:
                gone.add(record.digest)
                log.info("re-sync: %s is unchanged but its blob %s is not in %s: downloaded again", hit,
                         record.digest[:19], target.repository)
                continue
            reused[hit] = ModelcarLayer(hit, record.digest, record.size, record.files)
            log.debug("re-sync: %s reused from %s", hit, record.where)
        if len(reused) == len(wanted):
            break
    if reused:
        kept = sum(layer.size for layer in reused.values())
        log.info("re-sync: %d of %d layer(s) (%s) unchanged (same objects, sizes and ETags) and present in %s: not "
                 "downloaded", len(reused), len(groups), human(kept), target.repository,
                 extra={"fields": {"reused_layers": len(reused), "reused_bytes": kept}})
    return reused


def _earlier(client: RegistryClient, repo: str, name: str, tag: str, progress: Sequence[Mapping[str, Any]],
             hints: Sequence[str]) -> Iterator[tuple[str, Sequence[Any]]]:
    """(where, layer descriptors) of each earlier image or attempt, in the order the module docstring gives;
    manifests are read lazily, so a search that is done early reads no more."""
    read: set[str] = set()

    def layers_at(ref: str, depth: int = 0) -> tuple[str, Sequence[Any]] | None:
        """The layers of the manifest at ref; of an index's manifests (a hybrid: modelcar and ModelPack), all."""
        try:
            found = client.find_manifest(repo, ref)
        except TransferError as exc:
            log.warning("re-sync: cannot read %s:%s (%s); its layers are not reused", name, ref, exc)
            return None
        if found is None or found.digest in read or found.media_type not in (OCI_MANIFEST, OCI_INDEX):
            return None
        read.add(found.digest)
        try:
            doc = found.json()
            if found.media_type == OCI_MANIFEST:
                return f"{name}@{found.digest}", list(doc.get("layers") or [])
            layers: list[Any] = []
            for entry in (doc.get("manifests") or [])[:4] if depth == 0 else []:
                if (inner := layers_at(str(entry["digest"]), 1)) is not None:
                    layers += inner[1]
            return f"{name}@{found.digest}", layers
        except (ValueError, AttributeError, KeyError, TypeError):
            return None

    first = layers_at(tag)
    if first is None:
        log.info("re-sync: %s:%s does not exist yet", name, tag)
    else:
        yield first
    if progress:
        yield "this Job's interrupted attempt", progress
    for ref in hints:
        if (found := layers_at(ref)) is not None:
            yield found
    try:
        others = [t for t in client.tags(repo) if t != tag]
    except TransferError as exc:
        log.warning("re-sync: cannot list the tags of %s (%s)", name, exc)
        return
    for other in sorted(others, reverse=True)[:MAX_TAGS]:
        if (found := layers_at(other)) is not None:
            yield found


def _records(descriptors: Sequence[Any], where: str) -> dict[_Key, _Record]:
    records: dict[_Key, _Record] = {}
    for layer in descriptors:
        text = (layer.get("annotations") or {}).get(SOURCE_RECORD) if isinstance(layer, dict) else None
        if not text:
            continue
        try:
            entries = sorted(json.loads(text), key=lambda e: e["path"])
            key = tuple((e["path"], e["url"], int(e["size"]), e["etag"]) for e in entries)
            found = tuple(FileEntry(e["path"], int(e["size"]), _sha_hex(e["sha256"])) for e in entries)
            records[key] = _Record(str(layer["digest"]), int(layer["size"]), found, where)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a record this version wrote: ignored, never trusted
    return records


def _sha_hex(value: object) -> str:
    text = str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("not a sha256")
    return text
