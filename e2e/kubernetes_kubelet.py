"""The kubelet of the local Kubernetes (e2e/kubernetes.py): the one node, named 127.0.0.1.

    kubelet   --root-dir STATE_DIR/kubelet, config STATE_DIR/kubelet-config.json, pod logs in STATE_DIR/pod-logs;
              its port `kubelet` and healthz port `kubelet_healthz`   GET http://127.0.0.1:P/healthz = 200

It listens on 127.0.0.1 only, read-only port off, with anonymous access and AlwaysAllow there: the apiserver needs no
client certificate for `kubectl logs/exec`. It runs pods through containerd's CRI socket (kubernetes_containerd),
cgroupfs, no QoS cgroups, swap allowed. Eviction thresholds are at 1 % of disk and image GC at 100 %: a machine with
a fuller disk must not evict the test's pods nor collect imported images (there is no registry to pull them again).
makeIPTablesUtilChains is off: else it adds KUBE-FIREWALL (drops non-loopback packets to 127.0.0.0/8) and canary
chains to the host's iptables, and nothing removes them. It runs in the host namespace (so do its hostNetwork pods);
pods get cluster DNS (kubernetes_dns: clusterDNS, clusterDomain).

Outside the state dir, what it does not let one move: its container-log symlinks in /var/log/containers (named with
pod uid and container id: `remove_log_links` removes those pointing into the state dir), and its device-plugin socket
/var/lib/kubelet/device-plugins/kubelet.sock whatever --root-dir (a second kubelet takes it over; no device plugins
here, so nothing notices; it stays after `down`). cAdvisor probes /run/containerd/containerd.sock, for metrics only.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from e2e.component import http_status
from e2e.kubernetes_node import NODE_NAME, Node, need

NAME = "kubelet"
PORTS = ("kubelet", "kubelet_healthz")
LOG_LINKS = Path("/var/log/containers")


def argv(node: Node, cluster_dns: str, cluster_domain: str) -> list[str]:
    """Writes STATE_DIR/kubelet-config.json; makes /var/log/containers (needed whatever its root dir).
    cluster_dns, cluster_domain: the nameserver and domain of pods with dnsPolicy ClusterFirst (kubernetes_dns)."""
    os.makedirs(LOG_LINKS, exist_ok=True)
    config = node.dir / "kubelet-config.json"
    config.write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": node.ports["kubelet"], "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": node.ports["kubelet_healthz"],
        "containerRuntimeEndpoint": f"unix://{node.containerd_address}",
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(node.dir / "pod-logs"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "makeIPTablesUtilChains": False,
        "clusterDNS": [cluster_dns], "clusterDomain": cluster_domain,
        "registerNode": True,
    }, indent=2))
    return [need(NAME), f"--config={config}", f"--kubeconfig={node.kubeconfig}",
            f"--root-dir={node.dir / 'kubelet'}", f"--hostname-override={NODE_NAME}",
            f"--cert-dir={node.dir / 'kubelet' / 'pki'}"]


def healthy(node: Node) -> bool:
    return http_status(f"http://127.0.0.1:{node.ports['kubelet_healthz']}/healthz") == 200


def remove_log_links(node: Node) -> None:
    """The container-log symlinks in /var/log/containers that point into the state dir."""
    if not LOG_LINKS.is_dir():
        return
    for link in LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(f"{node.dir}/"):
                link.unlink()
