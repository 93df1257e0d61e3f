"""Copy a model into a mounted directory (a PVC), writing only what the job owns.

What happens to what is already there:
- files at other paths are never touched (a PVC's other content, `lost+found`, another model's directory);
- files at the model's paths are overwritten only if this same job wrote them (a re-run), or with
  --destination-replace-existing; otherwise the job refuses before anything moves (preflight, or before the first
  write when the file list is only known after the download);
- files this same job wrote before that are no longer in the model are removed;
- nothing is ever deleted as a directory, and the destination itself is never renamed, so a mount root works.

What the job wrote is recorded in `.modelsync-files.json` inside the destination: the job's fingerprint and the
files. Files are copied into a locked staging directory inside the destination (same filesystem), each verified
by sha256, and only then renamed into place one by one; a crash leaves the old files and a staging directory that
the next attempt removes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import endpoints, workspace
from ..errors import TransferError
from ..files import require_free_space, sha256_file, total_size
from ..locations import FileEntry, LocalLocation, Published
from ..progress import Progress
from ..requirements import require_path
from ..signing.model import SIGNATURE_NAME

if TYPE_CHECKING:
    from ..config import Config
    from ..workspace import Workspace

log = logging.getLogger("modelsync.destinations.local")

RECORD = ".modelsync-files.json"
STAGING = ".modelsync-staging-"
SETTING = "--destination-path / MODEL_SYNC_DESTINATION_PATH"
REPLACE = "MODEL_SYNC_DESTINATION_REPLACE_EXISTING=true"


def preflight_local(loc: LocalLocation, job: str, files: dict[str, int] | None, replace: bool) -> dict[str, Any]:
    """Writable, room for the files (when known), and no file of someone else's at the model's paths."""
    dest = loc.path
    if dest.exists() and not dest.is_dir():
        raise TransferError(f"{SETTING}: '{dest}' exists and is not a directory")
    existing = _nearest_existing(dest)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TransferError(f"{SETTING}: '{existing}' is not writable by this job (uid {os.getuid()}); mount the "
                            f"volume read-write or fix its permissions")
    if files is not None:
        _refuse_own_names(files)
        require_free_space(existing, sum(files.values()), "the copy")
        _refuse_foreign(dest, job, files, replace)
    return {"type": "volume", "path": str(dest), "entries already there": _count_entries(dest)}


def _refuse_own_names(files: dict[str, int]) -> None:
    """A model file at the job's own record (or staging) name would be overwritten by it (the artifact would go LIVE
    without the model's file) or be read back as the record of what this job owns."""
    for path in files:
        top = path.split("/", 1)[0]
        if path == RECORD or top.startswith(STAGING):
            raise TransferError(f"refusing model file '{path}': {SETTING} keeps its own bookkeeping under that "
                                f"name; rename the file at the source")


def publish_local(model_dir: Path, files: tuple[FileEntry, ...], loc: LocalLocation, job: str,
                  replace: bool = False, signature: Path | None = None) -> Published:
    """The files copied in (staged, verified, renamed into place); with signature, model.sig beside them."""
    dest = loc.path.resolve()
    _refuse_overlap(dest, model_dir)
    files = tuple(f for f in files if signature is None or f.path != SIGNATURE_NAME)
    written = files + ((FileEntry(SIGNATURE_NAME, signature.stat().st_size, sha256_file(signature)),)
                       if signature is not None else ())
    _refuse_own_names({f.path: f.size for f in written})
    _refuse_foreign(dest, job, {f.path: f.size for f in written}, replace)
    require_free_space(_nearest_existing(dest), total_size(written), "the copy")
    with workspace.claim(dest, STAGING, job[:16], SETTING) as staging:
        _copy_verified(model_dir, files, staging.root / "files")
        if signature is not None:
            _copy_verified(signature.parent, written[-1:], staging.root / "files")
        previous = _record(dest)
        for f in written:  # renames inside one filesystem: each file appears whole or not at all
            target = dest / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.root / "files" / f.path, target)
        _remove_own_leftovers(dest, job, previous, {f.path for f in written})
        _write_record(dest, job, written)
    # The job sees a mount path, not the claim's name, so it records a file:// URI of where the files are.
    return Published(uri=dest.as_uri(), digest=None, files=files)


