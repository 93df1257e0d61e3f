"""Cluster DNS of the local Kubernetes (e2e/kubernetes.py): CoreDNS as a Deployment, not a process of ours.

    coredns   Deployment kube-system/coredns (one replica, on the pod network), Service kube-system/kube-dns at
              CLUSTER_DNS (53/UDP, 53/TCP), from IMAGE           the Deployment's pod is Ready (GET :8181/ready)

IMAGE is made here like the sandbox image (kubernetes_containerd.import_scratch_image): FROM scratch, the one static
binary e2e/install-tools.sh kubernetes builds from the Go module proxy (COREDNS_VERSION of e2e/versions.env) as
/coredns; the Corefile comes from a ConfigMap. The kubelet gives every pod with dnsPolicy ClusterFirst (the default)
`nameserver CLUSTER_DNS` and the search path `NS.svc.cluster.local svc.cluster.local cluster.local`; hostNetwork pods
keep the host's resolv.conf (ClusterFirst falls back to Default there). CoreDNS answers the cluster's zone from the
API (the `kubernetes` plugin, reaching the apiserver by the `kubernetes` Service, i.e. kube-proxy and the gateway)
and nothing else: no `forward`, since pods cannot reach beyond the host anyway (kubernetes_network); other names get
SERVFAIL at once rather than a timeout.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any

from e2e.kubernetes_containerd import import_scratch_image
from e2e.kubernetes_node import BIN_DIR, Node, pins

COREDNS_VERSION = pins()["COREDNS_VERSION"]
IMAGE = f"localhost/modelsync-coredns:{COREDNS_VERSION}"
CLUSTER_DNS = "10.0.0.10"  # in kubernetes_apiserver.SERVICE_CIDR
CLUSTER_DOMAIN = "cluster.local"
NAMESPACE, NAME = "kube-system", "coredns"

COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""


def import_image(node: Node) -> bool:
    """IMAGE into containerd unless it is there; True when imported."""
    return import_scratch_image(node, IMAGE, [("coredns", BIN_DIR / "coredns", 0o755, tarfile.REGTYPE, "")],
                                {"Entrypoint": ["/coredns"], "ExposedPorts": {"53/udp": {}, "53/tcp": {}}})


def manifests() -> list[dict[str, Any]]:
    """RBAC, ConfigMap, Deployment and Service of CoreDNS (a v1 List's items)."""
    labels = {"k8s-app": "kube-dns"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NAMESPACE,
                                                                      "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"serviceAccountName": NAME, "dnsPolicy": "Default",
                      "priorityClassName": "system-cluster-critical",
                      "containers": [{
                          "name": "coredns", "image": IMAGE, "imagePullPolicy": "Never",
                          "args": ["-conf", "/etc/coredns/Corefile"],
                          "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                          "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                          "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10,
                                            "failureThreshold": 5},
                          "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                          "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}]}],
                      "volumes": [{"name": "config", "configMap": {"name": NAME}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": NAMESPACE,
                                                             "labels": labels},
         "spec": {"clusterIP": CLUSTER_DNS, "selector": labels, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
    ]


def manifest_list() -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()})
