"""An HTTP-source archive bomb through the whole job, as users run it: one line naming the storage path setting, nothing
left behind (the archive checks themselves: tests/unit/sources/test_uri_archives.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import uuid
import zipfile

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


# ---- the same archive, the same image -----------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.parametrize("kind", ["tar", "zip", "file"])
def test_the_same_url_gives_the_same_image(kind, stack, tmp_path, http_root, model, base_image, monkeypatch):
    """SOURCE_DATE_EPOCH unset, the model's files dated 2024: a tar or zip (members' times) or a single file (the
    server's Last-Modified) synced twice, a second apart, to two repositories gives one manifest digest, whose
    `created` is the newest file's date, not the run's."""
    from modelsync import config

    from ..support.jobs import synced_twice

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    root, url = http_root
    src, _ = model
    newest = 1717171717  # 2024-05-31T16:08:37Z
    for i, path in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        os.utime(path, (newest - i, newest - i))
    if kind == "tar":
        with tarfile.open(root / "model.tar", "w") as tar:
            tar.add(src, ".")
        name = "model.tar"
    elif kind == "zip":
        with zipfile.ZipFile(root / "model.zip", "w") as zf:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(src).as_posix())
        name = "model.zip"
    else:
        name = "model.safetensors"
        (root / name).write_bytes(b"\0" * 4096)
        os.utime(root / name, (newest, newest))
    digests, created = synced_twice(stack, tmp_path, base_image, f"same-url-{kind}",
                                    {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": f"{url}/{name}"})
    assert len(digests) == 1, digests
    # a zip stores local times with 2-second steps and no zone; read as UTC, the newest file's time to 2 s
    assert created == {"2024-05-31T16:08:37Z" if kind != "zip" else "2024-05-31T16:08:36Z"}, created
