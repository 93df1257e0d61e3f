"""Smoke test of the real single-node Kubernetes (e2e/kubernetes.py) the Kubernetes e2e runs on: a batch/v1 Job shaped
like modelsync's (host network, uid 1001, read-only root, a Secret and a ConfigMap volume, a projected token for
sigstore) completes and reports through its termination message; a pod pulls an image by digest from the stack's
plain-HTTP registry. The cluster network: a pod off the host network finds a Service by its DNS name (CoreDNS) and
reaches it at its ClusterIP (kube-proxy's rules in the cluster's network namespace), and reaches the local stack
through the gateway; the host's iptables and routes are the same before an up and after the down.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from e2e import kubernetes_network as network
from e2e.kubernetes import Cluster, decode_jwt

from ..support.oci_helpers import busybox_layout

pytestmark = [pytest.mark.kubernetes, pytest.mark.podman]

IMAGE = "localhost/modelsync-k8s-smoke/busybox:test"
SCRIPT = r"""
set -e
B=/bin/busybox
uid=$($B id -u)
secret=$($B cat /etc/modelsync/secret/password)
greeting=$($B cat /etc/modelsync/config/greeting)
if $B touch /probe 2>/dev/null; then ro=no; else ro=yes; fi
$B cat /var/run/secrets/sigstore/token
echo
echo "uid=$uid secret=$secret greeting=$greeting readonly=$ro" > /dev/termination-log
"""


@pytest.fixture(scope="module")
def busybox_image(cluster: Cluster, tmp_path_factory, require_tool) -> str:
    """A busybox image in podman's storage (made here from Debian's busybox-static), imported into the cluster."""
    skopeo = require_tool("skopeo")
    require_tool("podman")
    layout = busybox_layout(tmp_path_factory.mktemp("k8s-busybox") / "layout")
    subprocess.run([skopeo, "copy", "--quiet", f"oci:{layout}:latest", f"containers-storage:{IMAGE}"],
                   check=True, capture_output=True, text=True)
    cluster.import_image(IMAGE)
    assert cluster.import_image(IMAGE) is False  # the same image id is there: skipped
    return IMAGE


def _diagnose(cluster: Cluster, *objects: str) -> str:
    out = []
    for obj in objects:
        out.append(cluster.kubectl("describe", obj, check=False).stdout[-3000:])
    out.append(cluster.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-3000:])
    return "\n".join(out)


def _apply(cluster: Cluster, *objects: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def test_job_like_modelsync_runs(cluster: Cluster, busybox_image: str):
    name = f"smoke-{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    t0 = time.monotonic()
    _apply(cluster,
           {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"password": password}},
           {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"greeting": "hello"}},
           {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "hostNetwork": True,
                "securityContext": {"runAsUser": 1001, "runAsGroup": 0, "runAsNonRoot": True},
                "containers": [{
                    "name": "job", "image": busybox_image, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", SCRIPT],
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [
                        {"name": "secret", "mountPath": "/etc/modelsync/secret", "readOnly": True},
                        {"name": "config", "mountPath": "/etc/modelsync/config", "readOnly": True},
                        {"name": "sigstore", "mountPath": "/var/run/secrets/sigstore", "readOnly": True}],
                }],
                "volumes": [
                    {"name": "secret", "secret": {"secretName": name}},
                    {"name": "config", "configMap": {"name": name}},
                    {"name": "sigstore", "projected": {"sources": [{"serviceAccountToken": {
                        "audience": "sigstore", "expirationSeconds": 600, "path": "token"}}]}}],
            }}}})
    done = cluster.kubectl("wait", "--for=condition=complete", f"job/{name}", "--timeout=180s", check=False,
                           timeout=200)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnose(cluster, f'job/{name}', 'pods')}"
    elapsed = time.monotonic() - t0
    pod = cluster.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "jsonpath={.items[0].metadata.name}").stdout
    message = cluster.kubectl("get", "pod", pod, "-o",
                              "jsonpath={.status.containerStatuses[0].state.terminated.message}").stdout
    assert message.strip() == f"uid=1001 secret={password} greeting=hello readonly=yes"

    token = cluster.kubectl("logs", pod).stdout.strip()
    claims = decode_jwt(token)
    assert claims["aud"] == ["sigstore"]
    assert claims["iss"] == cluster.issuer_url
    assert claims["sub"] == "system:serviceaccount:default:default"
    print(f"Job {name} completed in {elapsed:.1f}s")


def test_issuer_discovery_is_anonymous(cluster: Cluster):
    """What a Fulcio needs to trust the cluster's tokens: discovery and keys without credentials, over ca_file."""
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(f"{cluster.issuer_url}/.well-known/openid-configuration", timeout=10) as resp:
        discovery = json.load(resp)
    assert discovery["issuer"] == cluster.issuer_url
    with opener.open(discovery["jwks_uri"], timeout=10) as resp:
        assert json.load(resp)["keys"]


