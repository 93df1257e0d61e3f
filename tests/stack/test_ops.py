"""The operators' scripts in bin/ (modelsync/ops/): each one's --help, and each run against the real local stack.
modelsync-from-pod runs a sample Job's spec rendered for the stack (e2e/k8s_samples.py, as the Kubernetes e2e
renders it), with its Secrets and ConfigMaps given as `kubectl get -o yaml` would give them."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from ..support.model_registry import Inspect

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("modelsync-from-pod", "modelsync-check", "modelsync-inspect", "modelsync-verify", "modelsync-stack")


def script(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    return subprocess.run([str(REPO / "bin" / name), *args], capture_output=True, text=True, timeout=600,
                          env={**clean, "NO_PROXY": "127.0.0.1,localhost", **(env or {})}, cwd=cwd)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name):
    run = script(name, "--help")
    assert run.returncode == 0, run.stderr
    assert "usage" in run.stdout.lower() or name in run.stdout


@pytest.fixture
def sample_run(stack, model, base_image):
    """The run's data for a rendered sample: the model in MinIO under sentiment-<run>/1.0.0/, a busybox base in the
    TLS registry, a fresh ModelArtifact for the sample's id 42."""
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import push_layout
    from modelsync.secret import Secret

    from ..support.oci_helpers import busybox_layout
    model_dir, expected = model
    run = uuid.uuid4().hex[:6]
    s3 = boto3.client("s3", endpoint_url=stack.minio_endpoint, region_name="us-east-1",
                      aws_access_key_id=stack.minio_access_key, aws_secret_access_key=stack.minio_secret_key)
    for path in (p for p in model_dir.rglob("*") if p.is_file()):
        s3.upload_file(str(path), stack.minio_bucket, f"sentiment-{run}/1.0.0/{path.relative_to(model_dir).as_posix()}")
    tls = OciLocation(f"{stack.oci_tls_registry}/library/busybox:latest", username=stack.oci_tls_username,
                      password=Secret(stack.oci_tls_password), ca_bundle=stack.oci_tls_ca)
    push_layout(busybox_layout(model_dir.parent / "bb"), "latest", tls, "latest", model_dir.parent / "w", "skopeo")
    mr = Inspect(stack.mr_url)
    rm = mr.req("POST", "/registered_models", {"name": f"ops-{run}"})
    mv = mr.req("POST", "/model_versions", {"name": "v", "registeredModelId": rm["id"]})
    art = mr.req("POST", f"/model_versions/{mv['id']}/artifacts", {"artifactType": "model-artifact", "name": "a",
                                                                  "uri": "s3://x/y"})
    return {"run": run, "ids": {"artifact": art["id"], "model": rm["id"]}, "expected": expected, "mr": mr}


def rendered(stack, sample: str, run: dict, tmp_path: Path) -> tuple[Path, Path]:
    from e2e.k8s_samples import render
    docs = render(REPO / "samples" / f"{sample}.yaml", stack.env, "unused:image", run["run"], run["ids"],
                  "http://127.0.0.1:9", local=False)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump([d for d in docs if d["kind"] == "Job"][0]))
    objects = tmp_path / "objects.yaml"
    objects.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                       "items": [d for d in docs if d["kind"] in ("Secret", "ConfigMap")]}))
    return job, objects


@pytest.mark.stack
def test_from_pod_checks_then_runs_a_sample_job(stack, sample_run, tmp_path):
    job, objects = rendered(stack, "s3-to-oci-mounted-secrets", sample_run, tmp_path)
    check = script("modelsync-from-pod", str(job), "--objects", str(objects), "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "skip"], check.stdout
    assert stack.oci_tls_password not in check.stdout + check.stderr
    real = script("modelsync-from-pod", str(job), "--objects", str(objects), cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    art = sample_run["mr"].req("GET", f"/model_artifacts/{sample_run['ids']['artifact']}")
    assert art["state"] == "LIVE" and "@sha256:" in art["uri"]


@pytest.mark.stack
def test_from_pod_names_a_missing_secret(stack, sample_run, tmp_path):
    job, _ = rendered(stack, "s3-to-oci-mounted-secrets", sample_run, tmp_path)
    run = script("modelsync-from-pod", str(job), cwd=tmp_path)
    assert run.returncode == 2 and "Secret s3-model-store is used by the pod but not among --objects" in run.stderr


@pytest.mark.stack
def test_check_reports_every_failing_part_at_once(stack, sample_run, tmp_path):
    job, objects = rendered(stack, "s3-to-oci-mounted-secrets", sample_run, tmp_path)
    docs = yaml.safe_load(objects.read_text())
    for doc in docs["items"]:
        if doc["metadata"]["name"] == "registry-push":  # a wrong password
            doc["stringData"][".dockerconfigjson"] = json.dumps({"auths": {stack.oci_tls_registry: {
                "auth": "bW9kZWxzeW5jOndyb25nLXB3"}}})
        if doc["metadata"]["name"] == "s3-model-store":
            doc["stringData"]["AWS_S3_BUCKET"] = "no-such-bucket-x"
    objects.write_text(yaml.safe_dump(docs))
    run = script("modelsync-from-pod", str(job), "--objects", str(objects), "--check", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert out.startswith("ok    Model Registry:")
    assert "FAIL  source: cannot list source s3://no-such-bucket-x" in out
    assert "FAIL  destination:" in out and "authentication failed (401" in out


@pytest.mark.stack
def test_inspect_shows_layers_records_signature_and_files(stack, sample_run, tmp_path):
    job, objects = rendered(stack, "s3-to-oci-mounted-secrets", sample_run, tmp_path)
    assert script("modelsync-from-pod", str(job), "--objects", str(objects), cwd=tmp_path).returncode == 0
    uri = sample_run["mr"].req("GET", f"/model_artifacts/{sample_run['ids']['artifact']}")["uri"]
    auth = ["--registry-username", stack.oci_tls_username, "--registry-ca-bundle", stack.oci_tls_ca]
    env = {"MODEL_SYNC_INSPECT_REGISTRY_PASSWORD": stack.oci_tls_password}
    run = script("modelsync-inspect", uri, *auth, "--json", "--files", env=env)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["image"] == uri.removeprefix("oci://") and len(info["base_layers"]) == 1
    recorded = {f["path"]: f["sha256"] for layer in info["model_layers"] for f in layer["files"]}
    assert recorded == sample_run["expected"]  # the pipeline's source records
    assert {f["path"]: f["sha256"] for f in info["files"]} == sample_run["expected"]
    assert info["model_sig"] is None and info["signatures"] == []
    text = script("modelsync-inspect", uri, *auth, env=env)
    assert text.returncode == 0 and "model.sig  no" in text.stdout and "from s3://" in text.stdout
    denied = script("modelsync-inspect", uri, *auth)
    assert denied.returncode == 1 and "requires credentials" in denied.stderr and len(denied.stderr.splitlines()) == 1
