"""Re-sync planning for S3 -> OCI: which planned layers the destination already has, so they are neither
downloaded nor pushed again.

Each model layer records where its files came from (object URL, size, ETag, sha256: the layer descriptor's
modelcar.SOURCE_RECORD annotation). Before downloading, the manifest now at the target tag is read; a planned
layer whose files all match a record by path, URL, size and ETag, and whose blob the repository still has (one
HEAD), is reused as it is. The manifest is the one a full sync of the same bytes makes (the record is part of
it, built from the same facts). Anything unreadable only costs a download: a record is never trusted beyond
what it states, and a record this version did not write is ignored.

Pure planning: reads the registry (one manifest GET, one HEAD per candidate layer), writes nothing.
Used by pipeline.py (S3 -> OCI with oras).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from .clients.distribution import RegistryClient
from .errors import TransferError
from .files import human
from .locations import FileEntry, OciLocation, Origin
from .modelcar import SOURCE_RECORD
from .modelcar_layers import ModelcarLayer, layer_tar_size
from .oci_copy import repo_path

log = logging.getLogger("modelsync.resync")

_Key = tuple[tuple[str, str, int, str], ...]  # (path, url, size, etag) of each file of a layer, in path order


def reusable_layers(client: RegistryClient, target: OciLocation, tag: str, groups: Mapping[str, tuple[str, ...]],
                    files: Mapping[str, int], origins: Mapping[str, Origin]) -> dict[str, ModelcarLayer]:
    """The planned layers (by title) that need no download: the image now at target:tag recorded the same files
    from the same objects (path, URL, size and ETag all equal: modelcar.SOURCE_RECORD), and the repository still
    has that blob, of the planned size. A missing tag is a first sync; an unreadable manifest or record is
    ignored (everything is downloaded). The files' sha256 come from the record."""
    repo = repo_path(target)
    try:
        previous = client.find_manifest(repo, tag)
    except TransferError as exc:
        log.warning("re-sync: cannot read %s:%s (%s); every file is downloaded", target.repository, tag, exc)
        return {}
    if previous is None:
        log.info("re-sync: %s:%s does not exist yet; every file is downloaded", target.repository, tag)
        return {}
    records: dict[_Key, tuple[str, int, tuple[FileEntry, ...]]] = {}
    try:
        layers = previous.json().get("layers") or []
    except ValueError:
        layers = []
    for layer in layers:
        text = (layer.get("annotations") or {}).get(SOURCE_RECORD) if isinstance(layer, dict) else None
        if not text:
            continue
        try:
            entries = sorted(json.loads(text), key=lambda e: e["path"])
            key = tuple((e["path"], e["url"], int(e["size"]), e["etag"]) for e in entries)
            found = tuple(FileEntry(e["path"], int(e["size"]), _sha_hex(e["sha256"])) for e in entries)
            records[key] = (str(layer["digest"]), int(layer["size"]), found)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a record this version wrote: ignored, never trusted
    reused: dict[str, ModelcarLayer] = {}
    for title, group in groups.items():
        if any(rel not in origins for rel in group):
            continue
        wanted = tuple((rel, origins[rel].url, files[rel], origins[rel].etag) for rel in sorted(group))
        if wanted not in records:
            continue
        digest, size, found = records[wanted]
        if size != layer_tar_size([(rel, files[rel]) for rel in group]):
            continue
        try:
            present = client.find_blob(repo, digest)
        except TransferError:
            present = None
        if present != size:
            log.info("re-sync: %s is unchanged but its blob %s is not in %s: downloaded again", title, digest[:19],
                     target.repository)
            continue
        reused[title] = ModelcarLayer(title, digest, size, found)
    if records:
        kept = sum(layer.size for layer in reused.values())
        log.info("re-sync: %d of %d layer(s) (%s) unchanged since %s (same objects, sizes and ETags) and present in "
                 "the registry: not downloaded", len(reused), len(groups), human(kept), previous.digest,
                 extra={"fields": {"reused_layers": len(reused), "reused_bytes": kept}})
    return reused


def _sha_hex(value: object) -> str:
    text = str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("not a sha256")
    return text
