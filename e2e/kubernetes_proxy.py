"""kube-proxy of the local Kubernetes (e2e/kubernetes.py): Services, in the node namespace (kubernetes_network).

    kube-proxy   `ip netns exec NETNS kube-proxy --config STATE_DIR/kube-proxy.json`, iptables mode (the `nft`
                 binary its nftables mode needs is not installed), its rules in the node namespace's tables only
                                                GET http://NODE_ADDR:10256/healthz = 200 (from the host, over the veth)

It reaches the apiserver through the gateway on HOST_ADDR (kubeconfig STATE_DIR/kubeconfig-node: that address,
server name `kubernetes`). clusterCIDR is the pod subnet (traffic to a Service from outside it is masqueraded, in the
node namespace). Nothing on the host: conntrack sizing and timeouts are left alone (maxPerCore 0, timeouts 0: the
conntrack table is the kernel's, shared), localhostNodePorts is off (it would set route_localnet). Its fixed ports
(healthz 10256, metrics 10249 on the namespace's loopback) are the namespace's own: two clusters do not clash.
"""

from __future__ import annotations

import json

from e2e.component import http_status
from e2e.kubernetes_apiserver import admin_token
from e2e.kubernetes_network import in_netns, names
from e2e.kubernetes_node import NODE_NAME, Node, need

NAME = "kube-proxy"
HEALTHZ_PORT = 10256


def write_node_kubeconfig(node: Node) -> None:
    """STATE_DIR/kubeconfig-node: the admin kubeconfig, but through the gateway (what clients in the node namespace
    use)."""
    server = f"https://{names(node).host_addr}:{node.ports['apiserver']}"
    path = node.dir / "kubeconfig-node"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "node", "cluster": {"server": server, "certificate-authority": str(node.ca_file),
                                                  "tls-server-name": "kubernetes"}}],
        "users": [{"name": "admin", "user": {"token": admin_token(node)}}],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": "admin"}}],
    }, indent=2))
    path.chmod(0o600)


def argv(node: Node) -> list[str]:
    """Writes STATE_DIR/kube-proxy.json and STATE_DIR/kubeconfig-node."""
    write_node_kubeconfig(node)
    n = names(node)
    config = node.dir / "kube-proxy.json"
    config.write_text(json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(node.dir / "kubeconfig-node")},
        "hostnameOverride": NODE_NAME, "mode": "iptables", "clusterCIDR": n.pod_subnet,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"{n.node_addr}:{HEALTHZ_PORT}", "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        "iptables": {"localhostNodePorts": False}, "nodePortAddresses": [f"{n.node_addr}/32"],
    }, indent=2))
    return in_netns(node, [need(NAME), f"--config={config}"])


def healthy(node: Node) -> bool:
    return http_status(f"http://{names(node).node_addr}:{HEALTHZ_PORT}/healthz") == 200
