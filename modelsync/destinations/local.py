"""Copy a model into a mounted directory (a PVC), writing only what the job owns.

What happens to what is already there:
- files at other paths are never touched (a PVC's other content, `lost+found`, another model's directory);
- files at the model's paths are overwritten only if this same job wrote them (a re-run), or with
  --destination-replace-existing; otherwise the job refuses before anything moves (preflight, or before the first
  write when the file list is only known after the download);
- files this same job wrote before that are no longer in the model are removed;
- nothing is ever deleted as a directory, and the destination itself is never renamed, so a mount root works;
- nothing is written, renamed or deleted through a symbolic link below the destination (beneath.py): a link
  where the model has a directory or a file, there before the job or swapped in while it runs, is refused in one
  line naming it. The destination path itself is the user's to name and may be a link.

What the job wrote is recorded in `.modelsync-files.json` inside the destination: the job's fingerprint and, for
each file, its sha256 and the size, modification time and inode it had when the job put it there. A re-run of the
same job copies only the files whose content changed: a file whose recorded sha256 is the source's, and whose
size, time and inode are still those recorded, is left as it is (the check rsync makes, plus the content hash).
Files are copied into a locked staging directory inside the destination (same filesystem), each verified by
sha256, and only then renamed into place one by one; a crash leaves the old files and a staging directory that the
next attempt removes. The record names the files about to be renamed before the first rename, so a crash between
two renames leaves nothing that the next attempt would take for someone else's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import workspace
from ..beneath import Beneath, LinkRefused
from ..errors import TransferError
from ..files import DESTINATION, check_listing, human, require_free_space, sha256_file, total_size
from ..locations import Fetched, FileEntry, LocalLocation, OciLocation, Published
from ..progress import Progress
from ..setting import Given
from ..signing.model import SIGNATURE_NAME
from ..stores import REPLACE_EXISTING, Filled, volume

if TYPE_CHECKING:
    from ..workspace import Workspace

log = logging.getLogger("modelsync.destinations.local")

RECORD = ".modelsync-files.json"
STAGING = ".modelsync-staging-"
SETTING = "--destination-path / MODEL_SYNC_DESTINATION_PATH"
REPLACE = "MODEL_SYNC_DESTINATION_REPLACE_EXISTING=true"
_CHUNK = 4 << 20


def preflight_local(loc: LocalLocation, job: str, files: dict[str, int] | None, replace: bool) -> dict[str, Any]:
    """Writable, room for the files that would be copied (when known), no link on the way to any of them and no
    file of someone else's at the model's paths."""
    dest = loc.path
    if dest.exists() and not dest.is_dir():
        raise TransferError(f"{SETTING}: '{dest}' exists and is not a directory")
    existing = _nearest_existing(dest)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TransferError(f"{SETTING}: '{existing}' is not writable by this job (uid {os.getuid()}); mount the "
                            f"volume read-write or fix its permissions")
    if files is None:
        return {"type": "volume", "path": str(dest), "entries already there": _count_entries(dest)}
    check_listing(files, "model file")
    _refuse_own_names(files)
    unchanged: set[str] = set()
    if dest.is_dir():
        with Beneath(dest, SETTING) as tree:
            unchanged = _survey(tree, _record(tree), job, {rel: (size, None) for rel, size in files.items()},
                                replace)
    need = sum(size for rel, size in files.items() if rel not in unchanged)
    require_free_space(existing, need, "the copy", place=DESTINATION)
    return {"type": "volume", "path": str(dest), "entries already there": _count_entries(dest),
            "files unchanged since this job's last run": len(unchanged)}


def _refuse_own_names(files: dict[str, int]) -> None:
    """A model file at the job's own record (or staging) name would be overwritten by it (the artifact would go LIVE
    without the model's file) or be read back as the record of what this job owns."""
    for path in files:
        top = path.split("/", 1)[0]
        if path == RECORD or path.startswith(f"{RECORD}.tmp") or top.startswith(STAGING):
            raise TransferError(f"refusing model file '{path}': {SETTING} keeps its own bookkeeping under that "
                                f"name; rename the file at the source")


