"""A new storage type is one module plus its line in TYPES. tests/support/tarball_type.py is such a module, written for
the tests only; a child process adds its line to modelsync.sources.TYPES (what a newcomer would write in
sources/__init__.py) and then runs the real command line. Nothing else names the type, yet --help, validation,
the unused-setting warning, --dry-run and a real job on the local stack (Model Registry on MariaDB) all find it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelsync.destinations.local import RECORD

from ..support.models import digests_of, make_model

REPO = Path(__file__).resolve().parents[2]
# The one line: modelsync/sources/__init__.py's TYPES with the new module in it.
DRIVER = ("import sys\nimport modelsync.sources as s\nfrom tests.support import tarball_type\n"
          "s.TYPES = (*s.TYPES, tarball_type)\ns.NAMES = (*s.NAMES, *tarball_type.WRITTEN_AS)\n"
          "from modelsync.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", DRIVER, *args], env={**clean, "PYTHONPATH": str(REPO), **env},
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def tarball(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    expected = make_model(tmp_path / "model")
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tar:
        for rel in sorted(expected):
            tar.add(tmp_path / "model" / rel, arcname=rel)
    return path, expected


def test_the_new_type_is_in_help_and_its_choices(tmp_path):
    done = run({}, tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--source-tarball-path" in text and "MODEL_SYNC_SOURCE_TARBALL_PATH" in text
    assert "--source-tarball-credentials-path" in text
    assert "tarball" in text.split("--source-type", 1)[1].split("]", 1)[0]  # among --source-type's choices


def test_the_new_types_rules_are_validated_in_one_line_each(tmp_path):
    env = {"MODEL_SYNC_SOURCE_TYPE": "tarball", "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out"), "MODEL_SYNC_MODEL_ARTIFACT_ID": "1",
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1:9"}
    done = run(env, tmp_path)
    assert done.returncode == 2
    assert ("MODEL_SYNC_SOURCE_TARBALL_PATH is required when source type is \"tarball\": set --source-tarball-path "
            "or MODEL_SYNC_SOURCE_TARBALL_PATH, or put SHA256 in the directory named by "
            "--source-tarball-credentials-path") in done.stderr
    unused = run({**env, "MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(tmp_path),
                  "MODEL_SYNC_SOURCE_TARBALL_PATH": str(tmp_path / "x.tar")}, tmp_path, "--dry-run")
    assert "MODEL_SYNC_SOURCE_TARBALL_PATH is set but source type is pvc: it is ignored" in unused.stderr


def test_the_new_types_secret_comes_from_its_file_and_is_masked_in_dry_run(tmp_path):
    path, _ = tarball(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "SHA256").write_text(digest)
    env = {"MODEL_SYNC_SOURCE_TYPE": "tarball", "MODEL_SYNC_SOURCE_TARBALL_PATH": str(path),
           "MODEL_SYNC_SOURCE_TARBALL_CREDENTIALS_PATH": str(secret_dir), "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out"), "MODEL_SYNC_MODEL_ARTIFACT_ID": "1",
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1:9"}
    done = run(env, tmp_path, "--dry-run")
    report = json.loads(done.stdout)
    assert report["settings"]["source_tarball_sha256"] == {
        "value": "***", "origin": "file", "env": "MODEL_SYNC_SOURCE_TARBALL_SHA256", "arg": "--source-tarball-sha256"}
    assert report["preflight"]["source"] == {"type": "tarball", "tar file": str(path), "checksum": "given",
                                             "files": 5, "bytes": report["preflight"]["source"]["bytes"]}
    assert digest not in done.stdout + done.stderr


@pytest.mark.stack
def test_a_real_job_moves_a_model_of_the_new_type_and_registers_it(stack, tmp_path):
    path, expected = tarball(tmp_path)
    name = f"tarball-{uuid.uuid4().hex[:8]}"
    meta = tmp_path / "metadata"
    meta.mkdir()
    for key, value in {"RegisteredModel.name": name, "ModelVersion.name": "1", "ModelArtifact.name": name}.items():
        (meta / key).write_text(value)
    env = {"MODEL_SYNC_SOURCE_TYPE": "tarball", "MODEL_SYNC_SOURCE_TARBALL_PATH": str(path),
           "MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out"),
           "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": stack.mr_url, "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
           "MODEL_SYNC_STORAGE_PATH": str(tmp_path / "storage"), "TERMINATION_MESSAGE_PATH": str(tmp_path / "term")}
    done = run(env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    copied = digests_of(tmp_path / "out")
    assert copied.pop(RECORD) and copied == expected  # the volume destination's record of what it wrote, and the model
    artifact_id = json.loads((tmp_path / "term").read_text())["ModelArtifact"]["id"]
    with urllib.request.urlopen(f"{stack.mr_url}/api/model_registry/v1alpha3/model_artifacts/{artifact_id}",
                                timeout=10) as resp:
        artifact = json.load(resp)
    assert artifact["state"] == "LIVE" and artifact["uri"] == (tmp_path / "out").resolve().as_uri()
    assert f"source type tarball, tar file {path}" in done.stderr  # preflight's log line, with the type's facts
