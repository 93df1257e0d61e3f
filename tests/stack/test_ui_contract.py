"""Issue 21: the transfer Job exactly as the Model Registry UI's backend builds it (tests/support/ui_jobs.py: its env
vars, its two Secrets and its metadata ConfigMap, key for key) runs with modelsync, on the real local stack.

Three settings are added to what the UI writes, because this machine is not a cluster: the modelcar's base image
(the default, public.ecr.aws/docker/library/busybox, is out of reach here: the stack's own busybox is used), TLS
verification off for the stack's plain-HTTP registry (a cluster's registry speaks TLS), and the termination message
path (the kubelet's /dev/termination-log). Nothing of the UI's is changed or left out."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelsync.destinations.s3 import publish_s3
from modelsync.files import inventory

from ..support.jobs import s3loc
from ..support.model_registry import mr_get
from ..support.models import TEST_JOB, make_model
from ..support.ui_jobs import UiJob, typed

pytestmark = pytest.mark.stack

MR = "/api/model_registry/v1alpha3"
MODEL_PROPS = {"team": typed("MetadataStringValue", "nlp"), "production": typed("MetadataStringValue", ""),
               "layers": typed("MetadataIntValue", "12"), "accuracy": typed("MetadataDoubleValue", 0.93),
               "approved": typed("MetadataBoolValue", True),
               "card": typed("MetadataStructValue", base64.b64encode(b'{"lang": "en"}').decode())}
VERSION_PROPS = {"epochs": typed("MetadataIntValue", "3"), "stage": typed("MetadataStringValue", "candidate"),
                 "plain": 7}
STORED = {"team": ("MetadataStringValue", "string_value", "nlp"),
          "production": ("MetadataStringValue", "string_value", ""),
          "layers": ("MetadataIntValue", "int_value", "12"),
          "accuracy": ("MetadataDoubleValue", "double_value", 0.93),
          "approved": ("MetadataBoolValue", "bool_value", True)}
VERSION_STORED = {"epochs": ("MetadataIntValue", "int_value", "3"),
                  "stage": ("MetadataStringValue", "string_value", "candidate"),
                  "plain": ("MetadataIntValue", "int_value", "7")}


def mr_post(stack, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{stack.mr_url}{MR}/{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture
def s3_source(stack, tmp_path, require_tool):
    require_tool("aws")
    model_dir = tmp_path / "model-src"
    expected = make_model(model_dir)
    prefix = f"ui-src-{uuid.uuid4().hex[:8]}"
    publish_s3(model_dir, inventory(model_dir), s3loc(stack, prefix), TEST_JOB)
    return prefix, expected


def ui_job(stack, intent: str, prefix: str, **fields) -> UiJob:
    """An S3 source (prefix) to a new repository of the stack's plain registry, unless fields say otherwise."""
    s3 = dict(source_type="s3", bucket=stack.minio_bucket, key=prefix, endpoint=stack.minio_endpoint,
              region="us-east-1", access_key=stack.minio_access_key, secret_key=stack.minio_secret_key)
    defaults = dict(name=f"ui-job-{uuid.uuid4().hex[:6]}", namespace="team-a", registry_address=stack.mr_url,
                    destination_uri=f"{stack.oci_registry}/ui/{uuid.uuid4().hex[:8]}:v1", author="ada")
    return UiJob(intent=intent, **{**defaults, **s3, **fields})


