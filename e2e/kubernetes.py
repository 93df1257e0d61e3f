"""A real single-node Kubernetes cluster on this machine, for the Kubernetes e2e (recipe: /work/shared/STACK.md,
"A real Kubernetes here"). Standard library only.

    cluster = Cluster(state_dir)
    cluster.up()                     # or reuse the one running in state_dir
    cluster.import_image("localhost/modelsync:dev")
    cluster.kubectl("apply", "-f", "-", input=manifest)
    cluster.down()

Processes, started in this order, each in its own process group, output in STATE_DIR/logs/NAME.log:

    containerd               own config, root, state and socket under STATE_DIR/containerd (a system containerd, if
                             any, is left alone); runc with cgroupfs; CNI plugins from /usr/lib/cni, their config
                             (a bridge conflist) in STATE_DIR/cni/net.d and their IPAM state in STATE_DIR/cni/ipam;
                             a sandbox (pause) image made here from /bin/busybox (no registry serves one)
    etcd                     STATE_DIR/etcd, client and peer ports free
    kube-apiserver           TLS with a CA of its own (ca_file), a static admin token (system:masters), RBAC, a
                             service-account key pair; --service-account-issuer https://127.0.0.1:PORT (issuer_url),
                             the apiserver itself, so that anyone trusting ca_file can do OIDC discovery there
                             (anonymous discovery is allowed by the clusterrolebinding oidc-discovery-anonymous)
    kube-controller-manager  secure port free, no leader election
    kube-scheduler           secure port free, no leader election
    kubelet                  --root-dir STATE_DIR/kubelet, node name 127.0.0.1, its port and healthz port free,
                             read-only port off, listening on 127.0.0.1 only (anonymous + AlwaysAllow there, so the
                             apiserver needs no client certificate for `kubectl logs/exec`)

Ports: every listening port is picked free at up time (a restart of the same state dir takes its previous ports
again where they are free, so issuer_url and the kubeconfig usually stay the same), so two clusters (two state
dirs) run side by side (tried: two clusters with pods each). What the kubelet and containerd do not let one move,
outside the state dir:
    - the node is called 127.0.0.1 in both (each has its own apiserver and etcd: no clash);
    - containerd's shim sockets are in /run/containerd/s/ (named by a hash of the containerd address: no clash);
    - the kubelet's container-log symlinks are in /var/log/containers (names carry pod uid and container id;
      `down` removes those pointing into its state dir);
    - the kubelet's device-plugin socket is /var/lib/kubelet/device-plugins/kubelet.sock whatever --root-dir: a
      second kubelet takes it over (no device plugins here, so nothing notices); it stays after `down`;
    - cAdvisor probes /run/containerd/containerd.sock for metrics only (a log line, no effect);
    - libcni's result cache /var/lib/cni/results and bridged pods' network namespaces in /run/netns (removed by
      the kubelet, or by `down` after a hard stop: those of this cluster's network and subnet).
Pods are meant to use `hostNetwork: true` (no kube-proxy, no DNS): they reach local services on 127.0.0.1.
Non-host-network pods get an address on a bridge of the cluster's own (named and numbered from the state dir). Nothing
goes into the host's iptables: no masquerading on the bridge, and the kubelet's makeIPTablesUtilChains is off.
Registries: a plain-HTTP one on 127.0.0.1 needs nothing (pull by digest works); a TLS one with its own CA needs
trust_registry(HOST:PORT, ca_file) and, with credentials, an imagePullSecret in the pod.

Binaries: e2e/install-tools.sh kubernetes (kube-* and etcd into ~/.cache/modelsync/kubernetes-VERSION/bin;
containerd, ctr, runc and the CNI plugins from apt).

CLI::

    python -m e2e.kubernetes [--state-dir DIR] up|down|status|env
    python -m e2e.kubernetes [--state-dir DIR] kubectl ARGS...
        default DIR: ${MODELSYNC_K8S_DIR:-~/.cache/modelsync/kubernetes}
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from e2e import procs
from e2e.component import REPO_ROOT, StackError, free_ports, http_status, write_private


def _pins() -> dict[str, str]:
    lines = (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))


KUBERNETES_VERSION = _pins()["KUBERNETES_VERSION"]
CACHE = Path(os.environ.get("MODELSYNC_CACHE") or Path.home() / ".cache/modelsync")
BIN_DIR = CACHE / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
DEFAULT_STATE_DIR = Path(os.environ.get("MODELSYNC_K8S_DIR") or CACHE / "kubernetes")
KUBE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
SYSTEM_TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
# in start order; down stops them in reverse
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
PORTS = ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kubelet", "kubelet_healthz")
NODE_NAME = "127.0.0.1"
SANDBOX_IMAGE = "localhost/modelsync-pause:1"
K8S_NAMESPACE = "k8s.io"  # containerd namespace of the CRI plugin
START_TIMEOUT = 120.0


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


def missing_tools() -> list[str]:
    missing = [t for t in (*KUBE_TOOLS, *SYSTEM_TOOLS) if tool(t) is None]
    missing += [f"CNI plugin {p}" for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()]
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox (busybox-static, for the sandbox image)")
    return missing


class Cluster:
    def __init__(self, state_dir: Path, issuer_url: str | None = None, service_account_key: Path | None = None):
        """issuer_url and service_account_key (an RSA private key, PEM): the apiserver signs service-account tokens
        with that key under that issuer instead of its own (e.g. the local stack's OIDC issuer, which publishes the
        key: then the stack's Fulcio accepts the cluster's projected tokens). The apiserver's own URL stays an
        accepted issuer."""
        self.dir = Path(state_dir).resolve()
        self._external_issuer = issuer_url
        self._external_key = Path(service_account_key).resolve() if service_account_key else None
        self.state_file = self.dir / "cluster.json"
        self._procs: dict[str, subprocess.Popen] = {}
        self._state: dict = {}

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
        return f"https://127.0.0.1:{self._port('apiserver')}"

    @property
    def containerd_address(self) -> Path:
        return self._socket_dir() / "containerd.sock"

    def _port(self, name: str) -> int:
        ports = self.ports
        if name not in ports:
            raise StackError(f"cluster not up (no {self.state_file})")
        return ports[name]

    def _socket_dir(self) -> Path:
        # unix socket paths are limited to 107 bytes: a deep state dir gets its socket in /run instead
        sock_dir = self.dir / "containerd"
        if len(str(sock_dir / "containerd.sock.ttrpc")) > 100:
            sock_dir = Path("/run/modelsync-k8s") / hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
        return sock_dir

    def _token(self) -> str:
        path = self.dir / "pki" / "admin.token"
        if not path.exists():
            write_private(path, secrets.token_hex(24))
        return path.read_text().strip()

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
        return all(name in comps and procs.alive(comps[name]["pid"], comps[name]["match"]) and self._healthy(name)
                   for name in COMPONENTS)

    def status(self) -> dict[str, dict]:
        """{component: {pid, alive, healthy}} of what the state file records (empty when it records nothing)."""
        state = self._load()
        self._state = state
        result = {}
        for name, info in state.get("components", {}).items():
            alive = procs.alive(info["pid"], info["match"])
            result[name] = {"pid": info["pid"], "alive": alive, "healthy": alive and self._healthy(name)}
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = 120) -> subprocess.CompletedProcess:
        """kubectl with this cluster's kubeconfig; text output captured; CalledProcessError (with stderr in its
        message) when check and it fails."""
        argv = [tool("kubectl") or "kubectl", f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, text=True, capture_output=True, timeout=timeout,
                                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """ctr against this cluster's containerd, in the CRI namespace k8s.io."""
        argv = [tool("ctr") or "ctr", "--address", str(self.containerd_address), "-n", K8S_NAMESPACE, *args]
        result = subprocess.run(argv, text=True, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise StackError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def import_image(self, ref: str) -> bool:
        """Copy an image of podman's storage into this cluster's containerd (namespace k8s.io) under the same
        name, for pods with `imagePullPolicy: Never`. Skipped (False) when containerd already has that name with
        the same image id (config digest); True when imported."""
        podman = shutil.which("podman")
        if podman is None:
            raise MissingToolsError(["podman"])
        inspect = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", ref], text=True,
                                 capture_output=True)
        if inspect.returncode != 0:
            raise StackError(f"podman has no image {ref}: {inspect.stderr.strip()}")
        image_id = inspect.stdout.strip().removeprefix("sha256:")
        if self.image_id(ref) == image_id:
            return False
        tmp = self.dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        archive = tmp / f"image-{secrets.token_hex(4)}.tar"
        try:
            subprocess.run([podman, "save", "--format", "docker-archive", "-o", str(archive), ref], check=True,
                           capture_output=True, text=True)
            self.ctr("images", "import", "--no-unpack=false", str(archive))
        except subprocess.CalledProcessError as err:
            raise StackError(f"podman save {ref} failed: {err.stderr.strip()}") from None
        finally:
            archive.unlink(missing_ok=True)
        if (got := self.image_id(ref)) != image_id:
            raise StackError(f"imported {ref} into containerd, but it has image id {got}, podman {image_id}")
        return True

    def trust_registry(self, host: str, ca_file: Path | None = None, plain_http: bool = False) -> None:
        """Let the kubelet pull from `host` (HOST:PORT): over HTTPS trusting `ca_file`, or over plain HTTP.
        Not needed for a plain-HTTP registry on 127.0.0.1 (containerd falls back to HTTP there by itself); needed
        for a TLS registry with its own CA. Credentials go in the pod's imagePullSecrets. containerd reads this
        (certs.d/HOST/hosts.toml) on each pull: no restart."""
        server = f"{'http' if plain_http else 'https'}://{host}"
        lines = [f'server = "{server}"', "", f'[host."{server}"]', '  capabilities = ["pull", "resolve"]']
        if ca_file is not None:
            lines.append(f'  ca = "{Path(ca_file).resolve()}"')
        path = self.dir / "containerd" / "certs.d" / host / "hosts.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")

    def image_id(self, ref: str) -> str | None:
        """The image id (config digest, hex) containerd has for `ref` in the k8s.io namespace, or None."""
        listing = self.ctr("images", "ls", f"name=={ref}", check=False)
        lines = listing.stdout.splitlines()[1:]
        if listing.returncode != 0 or not lines:
            return None
        digest = lines[0].split()[2]
        blob = json.loads(self.ctr("content", "get", digest).stdout)
        if "manifests" in blob:  # an index: the linux/amd64 (or first) manifest
            manifests = blob["manifests"]
            pick = next((m for m in manifests if m.get("platform", {}).get("architecture") == "amd64"), manifests[0])
            blob = json.loads(self.ctr("content", "get", pick["digest"]).stdout)
        return blob["config"]["digest"].removeprefix("sha256:")

    def env(self) -> dict[str, str]:
        """What a process needs to use this cluster: KUBECONFIG, the issuer and its CA, containerd's address, and
        PATH with the pinned kubectl first."""
        self._port("apiserver")
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
        # a fresh start has no API objects of an earlier one (their pods would come back): etcd starts empty. Kept:
        # the PKI and admin token, and containerd's root with the images imported before
        shutil.rmtree(self.dir / "etcd", ignore_errors=True)
        for sub in ("logs", "pki", "etcd", "kubelet", "pod-logs", "cni/net.d", "cni/ipam", "containerd", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._socket_dir().mkdir(parents=True, exist_ok=True)
        # the kubelet's container-log symlinks go here whatever its root dir (STACK.md); /var/lib/kubelet is not
        # needed with --root-dir
        os.makedirs("/var/log/containers", exist_ok=True)
        self._state = {"up": False, "started_at": time.time(), "ports": self._pick_ports(), "components": {},
                       "timings": {}}
        self._save()
        self._make_pki()
        self._write_kubeconfig()
        self._write_cni()

        self._spawn("containerd", [tool("containerd"), "--config", str(self._containerd_config())])
        self._spawn("etcd", self._etcd_argv())
        self._wait("containerd")
        self._import_sandbox_image()
        self._wait("etcd")
        self._spawn("kube-apiserver", self._apiserver_argv())
        self._wait("kube-apiserver")
        self._spawn("kube-controller-manager", self._controller_manager_argv())
        self._spawn("kube-scheduler", self._scheduler_argv())
        self._spawn("kubelet", self._kubelet_argv())
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet"):
            self._wait(name)
        self._wait_for("node Ready", lambda: self.kubectl(
            "get", "node", NODE_NAME, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False).stdout == "True", "kubelet")
        self._wait_for("service account default/default", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-o", "name", check=False).returncode == 0,
            "kube-controller-manager")
        if self.kubectl("get", "clusterrolebinding", "oidc-discovery-anonymous", check=False).returncode != 0:
            self.kubectl("create", "clusterrolebinding", "oidc-discovery-anonymous",
                         "--clusterrole=system:service-account-issuer-discovery", "--group=system:unauthenticated")
        self._state["timings"]["up"] = round(time.monotonic() - t0, 1)
        self._save(up=True)

    def _pick_ports(self) -> dict[str, int]:
        """The ports of this state dir's previous start where they are still free (so issuer_url and the kubeconfig
        stay the same across a down/up), new free ones for the others; remembered in ports.json."""
        previous_file = self.dir / "ports.json"
        try:
            previous = json.loads(previous_file.read_text())
        except (OSError, ValueError):
            previous = {}
        ports: dict[str, int] = {}
        held = []
        try:
            for name in PORTS:
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
            missing = [n for n in PORTS if n not in ports]
            fresh = [p for p in free_ports(len(missing) + len(ports)) if p not in ports.values()]
            ports.update(zip(missing, fresh))
        finally:
            for sock in held:
                sock.close()
        previous_file.write_text(json.dumps(ports, indent=2))
        return {name: ports[name] for name in PORTS}

    def _spawn(self, name: str, argv: list) -> None:
        argv = [str(a) for a in argv]
        self._procs[name] = proc = procs.spawn(argv, None, cwd=self.dir, log=self.dir / "logs" / f"{name}.log")
        # every command line here names the state dir: a process of another cluster (or a reused pid) is never
        # taken for ours
        self._state["components"][name] = {"pid": proc.pid, "match": str(self.dir)}
        self._save()

    def _wait(self, name: str, timeout: float = START_TIMEOUT) -> None:
        t0 = time.monotonic()
        self._wait_for(f"{name} healthy", lambda: self._healthy(name), name, timeout)
        self._state["timings"][name] = round(time.monotonic() - t0, 1)

    def _wait_for(self, what: str, check, log_of: str, timeout: float = START_TIMEOUT) -> None:
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

    def _healthy(self, name: str) -> bool:
        ports = self.ports
        if name == "containerd":
            if not self.containerd_address.is_socket():
                return False
            return subprocess.run([tool("ctr") or "ctr", "--address", str(self.containerd_address), "version"],
                                  capture_output=True, timeout=10).returncode == 0
        if name == "etcd":
            return http_status(f"http://127.0.0.1:{ports['etcd']}/health") == 200
        if name == "kube-apiserver":
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            return http_status(f"https://127.0.0.1:{ports['apiserver']}/readyz", context=ctx,
                               headers={"Authorization": f"Bearer {self._token()}"}) == 200
        if name in ("kube-controller-manager", "kube-scheduler"):
            # their self-signed serving certificates: only liveness is checked here
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            port = ports["controller_manager" if name == "kube-controller-manager" else "scheduler"]
            return http_status(f"https://127.0.0.1:{port}/healthz", context=ctx) == 200
        if name == "kubelet":
            return http_status(f"http://127.0.0.1:{ports['kubelet_healthz']}/healthz") == 200
        raise ValueError(name)

    def _external_public_key(self) -> Path:
        out = self.dir / "pki" / "external-sa.pub"
        subprocess.run([shutil.which("openssl") or "openssl", "pkey", "-in", str(self._external_key), "-pubout",
                        "-out", str(out)], check=True, capture_output=True)
        return out

    def _make_pki(self) -> None:
        """A CA, the apiserver's serving certificate (127.0.0.1, localhost, the kubernetes service names) and the
        service-account signing key pair; kept across restarts of the same state dir."""
        pki = self.dir / "pki"
        self._token()
        if (pki / "apiserver.crt").exists() and (pki / "sa.pub").exists():
            return
        openssl = shutil.which("openssl") or "openssl"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (pki / "apiserver.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=modelsync e2e kubernetes CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            [openssl, "req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver"],
            [openssl, "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "apiserver.ext", "-out", "apiserver.crt"],
            [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"],
            [openssl, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        ]
        for argv in steps:
            subprocess.run(argv, cwd=pki, check=True, capture_output=True)
        for key in ("ca.key", "apiserver.key", "sa.key"):
            os.chmod(pki / key, 0o600)

    def _write_kubeconfig(self) -> None:
        write_private(self.dir / "pki" / "tokens.csv", f'{self._token()},admin,admin,"system:masters"\n')
        # JSON is YAML: no YAML writer needed
        write_private(self.kubeconfig, json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "modelsync-e2e",
            "clusters": [{"name": "modelsync-e2e", "cluster": {
                "server": f"https://127.0.0.1:{self._port('apiserver')}",
                "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": self._token()}}],
            "contexts": [{"name": "modelsync-e2e", "context": {"cluster": "modelsync-e2e", "user": "admin",
                                                               "namespace": "default"}}],
        }, indent=2))

    def _bridge(self) -> tuple[str, str]:
        """The cluster's own bridge name and pod subnet (from its state dir), so two clusters do not share one."""
        h = hashlib.sha256(str(self.dir).encode()).digest()
        return f"mk8s{h[:3].hex()}"[:15], f"10.{200 + h[3] % 50}.{h[4]}.0/24"

    def _network_name(self) -> str:
        return f"modelsync-{self._bridge()[0]}"

    def _write_cni(self) -> None:
        bridge, subnet = self._bridge()
        # no ipMasq and no portmap: nothing in iptables that a hard stop could leave behind (pods are meant to use
        # the host network; bridged ones reach each other and the host)
        conflist = {"cniVersion": "0.4.0", "name": self._network_name(), "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(self.dir / "cni" / "ipam")}},
        ]}
        (self.dir / "cni" / "net.d" / "10-modelsync.conflist").write_text(json.dumps(conflist, indent=2))

    def _containerd_config(self) -> Path:
        root = self.dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = root / "config.toml"
        config.write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.containerd_address}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  # this sandbox lacks CAP_SYS_RESOURCE: else every pod fails "can't get final child's PID from pipe: EOF"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{tool('runc')}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.dir / 'cni' / 'net.d'}"
  [{cri}.registry]
    # hosts.toml per registry (certs.d/HOST:PORT/hosts.toml) for TLS or other-named registries (STACK.md)
    config_path = "{root / 'certs.d'}"
