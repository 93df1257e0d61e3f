"""Copy a model into a mounted directory (a PVC) so that readers never see half of it.

Files are copied into a sibling staging directory, checked, and only then swapped in with renames; a crash leaves
the old content (or nothing) at the destination, plus a staging directory that the next run removes.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..errors import TransferError
from ..files import require_free_space, sha256_file, total_size
from ..locations import FileEntry, LocalLocation, Published
from ..progress import Progress

log = logging.getLogger("modelsync.destinations.local")


def publish_local(model_dir: Path, files: tuple[FileEntry, ...], loc: LocalLocation) -> Published:
    dest = loc.path.resolve()
    if dest == model_dir.resolve() or dest.is_relative_to(model_dir.resolve()) or \
            model_dir.resolve().is_relative_to(dest):
        raise TransferError(f"destination path '{dest}' overlaps the source '{model_dir}'; choose another directory")
    staging, old = dest.with_name(f".{dest.name}.modelsync-staging"), dest.with_name(f".{dest.name}.modelsync-old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)  # an earlier attempt that crashed
    require_free_space(dest.parent, total_size(files), "the copy")
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
        shutil.rmtree(staging, ignore_errors=True)
        raise TransferError(f"cannot copy into '{dest}': {exc.strerror or exc}") from None
    except TransferError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        progress.close()
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    # The job sees a mount path, not the claim's name, so it records a file:// URI of where the files are.
    return Published(uri=dest.as_uri(), digest=None, files=files)
