"""Each endpoint has its own TLS trust: a CA bundle given for one endpoint makes it work, and without it the same
endpoint is refused (verification is on by default). Uses the local stack's CA and its 127.0.0.1 certificate."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from modelsync.destinations.s3 import publish_s3
from modelsync.errors import ModelSyncError, TransferError
from modelsync.files import inventory
from modelsync.locations import S3Location, UriLocation
from modelsync.secret import Secret
from modelsync.sources.s3 import fetch_s3
from modelsync.sources.uri import fetch_uri

from ..support.models import TEST_JOB, digests_of, make_model
from ..support.servers import serve_directory

pytestmark = pytest.mark.stack


@pytest.fixture
def tls(stack) -> Path:
    return stack.state_dir / "tls"


@pytest.fixture
def https_server(tmp_path, tls):
    root = tmp_path / "www"
    root.mkdir()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    with serve_directory(root, tls=ctx) as url:
        yield root, url


def test_https_source_with_its_ca_bundle(tmp_path, https_server, tls):
    root, url = https_server
    (root / "m.bin").write_bytes(b"over tls")
    fetch_uri(UriLocation(url=f"{url}/m.bin", ca_bundle=str(tls / "ca.crt")), tmp_path / "out", tmp_path / "w")
    assert (tmp_path / "out/m.bin").read_bytes() == b"over tls"


def test_https_source_without_the_ca_is_refused(tmp_path, https_server):
    root, url = https_server
    (root / "m.bin").write_bytes(b"x")
    with pytest.raises(TransferError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_uri(UriLocation(url=f"{url}/m.bin"), tmp_path / "out", tmp_path / "w")


@pytest.fixture(scope="module")
def tls_minio(stack, require_tool, tmp_path_factory):
    """A second MinIO serving HTTPS with the stack's certificate (MinIO reads certs-dir/public.crt, private.key)."""
    minio = require_tool("minio")
    require_tool("aws")
    base = tmp_path_factory.mktemp("tls-minio")
    certs = base / "certs"
    certs.mkdir()
    shutil.copy(stack.state_dir / "tls/server.crt", certs / "public.crt")
    shutil.copy(stack.state_dir / "tls/server.key", certs / "private.key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user, password = "tlsadmin", "tls-minio-secret-4455"
    env = {**os.environ, "MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password}
    proc = subprocess.Popen([minio, "server", str(base / "data"), "--address", f"127.0.0.1:{port}",
                             "--console-address", "127.0.0.1:0", "--certs-dir", str(certs), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=str(stack.state_dir / "tls/ca.crt"))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/minio/health/live", context=ctx, timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("TLS MinIO did not start")
            time.sleep(0.2)
    (base / "data" / "models").mkdir(exist_ok=True)  # a bucket is a top-level directory of a fresh single-disk MinIO
    yield {"endpoint": f"https://127.0.0.1:{port}", "user": user, "password": password,
           "ca": str(stack.state_dir / "tls/ca.crt")}
    proc.terminate()
    proc.wait(10)


def _loc(m, key, ca):
    return S3Location(bucket="models", key=key, endpoint=m["endpoint"], access_key_id=Secret(m["user"]),
                      secret_access_key=Secret(m["password"]), ca_bundle=ca)


def test_s3_over_tls_with_its_ca_bundle(tmp_path, tls_minio):
    expected = make_model(tmp_path / "src")
    publish_s3(tmp_path / "src", inventory(tmp_path / "src"), _loc(tls_minio, "tls/model", tls_minio["ca"]),
               TEST_JOB)
    fetch_s3(_loc(tls_minio, "tls/model", tls_minio["ca"]), tmp_path / "out")
    assert digests_of(tmp_path / "out") == expected


def test_s3_over_tls_without_the_ca_is_refused(tmp_path, tls_minio):
    with pytest.raises(ModelSyncError) as err:
        fetch_s3(_loc(tls_minio, "tls/model", None), tmp_path / "out")
    assert "tls-minio-secret-4455" not in str(err.value) and "\n" not in str(err.value)
    assert "SSL" in str(err.value) or "certificate" in str(err.value).lower()
