"""The whole job on the real local stack: every source x destination pair, registered LIVE and read back
byte for byte; failures leave the artifact ABANDONED with the error; the storage path is cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelsync import config, destinations, job
from modelsync.errors import ModelSyncError
from modelsync.locations import OciLocation
from modelsync.oci_copy import push_layout

from ..support.cli import start_and_wait_for_pending
from ..support.jobs import base_env, destination_env, read_back, source_env
from ..support.model_registry import mr_get, the_artifact
from ..support.models import write_big
from ..support.oci_helpers import busybox_layout

pytestmark = pytest.mark.stack


PAIRS = [(s, d) for s in ("s3", "oci", "uri", "pvc") for d in ("oci", "s3", "pvc")]


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{s}-to-{d}" for s, d in PAIRS])
def test_every_source_to_every_destination(src, dst, stack, tmp_path, model, http_root, base_image, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    model_dir, expected = model
    name = f"job-{src}-{dst}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **source_env(src, stack, tmp_path, model_dir, http_root, base_image),
           **destination_env(dst, stack, tmp_path, base_image)}
    published = job.run(config.load([], env))

    assert read_back(published, dst, stack, tmp_path) == expected
    assert {f.path: f.sha256 for f in published.files} == expected
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    if dst == "oci":
        assert published.uri.startswith(f"oci://{stack.oci_registry}/job-dst/") and "@sha256:" in published.uri
    assert not list((tmp_path / "storage").glob(".modelsync-*"))


def test_failed_transfer_leaves_the_artifact_abandoned_then_a_restart_finishes(stack, tmp_path, model,
                                                                              monkeypatch):
    """A failure preflight cannot see: the base image's manifest is there (preflight passes) but its layer blob
    was deleted from the registry, so pulling it fails after the claim. The artifact ends ABANDONED with the
    error; once the base is pushed again, the same Job restarted resumes its own entities and ends LIVE."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir, _ = model
    base = OciLocation(f"{stack.oci_registry}/library/broken-base-{uuid.uuid4().hex[:6]}:latest", tls_verify=False)
    layout = busybox_layout(tmp_path / "base")
    push_layout(layout, "latest", base, "latest", tmp_path / "w", "skopeo")
    manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://{stack.oci_registry}/v2/{base.repository.split('/', 1)[1]}/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}), timeout=10).read())
    layer = manifest["layers"][0]["digest"]
    urllib.request.urlopen(urllib.request.Request(
        f"http://{stack.oci_registry}/v2/{base.repository.split('/', 1)[1]}/blobs/{layer}", method="DELETE"),
        timeout=10)
    name = f"job-fail-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), "MODEL_SYNC_DESTINATION_TYPE": "oci",
           "MODEL_SYNC_DESTINATION_OCI_URI": f"{stack.oci_tls_registry}/job-fail/m:v1",
           "MODEL_SYNC_DESTINATION_OCI_USERNAME": stack.oci_tls_username,
           "MODEL_SYNC_DESTINATION_OCI_PASSWORD": stack.oci_tls_password,
           "MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE": stack.oci_tls_ca,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base.reference,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false"}
    with pytest.raises(ModelSyncError) as err:
        job.run(config.load([], env))
    assert stack.oci_tls_password not in str(err.value)
    rm = mr_get(stack, f"registered_model?name={name}")
    mv = mr_get(stack, f"model_version?name=1.0.0&parentResourceId={rm['id']}")
    (art,) = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
    assert art["state"] == "ABANDONED"
    error = art["customProperties"]["modelsync.error"]["string_value"]
    assert error and stack.oci_tls_password not in json.dumps(art)
    assert not list((tmp_path / "storage").glob(".modelsync-*"))
    # Nothing the job created claims a model that is not there: its model and version are ARCHIVED.
    assert mr_get(stack, f"registered_models/{rm['id']}")["state"] == "ARCHIVED"
    assert mr_get(stack, f"model_versions/{mv['id']}")["state"] == "ARCHIVED"

    # The base image is repaired; the same Job, restarted, resumes its own entities and ends LIVE: no duplicates.
    push_layout(layout, "latest", base, "latest", tmp_path / "w2", "skopeo")
    published = job.run(config.load([], env))
    (art,) = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    assert "modelsync.error" not in art["customProperties"]
    assert mr_get(stack, f"registered_models/{rm['id']}")["state"] == "LIVE"
    assert mr_get(stack, f"model_versions/{mv['id']}")["state"] == "LIVE"


