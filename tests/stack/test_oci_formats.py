"""--destination-oci-format on the real stack: each format pushed from S3 (the pipeline) and from files already
fetched (fetch-then-publish), LIVE with a URI that pins what the tag names (the index for hybrid), read back byte
for byte by the OCI source with both backends, and re-synced without a download."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from modelsync import config, job, modelpack
from modelsync.clients.distribution import RegistryClient
from modelsync.locations import OciLocation
from modelsync.oci_layout import OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST
from modelsync.sources.oci import fetch_oci

from ..support.jobs import base_env, destination_env, s3_env, upload
from ..support.model_registry import the_artifact
from ..support.models import digests_of, make_model
from ..support.signing import NO_PROXY, sigstore_env

pytestmark = pytest.mark.stack
MIB = 1 << 20
FORMATS = ["modelcar", "modelpack", "hybrid"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def pinned(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def run_job(stack, tmp_path, prefix, base_image, oci_format, label, uri=None, **extra):
    name = f"fmt-{label}"
    run_dir = tmp_path / name
    run_dir.mkdir()
    env = {**base_env(stack, run_dir, name), **s3_env(stack, prefix),
           **destination_env("oci", stack, run_dir, base_image),
           "MODEL_SYNC_DESTINATION_OCI_FORMAT": oci_format, **extra}
    if uri:
        env["MODEL_SYNC_DESTINATION_OCI_URI"] = uri
    return job.run(config.load([], env)), name, env["MODEL_SYNC_DESTINATION_OCI_URI"]


def read_back(published, tmp_path, backend):
    out = tmp_path / f"read-back-{backend}"
    fetch_oci(OciLocation(published.uri[len("oci://"):], tls_verify=False), out, tmp_path / "rb-work", backend)
    return digests_of(out)


@pytest.mark.parametrize("oci_format", FORMATS)
def test_each_format_from_s3_is_live_pinned_and_reads_back(oci_format, stack, tmp_path, base_image, monkeypatch,
                                                           caplog):
    model_dir = tmp_path / "model"
    expected = make_model(model_dir, big_bytes=9 * MIB)
    prefix = upload(stack, model_dir)
    published, name, uri = run_job(stack, tmp_path, prefix, base_image, oci_format, f"{oci_format}-new")
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri == f"oci://{uri.rsplit(':', 1)[0]}@{published.digest}"
    assert {f.path: f.sha256 for f in published.files} == expected

    target = OciLocation(uri, tls_verify=False)
    client, repo = RegistryClient(target), target.repository.split("/", 1)[1]
    tagged = client.manifest(repo, target.tag or "latest")
    assert tagged.digest == published.digest
    doc = tagged.json()
    if oci_format == "modelcar":
        assert tagged.media_type == OCI_MANIFEST and "artifactType" not in doc
    elif oci_format == "modelpack":
        assert tagged.media_type == OCI_MANIFEST and doc["artifactType"] == modelpack.ARTIFACT_TYPE
        assert doc["config"]["mediaType"] == modelpack.CONFIG_TYPE
        by_path = {layer["annotations"][modelpack.FILEPATH]: layer for layer in doc["layers"]}
        assert set(by_path) == set(expected)
        for path, sha in expected.items():  # the blob is the file: its digest the file's sha256
            assert by_path[path]["digest"] == f"sha256:{sha}" and by_path[path]["mediaType"].endswith(".raw")
        cfg = client.blob(repo, doc["config"]["digest"])
        assert b'"diffIds"' in cfg
    else:
        assert tagged.media_type == OCI_INDEX
        car_entry, pack_entry = doc["manifests"]
        assert pack_entry["annotations"][modelpack.MANIFEST_KIND] == "modelpack"
        car, pack = client.manifest(repo, car_entry["digest"]).json(), client.manifest(repo,
                                                                                      pack_entry["digest"]).json()
        assert pack["artifactType"] == modelpack.ARTIFACT_TYPE
        model_layers = [layer for layer in car["layers"] if "olot.layer.content.type" in layer.get("annotations", {})]
        assert all(layer["mediaType"] == OCI_LAYER_TAR for layer in model_layers)
        assert [layer["digest"] for layer in pack["layers"]] == [layer["digest"] for layer in model_layers]

    assert read_back(published, tmp_path, "oras") == expected
    assert read_back(published, tmp_path, "skopeo") == expected

    # fetch-then-publish (the job's generic path, oras from the files) pushes the very same digest
    monkeypatch.setattr(job, "PIPELINES", ())
    again, _, _ = run_job(stack, tmp_path, prefix, base_image, oci_format, f"{oci_format}-old")
    assert again.digest == published.digest

    # the same tag synced again: every layer reused, nothing downloaded (with the pickle check off: it would read
    # the .bin files again)
    monkeypatch.undo()
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelsync"):
        resynced, _, _ = run_job(stack, tmp_path, prefix, base_image, oci_format, f"{oci_format}-re", uri=uri,
                               MODEL_SYNC_SCAN="off")
    assert resynced.digest == published.digest
    reuse = [r.getMessage() for r in caplog.records if r.name == "modelsync.resync" and "unchanged" in r.getMessage()]
    assert reuse, [r.getMessage() for r in caplog.records if r.name.startswith("modelsync.pipeline")]
    assert any("(0 to download)" in r.getMessage() for r in caplog.records), reuse


@pytest.mark.parametrize("oci_format", ["modelpack", "hybrid"])
def test_a_signed_sync_of_each_new_format_verifies(oci_format, sigstore_stack, tmp_path, base_image):
    """model.sig rides in the artifact (a raw layer of ModelPack; the modelcar's last layer, shared by the hybrid's
    ModelPack manifest) and the image signature is bound to what the URI pins: modelsync-verify accepts both."""
    model_dir = tmp_path / "model"
    expected = make_model(model_dir)
    prefix = upload(sigstore_stack, model_dir)
    published, name, uri = run_job(sigstore_stack, tmp_path, prefix, base_image, oci_format, f"{oci_format}-sig",
                                   **sigstore_env(sigstore_stack))
    art = the_artifact(sigstore_stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    props = {k: v["string_value"] for k, v in art["customProperties"].items() if "string_value" in v}
    assert props["modelsync.signature.model_files"] == str(len(expected))
    files = read_back(published, tmp_path, "oras")
    assert files.pop("model.sig") and files == expected
    # rh-model-signing reads modelcar images: model.sig goes beside the hybrid's modelcar, not beside a ModelPack
    assert ("modelsync.signature.model_referrer" in props) == (oci_format == "hybrid")
    run = subprocess.run([str(REPO / "bin" / "modelsync-verify"), published.uri,
                          "--identity", sigstore_stack.stack_sigstore_identity,
                          "--issuer", sigstore_stack.stack_sigstore_issuer,
                          "--trust-config", sigstore_stack.stack_sigstore_trust_config, "--registry-insecure"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **NO_PROXY})
    assert run.returncode == 0, run.stdout + run.stderr
