"""Anonymous registries with token auth (the issue: "pull and push anonymously, with token auth, and say so in
--dry-run"; "upstream's sample Secrets and ConfigMaps accepted end to end").

All real: a second distribution registry (tests/support/token_registry.py) that answers every request without a Bearer
token with 401, a token server that gives anyone (no Authorization header) the scope asked for, oras and skopeo,
and the stack's Model Registry. The modelcar's base comes from the stack's plain registry (`base_image`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelsync import config, job
from modelsync.destinations.oci import publish_modelcar
from modelsync.locations import OciLocation
from modelsync.sources.oci import fetch_oci

from ..support.jobs import base_env
from ..support.model_registry import the_artifact
from ..support.models import digests_of
from ..support.token_registry import SERVICE, Signer, TokenRegistry, TokenServer, start_token_registry

pytestmark = pytest.mark.stack

UPSTREAM_SECRET = (Path(__file__).resolve().parents[1] / "support" / "upstream_samples" / "sample_job_s3_to_oci"
                   / "my-oci-credentials")
BACKENDS = ("oras", "skopeo")


@pytest.fixture(scope="module")
def token_registry(stack, tmp_path_factory, require_tool) -> TokenRegistry:
    with start_token_registry(tmp_path_factory.mktemp("token-registry"), require_tool("registry")) as reg:
        yield reg


@pytest.fixture(autouse=True)
def no_service_account(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))


@pytest.fixture
def tokens(token_registry) -> TokenServer:
    """The token server, its record cleared for this test."""
    token_registry.token_server.clear()
    return token_registry.token_server


def upstream_secret(tmp_path: Path, host: str) -> Path:
    """upstream's sample dockerconfigjson Secret (`"auth": ""`), as a mounted Secret dir, for host instead of the
    sample's in-cluster registry; nothing else changed."""
    doc = json.loads((UPSTREAM_SECRET / ".dockerconfigjson").read_text())
    ((sample_host, entry),) = doc["auths"].items()
    assert entry["auth"] == ""
    out = tmp_path / "my-oci-credentials"
    shutil.copytree(UPSTREAM_SECRET, out)
    (out / ".dockerconfigjson").write_text(json.dumps({"auths": {host: entry}}))
    (out / "OCI_HOST").write_text((UPSTREAM_SECRET / "OCI_HOST").read_text().replace(sample_host, host))
    return out


def destination(reg: TokenRegistry, base_image: str, backend: str, tmp_path: Path, creds: str) -> dict[str, str]:
    env = {"MODEL_SYNC_DESTINATION_TYPE": "oci",
           "MODEL_SYNC_DESTINATION_OCI_URI": f"{reg.host}/public/{uuid.uuid4().hex[:8]}:v1",
           "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
           "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base_image,
           "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false"}
    if creds == "upstream-secret":
        env["MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"] = str(upstream_secret(tmp_path, reg.host))
    return env


def pvc_source(model_dir: Path) -> dict[str, str]:
    return {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(model_dir)}


