"""Progress lines during a real push to the local registry, off a TTY (as in kubectl logs), for both backends."""

from __future__ import annotations

import logging
import uuid

import pytest

from modelsync import oci_copy, progress
from modelsync.destinations.oci import publish_modelcar
from modelsync.locations import OciLocation

from ..support.models import write_big

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("backend", ["oras", "skopeo"])
def test_push_reports_bytes_while_it_runs(stack, require_tool, tmp_path, monkeypatch, caplog, backend):
    require_tool(backend)
    monkeypatch.setattr(progress, "INTERVAL", 0.2)
    monkeypatch.setattr(oci_copy._PushedBytes, "PROGRESS_POLL", 0.2)
    caplog.set_level(logging.INFO, logger="modelsync")
    write_big(tmp_path / "model/a.bin", 200 << 20)
    write_big(tmp_path / "model/b.bin", 200 << 20)
    target = OciLocation(f"{stack.oci_registry}/progress/{uuid.uuid4().hex[:8]}:v1", tls_verify=False)
    publish_modelcar(tmp_path / "model", target, None, tmp_path / "work", backend)
    lines = [r.getMessage() for r in caplog.records if r.name == "modelsync.progress"]
    push = [m for m in lines if m.startswith(f"push {target.repository}:v1: ")]
    assert any(m.endswith("s") and "%)" in m and "/s" in m for m in push[:-1]), push  # lines while it ran
    assert push[-1].startswith(f"push {target.repository}:v1: 400.0 MiB in ")  # the summary counts every blob
    # skopeo copies a layout built first; oras pushes each layer from the files, nothing is built
    assert any("build layers: " in m for m in lines) == (backend == "skopeo")