def _refuse_overlap(dest: Path, source: Path) -> None:
    """The copy must not land inside what it reads, nor contain it."""
    d, s = dest.resolve(), source.resolve()
    if d == s or d.is_relative_to(s) or s.is_relative_to(d):
        raise TransferError(f"{SETTING}: '{dest}' overlaps the source '{source}'; choose another directory")


def _copy_verified(model_dir: Path, files: tuple[FileEntry, ...], staging: Path) -> None:
    progress = Progress("copy", total_size(files))
    try:
        for f in files:
            target = staging / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / f.path, target)
            os.chmod(target, 0o644)
            if sha256_file(target) != f.sha256:
                raise TransferError(f"copy of '{f.path}' does not match its source (sha256 differs)")
            progress.advance(f.size)
    except OSError as exc:
        raise TransferError(f"cannot copy into '{staging.parent.parent}': {exc.strerror or exc}") from None
    finally:
        progress.close()


def _refuse_foreign(dest: Path, job: str, files: dict[str, int], replace: bool) -> None:
    """Refuse if a model path is taken by something this job did not write (a directory: always)."""
    record = _record(dest)
    owned = set(record["files"]) if record.get("job") == job else set()
    blocked, foreign = [], []
    for rel in sorted(files):
        target = dest / rel
        for parent in list(target.relative_to(dest).parents)[:-1]:
            if (dest / parent).exists() and not (dest / parent).is_dir():
                blocked.append(f"{parent} (a file where the model has a directory)")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            blocked.append(f"{rel} (not a regular file)")
        elif target.exists() and rel not in owned:
            foreign.append(rel)
    if blocked:
        raise TransferError(f"{SETTING}: '{dest}' holds {', '.join(blocked[:3])}; the job never removes those: "
                            f"choose another directory or clear them")
    if foreign and not replace:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise TransferError(f"{SETTING}: '{dest}' already holds {', '.join(foreign[:3])}{more}, not written by "
                            f"this job; choose another directory, or set {REPLACE} to overwrite them")
    if foreign:
        log.warning("overwriting %d file(s) in %s that this job did not write (%s)", len(foreign), dest, REPLACE)


def _remove_own_leftovers(dest: Path, job: str, previous: dict[str, Any], keep: set[str]) -> None:
    """Files an earlier run of this job wrote that the model no longer has; never anyone else's."""
    if previous.get("job") != job:
        return
    for rel in sorted(set(previous.get("files", {})) - keep):
        target = dest / rel
        if target.is_file() and not target.is_symlink() and target.resolve().is_relative_to(dest):
            target.unlink()
            log.info("removed %s: written by an earlier run of this job, no longer in the model", rel)


def _record(dest: Path) -> dict[str, Any]:
    try:
        doc = json.loads((dest / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {}


def _write_record(dest: Path, job: str, files: tuple[FileEntry, ...]) -> None:
    tmp = dest / f"{RECORD}.tmp"
    tmp.write_text(json.dumps({"job": job, "files": {f.path: f.sha256 for f in files}}, indent=1, sort_keys=True))
    os.replace(tmp, dest / RECORD)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _count_entries(dest: Path) -> int:
    return sum(1 for _ in dest.iterdir()) if dest.is_dir() else 0


# ---- the destination type (see destinations/__init__.py) ---------------------------------------------------------

def storage_parts(cfg: Config) -> tuple[str, ...]:
    return ()  # the staging directory is inside the target, not under the storage path


def validate(cfg: Config) -> list[str]:
    return require_path(cfg, "destination", cfg.destination_type)


def preflight(cfg: Config, job: str, files: dict[str, int] | None) -> dict[str, Any]:
    if cfg.destination_path and cfg.source_path and cfg.source_type in ("pvc", "local"):  # before the claim
        _refuse_overlap(Path(cfg.destination_path), Path(cfg.source_path))
    return preflight_local(endpoints.local(cfg, "destination"), job, files, cfg.destination_replace_existing)


def publish(cfg: Config, model_dir: Path, files: tuple[FileEntry, ...], ws: Workspace, job: str,
            source: str | None, signature: Path | None = None) -> Published:
    return publish_local(model_dir, files, endpoints.local(cfg, "destination"), job,
                         cfg.destination_replace_existing, signature)


def describe(cfg: Config) -> str:
    return f"file://{cfg.destination_path}"