def assert_anonymous_token_auth(tokens: TokenServer, repo: str, action: str) -> None:
    """Tokens were asked for, never with an Authorization header, and one of them granted `action` on repo."""
    seen = tokens.snapshot()
    assert seen, "no token was requested: the registry was not reached through token auth"
    assert [r for r in seen if r.authorization] == [], "a client sent credentials to the token server"
    assert all(r.service == SERVICE for r in seen)
    granted = [a for r in seen for a in r.granted if a["type"] == "repository" and a["name"] == repo]
    assert any(action in a["actions"] for a in granted), f"no token granted {action} on {repo}: {seen}"


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    return subprocess.run([sys.executable, "-m", "modelsync", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- the registry really demands tokens


def test_the_registry_requires_a_token_and_the_token_server_serves_anyone(token_registry):
    status, headers = token_registry.get("/v2/")
    challenge = headers.get("WWW-Authenticate", "")
    assert status == 401 and challenge.startswith("Bearer ") and token_registry.token_server.realm in challenge
    assert f'service="{SERVICE}"' in challenge
    assert token_registry.get("/v2/public/x/tags/list")[0] == 401

    # anonymously, as a client would after that challenge: no Authorization header at all
    query = urllib.parse.urlencode({"service": SERVICE, "scope": "repository:public/x:pull"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{token_registry.token_server.realm}?{query}", timeout=10) as resp:
        token = json.load(resp)["token"]
    assert token_registry.get("/v2/", token)[0] == 200
    assert token_registry.get("/v2/public/x/tags/list", token)[0] == 404  # allowed; the repository is not there
    assert token_registry.get("/v2/public/other/tags/list", token)[0] == 401  # outside the granted scope

    # a token the registry does not trust (another key, same claims) is refused
    forged = TokenServer(Signer("someone else")).token_for(["repository:public/x:pull"])[0]
    assert token_registry.get("/v2/public/x/tags/list", forged)[0] == 401


# ---------------------------------------------------------------- pushing a modelcar anonymously


@pytest.mark.parametrize("creds", ["none", "upstream-secret"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_job_pushes_a_modelcar_anonymously(backend, creds, stack, token_registry, tokens, base_image, model,
                                               tmp_path, monkeypatch, caplog):
    """No destination credentials at all, or upstream's sample Secret whose entry has `"auth": ""`: the job
    pushes through token auth without ever sending credentials, and the artifact ends LIVE."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="modelsync")
    model_dir, expected = model
    name = f"anon-{backend}-{creds}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **pvc_source(model_dir),
           **destination(token_registry, base_image, backend, tmp_path, creds)}
    cfg = config.load([], env)
    assert cfg.values["destination_oci_username"] is None and cfg.values["destination_oci_password"] is None
    assert any("used anonymously" in r.getMessage() and token_registry.host in r.getMessage()
               for r in caplog.records), "the log does not say the registry is used anonymously"

    published = job.run(cfg)

    repo = env["MODEL_SYNC_DESTINATION_OCI_URI"].split("/", 1)[1].rsplit(":", 1)[0]
    assert published.uri.startswith(f"oci://{token_registry.host}/{repo}@sha256:")
    assert_anonymous_token_auth(tokens, repo, "push")
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri

    tokens.clear()  # read it back, anonymously too, with the same tool
    out = tmp_path / "read-back"
    fetch_oci(OciLocation(published.uri[len("oci://"):], tls_verify=False), out, tmp_path / "rb-work", backend)
    assert digests_of(out) == expected
    assert {f.path: f.sha256 for f in published.files} == expected
    assert_anonymous_token_auth(tokens, repo, "pull")


def test_oras_does_not_pick_up_the_operators_docker_credentials(stack, token_registry, tokens, base_image, model,
                                                                 tmp_path, monkeypatch):
    """Anonymous means anonymous: credentials for the registry in ~/.docker/config.json of whoever runs the job
    are not sent (skopeo is told --*-no-creds; oras must not read the default config either)."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {token_registry.host: {"auth": "b3BlcmF0b3I6bm90LWZvci10aGlzLWpvYg=="}}}))  # operator:not-for-...
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    model_dir, expected = model
    name = f"anon-home-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **pvc_source(model_dir),
           **destination(token_registry, base_image, "oras", tmp_path, "none")}
    published = job.run(config.load([], env))
    repo = env["MODEL_SYNC_DESTINATION_OCI_URI"].split("/", 1)[1].rsplit(":", 1)[0]
    assert_anonymous_token_auth(tokens, repo, "push")
    assert the_artifact(stack, name)["state"] == "LIVE"
    assert published.uri.startswith(f"oci://{token_registry.host}/")


# ---------------------------------------------------------------- pulling an OCI source anonymously


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_oci_source_is_pulled_anonymously(backend, stack, token_registry, tokens, base_image, model, tmp_path,
                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_dir, expected = model
    ref = f"{token_registry.host}/public/src-{uuid.uuid4().hex[:8]}:v1"
    publish_modelcar(model_dir, OciLocation(ref, tls_verify=False), OciLocation(base_image, tls_verify=False),
                     tmp_path / "pre", backend)
    tokens.clear()
    name = f"anon-src-{backend}-{uuid.uuid4().hex[:6]}"
    dest = tmp_path / "pvc-out" / "model"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": ref,
           "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false", "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend,
           "MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": str(dest)}
    cfg = config.load([], env)
    assert cfg.values["source_oci_username"] is None
    published = job.run(cfg)
    assert {p: d for p, d in digests_of(dest).items() if p in expected} == expected
    assert {f.path: f.sha256 for f in published.files} == expected
    assert the_artifact(stack, name)["state"] == "LIVE"
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    assert_anonymous_token_auth(tokens, repo, "pull")
    assert not any("push" in a["actions"] for r in tokens.snapshot() for a in r.granted)


# ---------------------------------------------------------------- --dry-run says so


@pytest.mark.parametrize("creds", ["none", "upstream-secret"])
def test_dry_run_names_the_destination_credentials_anonymous(creds, stack, token_registry, tokens, base_image,
                                                             tmp_path):
    name = f"anon-dry-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **pvc_source(tmp_path / "src"),
           **destination(token_registry, base_image, "oras", tmp_path, creds)}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.onnx").write_bytes(b"onnx")
    result = run_cli(env, tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["preflight"]["ok"] is True, report
    dest = report["preflight"]["destination"]
    assert dest["credentials"] == "anonymous"
    assert dest["repository"] == env["MODEL_SYNC_DESTINATION_OCI_URI"].rsplit(":", 1)[0]
    assert "base image" in dest
    assert "used anonymously" in result.stderr and token_registry.host in result.stderr
    settings = report["settings"]
    assert settings["destination_oci_username"]["value"] is None
    assert settings["destination_oci_password"]["value"] in (None, "")
    # the preflight reached the registry through token auth, anonymously, and wrote nothing to it
    repo = env["MODEL_SYNC_DESTINATION_OCI_URI"].split("/", 1)[1].rsplit(":", 1)[0]
    assert_anonymous_token_auth(tokens, repo, "pull")
    assert token_registry.get(f"/v2/{repo}/tags/list",
                              tokens.token_for([f"repository:{repo}:pull"])[0])[0] == 404
