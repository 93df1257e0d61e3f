"""Real small or read-only filesystems for tests (tmpfs mounts: this job runs as root here and in CI).

A volume that is full, read-only or a mount root cannot be faked honestly with a directory; a tmpfs of a few
MiB is the real thing. Locally, where mounting is not permitted, the test skips; under CI=true it fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..conftest import unavailable


@contextmanager
def tmpfs(path: Path, size: str = "16m", read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs ({mounted.stderr.strip()}); run as root")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