def test_pod_pulls_by_digest_from_plain_http_registry(cluster: Cluster, stack, tmp_path: Path):
    """The kubelet pulls 127.0.0.1:PORT/repo@sha256:… from the stack's plain-HTTP registry with no extra config."""
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import push_layout

    layout = busybox_layout(tmp_path / "layout")
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    repo = f"{stack.oci_registry}/k8s-smoke/busybox"
    push_layout(layout, "latest", OciLocation(f"{repo}:latest", tls_verify=False), "latest", tmp_path / "w", "skopeo")
    name = f"pull-{secrets.token_hex(3)}"
    _apply(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "hostNetwork": True, "securityContext": {"runAsUser": 1001},
        "containers": [{"name": "c", "image": f"{repo}@{digest}", "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c", "echo pulled > /dev/termination-log"]}]}})
    done = cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=120s",
                           check=False, timeout=140)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnose(cluster, f'pod/{name}')}"
    status = json.loads(cluster.kubectl("get", "pod", name, "-o", "json").stdout)["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["message"].strip() == "pulled"
    assert status["imageID"].endswith(digest)


def test_pod_pulls_from_tls_registry_with_pull_secret(cluster: Cluster, stack, tmp_path: Path):
    """The stack's TLS registry (own CA, basic auth): trusted with Cluster.trust_registry, credentials from an
    imagePullSecret — as a KServe pod would pull a modelcar the job pushed."""
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import push_layout
    from modelsync.secret import Secret

    layout = busybox_layout(tmp_path / "layout")
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    host = stack.oci_tls_registry
    repo = f"{host}/k8s-smoke/busybox"
    push_layout(layout, "latest", OciLocation(f"{repo}:latest", username=stack.oci_tls_username,
                                              password=Secret(stack.oci_tls_password), ca_bundle=stack.oci_tls_ca),
                "latest", tmp_path / "w", "skopeo")
    cluster.trust_registry(host, ca_file=Path(stack.oci_tls_ca))
    name = f"pull-tls-{secrets.token_hex(3)}"
    auth = base64.b64encode(f"{stack.oci_tls_username}:{stack.oci_tls_password}".encode()).decode()
    dockerconfig = json.dumps({"auths": {host: {"auth": auth}}})
    _apply(cluster,
           {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(dockerconfig.encode()).decode()}},
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
               "restartPolicy": "Never", "hostNetwork": True, "securityContext": {"runAsUser": 1001},
               "imagePullSecrets": [{"name": name}],
               "containers": [{"name": "c", "image": f"{repo}@{digest}", "imagePullPolicy": "Always",
                               "command": ["/bin/sh", "-c", "echo pulled over tls > /dev/termination-log"]}]}})
    done = cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=120s",
                           check=False, timeout=140)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnose(cluster, f'pod/{name}')}"
    status = json.loads(cluster.kubectl("get", "pod", name, "-o", "json").stdout)["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["message"].strip() == "pulled over tls"


def host_tables(own: str | None = None) -> dict[str, str]:
    """The host's iptables (every backend present) and routes, without comments and packet counters. Routes of the
    local clusters' links (devices mk8s…) are left out, but for the cluster named `own`: another cluster may come
    and go on a shared machine meanwhile, and a cluster that is up has its own link by design."""
    out = {}
    for cmd in (["iptables-save"], ["iptables-legacy-save"], ["iptables-nft-save"], ["ip6tables-save"],
                ["ip", "route", "show", "table", "all"], ["ip", "-6", "route", "show", "table", "all"],
                ["ip", "rule"]):
        if shutil.which(cmd[0], path="/usr/sbin:/sbin:/usr/bin:/bin"):
            res = subprocess.run(cmd, check=False, capture_output=True, text=True)
            lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in (res.stdout + res.stderr).splitlines()
                     if not line.startswith("#") and ("mk8s" not in line or (own is not None and own in line))]
            out[" ".join(cmd)] = "\n".join(lines)
    return out


