"""The cluster network of the local Kubernetes (e2e/kubernetes.py): a network namespace of the cluster's own (the
"node namespace"), the pods' bridge inside it, the link to the host, and their clean-up. Not a process.

    host netns                                   node netns NETNS (`names`)
      containerd, kubelet, apiserver, etcd,        the bridge BRIDGE (pod gateway, POD_SUBNET .1), pods' veths,
      controllers, gateway (kubernetes_gateway)    kube-proxy (kubernetes_proxy) and its iptables rules,
      HOST_VETH  HOST_ADDR/30  <---- veth ---->    uplink  NODE_ADDR/30, default route via HOST_ADDR
      route POD_SUBNET via NODE_ADDR

Whatever needs iptables (kube-proxy's Service rules, the bridge plugin's forwarding) happens in the node namespace:
the host's own tables are never written, and its routing table only gains, while the cluster is up, the /30 of its
veth and the route to its pod subnet, both on HOST_VETH, which disappear with it (`remove` deletes the namespace,
which deletes the veth pair). Measured: host `iptables-save` (nft and legacy) and `ip route` identical before an up
and after the down.

containerd and the kubelet stay in the host namespace, so hostNetwork pods are where they always were (on the host,
reaching the local stack on 127.0.0.1) and image pulls from 127.0.0.1 registries work unchanged. Only the CNI plugins
run in the node namespace: containerd's CNI bin_dir is STATE_DIR/cni/bin, whose wrappers `ip netns exec NETNS` the
real plugins of /usr/lib/cni (the bridge plugin creates the bridge and the host end of each pod's veth in its own
network namespace; the pod's end goes into the pod's namespace as usual).
Non-host-network pods reach: other pods and Services (kube-proxy in the node namespace), the host on HOST_ADDR
(the gateway there forwards chosen ports to 127.0.0.1: the apiserver's, and those of Cluster.expose_host_port), and
nothing beyond the host (the host does not forward; no NAT anywhere). The kubelet reaches pods (probes) over the
route to the pod subnet.

Names and addresses are derived from the state dir, so two clusters run side by side: the namespace and bridge
`mk8sXXXXXX`, the host's veth end `mk8sXXXXXXh`, the pod subnet 10.(200-249).N.0/24, the link 100.(64-127).N.M/30.
Files: the conflist STATE_DIR/cni/net.d/10-modelsync.conflist, the wrappers STATE_DIR/cni/bin, the IPAM state
STATE_DIR/cni/ipam. Outside the state dir: the node namespace /run/netns/NETNS, pods' namespaces /run/netns/cni-*
and libcni's result cache /var/lib/cni/results (the kubelet removes the last two with the pods; after a hard stop
`remove` does: the namespaces with an address in this cluster's subnet, this network's cache entries).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2e.component import StackError
from e2e.kubernetes_node import CNI_BIN_DIR, MissingToolsError, Node

NETNS = Path("/run/netns")
CNI_RESULTS = Path("/var/lib/cni/results")
PLUGINS = ("bridge", "host-local", "loopback")
UPLINK = "uplink"  # the node namespace's end of the veth pair


@dataclass(frozen=True)
class Names:
    netns: str
    bridge: str
    host_veth: str
    pod_subnet: str
    host_addr: str  # the host's end of the link: what pods reach the host (gateway) on
    node_addr: str  # the node namespace's end


def names(node: Node) -> Names:
    h = hashlib.sha256(str(node.dir).encode()).digest()
    base = f"mk8s{h[:3].hex()}"
    link = ipaddress.ip_address(f"100.{64 + h[5] % 64}.{h[6]}.{h[7] % 64 * 4}")
    return Names(netns=base, bridge=base, host_veth=f"{base}h", pod_subnet=f"10.{200 + h[3] % 50}.{h[4]}.0/24",
                 host_addr=str(link + 1), node_addr=str(link + 2))


def bridge(node: Node) -> tuple[str, str]:
    """The cluster's bridge name and pod subnet."""
    n = names(node)
    return n.bridge, n.pod_subnet


def network_name(node: Node) -> str:
    return f"modelsync-{names(node).bridge}"


def _ip() -> str:
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        raise MissingToolsError(["ip (iproute2)"])
    return ip