def test_missing_source_fails_in_preflight_before_any_registry_write(stack, tmp_path, base_image, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    name = f"job-nosrc-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "s3",
           "MODEL_SYNC_SOURCE_AWS_BUCKET": stack.minio_bucket, "MODEL_SYNC_SOURCE_AWS_KEY": "no/such/prefix/",
           "MODEL_SYNC_SOURCE_AWS_ENDPOINT": stack.minio_endpoint,
           "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": stack.minio_access_key,
           "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": stack.minio_secret_key,
           **destination_env("pvc", stack, tmp_path, base_image)}
    with pytest.raises(ModelSyncError, match="nothing found at source"):
        job.run(config.load([], env))
    with pytest.raises(urllib.error.HTTPError) as err:  # no RegisteredModel claims a model that is not there
        mr_get(stack, f"registered_model?name={name}")
    assert err.value.code == 404


def test_dry_run_reports_the_api_generation_and_plan_and_writes_nothing(stack, tmp_path, model, base_image,
                                                                         monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir, _ = model
    name = f"job-dry-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), **destination_env("pvc", stack, tmp_path, base_image)}
    report, ok = job.dry_run(config.load(["--dry-run"], env))
    assert ok
    assert report["preflight"]["registry"]["api_version"] == "v1alpha3"
    assert report["preflight"]["source"] == {"type": "pvc", "path": str(model_dir), "files": 5, "bytes": sum(
        f.stat().st_size for f in model_dir.rglob("*") if f.is_file())}
    assert any("RegisteredModel" in line and "create" in line for line in report["preflight"]["plan"])
    with pytest.raises(urllib.error.HTTPError):
        mr_get(stack, f"registered_model?name={name}")


@pytest.mark.slow
def test_sigterm_mid_transfer_abandons_and_cleans_up(stack, tmp_path, base_image):
    """Kubernetes deletes the pod (SIGTERM) while the job pushes: exit 1, artifact ABANDONED, no child tool left
    running, the storage path's working directory gone."""
    proc, mv, name, _ = big_job_mid_transfer(stack, tmp_path, base_image, "term")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "stopped by SIGTERM" in err
    rm = mr_get(stack, f"registered_model?name={name}")
    (art,) = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
    assert art["state"] == "ABANDONED" and "SIGTERM" in art["customProperties"]["modelsync.error"]["string_value"]
    assert mr_get(stack, f"registered_models/{rm['id']}")["state"] == "ARCHIVED"
    assert mr_get(stack, f"model_versions/{mv['id']}")["state"] == "ARCHIVED"
    assert not list((tmp_path / "storage").glob(".modelsync-*"))
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes of the job's session still running: {leftovers}"


@pytest.mark.parametrize("generation", ["v1alpha3", "v1"])
def test_whole_job_against_each_api_generation(generation, stack, tmp_path, model, base_image, mr_proxy_factory,
                                               monkeypatch):
    """The same job against the v0.3.0 server directly (v1alpha3) and through a proxy that serves only /v1/ (as
    newer servers do); dry-run names the generation it detected, and the run ends LIVE."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir, expected = model
    address = stack.mr_url if generation == "v1alpha3" else mr_proxy_factory(v1_only=True).url
    name = f"job-gen-{generation}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": address,
           "MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(model_dir),
           **destination_env("oci", stack, tmp_path, base_image)}
    report, ok = job.dry_run(config.load(["--dry-run"], env))
    assert ok and report["preflight"]["registry"]["api_version"] == generation
    published = job.run(config.load([], env))
    assert read_back(published, "oci", stack, tmp_path) == expected
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri


def big_job_mid_transfer(stack, tmp_path: Path, base_image: str, label: str):
    """A 1 GiB pvc -> oci job run by the real CLI, returned about a second into its transfer."""
    model_dir = tmp_path / "model-src"
    write_big(model_dir / "big.bin", 1 << 30)
    name = f"job-{label}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), **destination_env("oci", stack, tmp_path, base_image)}
    proc, mv = start_and_wait_for_pending(stack, env, name, tmp_path)
    time.sleep(1.0)  # into the transfer
    assert proc.poll() is None, "the transfer finished before it could be interrupted"
    return proc, mv, name, env


@pytest.mark.slow
def test_hard_kill_mid_transfer_then_restart_ends_with_one_live_set(stack, tmp_path, base_image):
    """SIGKILL (OOM, node loss) leaves no chance to clean up: what the job created must still not look LIVE,
    and the restarted Job must finish the same entities."""
    proc, mv, name, env = big_job_mid_transfer(stack, tmp_path, base_image, "kill")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    rm = mr_get(stack, f"registered_model?name={name}")
    assert rm["state"] == "ARCHIVED" and mr_get(stack, f"model_versions/{mv['id']}")["state"] == "ARCHIVED"

    published = job.run(config.load([], env))  # the restarted Job: same settings, same metadata
    versions = mr_get(stack, f"registered_models/{rm['id']}/versions")["items"]
    arts = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
    assert [v["id"] for v in versions] == [mv["id"]] and len(arts) == 1
    assert arts[0]["state"] == "LIVE" and arts[0]["uri"] == published.uri
    assert mr_get(stack, f"registered_models/{rm['id']}")["state"] == "LIVE"
    assert mr_get(stack, f"model_versions/{mv['id']}")["state"] == "LIVE"


def test_too_small_storage_path_fails_before_any_registry_write(stack, tmp_path, model, base_image, monkeypatch):
    """A full disk cannot be arranged portably in a test, so the free space the job reads is patched (the only
    stand-in in this file); everything else is real. The job must refuse in preflight, naming the setting."""
    import collections

    from modelsync import files
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10 << 20, 10 << 20, 1024))
    model_dir, _ = model
    name = f"job-space-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), **destination_env("oci", stack, tmp_path, base_image),
           "MODEL_SYNC_DESTINATION_OCI_BACKEND": "skopeo"}  # skopeo copies a layout of the layers: room needed
    with pytest.raises(ModelSyncError) as err:
        job.run(config.load([], env))
    assert "has 1.0 KiB free but the model (modelcar layers) needs" in str(err.value)
    # with oras the layers go up from the volume's files: a volume read in place needs no room for them
    oras = config.load([], {**env, "MODEL_SYNC_DESTINATION_OCI_BACKEND": "oras"})
    assert destinations.of(oras).storage_parts(oras.destination) == ()
    assert "MODEL_SYNC_STORAGE_PATH" in str(err.value)
    with pytest.raises(urllib.error.HTTPError):
        mr_get(stack, f"registered_model?name={name}")


@pytest.fixture
def https_registry(stack, mr_proxy_factory):
    """The real Model Registry behind a TLS-terminating proxy whose certificate the stack's CA signed."""
    import ssl
    tls = stack.state_dir / "tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    return mr_proxy_factory(tls=ctx).url, tls / "ca.crt"


@pytest.mark.parametrize("how", ["path", "envvar-pem", "envvar-path", "none"])
def test_registry_custom_ca(how, stack, tmp_path, model, https_registry, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    url, ca = https_registry
    model_dir, _ = model
    env = {**base_env(stack, tmp_path, f"job-ca-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": url,
           "MODEL_SYNC_REGISTRY_IS_SECURE": "true", "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out")}
    if how == "path":
        env["MODEL_SYNC_REGISTRY_CUSTOM_CA"] = str(ca)
    elif how.startswith("envvar"):
        env["MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR"] = "MR_CA"
        env["MR_CA"] = ca.read_text() if how == "envvar-pem" else str(ca)
    report, ok = job.dry_run(config.load(["--dry-run"], env))
    if how == "none":
        assert not ok and "CERTIFICATE_VERIFY_FAILED" in report["preflight"]["error"]
        assert "MODEL_SYNC_REGISTRY_CUSTOM_CA" in report["preflight"]["error"]  # says how to fix it
        assert "\n" not in report["preflight"]["error"]
    else:
        assert ok and report["preflight"]["registry"]["api_version"] == "v1alpha3", report["preflight"]
