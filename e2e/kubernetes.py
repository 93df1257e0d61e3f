"""A real single-node Kubernetes cluster on this machine, for the Kubernetes e2e. Standard library only.

    cluster = Cluster(state_dir)
    cluster.up()                     # or reuse the one running in state_dir
    cluster.import_image("localhost/modelsync:dev")
    cluster.kubectl("apply", "-f", "-", input=manifest)
    cluster.down()

This module composes the processes (ports, state file STATE_DIR/cluster.json, start and stop order); each process
is a module of its own that states its contract (e2e/kubernetes_node.py: what they share):

    containerd               e2e/kubernetes_containerd.py (its pod network: e2e/kubernetes_network.py)
    etcd                     e2e/kubernetes_etcd.py
    kube-apiserver           e2e/kubernetes_apiserver.py (PKI, admin token, kubeconfig, the service-account issuer)
    kube-controller-manager  e2e/kubernetes_controllers.py
    kube-scheduler           e2e/kubernetes_controllers.py
    kubelet                  e2e/kubernetes_kubelet.py

They start in that order, each in its own process group, output in STATE_DIR/logs/NAME.log; every command line names
the state dir, so a process of another cluster (or a reused pid) is never taken for ours. `up` returns once the node
is Ready and the service account default/default exists.

Ports: every listening port is picked free at up time (a restart of the same state dir takes its previous ports
again where they are free, so issuer_url and the kubeconfig usually stay the same), so two clusters (two state
dirs) run side by side (tried: two clusters with pods each). What the processes put outside the state dir is listed
in their modules (shim sockets, container-log links, the device-plugin socket, network namespaces, libcni's cache);
`down` removes what is this cluster's.
Pods are meant to use `hostNetwork: true` (no kube-proxy, no DNS): they reach local services on 127.0.0.1.

CLI::

    python -m e2e.kubernetes [--state-dir DIR] up|down|status|env
    python -m e2e.kubernetes [--state-dir DIR] kubectl ARGS...
        default DIR: ${MODELSYNC_K8S_DIR:-${MODELSYNC_CACHE:-~/.cache/modelsync}/kubernetes}
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from e2e import kubernetes_apiserver as apiserver
from e2e import kubernetes_containerd as containerd
from e2e import kubernetes_controllers as controllers
from e2e import kubernetes_etcd as etcd
from e2e import kubernetes_kubelet as kubelet
from e2e import kubernetes_network as network
from e2e import procs
from e2e.component import StackError
from e2e.kubernetes_node import (
    BIN_DIR,
    CACHE,
    NODE_NAME,
    MissingToolsError,
    missing_tools,
    pick_ports,
    tool,
    unmount_under,
)

DEFAULT_STATE_DIR = Path(os.environ.get("MODELSYNC_K8S_DIR") or CACHE / "kubernetes")
# in start order; down stops them in its own order (_down)
COMPONENTS = (containerd.NAME, etcd.NAME, apiserver.NAME, controllers.CONTROLLER_MANAGER, controllers.SCHEDULER,
              kubelet.NAME)
PORTS = (*etcd.PORTS, *apiserver.PORTS, *controllers.PORT_OF.values(), *kubelet.PORTS)
SANDBOX_IMAGE = containerd.SANDBOX_IMAGE
K8S_NAMESPACE = containerd.NAMESPACE
START_TIMEOUT = 120.0
STATE_SUBDIRS = ("logs", "pki", "kubelet", "pod-logs", "containerd", "tmp")


class Cluster:
    def __init__(self, state_dir: Path, issuer_url: str | None = None, service_account_key: Path | None = None):
        """issuer_url and service_account_key (an RSA private key, PEM): the apiserver signs service-account tokens
        with that key under that issuer instead of its own (kubernetes_apiserver). The apiserver's own URL stays an
        accepted issuer."""
        self.dir = Path(state_dir).resolve()
        self._external_issuer = issuer_url
        self._external_key = Path(service_account_key).resolve() if service_account_key else None
        self.state_file = self.dir / "cluster.json"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state: dict[str, Any] = {}
        self._healthy: dict[str, Callable[[], bool]] = {
            containerd.NAME: partial(containerd.healthy, self), etcd.NAME: partial(etcd.healthy, self),
            apiserver.NAME: partial(apiserver.healthy, self), kubelet.NAME: partial(kubelet.healthy, self),
            **{name: partial(controllers.healthy, self, name) for name in controllers.PORT_OF}}

    # ------------------------------------------------------------------ paths and facts

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the apiserver's serving certificate (trust it to reach issuer_url)."""
        return self.dir / "pki" / "ca.crt"

    @property
    def ports(self) -> dict[str, int]:
        return dict((self._state or self._load()).get("ports", {}))

    @property
    def issuer_url(self) -> str:
        """The service-account token issuer: the one given, else the apiserver's own URL (OIDC discovery at
        ISSUER/.well-known/openid-configuration, anonymous, with ca_file)."""
        return self._external_issuer or self.server_url

    @property
    def server_url(self) -> str:
        self._port("apiserver")
        return apiserver.server_url(self)

    @property
    def containerd_address(self) -> Path:
        return containerd.address(self.dir)

    def _port(self, name: str) -> int:
        ports = self.ports
        if name not in ports:
            raise StackError(f"cluster not up (no {self.state_file})")
        return ports[name]

    # ------------------------------------------------------------------ public API

    def up(self) -> None:
        """Start the cluster, or reuse the one running in the state dir. Returns once the node is Ready and the
        default service account exists."""
        if missing := missing_tools():
            raise MissingToolsError(missing)
        with self._exclusive():
            if self.is_up():
                self._state = self._load()
                return
            self._down()
            try:
                self._start_all()
            except BaseException:
                self._down()
                raise

    def down(self) -> None:
        """Stop every process it started (whole process groups, and the containerd shims with their containers),
        unmount what the kubelet and containerd mounted under the state dir, remove bridged pods' network
        namespaces. Keeps the state dir's files: the next fresh up starts with an empty etcd but keeps the PKI and
        the images imported into containerd."""
        if not self.dir.exists():
            return
        with self._exclusive():
            self._down()

    def is_up(self) -> bool:
        state = self._load()
        if not state.get("up"):
            return False
        comps = state.get("components", {})
        self._state = state
        return all(name in comps and procs.alive(comps[name]["pid"], comps[name]["match"]) and self._healthy[name]()
                   for name in COMPONENTS)

    def status(self) -> dict[str, dict[str, Any]]:
        """{component: {pid, alive, healthy}} of what the state file records (empty when it records nothing)."""
        state = self._load()
        self._state = state
        result = {}
        for name, info in state.get("components", {}).items():
            alive = procs.alive(info["pid"], info["match"])
            result[name] = {"pid": info["pid"], "alive": alive, "healthy": alive and self._healthy[name]()}
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        """kubectl with this cluster's kubeconfig; text output captured; CalledProcessError (with stderr in its
        message) when check and it fails."""
        argv = [tool("kubectl") or "kubectl", f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, check=False, input=input, text=True, capture_output=True, timeout=timeout,
                                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """ctr against this cluster's containerd, in the CRI namespace k8s.io."""
        return containerd.ctr(self, *args, check=check, timeout=timeout)

    def import_image(self, ref: str) -> bool:
        """Copy an image of podman's storage into this cluster's containerd under the same name, for pods with
        `imagePullPolicy: Never`; False when it was there already (kubernetes_containerd.import_image)."""
        return containerd.import_image(self, ref)

    def trust_registry(self, host: str, ca_file: Path | None = None, plain_http: bool = False) -> None:
        """Let the kubelet pull from `host` (HOST:PORT): over HTTPS trusting `ca_file`, or over plain HTTP.
        Not needed for a plain-HTTP registry on 127.0.0.1; needed for a TLS registry with its own CA. Credentials go
        in the pod's imagePullSecrets. No restart."""
        containerd.trust_registry(self, host, ca_file, plain_http)

    def image_id(self, ref: str) -> str | None:
        """The image id (config digest, hex) containerd has for `ref` in the k8s.io namespace, or None."""
        return containerd.image_id(self, ref)

    def env(self) -> dict[str, str]:
        """What a process needs to use this cluster: KUBECONFIG, the issuer and its CA, containerd's address, and
        PATH with the pinned kubectl first."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "MODELSYNC_K8S_DIR": str(self.dir),
            "K8S_SERVER": self.server_url,
            "K8S_ISSUER_URL": self.issuer_url,
            "K8S_CA_FILE": str(self.ca_file),
            "CONTAINERD_ADDRESS": str(self.containerd_address),
            "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
        }

    # ------------------------------------------------------------------ start

    def _start_all(self) -> None:
        t0 = time.monotonic()
        for sub in STATE_SUBDIRS:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        etcd.reset(self)  # a fresh start has no API objects of an earlier one; the PKI and images are kept
        self._state = {"up": False, "started_at": time.time(), "ports": pick_ports(self.dir / "ports.json", PORTS),
                       "components": {}, "timings": {}}
        self._save()
        apiserver.make_pki(self)
        apiserver.write_kubeconfig(self)

        self._spawn(containerd.NAME, containerd.argv(self, network.write_config(self)))
        self._spawn(etcd.NAME, etcd.argv(self))
        self._wait(containerd.NAME)
        containerd.import_sandbox_image(self)
        self._wait(etcd.NAME)
        self._spawn(apiserver.NAME, apiserver.argv(self, self._external_issuer, self._external_key))
        self._wait(apiserver.NAME)
        self._spawn(controllers.CONTROLLER_MANAGER, controllers.controller_manager_argv(self))
        self._spawn(controllers.SCHEDULER, controllers.scheduler_argv(self))
        self._spawn(kubelet.NAME, kubelet.argv(self))
        for name in (controllers.CONTROLLER_MANAGER, controllers.SCHEDULER, kubelet.NAME):
            self._wait(name)
        self._wait_for("node Ready", lambda: self.kubectl(
            "get", "node", NODE_NAME, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False).stdout == "True", kubelet.NAME)
        self._wait_for("service account default/default", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-o", "name", check=False).returncode == 0,
            controllers.CONTROLLER_MANAGER)
        apiserver.allow_discovery(self.kubectl)
        self._state["timings"]["up"] = round(time.monotonic() - t0, 1)
        self._save(up=True)

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._procs[name] = proc = procs.spawn(argv, None, cwd=self.dir, log=self.dir / "logs" / f"{name}.log")
        self._state["components"][name] = {"pid": proc.pid, "match": str(self.dir)}
        self._save()

    def _wait(self, name: str, timeout: float = START_TIMEOUT) -> None:
        t0 = time.monotonic()
        self._wait_for(f"{name} healthy", self._healthy[name], name, timeout)
        self._state["timings"][name] = round(time.monotonic() - t0, 1)

    def _wait_for(self, what: str, check: Callable[[], bool], log_of: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(log_of)
        log = self.dir / "logs" / f"{log_of}.log"
        while time.monotonic() < deadline:
            if check():
                return
            if proc is not None and proc.poll() is not None:
                raise StackError(f"{log_of} exited with {proc.returncode} (waiting for {what}):\n"
                                 f"{procs.log_tail(log, 25)}")
            time.sleep(0.2)
        raise StackError(f"no {what} after {timeout:.0f}s:\n{procs.log_tail(log, 25)}")

    # ------------------------------------------------------------------ stop

    def _down(self) -> None:
        state = self._load() or self._state
        comps: dict[str, dict[str, Any]] = state.get("components", {})

        def alive(name: str) -> bool:
            return name in comps and procs.alive(comps[name]["pid"], comps[name]["match"])

        # 1. let the kubelet remove the pods' containers itself (sandboxes, mounts, network namespaces):
        # no controller recreates them once the controller-manager is gone
        self._stop(comps, controllers.CONTROLLER_MANAGER)
        if alive(kubelet.NAME) and alive(apiserver.NAME) and self.kubeconfig.exists():
            self.kubectl("delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0", "--wait=false",
                         check=False, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and containerd.tasks(self):
                time.sleep(0.5)
        # 2. the rest in reverse start order; containers the kubelet left are killed before containerd goes
        for name in (controllers.SCHEDULER, kubelet.NAME, apiserver.NAME, etcd.NAME):
            self._stop(comps, name)
        if alive(containerd.NAME):
            containerd.kill_tasks(self)
        self._stop(comps, containerd.NAME)
        containerd.kill_shims(self)
        unmount_under(self.dir)
        kubelet.remove_log_links(self)
        network.remove(self)
        self._procs.clear()
        self._state = {}
        self.state_file.unlink(missing_ok=True)

    def _stop(self, comps: dict[str, dict[str, Any]], name: str) -> None:
        info = comps.get(name)
        if info is None:
            return
        proc = self._procs.get(name)
        if proc is None and not procs.alive(info["pid"], info["match"]):
            return
        procs.stop_group(info["pid"], proc, timeout=15)

    # ------------------------------------------------------------------ state

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save(self, **extra: Any) -> None:
        self._state.update(extra)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.replace(self.state_file)


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of a JWT (unverified: for tests that check what a token says)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def main(argv: list[str] | None = None) -> int:
    """`python -m e2e.kubernetes` (e2e/kubernetes_cli.py)."""
    from e2e import kubernetes_cli
    return kubernetes_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