def in_netns(node: Node, argv: list[str]) -> list[str]:
    """argv run in the node namespace (`ip netns exec`, which also mounts that namespace's /sys)."""
    return [_ip(), "netns", "exec", names(node).netns, *argv]


def _run(*argv: str) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")


def setup(node: Node) -> Names:
    """The node namespace, its link to the host and the routes both ways (after `remove` of any leftover)."""
    remove(node)
    n, ip = names(node), _ip()
    _run(ip, "netns", "add", n.netns)
    _run(ip, "-n", n.netns, "link", "set", "lo", "up")
    _run(ip, "link", "add", n.host_veth, "type", "veth", "peer", "name", UPLINK, "netns", n.netns)
    _run(ip, "addr", "add", f"{n.host_addr}/30", "dev", n.host_veth)
    _run(ip, "link", "set", n.host_veth, "up")
    _run(ip, "-n", n.netns, "addr", "add", f"{n.node_addr}/30", "dev", UPLINK)
    _run(ip, "-n", n.netns, "link", "set", UPLINK, "up")
    _run(ip, "-n", n.netns, "route", "add", "default", "via", n.host_addr)
    _run(ip, "route", "add", n.pod_subnet, "via", n.node_addr, "dev", n.host_veth)
    _run(*in_netns(node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    return n


def write_config(node: Node) -> tuple[Path, Path]:
    """The conflist and the plugin wrappers; returns (conf_dir, bin_dir) for containerd's CNI configuration."""
    n = names(node)
    conflist = {"cniVersion": "0.4.0", "name": network_name(node), "plugins": [
        {"type": "bridge", "bridge": n.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": n.pod_subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(node.dir / "cni" / "ipam")}},
    ]}
    conf_dir, bin_dir = node.dir / "cni" / "net.d", node.dir / "cni" / "bin"
    for d in (conf_dir, bin_dir, node.dir / "cni" / "ipam"):
        d.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-modelsync.conflist").write_text(json.dumps(conflist, indent=2))
    for plugin in PLUGINS:
        wrapper = bin_dir / plugin
        wrapper.write_text(f'#!/bin/sh\nexec {_ip()} netns exec {n.netns} {CNI_BIN_DIR / plugin} "$@"\n')
        wrapper.chmod(0o755)
    return conf_dir, bin_dir


def remove(node: Node) -> None:
    """Pods' namespaces of this cluster, its node namespace (with the bridge, the veth pair and the routes on it),
    this network's entries in libcni's cache."""
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        return
    n = names(node)
    prefix = n.pod_subnet.rsplit(".", 1)[0] + "."
    for ns in sorted(NETNS.glob("cni-*")) if NETNS.is_dir() else []:
        addrs = subprocess.run([ip, "-n", ns.name, "-4", "-o", "addr", "show"], check=False, capture_output=True,
                               text=True)
        if f"inet {prefix}" in addrs.stdout:
            subprocess.run([ip, "netns", "delete", ns.name], check=False, capture_output=True)
    if (NETNS / n.netns).exists():
        subprocess.run([ip, "netns", "delete", n.netns], check=False, capture_output=True)
    for link in (n.host_veth, n.bridge):  # the veth goes with the namespace; a bridge of older runs was on the host
        if Path(f"/sys/class/net/{link}").exists():
            subprocess.run([ip, "link", "delete", link], check=False, capture_output=True)
    network = network_name(node)
    for path in sorted(CNI_RESULTS.glob(f"{network}-*")) if CNI_RESULTS.is_dir() else []:
        sandbox = path.name.removeprefix(f"{network}-").rsplit("-", 1)[0]
        for entry in (path, CNI_RESULTS / f"cni-loopback-{sandbox}-lo"):
            entry.unlink(missing_ok=True)


def host_rules() -> dict[str, list[str]]:
    """The host's own iptables rules (nft and legacy), without comments and counters: the cluster must not change
    them (its rules live in its network namespace, e2e/kubernetes_network.py)."""
    rules = {}
    for save in ("iptables-nft-save", "iptables-legacy-save"):
        path = shutil.which(save, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        if path is None:
            continue
        out = subprocess.run([path], check=False, capture_output=True, text=True).stdout
        rules[save] = [re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if not line.startswith("#")]
    return rules
