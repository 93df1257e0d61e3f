"""The real CLI (`python -m modelsync`) as a child process, as users run it: with only the given MODEL_SYNC_* and
SIGSTORE_* settings (those of the calling environment are dropped), to the end (run_cli) or until its artifact is
claimed and PENDING (start_and_wait_for_pending: in its own session, for signals to its process group)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from .model_registry import mr_get


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    return subprocess.run([sys.executable, "-m", "modelsync", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def start_and_wait_for_pending(stack, env: dict[str, str], name: str, tmp_path: Path):
    """Start the real CLI in its own session; return once its artifact is PENDING (claimed, transfer started)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    proc = subprocess.Popen([sys.executable, "-m", "modelsync"], env={**clean, **env}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            rm = mr_get(stack, f"registered_model?name={name}")
            mv = mr_get(stack, f"model_version?name=1.0.0&parentResourceId={rm['id']}")
            items = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
        except urllib.error.HTTPError:
            continue
        if items and items[0]["state"] == "PENDING":
            return proc, mv
    proc.kill()
    pytest.fail("the job never claimed the artifact")