def publish_local(model_dir: Path, files: tuple[FileEntry, ...], loc: LocalLocation, job: str,
                  replace: bool = False, signature: Path | None = None) -> Published:
    """The files copied in (staged, verified, renamed into place) unless this job's last run left them there
    unchanged; with signature, model.sig beside them."""
    dest = Path(os.path.realpath(loc.path))
    _refuse_overlap(dest, model_dir)
    files = tuple(f for f in files if signature is None or f.path != SIGNATURE_NAME)
    written = files + ((FileEntry(SIGNATURE_NAME, signature.stat().st_size, sha256_file(signature)),)
                       if signature is not None else ())
    check_listing([f.path for f in written], "model file")
    _refuse_own_names({f.path: f.size for f in written})
    dest.mkdir(parents=True, exist_ok=True)
    with Beneath(dest, SETTING) as tree:
        previous = _record(tree)
        unchanged = _survey(tree, previous, job, {f.path: (f.size, f.sha256) for f in written}, replace)
        copy = tuple(f for f in written if f.path not in unchanged)
        if unchanged:
            log.info("%d of %d file(s) in %s unchanged since this job's last run: not copied again (%s)",
                     len(unchanged), len(written), dest, human(total_size(written) - total_size(copy)))
        require_free_space(dest, total_size(copy), "the copy", place=DESTINATION)
        with workspace.claim(dest, STAGING, job[:16], SETTING) as staging, \
                Beneath(staging.root, SETTING, hint="remove it and run the job again") as staged:
            sources = {f.path: (signature if f.path == SIGNATURE_NAME and signature is not None
                                else model_dir / f.path) for f in copy}
            _copy_verified(sources, copy, staged)
            owned = dict(previous.get("files", {})) if previous.get("job") == job else {}
            # before the first rename: a crash between two renames leaves files the next attempt knows as its own
            _write_record(tree, job, {**owned, **{f.path: f.sha256 for f in copy}},
                          {rel: v for rel, v in _stats(previous).items() if rel in owned and rel not in sources})
            for f in copy:  # renames inside one filesystem: each file appears whole or not at all
                tree.replace_from(staged, f.path, f.path)
            _remove_own_leftovers(tree, job, previous, {f.path for f in written})
            _write_record(tree, job, {f.path: f.sha256 for f in written}, _stats_of(tree, written))
    # The job sees a mount path, not the claim's name, so it records a file:// URI of where the files are.
    return Published(uri=dest.as_uri(), digest=None, files=files)


def _refuse_overlap(dest: Path, source: Path) -> None:
    """The copy must not land inside what it reads, nor contain it."""
    d, s = dest.resolve(), source.resolve()
    if d == s or d.is_relative_to(s) or s.is_relative_to(d):
        raise TransferError(f"{SETTING}: '{dest}' overlaps the source '{source}'; choose another directory")


def _copy_verified(sources: dict[str, Path], files: tuple[FileEntry, ...], staged: Beneath) -> None:
    """Each file copied into the staging tree and hashed as it is written; a copy that differs from the digest the
    transfer gave is refused."""
    progress = Progress("copy", total_size(files))
    try:
        for f in files:
            with open(sources[f.path], "rb") as src, os.fdopen(staged.create(f.path), "wb") as out:
                if _copy_hashed(src, out) != f.sha256:
                    raise TransferError(f"copy of '{f.path}' does not match its source (sha256 differs)")
            progress.advance(f.size)
    except OSError as exc:
        raise TransferError(f"cannot copy into '{staged.root.parent}': {exc.strerror or exc}") from None
    finally:
        progress.close()


def _copy_hashed(src: BinaryIO, out: BinaryIO) -> str:
    sha = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        sha.update(chunk)
        out.write(chunk)
    return sha.hexdigest()


def _survey(tree: Beneath, record: dict[str, Any], job: str, files: dict[str, tuple[int, str | None]],
            replace: bool) -> set[str]:
    """What is at the model's paths now (record: what the destination's record says was written): a link on the
    way to one is refused (LinkRefused), as is a directory or anything but a regular file at one; a file this job
    did not write is refused unless replace. Returns the paths holding this job's own copy of the same content
    (size, and sha256 when known, as recorded, and the file's size, time and inode still those recorded)."""
    own = record.get("job") == job
    owned = set(record["files"]) if own else set()
    stats = _stats(record) if own else {}
    blocked, foreign, unchanged = [], [], set()
    for rel in sorted(files):
        try:
            st = tree.lstat(rel)
        except LinkRefused as exc:
            if exc.is_link:
                raise  # a link on the way: one line naming it
            blocked.append(f"{_first_file(tree, rel)} (a file where the model has a directory)")
            continue
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            tree.check_file(rel)  # raises, naming the link and where it leads
        if not stat.S_ISREG(st.st_mode):
            blocked.append(f"{rel} (not a regular file)")
        elif rel not in owned:
            foreign.append(rel)
        else:
            size, sha = files[rel]
            if (stats.get(rel) == [st.st_size, st.st_mtime_ns, st.st_ino] and st.st_size == size
                    and (sha is None or record["files"][rel] == sha)):
                unchanged.add(rel)
    if blocked:
        raise TransferError(f"{SETTING}: '{tree.root}' holds {', '.join(blocked[:3])}; the job never removes "
                            f"those: choose another directory or clear them")
    if foreign and not replace:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise TransferError(f"{SETTING}: '{tree.root}' already holds {', '.join(foreign[:3])}{more}, not written "
                            f"by this job; choose another directory, or set {REPLACE} to overwrite them")
    if foreign:
        log.warning("overwriting %d file(s) in %s that this job did not write (%s)", len(foreign), tree.root, REPLACE)
    return unchanged


