"""The local stack answers as the real services do: each component, the proxies and the pinned tools."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from e2e.stack import REPO_ROOT, LocalStack, pinned_versions

pytestmark = pytest.mark.stack

V1ALPHA3 = "/api/model_registry/v1alpha3"
V1 = "/api/model_registry/v1"


def request(url: str, *, method: str = "GET", body: dict | None = None, headers: dict | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTP request; error statuses are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_every_component_healthy(stack):
    status = LocalStack(stack.state_dir).status()
    assert set(status) == {"minio", "registry", "registry_tls", "token_auth", "registry_token", "mariadb",
                           "model_registry", "mr_token_proxy"}
    assert all(s["healthy"] for s in status.values()), status


def test_minio_bucket_round_trip(stack):
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.minio_endpoint, aws_access_key_id=stack.minio_access_key,
                      aws_secret_access_key=stack.minio_secret_key, region_name="us-east-1")
    # Without this, one put in two stalls for the read timeout against MinIO (see modelsync/awscli_plugin).
    from modelsync.awscli_plugin.modelsync_no_expect import drop_expect
    s3.meta.events.register("before-send.s3", drop_expect)
    key = f"test-stack/{uuid.uuid4().hex}"
    s3.put_object(Bucket=stack.minio_bucket, Key=key, Body=b"model bytes")
    try:
        assert s3.get_object(Bucket=stack.minio_bucket, Key=key)["Body"].read() == b"model bytes"
    finally:
        s3.delete_object(Bucket=stack.minio_bucket, Key=key)


def test_plain_registry_v2(stack):
    assert request(f"http://{stack.oci_registry}/v2/")[0] == 200


def test_tls_registry_needs_its_ca_and_credentials(stack):
    url = f"https://{stack.oci_tls_registry}/v2/"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        request(url, context=ssl.create_default_context())  # the system trust store does not know our CA
    ctx = ssl.create_default_context(cafile=stack.oci_tls_ca)
    status, headers, _ = request(url, context=ctx)
    assert status == 401 and headers["Www-Authenticate"].startswith("Basic")
    assert request(url, context=ctx, headers=basic(stack.oci_tls_username, "wrong"))[0] == 401
    assert request(url, context=ctx, headers=basic(stack.oci_tls_username, stack.oci_tls_password))[0] == 200
    # the certificate names localhost too
    localhost_url = url.replace("127.0.0.1", "localhost")
    assert request(localhost_url, context=ctx, headers=basic(stack.oci_tls_username, stack.oci_tls_password))[0] == 200


def test_model_registry_lists_registered_models(stack):
    status, _, body = request(f"{stack.mr_url}{V1ALPHA3}/registered_models")
    assert status == 200 and "items" in json.loads(body)


def test_token_proxy(stack):
    url = f"{stack.mr_token_url}{V1ALPHA3}/registered_models"
    assert request(url)[0] == 401
    assert request(url, headers={"Authorization": "Bearer not-the-token"})[0] == 401
    assert request(url, headers={"Authorization": f"Bearer {stack.mr_token}"})[0] == 200


def test_v1_only_proxy(stack, mr_proxy_factory):
    proxy = mr_proxy_factory(v1_only=True)
    assert request(f"{proxy.url}{V1}/registered_models?pageSize=1")[0] == 200
    status, _, body = request(f"{proxy.url}{V1ALPHA3}/registered_models")
    assert (status, body) == (404, b"404 page not found\n")


def test_proxy_passes_method_body_query_and_status(stack, mr_proxy_factory):
    proxy = mr_proxy_factory(v1_only=True)
    name = f"stack-test-{uuid.uuid4().hex[:12]}"
    status, _, body = request(f"{proxy.url}{V1}/registered_models", method="POST", body={"name": name})
    assert status == 201, body
    created = json.loads(body)
    status, _, body = request(f"{proxy.url}{V1}/registered_model?name={name}")
    assert status == 200 and json.loads(body)["id"] == created["id"]
    assert request(f"{proxy.url}{V1}/registered_models", method="POST", body={"name": name})[0] == 409


def test_deprecation_proxy_marks_v1alpha3(stack, mr_proxy_factory):
    proxy = mr_proxy_factory(deprecation_sunset="Wed, 01 Sep 2027 00:00:00 GMT")
    status, headers, _ = request(f"{proxy.url}{V1ALPHA3}/registered_models")
    assert status == 200
    assert headers["Deprecation"] == "true" and headers["Sunset"] == "Wed, 01 Sep 2027 00:00:00 GMT"


def test_cli_env_exports_the_stack(stack):
    out = subprocess.run([sys.executable, "-m", "e2e.stack", "env", "--state-dir", str(stack.state_dir)],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert f"export MR_URL='{stack.mr_url}'" in out.splitlines()


def _version_output(argv: list[str]) -> str:
    run = subprocess.run(argv, capture_output=True, text=True, check=True)
    return run.stdout + run.stderr  # aws v1 prints its version on stderr


def test_pinned_tool_versions(require_tool):
    pins = pinned_versions()
    assert f"Version:    {pins['ORAS_VERSION'].lstrip('v')}" in _version_output([require_tool("oras"), "version"])
    assert _version_output([require_tool("skopeo"), "--version"]).startswith("skopeo version ")
    assert _version_output([require_tool("aws"), "--version"]).startswith(f"aws-cli/{pins['AWSCLI_VERSION']} ")
    assert pins["REGISTRY_VERSION"] in _version_output([require_tool("registry"), "--version"])
