"""Issue 15: the secret values a job uses never show anywhere, in end-to-end runs on the real stack that use all of them
at once: the S3 keys, the registry password, the Model Registry token (the token-checking proxy in front of the
server) and the identity token for signing.

Looked for in: stdout and stderr (text and JSON logs), the argv of the job and of every process it starts (sampled
from /proc every 20 ms during the run), the files left in the storage path, the pushed image (manifest, config,
annotations, the base and signature layers: everything but the model's own layers), the attached signature, the
termination message and everything registered in the Model Registry (the model, version and artifact)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from modelsync.clients.distribution import RegistryClient
from modelsync.locations import OciLocation
from modelsync.oci_copy import repo_path
from modelsync.secret import Secret

from ..support.jobs import base_env, source_env
from ..support.model_registry import mr_get
from ..support.signing import sigstore_env

pytestmark = pytest.mark.stack


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in found]
        found.update(kids)
        frontier.extend(kids)
    return found


def run_sampled(env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The real CLI, its process tree's argv sampled while it runs."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    proc = subprocess.Popen([sys.executable, "-m", "modelsync"], env={**clean, **env}, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    argvs: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in descendants(proc.pid):
                try:
                    argvs.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=600)
    done.set()
    sampler.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), sorted(argvs)


def found_in(secrets: dict[str, str], where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets.items() if value and value in text]


def files_text(root: Path, skip: tuple[Path, ...] = ()) -> str:
    parts = []
    for path in root.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            parts.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(parts)


def registered_text(stack, name: str) -> str:
    model = mr_get(stack, f"registered_model?name={name}")
    versions = mr_get(stack, f"registered_models/{model['id']}/versions")["items"]
    arts = [mr_get(stack, f"model_versions/{v['id']}/artifacts") for v in versions]
    return json.dumps([model, versions, arts])


def image_text(ref: str, username: str, password: str, ca: str) -> str:
    """The image's manifest, config, base and signature layers, and its referrers' manifests and bundles."""
    loc = OciLocation(ref, username=username, password=Secret(password), ca_bundle=ca)
    client, repo = RegistryClient(loc), repo_path(loc)
    manifest = client.manifest(repo, loc.digest)
    doc = manifest.json()
    parts = [manifest.data.decode(), client.blob(repo, doc["config"]["digest"]).decode()]
    for layer in doc["layers"]:
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
        if title in (None, "model.sig"):  # base layers and the signature: not the model's own bytes
            parts.append(client.blob(repo, layer["digest"], limit=64 << 20).decode(errors="replace"))
    for ref_desc in client.referrers(repo, loc.digest):
        ref_doc = client.manifest(repo, ref_desc["digest"])
        parts.append(ref_doc.data.decode())
        parts += [client.blob(repo, lay["digest"]).decode() for lay in ref_doc.json()["layers"]]
    return "\n".join(parts)


@pytest.fixture
def all_secrets(sigstore_stack, tmp_path) -> dict[str, str]:
    token = Path(sigstore_stack.stack_sigstore_token_path).read_text()
    return {"S3 access key": sigstore_stack.minio_access_key, "S3 secret key": sigstore_stack.minio_secret_key,
            "registry password": sigstore_stack.oci_tls_password, "Model Registry token": sigstore_stack.mr_token,
            "identity token": token}


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_signed_s3_to_oci_sync_shows_no_secret_anywhere(log_format, sigstore_stack, all_secrets, base_image,
                                                          tmp_path, model):
    stack = sigstore_stack
    model_dir, _ = model
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    message = tmp_path / "termination-log"
    env = {**base_env(stack, tmp_path, name), **source_env("s3", stack, tmp_path, model_dir, None, base_image),
           **sigstore_env(stack),
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": stack.mr_token_url, "MODEL_SYNC_REGISTRY_USER_TOKEN": stack.mr_token,
           "MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_BACKEND": "oras",
           "MODEL_SYNC_DESTINATION_OCI_URI": f"{stack.oci_tls_registry}/secrets/{name}:v1",
           "MODEL_SYNC_DESTINATION_OCI_USERNAME": stack.oci_tls_username,
           "MODEL_SYNC_DESTINATION_OCI_PASSWORD": stack.oci_tls_password,
           "MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE": stack.oci_tls_ca,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base_image,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false",
           "MODEL_SYNC_LOG_FORMAT": log_format, "MODEL_SYNC_LOG_LEVEL": "debug",
           "TERMINATION_MESSAGE_PATH": str(message)}
    result, argvs = run_sampled(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(argvs) > 3  # the job and its children (aws, oras) were seen
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    leaks = (found_in(all_secrets, "stdout/stderr", result.stdout + result.stderr)
             + found_in(all_secrets, "argv", "\n".join(argvs))
             + found_in(all_secrets, "storage path", files_text(tmp_path / "storage"))
             + found_in(all_secrets, "termination message", message.read_text())
             + found_in(all_secrets, "Model Registry", registered_text(stack, name))
             + found_in(all_secrets, "image", image_text(summary["uri"].removeprefix("oci://"), stack.oci_tls_username,
                                                        stack.oci_tls_password, stack.oci_tls_ca)))
    assert leaks == []
    if log_format == "json":
        assert all(json.loads(line) for line in result.stderr.splitlines() if line.strip())


def test_an_oci_to_s3_sync_and_a_refused_password_show_no_secret(sigstore_stack, all_secrets, base_image, tmp_path,
                                                                 model):
    stack = sigstore_stack
    model_dir, _ = model
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **source_env("oci", stack, tmp_path, model_dir, None, base_image),
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": stack.mr_token_url, "MODEL_SYNC_REGISTRY_USER_TOKEN": stack.mr_token,
           "MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_AWS_BUCKET": stack.minio_bucket,
           "MODEL_SYNC_DESTINATION_AWS_KEY": f"secrets/{name}", "MODEL_SYNC_DESTINATION_AWS_ENDPOINT":
           stack.minio_endpoint, "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": stack.minio_access_key,
           "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": stack.minio_secret_key, "MODEL_SYNC_LOG_LEVEL": "debug"}
    result, argvs = run_sampled(env, tmp_path)
    assert result.returncode == 0, result.stderr
    leaks = (found_in(all_secrets, "stdout/stderr", result.stdout + result.stderr)
             + found_in(all_secrets, "argv", "\n".join(argvs))
             + found_in(all_secrets, "storage path", files_text(tmp_path / "storage"))
             + found_in(all_secrets, "Model Registry", registered_text(stack, name)))
    assert leaks == []
    wrong = {**env, "MODEL_SYNC_SOURCE_OCI_PASSWORD": "Wrong-Pass-1234", "MODEL_SYNC_METADATA_CONFIGMAP_PATH":
             str(tmp_path / "metadata")}
    (tmp_path / "metadata" / "RegisteredModel.name").write_text(name + "-x")
    result, argvs = run_sampled(wrong, tmp_path)
    assert result.returncode == 2, result.stderr
    secrets = {**all_secrets, "wrong password": "Wrong-Pass-1234"}
    assert found_in(secrets, "stdout/stderr", result.stdout + result.stderr) + found_in(
        secrets, "argv", "\n".join(argvs)) == []