def _first_file(tree: Beneath, rel: str) -> str:
    """The first component of rel that is there and not a directory."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        st = tree.lstat("/".join(parts[:i]))
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return "/".join(parts[:i])
    return rel


def _remove_own_leftovers(tree: Beneath, job: str, previous: dict[str, Any], keep: set[str]) -> None:
    """Files an earlier run of this job wrote that the model no longer has; never anyone else's, never a link."""
    if previous.get("job") != job:
        return
    for rel in sorted(set(previous.get("files", {})) - keep):
        st = tree.lstat(rel)
        if st is not None and stat.S_ISREG(st.st_mode) and tree.unlink(rel):
            log.info("removed %s: written by an earlier run of this job, no longer in the model", rel)


def _record(tree: Beneath) -> dict[str, Any]:
    """The record of what this job wrote, read without following a link ({} when there is none or it is not
    one of ours). A link at the record's name is refused (LinkRefused), never read or written through."""
    tree.check_file(RECORD)
    try:
        with os.fdopen(tree.open_read(RECORD), "rb") as f:
            doc = json.loads(f.read(64 << 20))
    except (OSError, ValueError, TransferError):
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        return {}
    try:
        check_listing(doc["files"], "recorded file")
    except TransferError:
        return {}  # not a record this job wrote: it owns nothing
    return doc


def _stats(record: dict[str, Any]) -> dict[str, list[int]]:
    found = record.get("stat")
    return found if isinstance(found, dict) else {}


def _stats_of(tree: Beneath, files: tuple[FileEntry, ...]) -> dict[str, list[int]]:
    out = {}
    for f in files:
        st = tree.lstat(f.path)
        if st is not None:
            out[f.path] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def _write_record(tree: Beneath, job: str, files: dict[str, str], stats: dict[str, list[int]]) -> None:
    doc = {"job": job, "files": dict(sorted(files.items())), "stat": dict(sorted(stats.items()))}
    tree.write_atomic(RECORD, json.dumps(doc, indent=1).encode())


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _count_entries(dest: Path) -> int:
    return sum(1 for _ in dest.iterdir()) if dest.is_dir() else 0


# ---- the destination type (see destinations/__init__.py) ---------------------------------------------------------

WRITTEN_AS = ("pvc", "local")
SETTINGS = (*volume.settings("destination"), REPLACE_EXISTING)


@dataclass(frozen=True)
class VolumeDestination:
    location: LocalLocation
    replace: bool


def read_files(raw: Mapping[str, str]) -> Filled:
    return Filled()


def validate(given: Given) -> list[str]:
    return volume.validate(given, "destination")


def spec(given: Given) -> VolumeDestination:
    return VolumeDestination(volume.location(given, "destination"), bool(given.values[REPLACE_EXISTING.name]))


def storage_parts(dest: VolumeDestination) -> tuple[str, ...]:
    return ()  # the staging directory is inside the target, not under the storage path


def preflight(dest: VolumeDestination, job: str, files: dict[str, int] | None,
              reads_from: Path | None) -> dict[str, Any]:
    if reads_from is not None:  # before the claim
        _refuse_overlap(dest.location.path, reads_from)
    return preflight_local(dest.location, job, files, dest.replace)


def publish(dest: VolumeDestination, fetched: Fetched, ws: Workspace, job: str, source: str | None,
            signature: Path | None = None) -> Published:
    return publish_local(fetched.model_dir, fetched.files, dest.location, job, dest.replace, signature)


def describe(dest: VolumeDestination) -> str:
    return f"file://{dest.location.path}"


def model_name(dest: VolumeDestination) -> str:
    return dest.location.path.name


def image(dest: VolumeDestination) -> OciLocation | None:
    return None