def run_ui_job(job: UiJob, tmp_path: Path, base_image: str, **more: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**job.write(tmp_path / "mounts"), "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base_image,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false",
           "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
           "TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"), **more}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_", "AWS_"))}
    done = subprocess.run([sys.executable, "-m", "modelsync"], env={**clean, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    message = tmp_path / "termination-log"
    return done, (json.loads(message.read_text()) if done.returncode == 0 else {"failed": message.read_text()})


def props(entity: dict) -> dict:
    return entity.get("customProperties") or {}


def assert_typed(found: dict, expected: dict) -> None:
    for name, (kind, field_name, value) in expected.items():
        assert found[name]["metadataType"] == kind, (name, found[name])
        assert found[name][field_name] == value, (name, found[name])


def test_create_model_from_s3_as_the_ui_builds_it(stack, tmp_path, s3_source, base_image):
    prefix, _ = s3_source
    job = ui_job(stack, "create_model", prefix, model_name=f"ui-model-{uuid.uuid4().hex[:6]}", version_name="v1",
                 description="a model from the UI", version_description="first", model_format="onnx",
                 model_format_version="1", model_props=MODEL_PROPS, version_props=VERSION_PROPS)
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == 0, done.stderr
    assert "customProperties" not in done.stderr  # read, not warned away
    rm = mr_get(stack, f"registered_models/{message['RegisteredModel']['id']}")
    mv = mr_get(stack, f"model_versions/{message['ModelVersion']['id']}")
    art = mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")
    assert rm["name"] == job.model_name and rm["description"] == "a model from the UI" and rm["owner"] == "ada"
    assert_typed(props(rm), STORED)
    assert props(rm)["card"]["metadataType"] == "MetadataStructValue"
    assert json.loads(props(rm)["card"]["struct_value"]) == {"lang": "en"}
    assert_typed(props(mv), VERSION_STORED)
    assert_typed(props(art), VERSION_STORED)
    assert mv["author"] == "ada" and mv["description"] == "first" and mv["state"] == "LIVE"
    assert art["state"] == "LIVE" and art["uri"].startswith(f"oci://{job.destination_uri.rsplit(':', 1)[0]}@sha256:")
    assert (art["modelFormatName"], art["modelFormatVersion"]) == ("onnx", "1")
    assert (art["modelSourceKind"], art["modelSourceClass"], art["modelSourceGroup"], art["modelSourceName"]) == \
        ("transfer_job", "async-upload", "team-a", job.name)


def test_create_version_names_the_model_in_env_and_configmap(stack, tmp_path, s3_source, base_image):
    prefix, _ = s3_source
    rm = mr_post(stack, "registered_models", {"name": f"ui-rm-{uuid.uuid4().hex[:6]}"})
    job = ui_job(stack, "create_version", prefix, model_id=rm["id"], version_name="v2",
                 version_props=VERSION_PROPS)
    assert job.env()["MODEL_SYNC_MODEL_ID"] == job.configmap()["RegisteredModel.id"] == rm["id"]
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == 0, done.stderr
    assert message["RegisteredModel"]["id"] == rm["id"]
    art = mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")
    assert art["state"] == "LIVE" and art["name"] == "v2"
    assert_typed(props(art), VERSION_STORED)


def _pending_artifact(stack) -> tuple[dict, dict, dict]:
    """What the UI registers before it starts an update_artifact Job: a model, a version, a PENDING artifact."""
    rm = mr_post(stack, "registered_models", {"name": f"ui-upd-{uuid.uuid4().hex[:6]}"})
    mv = mr_post(stack, f"registered_models/{rm['id']}/versions", {"name": "v1", "registeredModelId": rm["id"]})
    art = mr_post(stack, f"model_versions/{mv['id']}/artifacts",
                  {"artifactType": "model-artifact", "name": "v1", "state": "PENDING"})
    return rm, mv, art


def test_update_artifact_takes_its_ids_from_the_configmap(stack, tmp_path, s3_source, base_image):
    prefix, _ = s3_source
    rm, mv, art = _pending_artifact(stack)
    job = ui_job(stack, "update_artifact", prefix, model_id=rm["id"], version_id=mv["id"], artifact_id=art["id"],
                 version_props=VERSION_PROPS)
    assert "MODEL_SYNC_MODEL_ARTIFACT_ID" not in job.env()  # the UI names the ids only in the ConfigMap
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == 0, done.stderr
    assert (message["RegisteredModel"]["id"], message["ModelVersion"]["id"], message["ModelArtifact"]["id"]) == \
        (rm["id"], mv["id"], art["id"])
    after = mr_get(stack, f"model_artifacts/{art['id']}")
    assert after["state"] == "LIVE" and after["uri"].startswith("oci://")
    assert_typed(props(after), VERSION_STORED)
    assert after["modelSourceName"] == job.name


def test_ids_given_twice_must_agree(stack, tmp_path, s3_source, base_image):
    prefix, _ = s3_source
    rm, mv, art = _pending_artifact(stack)
    job = ui_job(stack, "update_artifact", prefix, model_id=rm["id"], version_id=mv["id"], artifact_id=art["id"])
    same, _ = run_ui_job(job, tmp_path / "same", base_image, MODEL_SYNC_MODEL_ARTIFACT_ID=art["id"])
    assert same.returncode == 0, same.stderr
    other = str(int(art["id"]) + 1000)
    done, _ = run_ui_job(job, tmp_path / "other", base_image, MODEL_SYNC_MODEL_ARTIFACT_ID=other)
    assert done.returncode == 2
    problem = [line for line in done.stderr.splitlines() if "ModelArtifact.id" in line]
    assert len(problem) == 1 and f"is '{other}'" in problem[0] and f"is '{art['id']}'" in problem[0]


def test_create_model_from_a_uri_as_the_ui_builds_it(stack, tmp_path, base_image, http_root):
    import tarfile
    root, url = http_root
    make_model(tmp_path / "model-src")
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model-src", arcname=".")
    job = ui_job(stack, "create_model", "", source_type="uri", uri=f"{url}/model.tar.gz",
                 model_name=f"ui-uri-{uuid.uuid4().hex[:6]}", model_props=MODEL_PROPS)
    assert "MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH" not in job.env() and "/opt/creds/source" not in job.files()
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == 0, done.stderr
    assert mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")["state"] == "LIVE"
    assert_typed(props(mr_get(stack, f"registered_models/{message['RegisteredModel']['id']}")), STORED)


@pytest.mark.parametrize("how", ["endpoint-down", "password-refused"])
def test_a_failure_in_preflight_at_run_time_leaves_the_artifact_abandoned(how, stack, tmp_path, s3_source,
                                                                         base_image):
    """The UI shows a failed Job; the artifact it created PENDING must not go on claiming an upload."""
    prefix, _ = s3_source
    rm, mv, art = _pending_artifact(stack)
    job = ui_job(stack, "update_artifact", prefix, model_id=rm["id"], version_id=mv["id"], artifact_id=art["id"])
    if how == "endpoint-down":
        job.endpoint, code, says = "http://127.0.0.1:9", 1, "127.0.0.1:9"
    else:
        job.secret_key, code, says = "wrong-Secret-Zq9", 2, "secret access key"
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == code, done.stderr
    after = mr_get(stack, f"model_artifacts/{art['id']}")
    assert after["state"] == "ABANDONED"
    reason = props(after)["modelsync.error"]["string_value"]
    assert says in reason and "wrong-Secret-Zq9" not in reason + done.stderr
    assert says in message["failed"]


def test_registry_behind_a_gateway_route_prefix(stack, tmp_path, s3_source, base_image, mr_proxy_factory):
    """The UI keeps a gateway's route prefix in the address it gives the Job (registryOriginOnly)."""
    prefix, _ = s3_source
    proxy = mr_proxy_factory(route_prefix="/model-registry/team-a")
    job = ui_job(stack, "create_model", prefix, model_name=f"ui-gw-{uuid.uuid4().hex[:6]}")
    job.registry_address = f"{proxy.url}/model-registry/team-a/api/model_registry/v1alpha3"
    assert job.env()["MODEL_SYNC_REGISTRY_SERVER_ADDRESS"] == f"{proxy.url}/model-registry/team-a"
    done, message = run_ui_job(job, tmp_path, base_image)
    assert done.returncode == 0, done.stderr
    assert mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")["state"] == "LIVE"


@pytest.fixture
def https_registry(stack, mr_proxy_factory):
    """The real Model Registry behind a TLS-terminating proxy whose certificate the stack's CA signed."""
    import ssl
    tls = stack.state_dir / "tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    return mr_proxy_factory(tls=ctx).url, (tls / "ca.crt").read_text()


@pytest.mark.parametrize("configmap", ["present", "absent"])
def test_an_https_registry_with_the_uis_optional_trusted_ca(configmap, stack, tmp_path, s3_source, base_image,
                                                            https_registry):
    """The UI mounts the optional ConfigMap odh-trusted-ca-bundle for an https Model Registry and names its file in
    MODEL_SYNC_REGISTRY_CUSTOM_CA. Absent, the mount is an empty directory: the system's CAs are trusted (here they
    do not know the stack's CA, so TLS fails in one line, exit 1), not a configuration error."""
    prefix, _ = s3_source
    url, ca = https_registry
    job = ui_job(stack, "create_model", prefix, model_name=f"ui-tls-{uuid.uuid4().hex[:6]}",
                 registry_ca=ca if configmap == "present" else None)
    job.registry_address = url
    assert job.env()["MODEL_SYNC_REGISTRY_IS_SECURE"] == "true"
    done, message = run_ui_job(job, tmp_path, base_image)
    if configmap == "present":
        assert done.returncode == 0, done.stderr
        assert mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")["state"] == "LIVE"
    else:
        assert done.returncode == 1, done.stderr
        assert "optional CA ConfigMap that does not exist" in done.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in message["failed"]


@pytest.mark.parametrize("ca", ["there", "not there"])
def test_a_registry_ca_in_containers_certs_d_is_trusted(ca, stack, tmp_path, s3_source, base_image, monkeypatch):
    """The UI mounts the OpenShift service CA at /etc/containers/certs.d/<registry>/ca.crt for the internal
    registry, with no setting naming it. Run in this process, the directory moved under tmp_path."""
    from modelsync import __main__ as cli
    from modelsync import config
    from modelsync.stores import oci as oci_store
    prefix, _ = s3_source
    certs_d = tmp_path / "certs.d"
    (certs_d / stack.oci_tls_registry).mkdir(parents=True)
    if ca == "there":
        (certs_d / stack.oci_tls_registry / "ca.crt").write_bytes(Path(stack.oci_tls_ca).read_bytes())
    monkeypatch.setattr(oci_store, "CERTS_D", certs_d)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    job = ui_job(stack, "create_model", prefix, model_name=f"ui-certsd-{uuid.uuid4().hex[:6]}",
                 username=stack.oci_tls_username, password=stack.oci_tls_password,
                 destination_uri=f"{stack.oci_tls_registry}/ui/{uuid.uuid4().hex[:8]}:v1")
    env = {**job.write(tmp_path / "mounts"), "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base_image,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false",
           "TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log")}
    for key in [k for k in os.environ if k.startswith(("MODEL_SYNC_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if ca == "not there":
        assert cli.main([]) == 1
        assert "certificate" in (tmp_path / "termination-log").read_text().lower()
        return
    assert cli.main([]) == 0
    message = json.loads((tmp_path / "termination-log").read_text())
    assert mr_get(stack, f"model_artifacts/{message['ModelArtifact']['id']}")["state"] == "LIVE"