# busybox's wget segfaults in a FROM-scratch image (busybox-static 1.35, bookworm), its nc does not: a plain HTTP/1.0
# GET through nc, which resolves names with the libc resolver (so through /etc/resolv.conf, i.e. cluster DNS)
CLIENT = r"""
B=/bin/busybox
get() {{ printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" | $B nc -w 5 "$1" "$2"; }}
for i in $($B seq 1 30); do
  web=$(get {svc}.{ns}.svc.cluster.local 80 | $B tail -n 1)
  short=$(get {svc} 80 | $B tail -n 1)
  if [ -n "$web" ] && [ -n "$short" ]; then break; fi
  $B sleep 1
done
registry=none
if [ -n "{registry}" ]; then registry=$(get {registry_host} {registry_port} | $B head -n 1 | $B cut -d ' ' -f 2); fi
echo "web=$web short=$short registry=$registry" > /dev/termination-log
"""


def _service_by_dns(cluster: Cluster, image: str, registry: str = "") -> tuple[str, str, str]:
    """A web server pod behind a Service, and a client pod; both off the host network. Returns the token the server
    serves, the client's termination message and the Service's ClusterIP."""
    name, token = f"web-{secrets.token_hex(3)}", secrets.token_hex(8)
    labels = {"app": name}
    _apply(cluster,
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
               "containers": [{"name": "web", "image": image, "imagePullPolicy": "Never",
                               "command": ["/bin/sh", "-c", f"/bin/busybox mkdir -p /tmp/www && echo {token} > "
                                           "/tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"],
                               "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}},
           {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {
               "selector": labels, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    ready = cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s", check=False, timeout=140)
    assert ready.returncode == 0, f"{ready.stderr}\n{_diagnose(cluster, f'pod/{name}')}"
    client = f"client-{name}"
    _apply(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": client}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never", "command": [
            "/bin/sh", "-c", CLIENT.format(
            svc=name, ns="default", registry=registry, registry_host=registry.rsplit(":", 1)[0],
            registry_port=registry.rsplit(":", 1)[-1])]}]}})
    done = cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{client}", "--timeout=120s",
                           check=False, timeout=140)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnose(cluster, f'pod/{client}', f'pod/{name}')}"
    pod = json.loads(cluster.kubectl("get", "pod", client, "-o", "json").stdout)
    assert not pod["spec"].get("hostNetwork")
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"].strip()
    cluster_ip = cluster.kubectl("get", "service", name, "-o", "jsonpath={.spec.clusterIP}").stdout
    cluster.kubectl("delete", "pod", name, client, "--grace-period=1", "--wait=false")
    return token, message, cluster_ip


def test_pod_reaches_service_by_dns_name(cluster: Cluster, busybox_image: str, stack):
    """Off the host network: `<svc>.<ns>.svc.cluster.local` and the short name resolve through CoreDNS, the ClusterIP
    leads to the pod through kube-proxy's rules (in the cluster's network namespace), the stack's registry is
    reachable through the gateway; the host's iptables and routes do not change meanwhile."""
    before = host_tables()
    registry = cluster.expose_host_port(int(stack.oci_registry.rsplit(":", 1)[1]))
    token, message, cluster_ip = _service_by_dns(cluster, busybox_image, registry)
    assert message == f"web={token} short={token} registry=200", message
    assert cluster_ip.startswith("10.0.0.")
    assert host_tables() == before


def test_full_up_down_leaves_host_tables_alone(cluster: Cluster, busybox_image: str, tmp_path: Path):
    """A second cluster beside the first (names and subnets of its own), up with its network, serving DNS and a
    Service, then down: the host's iptables (all backends) and routes are as before its up."""
    second = Cluster(tmp_path / "k8s-2")
    own = network.names(second).netns
    before = host_tables(own)
    t0 = time.monotonic()
    try:
        second.up()
        up = time.monotonic() - t0
        second.import_image(busybox_image)
        token, message, _ = _service_by_dns(second, busybox_image)
        assert message == f"web={token} short={token} registry=none", message
    finally:
        t1 = time.monotonic()
        second.down()
        down = time.monotonic() - t1
    assert host_tables(own) == before
    print(f"second cluster up in {up:.1f}s, down in {down:.1f}s")
