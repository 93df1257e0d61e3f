"""The shipped artifact: the job image builds (podman, bases made locally) and, run as a Kubernetes Job runs it
(uid 1001, read-only root, credentials mounted as files), syncs a model from MinIO to a LIVE modelcar."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.podman]


def test_job_image_builds_and_syncs_like_a_job(stack, require_tool):
    for tool in ("podman", "mmdebstrap", "runc"):
        require_tool(tool)
    build = subprocess.run(["bash", "e2e/image.sh"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    smoke = subprocess.run(["bash", "e2e/image_smoke.sh", "--state-dir", str(stack.state_dir)], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    assert "image smoke test passed" in smoke.stdout