""")
        (root / "certs.d").mkdir(exist_ok=True)
        return config

    def _import_sandbox_image(self) -> None:
        """The pause image, made here: /bin/busybox running a shell that waits for a signal (no registry serves
        registry.k8s.io/pause here)."""
        if self.ctr("images", "ls", "-q", f"name=={SANDBOX_IMAGE}").stdout.strip():
            return
        busybox = Path("/bin/busybox").read_bytes()
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            for name, kind, mode, data, link in (("bin", tarfile.DIRTYPE, 0o755, None, ""),
                                                 ("bin/busybox", tarfile.REGTYPE, 0o755, busybox, ""),
                                                 ("bin/sh", tarfile.SYMTYPE, 0o777, None, "busybox")):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.linkname = kind, mode, link
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        layer_bytes = layer.getvalue()
        diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh", "-c",
                                      "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait $!; done"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }, sort_keys=True).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        archive = self.dir / "tmp" / "pause.tar"
        with tarfile.open(archive, "w") as tar:
            for name, data in (("layer.tar", layer_bytes), (config_name, config),
                               ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [SANDBOX_IMAGE],
                                                              "Layers": ["layer.tar"]}]).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        try:
            self.ctr("images", "import", str(archive))
        finally:
            archive.unlink(missing_ok=True)

    def _etcd_argv(self) -> list:
        p = self.ports
        return [tool("etcd"), "--name", "default", "--data-dir", self.dir / "etcd",
                "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                "--initial-cluster", f"default=http://127.0.0.1:{p['etcd_peer']}",
                "--log-level", "warn"]

    def _apiserver_argv(self) -> list:
        p, pki = self.ports, self.dir / "pki"
        return [tool("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                # RBAC, not AlwaysAllow: the apiserver turns anonymous requests off under AlwaysAllow, and OIDC
                # discovery must be anonymous; the admin token is in system:masters, which every component uses
                "--authorization-mode=RBAC", "--anonymous-auth=true",
                f"--service-account-key-file={pki / 'sa.pub'}",
                *([f"--service-account-key-file={self._external_public_key()}"] if self._external_key else []),
                f"--service-account-signing-key-file={self._external_key or pki / 'sa.key'}",
                f"--service-account-issuer={self.issuer_url}",  # the first one names the tokens it mints
                *([f"--service-account-issuer={self.server_url}",
                   f"--service-account-jwks-uri={self.server_url}/openid/v1/jwks"] if self._external_issuer else []),
                "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
                f"--cert-dir={pki}", "--profiling=false"]

    def _component_argv(self, binary: str, port: int) -> list:
        kc = self.kubeconfig
        return [tool(binary), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1", f"--secure-port={port}",
                "--leader-elect=false", f"--cert-dir={self.dir / 'pki' / binary}"]

    def _controller_manager_argv(self) -> list:
        pki = self.dir / "pki"
        return [*self._component_argv("kube-controller-manager", self.ports["controller_manager"]),
                f"--root-ca-file={self.ca_file}", f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=false", "--controllers=*"]

    def _scheduler_argv(self) -> list:
        return self._component_argv("kube-scheduler", self.ports["scheduler"])

    def _kubelet_argv(self) -> list:
        p = self.ports
        config = self.dir / "kubelet-config.json"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": p["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": p["kubelet_healthz"],
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "failSwapOn": False,
            # only 127.0.0.1 reaches it: the apiserver (kubectl logs/exec) needs no client certificate
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.dir / "pod-logs"),
            # a machine with a fuller disk must not evict the test's pods, nor collect imported images (there is
            # no registry to pull them again)
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            # else it adds KUBE-FIREWALL (drops non-loopback packets to 127.0.0.0/8) and canary chains to the host's
            # iptables, and nothing removes them
            "makeIPTablesUtilChains": False,
            "registerNode": True,
        }, indent=2))
        return [tool("kubelet"), f"--config={config}", f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}", f"--hostname-override={NODE_NAME}",
                f"--cert-dir={self.dir / 'kubelet' / 'pki'}"]

    # ------------------------------------------------------------------ stop

    def _down(self) -> None:
        state = self._load() or self._state
        comps = state.get("components", {})

        def alive(name: str) -> bool:
            return name in comps and procs.alive(comps[name]["pid"], comps[name]["match"])

        # 1. let the kubelet remove the pods' containers itself (sandboxes, mounts, network namespaces):
        # no controller recreates them once the controller-manager is gone
        self._stop(comps, "kube-controller-manager")
        if alive("kubelet") and alive("kube-apiserver") and self.kubeconfig.exists():
            self.kubectl("delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0", "--wait=false",
                         check=False, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._running_tasks():
                time.sleep(0.5)
        # 2. the rest in reverse start order; containers the kubelet left are killed before containerd goes
        for name in ("kube-scheduler", "kubelet", "kube-apiserver", "etcd"):
            self._stop(comps, name)
        if alive("containerd"):
            for task in self._running_tasks(all_states=True):
                self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False, timeout=30)
            for task in self._running_tasks(all_states=True):
                self.ctr("tasks", "delete", "--force", task, check=False, timeout=30)
        self._stop(comps, "containerd")
        self._kill_shims()
        self._unmount_all()
        self._remove_log_links()
        self._remove_network()
        self._procs.clear()
        self._state = {}
        self.state_file.unlink(missing_ok=True)

    def _stop(self, comps: dict, name: str) -> None:
        info = comps.get(name)
        if info is None:
            return
        proc = self._procs.get(name)
        if proc is None and not procs.alive(info["pid"], info["match"]):
            return
        procs.stop_group(info["pid"], proc, timeout=15)

    def _running_tasks(self, all_states: bool = False) -> list[str]:
        if not self.containerd_address.is_socket():
            return []
        try:
            out = self.ctr("tasks", "ls", check=False, timeout=15).stdout.splitlines()[1:]
        except subprocess.TimeoutExpired:
            return []
        return [f[0] for f in (line.split() for line in out) if f and (all_states or f[-1] == "RUNNING")]

    def _kill_shims(self) -> None:
        """The shims detach from containerd's process group: find ours by the socket address on their command line,
        and kill them with their containers' processes (their children)."""
        address = str(self.containerd_address)
        for pid in procs._pids():
            cmd = procs._cmdline(pid)
            if "containerd-shim" in cmd and f"-address {address} " in cmd + " ":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)

    def _mounts(self) -> list[str]:
        root = str(self.dir)
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
            if point == root or point.startswith(root + "/"):
                found.append(point)
        return found

    def _unmount_all(self) -> None:
        """Unmount everything mounted under the state dir (the kubelet's volume tmpfs, its rshared bind mount of
        its root dir, containerd's rootfs and shm mounts), deepest first, lazily when busy."""
        for _ in range(5):
            mounts = self._mounts()
            if not mounts:
                return
            for point in sorted(mounts, key=lambda m: m.count("/"), reverse=True):
                if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", point], capture_output=True)
        if left := self._mounts():
            raise StackError(f"could not unmount: {', '.join(left)}")

    def _remove_network(self) -> None:
        """Network namespaces of bridged pods the kubelet did not remove (a hard stop), recognised by an address in
        this cluster's subnet, and the bridge."""
        ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
        if ip is None:
            return
        bridge, subnet = self._bridge()
        prefix = subnet.rsplit(".", 1)[0] + "."
        netns = Path("/run/netns")
        for ns in sorted(netns.glob("cni-*")) if netns.is_dir() else []:
            addrs = subprocess.run([ip, "-n", ns.name, "-4", "-o", "addr", "show"], capture_output=True, text=True)
            if f"inet {prefix}" in addrs.stdout:
                subprocess.run([ip, "netns", "delete", ns.name], capture_output=True)
        if Path(f"/sys/class/net/{bridge}").exists():
            subprocess.run([ip, "link", "delete", bridge], capture_output=True)
        # libcni's result cache (global): this network's entries, and the loopback entries of the same sandboxes
        results = Path("/var/lib/cni/results")
        ours = sorted(results.glob(f"{self._network_name()}-*")) if results.is_dir() else []
        for path in ours:
            sandbox = path.name.removeprefix(f"{self._network_name()}-").rsplit("-", 1)[0]
            for other in (path, results / f"cni-loopback-{sandbox}-lo"):
                other.unlink(missing_ok=True)

    def _remove_log_links(self) -> None:
        logs = Path("/var/log/containers")
        if not logs.is_dir():
            return
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(self.dir) + "/"):
                    link.unlink()

    # ------------------------------------------------------------------ state

    @contextlib.contextmanager
    def _exclusive(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **extra) -> None:
        self._state.update(extra)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.replace(self.state_file)


