"""Every Job in samples/ resolves to a valid configuration, with its Secrets and ConfigMaps mounted as Kubernetes
would mount them (one file per key) and its metadata ConfigMap accepted by the metadata parser."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from modelsync import config
from modelsync.settings import BY_ENV, SIGSTORE_OPTIONAL, SIGSTORE_VARS

SIGSTORE_ENV = (*SIGSTORE_VARS, *SIGSTORE_OPTIONAL)

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.yaml"))
AUTH = base64.b64encode(b"robot:pw").decode()
# Secrets the samples reference but (rightly) do not define inline.
EXTERNAL = {
    "registry-pull": {".dockerconfigjson": json.dumps({"auths": {"quay.io": {"auth": AUTH}}})},
    "s3-model-store": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_S3_BUCKET": "models"},
    "quay-robot": {"username": "robot", "password": "pw"},
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _data(doc: dict) -> dict[str, str]:
    out = dict(doc.get("stringData") or {})
    out.update({k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
               if doc["kind"] == "Secret" else (doc.get("data") or {}))
    return out


def _jobs():
    for path in SAMPLES:
        docs = _docs(path)
        for job in (d for d in docs if d["kind"] == "Job"):
            yield pytest.param(path, docs, job, id=f"{path.name}:{job['metadata']['name']}")


def test_there_is_a_sample_for_each_way_users_run_the_job():
    names = {p.stem for p in SAMPLES}
    assert {"s3-to-oci-env", "s3-to-oci-args", "s3-to-oci-mounted-secrets", "create-model-from-configmap",
            "create-version", "s3-to-oci-signed", "oci-to-s3", "uri-to-oci", "kitchen-sink"} <= names


@pytest.mark.parametrize("path,docs,job", list(_jobs()))
def test_sample_job_is_restricted_bounded_and_fails_fast_on_bad_config(path, docs, job):
    """The restricted Pod Security Standard, resources, an emptyDir for the storage path, bounded retries, a TTL,
    and a podFailurePolicy that ends the Job at once on the configuration-error exit code (2)."""
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never" and 0 < spec["backoffLimit"] <= 6 and spec["ttlSecondsAfterFinished"] > 0
    rules = spec["podFailurePolicy"]["rules"]
    fail_on_2 = {"action": "FailJob", "onExitCodes": {"containerName": "modelsync", "operator": "In", "values": [2]}}
    assert fail_on_2 in rules
    ctx, cctx = pod["securityContext"], container["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert cctx["readOnlyRootFilesystem"] is True and cctx["allowPrivilegeEscalation"] is False
    assert cctx["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["requests"]) >= {"cpu", "memory"}
    assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    args = dict(a.split("=", 1) for a in container.get("args", []))
    storage = env.get("MODEL_SYNC_STORAGE_PATH") or args.get("--storage-path") or "/tmp/model-sync"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (scratch,) = [m for m in container["volumeMounts"] if m["mountPath"] == storage]
    assert "emptyDir" in volumes[scratch["name"]]
    for doc in docs:  # credentials are placeholders, never real-looking secrets
        for key, value in _data(doc).items() if doc["kind"] == "Secret" else ():
            if any(word in key.lower() for word in ("secret", "password", "token", "docker")):
                assert "replace-me" in value or base64.b64encode(b"robot:replace-me").decode() in value, key


@pytest.mark.parametrize("path,docs,job", list(_jobs()))
def test_sample_job_resolves_to_a_valid_configuration(tmp_path, monkeypatch, path, docs, job):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    objects = {(d["kind"], d["metadata"]["name"]): _data(d) for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        local = tmp_path / mount["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
        vol = volumes[mount["name"]]
        if "secret" in vol:
            name = vol["secret"]["secretName"]
            files = objects.get(("Secret", name)) or EXTERNAL[name]
        elif "configMap" in vol:
            files = objects[("ConfigMap", vol["configMap"]["name"])]
        elif "projected" in vol:  # a service-account token the kubelet writes (its path under the mount)
            files = {s["serviceAccountToken"]["path"]: "header.e30.signature" for s in vol["projected"]["sources"]
                     if "serviceAccountToken" in s}
        else:
            continue
        for key, value in files.items():
            (local / key).write_text(value)

    def localize(value: str) -> str:
        for mount_path, local in mounts.items():
            if value.startswith(mount_path):
                return str(local) + value[len(mount_path):]
        return value

    env = {}
    for item in container.get("env", []):
        assert item["name"] in BY_ENV or item["name"] in SIGSTORE_ENV, f"{item['name']} is not a setting"
        if "value" in item:
            env[item["name"]] = localize(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (objects.get(("Secret", ref["name"])) or EXTERNAL[ref["name"]])[ref["key"]]
    args = []
    for arg in container.get("args", []):
        name, _, value = arg.partition("=")
        args.append(f"{name}={localize(value)}")
    cfg = config.load(args, env)
    if any(name in env for name in SIGSTORE_ENV):  # signing samples: the spec's table turns signing on
        from modelsync.validate import signing_decision
        assert signing_decision(cfg) == (True, None)
        token = [m for m in container["volumeMounts"] if "projected" in volumes[m["name"]]]
        assert token and Path(cfg.signing_identity_token_path).is_file()
        (source,) = volumes[token[0]["name"]]["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == "sigstore"
    assert str(cfg.storage_path) in {str(p) for p in mounts.values()} or str(cfg.storage_path) == "/tmp/model-sync"

    if cfg.model_upload_intent != "update_artifact":
        from modelsync.metadata import parse_metadata_dir
        parse_metadata_dir(Path(cfg.metadata_configmap_path), cfg.model_upload_intent)
