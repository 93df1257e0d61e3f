"""What the process modules of the local Kubernetes (e2e/kubernetes.py) share: the pinned binaries, the `Node` they
start on, and the clean-up of mounts under its state directory. Standard library only.

A process module (e2e/kubernetes_containerd.py, kubernetes_etcd.py, kubernetes_apiserver.py,
kubernetes_controllers.py, kubernetes_kubelet.py, kubernetes_proxy.py, kubernetes_gateway.py; the cluster network in
kubernetes_network.py, cluster DNS in kubernetes_dns.py) has

    argv(node) -> list[str]            its command line, after writing the files it reads (under node.dir)
    healthy(node) -> bool              its health check (one per process in kubernetes_controllers)

and whatever else only it knows (containerd's images, the apiserver's PKI and kubeconfig, the kubelet's log links).
e2e/kubernetes.py composes them (ports, state file, start and stop order); none of them imports it.

Binaries: e2e/install-tools.sh kubernetes puts kube-*, etcd and coredns into ${MODELSYNC_CACHE:-~/.cache/modelsync}/
kubernetes-VERSION/bin (VERSION: KUBERNETES_VERSION of e2e/versions.env); containerd, ctr, runc, the CNI plugins
(/usr/lib/cni), busybox and iptables come from apt.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Protocol

from e2e.component import REPO_ROOT, StackError, free_ports


def pins() -> dict[str, str]:
    lines = (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {key: value for key, value in pairs}


KUBERNETES_VERSION = pins()["KUBERNETES_VERSION"]
CACHE = Path(os.environ.get("MODELSYNC_CACHE") or Path.home() / ".cache/modelsync")
BIN_DIR = CACHE / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
KUBE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl", "kube-proxy",
              "coredns")
SYSTEM_TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip", "iptables")
CNI_BIN_DIR = Path("/usr/lib/cni")
NODE_NAME = "127.0.0.1"  # the kubelet's node name, in every cluster (each has its own apiserver: no clash)


class MissingToolsError(StackError):
    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(f"not installed: {', '.join(missing)}; run e2e/install-tools.sh kubernetes")


def tool(name: str) -> str | None:
    """Path of a cluster binary: the pinned build dir for the Kubernetes ones, else PATH and sbin."""
    if name in KUBE_TOOLS:
        path = BIN_DIR / name
        return str(path) if os.access(path, os.X_OK) else None
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"]))


def need(name: str) -> str:
    """tool(name), or MissingToolsError."""
    path = tool(name)
    if path is None:
        raise MissingToolsError([name])
    return path


def missing_tools() -> list[str]:
    missing = [t for t in (*KUBE_TOOLS, *SYSTEM_TOOLS) if tool(t) is None]
    missing += [f"CNI plugin {p}" for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()]
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox (busybox-static, for the sandbox image)")
    return missing


class Node(Protocol):
    """The cluster a process starts on (e2e.kubernetes.Cluster)."""

    @property
    def dir(self) -> Path:
        """The state directory: every file a process writes is under it (the exceptions: e2e/kubernetes.py)."""

    @property
    def ports(self) -> dict[str, int]:
        """Every listening port, picked at up time (names: e2e.kubernetes.PORTS)."""

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig every component uses."""

    @property
    def ca_file(self) -> Path:
        """The CA of the apiserver's serving certificate."""

    @property
    def containerd_address(self) -> Path:
        """containerd's socket."""


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root`, as /proc/self/mountinfo lists them."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
        if point == str(root) or point.startswith(f"{root}/"):
            found.append(point)
    return found


def unmount_under(root: Path) -> None:
    """Unmount everything mounted under `root` (the kubelet's volume tmpfs, its rshared bind mount of its root dir,
    containerd's rootfs and shm mounts), deepest first, lazily when busy."""
    for _ in range(5):
        mounts = mounts_under(root)
        if not mounts:
            return
        for point in sorted(mounts, key=lambda m: m.count("/"), reverse=True):
            if subprocess.run(["umount", point], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if left := mounts_under(root):
        raise StackError(f"could not unmount: {', '.join(left)}")


def pick_ports(remembered: Path, names: tuple[str, ...]) -> dict[str, int]:
        """A free port for each name: the one of the previous start (in the JSON file `remembered`) where it is still
        free, so the issuer URL and the kubeconfig stay the same across a down/up; new ones for the others. Writes
        them to `remembered`."""
        previous_file = remembered
        try:
            previous = json.loads(previous_file.read_text())
        except (OSError, ValueError):
            previous = {}
        ports: dict[str, int] = {}
        held = []
        try:
            for name in names:
                port = previous.get(name)
                if isinstance(port, int) and port not in ports.values():
                    sock = socket.socket()
                    # as the Go servers bind: a port with connections in TIME_WAIT is still usable
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind(("127.0.0.1", port))
                        held.append(sock)
                        ports[name] = port
                        continue
                    except OSError:
                        sock.close()
            missing = [n for n in names if n not in ports]
            fresh = [p for p in free_ports(len(missing) + len(ports)) if p not in ports.values()]
            ports.update(zip(missing, fresh, strict=False))  # fresh may hold more than needed
        finally:
            for sock in held:
                sock.close()
        previous_file.write_text(json.dumps(ports, indent=2))
        return {name: ports[name] for name in names}
