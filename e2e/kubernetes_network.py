"""The pod network of the local Kubernetes (e2e/kubernetes.py): the CNI configuration containerd reads, and its
clean-up. Not a process: containerd runs the plugins (bridge, host-local, loopback from /usr/lib/cni) per sandbox.

Pods are meant to use `hostNetwork: true` (no kube-proxy, no DNS): they reach local services on 127.0.0.1.
Non-host-network pods get an address on a bridge of the cluster's own, named and numbered from the state dir
(`bridge`), so two clusters do not share one; the conflist is STATE_DIR/cni/net.d/10-modelsync.conflist, the IPAM
state STATE_DIR/cni/ipam. Nothing goes into the host's iptables (no ipMasq, no portmap): nothing a hard stop could
leave behind there.

Outside the state dir: bridged pods' network namespaces in /run/netns and libcni's result cache /var/lib/cni/results.
The kubelet removes them with the pods; after a hard stop `remove` does: the namespaces with an address in this
cluster's subnet, this network's cache entries (and the loopback entries of the same sandboxes), the bridge.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from e2e.kubernetes_node import Node

NETNS = Path("/run/netns")
CNI_RESULTS = Path("/var/lib/cni/results")


def bridge(node: Node) -> tuple[str, str]:
    """The cluster's bridge name and pod subnet."""
    h = hashlib.sha256(str(node.dir).encode()).digest()
    return f"mk8s{h[:3].hex()}"[:15], f"10.{200 + h[3] % 50}.{h[4]}.0/24"


def network_name(node: Node) -> str:
    return f"modelsync-{bridge(node)[0]}"


def write_config(node: Node) -> Path:
    """The conflist; returns its directory (containerd's CNI conf_dir)."""
    name, subnet = bridge(node)
    conflist = {"cniVersion": "0.4.0", "name": network_name(node), "plugins": [
        {"type": "bridge", "bridge": name, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(node.dir / "cni" / "ipam")}},
    ]}
    conf_dir = node.dir / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (node.dir / "cni" / "ipam").mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-modelsync.conflist").write_text(json.dumps(conflist, indent=2))
    return conf_dir


def remove(node: Node) -> None:
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        return
    name, subnet = bridge(node)
    prefix = subnet.rsplit(".", 1)[0] + "."
    for ns in sorted(NETNS.glob("cni-*")) if NETNS.is_dir() else []:
        addrs = subprocess.run([ip, "-n", ns.name, "-4", "-o", "addr", "show"], check=False, capture_output=True,
                               text=True)
        if f"inet {prefix}" in addrs.stdout:
            subprocess.run([ip, "netns", "delete", ns.name], check=False, capture_output=True)
    if Path(f"/sys/class/net/{name}").exists():
        subprocess.run([ip, "link", "delete", name], check=False, capture_output=True)
    network = network_name(node)
    for path in sorted(CNI_RESULTS.glob(f"{network}-*")) if CNI_RESULTS.is_dir() else []:
        sandbox = path.name.removeprefix(f"{network}-").rsplit("-", 1)[0]
        for entry in (path, CNI_RESULTS / f"cni-loopback-{sandbox}-lo"):
            entry.unlink(missing_ok=True)