def decode_jwt(token: str) -> dict:
    """The claims of a JWT (unverified: for tests that check what a token says)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m e2e.kubernetes",
                                     description="A real single-node Kubernetes for the e2e tests.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("command", choices=("up", "down", "status", "env", "kubectl"))
    # everything after `kubectl` goes to kubectl untouched
    rest: list[str] = []
    if "kubectl" in argv:
        i = argv.index("kubectl")
        argv, rest = argv[:i + 1], argv[i + 1:]
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    cluster = Cluster(args.state_dir)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            reused = cluster.is_up()
            cluster.up()
            print(f"cluster {'already up, reused' if reused else 'started'} in {time.monotonic() - t0:.1f}s: "
                  f"{cluster.dir}\n  export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            t0 = time.monotonic()
            cluster.down()
            print(f"cluster down in {time.monotonic() - t0:.1f}s")
        elif args.command == "status":
            status = cluster.status()
            if not status:
                print(f"not up ({cluster.dir})")
                return 1
            for name, st in status.items():
                health = "healthy" if st["healthy"] else ("UNHEALTHY" if st["alive"] else "DEAD")
                print(f"{name:24} pid {st['pid']:<8} {health}")
            print(f"ports {cluster.ports}")
            return 0 if all(s["healthy"] for s in status.values()) else 1
        elif args.command == "env":
            for key, value in cluster.env().items():
                print(f"export {key}='{value}'")
        else:
            if not cluster.kubeconfig.exists():
                raise StackError(f"cluster not up (no {cluster.kubeconfig})")
            return subprocess.run([tool("kubectl") or "kubectl", f"--kubeconfig={cluster.kubeconfig}", *rest]).returncode
    except StackError as err:
        print(f"e2e.kubernetes: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
