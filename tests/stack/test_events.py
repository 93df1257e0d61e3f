"""Issue 21: the job's Kubernetes Events on its own pod, posted to the real kube-apiserver of the local cluster
(e2e/kubernetes.py, RBAC on) and read back with `kubectl get events --field-selector involvedObject.name=<pod>`.

The job runs in this process, not in a pod: it is given what a pod has (the service account's token, namespace and
CA in a directory, KUBERNETES_SERVICE_HOST/PORT, POD_NAME) pointing at the local cluster; the e2e (`make e2e-local`)
checks the same events from the image in real pods."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelsync import __main__ as cli
from modelsync import config
from modelsync.clients import events

from ..support.jobs import pvc_job

pytestmark = [pytest.mark.kubernetes, pytest.mark.podman, pytest.mark.stack]

RBAC = Path(__file__).resolve().parents[2] / "samples" / "events-rbac.yaml"


@pytest.fixture
def pod_env(cluster, tmp_path, monkeypatch):
    """A namespace of its own, a service-account directory as the kubelet mounts it, and the pod's env."""
    ns = f"events-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "serviceaccount", "default", check=False)  # the controller may be first
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(cluster.kubectl("-n", ns, "create", "token", "default").stdout.strip())
    (sa / "namespace").write_text(ns)
    (sa / "ca.crt").write_bytes(Path(cluster.ca_file).read_bytes())
    server = urlsplit(cluster.server_url)
    pod = f"modelsync-job-{secrets.token_hex(3)}"
    monkeypatch.setattr(events, "SERVICE_ACCOUNT", sa)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))  # not the registry's token
    env = {"KUBERNETES_SERVICE_HOST": server.hostname, "KUBERNETES_SERVICE_PORT": str(server.port), "POD_NAME": pod}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield ns, pod
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pod_events(cluster, ns: str, pod: str) -> list[dict]:
    out = cluster.kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
    return sorted(json.loads(out.stdout)["items"], key=lambda e: e.get("eventTime") or "")  # microseconds


def run_job(env: dict[str, str], monkeypatch) -> int:
    for key in [k for k in os.environ if k.startswith("MODEL_SYNC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.main([])


def test_a_job_reports_started_progress_and_published_on_its_pod(cluster, stack, pod_env, tmp_path, model,
                                                                 monkeypatch):
    ns, pod = pod_env
    cluster.kubectl("-n", ns, "apply", "-f", str(RBAC))
    model_dir, _ = model
    (model_dir / "weights" / "big.bin").write_bytes(b"\0" * (8 << 20))  # enough bytes for every tenth
    assert run_job(pvc_job(stack, tmp_path, model_dir, tmp_path / "pvc"), monkeypatch) == 0
    found = pod_events(cluster, ns, pod)
    reasons = [e["reason"] for e in found]
    assert reasons[0] == "TransferStarted" and reasons[-1] == "TransferPublished", reasons
    assert 1 <= reasons.count("TransferProgress") <= 12, reasons  # a tenth at a time, not a line per chunk
    started, published = found[0], found[-1]
    assert str(model_dir) in started["message"] and "file(s)" in started["message"]
    assert published["message"].startswith((tmp_path / "pvc").resolve().as_uri()) and "LIVE" in published["message"]
    assert {e["type"] for e in found} == {"Normal"}
    assert all(e["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": ns}
               for e in found)
    assert all(e["source"]["component"] == "modelsync" for e in found)


def test_a_failed_job_reports_its_reason_as_a_warning(cluster, stack, pod_env, tmp_path, model, monkeypatch):
    ns, pod = pod_env
    cluster.kubectl("-n", ns, "apply", "-f", str(RBAC))
    model_dir, _ = model
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "config.json").write_text("someone else's")
    assert run_job(pvc_job(stack, tmp_path, model_dir, dest), monkeypatch) == 1
    (failed,) = [e for e in pod_events(cluster, ns, pod) if e["reason"] == "TransferFailed"]
    assert failed["type"] == "Warning" and failed["message"].startswith("exit 1: ")
    assert "config.json" in failed["message"] and "MODEL_SYNC_DESTINATION_REPLACE_EXISTING" in failed["message"]


def test_without_rbac_the_job_says_so_once_and_goes_on(cluster, stack, pod_env, tmp_path, model, monkeypatch,
                                                       capfd):
    ns, pod = pod_env
    model_dir, _ = model
    assert run_job(pvc_job(stack, tmp_path, model_dir, tmp_path / "pvc"), monkeypatch) == 0
    said = [line for line in capfd.readouterr().err.splitlines() if "Kubernetes events" in line]
    assert len(said) == 1 and "HTTP 403" in said[0] and "events-rbac.yaml" in said[0], said
    assert pod_events(cluster, ns, pod) == []


def test_an_api_server_that_does_not_answer_costs_the_job_nothing(stack, pod_env, tmp_path, model, monkeypatch,
                                                                  capfd):
    from e2e.component import free_ports
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(free_ports(1)[0]))  # nothing listens there
    model_dir, _ = model
    t0 = time.monotonic()
    assert run_job(pvc_job(stack, tmp_path, model_dir, tmp_path / "pvc"), monkeypatch) == 0
    assert time.monotonic() - t0 < 30
    said = [line for line in capfd.readouterr().err.splitlines() if "Kubernetes events" in line]
    assert len(said) == 1 and "did not take an event" in said[0], said


def test_outside_a_pod_nothing_is_sent(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(events, "SERVICE_ACCOUNT", tmp_path / "none")
    assert events.from_pod() is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    assert events.from_pod() is None  # no service-account token either
