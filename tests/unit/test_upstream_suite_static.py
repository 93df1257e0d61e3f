"""`make e2e-upstream`'s parts that need no cluster: the stand-in proxy (e2e/standin_proxy.py) on its own, the
services' manifests (e2e/upstream_services.py) against the addresses upstream's sample Job uses, and the deselected
case ids against upstream's suite when its files are there (../shared/upstream-async-upload)."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from pathlib import Path

import pytest

from e2e import upstream_services as services
from e2e import upstream_suite
from e2e.standin_proxy import start_standin_proxy

URL = upstream_suite.HTTP_SOURCE
PATH = URL.split("github.com", 1)[1]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    started = start_standin_proxy(URL, b"stand-in bytes", tmp_path_factory.mktemp("ca"))
    yield started
    started.stop()


def _through(proxy, host: str, path: str, verify: bool = True) -> tuple[int, bytes]:
    port = int(proxy.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(proxy.ca_file)) if verify else ssl._create_unverified_context()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn.set_tunnel(host, 443)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_standin_answers_exactly_its_url_over_verified_tls(proxy):
    assert _through(proxy, "github.com", PATH) == (200, b"stand-in bytes")
    assert _through(proxy, "github.com", PATH + "x")[0] == 404


def test_standin_refuses_other_hosts_and_plain_http(proxy):
    with pytest.raises(OSError, match="403"):
        _through(proxy, "pypi.org", "/")
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "http://github.com/")
    assert conn.getresponse().status == 403
    conn.close()


def test_standin_certificate_is_only_trusted_with_its_ca(proxy):
    with pytest.raises(ssl.SSLCertVerificationError):
        port = int(proxy.url.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=10)
        conn.set_tunnel("github.com", 443)
        conn.request("GET", PATH)


def test_standin_content_is_deterministic_and_of_the_real_size():
    assert upstream_suite.standin_content() == upstream_suite.standin_content()
    assert len(upstream_suite.standin_content()) == 26454


# the addresses upstream's samples/sample_job_s3_to_oci.yaml gives the Job
UPSTREAM_ADDRESSES = ("minio.minio.svc.cluster.local:9000",
                      "distribution-registry-test-service.local-oci-registry-ns.svc.cluster.local:5001",
                      "model-registry-service.kubeflow.svc.cluster.local:8080")


def test_services_answer_at_upstreams_addresses():
    refs = {"minio": "m", "registry": "r", "model-registry": "mr", "mariadb": "db"}
    docs = services.manifests(refs, "pw-0123")
    offered = {services.in_cluster(d["metadata"]["name"], d["metadata"]["namespace"], p["port"])
               for d in docs if d["kind"] == "Service" for p in d["spec"]["ports"]}
    assert set(UPSTREAM_ADDRESSES) <= offered
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "minio-secret")
    assert secret["stringData"] == {"ACCESS_KEY_ID": "minioadmin", "SECRET_KEY": "minioadmin"}  # upstream's


def test_database_password_only_in_secrets():
    docs = services.manifests({"minio": "m", "registry": "r", "model-registry": "mr", "mariadb": "db"}, "pw-0123")
    outside = [d for d in docs if d["kind"] != "Secret"]
    assert "pw-0123" not in json.dumps(outside)
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["imagePullPolicy"] == "Never"


SUITE_FILE = upstream_suite.SUITE / upstream_suite.TEST_FILE


@pytest.mark.skipif(not SUITE_FILE.exists(), reason=f"upstream's suite is not at {upstream_suite.SUITE}")
def test_deselected_cases_are_exactly_the_uri_ones():
    text = Path(SUITE_FILE).read_text()
    for test_id in upstream_suite.DESELECTED:
        name = test_id.split("::", 1)[1].split("[", 1)[0]
        assert f"def {name}(" in text
    # each of the suite's three test functions has one uri case (its first parameter set), and no S3 case is
    # deselected: the runner also checks the ids against pytest's own collection before it runs
    assert all("_setup_s3" not in test_id for test_id in upstream_suite.DESELECTED)
    functions = set(re.findall(r"def (test_\w+)\(", text))
    assert {t.split("::", 1)[1].split("[", 1)[0] for t in upstream_suite.DESELECTED} == functions
    assert text.count('"MODEL_SYNC_SOURCE_TYPE": "uri"') == len(upstream_suite.DESELECTED)
