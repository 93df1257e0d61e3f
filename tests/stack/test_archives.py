"""An HTTP-source archive bomb through the whole job, as users run it: one line naming the storage path setting, nothing
left behind (the archive checks themselves: tests/unit/sources/test_uri_archives.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from ..support.archives import SETTING, zeros_zip

# ---- the whole job, as users run it -------------------------------------------------------------------------------

@pytest.mark.stack
def test_cli_zip_bomb_fails_with_one_line_naming_the_storage_path(stack, tmp_path, http_root, small_fs):
    root, url = http_root
    zeros_zip(root / "bomb.zip")
    meta = tmp_path / "metadata"
    meta.mkdir()
    name = f"bomb-{uuid.uuid4().hex[:6]}"
    for key, value in {"RegisteredModel.name": name, "ModelVersion.name": "1.0.0", "ModelArtifact.name": name,
                       "ModelArtifact.model_format_name": "onnx"}.items():
        (meta / key).write_text(value)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    env.update({"MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
                "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": stack.mr_url, "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
                "MODEL_SYNC_STORAGE_PATH": str(small_fs), "MODEL_SYNC_SOURCE_TYPE": "uri",
                "MODEL_SYNC_SOURCE_URI": f"{url}/bomb.zip", "MODEL_SYNC_DESTINATION_TYPE": "pvc",
                "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "pvc-out" / "model")})
    out = subprocess.run([sys.executable, "-m", "modelsync"], check=False, env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "unexpected" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if SETTING in line]
    assert len(errors) == 1 and "needs 64.0 MiB" in errors[0], out.stderr
    assert not [p for p in small_fs.rglob("*") if p.name in ("ok.txt", "bomb.bin")]
    assert not list(small_fs.glob(".modelsync-*")) and not (tmp_path / "pvc-out" / "model").exists()
