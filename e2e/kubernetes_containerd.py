"""containerd of the local Kubernetes (e2e/kubernetes.py): the container runtime the kubelet talks CRI to, and the
images in it.

    containerd   own config, root, state and socket under STATE_DIR/containerd (a system containerd, if any, is
                 left alone); runc with cgroupfs; the overlayfs snapshotter       `ctr version` answers

Its socket is STATE_DIR/containerd/containerd.sock, or /run/modelsync-k8s/HASH/ when that path would pass the
107-byte limit of a unix socket path (`address`). The CRI plugin's namespace is k8s.io (`ctr` works in it).
restrict_oom_score_adj is on: a sandbox without CAP_SYS_RESOURCE fails every pod otherwise ("can't get final child's
PID from pipe: EOF"). The stream server (exec, logs) listens on 127.0.0.1 on a port of its choosing.

Images: no registry serves registry.k8s.io/pause here, so the sandbox (pause) image SANDBOX_IMAGE is made from
/bin/busybox (`import_sandbox_image`; any FROM-scratch image of local files: `import_scratch_image`); `import_image`
copies an image of podman's storage in for pods with `imagePullPolicy: Never`. Registries: a plain-HTTP one on
127.0.0.1 needs nothing (containerd falls back to HTTP there, pull by digest works); a TLS one with its own CA needs
`trust_registry(HOST:PORT, ca_file)` (certs.d/HOST/hosts.toml, read on each pull: no restart) and, with credentials,
an imagePullSecret in the pod.

Outside the state dir: the shims' sockets in /run/containerd/s/ (named by a hash of the containerd address: no clash
between clusters). The shims leave containerd's process group: `kill_shims` finds this containerd's by the address on
their command line and kills them with their containers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

from e2e import procs
from e2e.component import StackError
from e2e.kubernetes_node import CNI_BIN_DIR, MissingToolsError, Node, need, tool

NAME = "containerd"
SANDBOX_IMAGE = "localhost/modelsync-pause:1"
NAMESPACE = "k8s.io"  # the CRI plugin's
_SNAPSHOTTERS_OFF = ("aufs", "btrfs", "zfs", "devmapper")


def address(state_dir: Path) -> Path:
    sock_dir = state_dir / "containerd"
    if len(str(sock_dir / "containerd.sock.ttrpc")) > 100:
        sock_dir = Path("/run/modelsync-k8s") / hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return sock_dir / "containerd.sock"


def argv(node: Node, cni_conf_dir: Path, cni_bin_dir: Path = CNI_BIN_DIR) -> list[str]:
    """Writes STATE_DIR/containerd/config.toml and makes the socket's directory. cni_bin_dir: where the CNI plugins
    are (kubernetes_network's wrappers, which run them in the node namespace)."""
    root = node.dir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    off = ", ".join(f'"io.containerd.snapshotter.v1.{name}"' for name in _SNAPSHOTTERS_OFF)
    (root / "certs.d").mkdir(parents=True, exist_ok=True)
    node.containerd_address.parent.mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    config.write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = [{off}]

[grpc]
  address = "{node.containerd_address}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
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
        BinaryName = "{need('runc')}"
  [{cri}.cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
  [{cri}.registry]
    config_path = "{root / 'certs.d'}"
""")
    return [need(NAME), "--config", str(config)]


def healthy(node: Node) -> bool:
    if not node.containerd_address.is_socket():
        return False
    return subprocess.run([tool("ctr") or "ctr", "--address", str(node.containerd_address), "version"], check=False,
                          capture_output=True, timeout=10).returncode == 0


def ctr(node: Node, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """ctr against this containerd, in the CRI namespace k8s.io; StackError when check and it fails."""
    argv = [tool("ctr") or "ctr", "--address", str(node.containerd_address), "-n", NAMESPACE, *args]
    result = subprocess.run(argv, check=False, text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise StackError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes | Path | None, mode: int = 0o644,
                kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if isinstance(data, Path):
        info.size = data.stat().st_size
        with open(data, "rb") as src:
            tar.addfile(info, src)
        return
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


# (path in the image, content: bytes, a file to copy, or None for a directory or symlink, mode, tar type, link target)
ImageFile = tuple[str, bytes | Path | None, int, bytes, str]


def import_scratch_image(node: Node, ref: str, files: list[ImageFile], config: dict[str, object]) -> bool:
    """A one-layer image made of `files` (FROM scratch), imported as `ref` unless containerd has that name already
    (the name must change with the content: a version in the tag). `config`: the image config's `config` (Entrypoint,
    Cmd, ...). True when imported."""
    if ctr(node, "images", "ls", "-q", f"name=={ref}").stdout.strip():
        return False
    tmp = node.dir / "tmp" / f"image-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        layer = tmp / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            for name, data, mode, kind, link in files:
                _tar_member(tar, name, data, mode, kind, link)
        digest = hashlib.sha256()
        with open(layer, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        image_config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest.hexdigest()]},
        }, sort_keys=True).encode()
        config_name = hashlib.sha256(image_config).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
        archive = tmp / "image.tar"
        with tarfile.open(archive, "w") as tar:
            _tar_member(tar, "layer.tar", layer)
            _tar_member(tar, config_name, image_config)
            _tar_member(tar, "manifest.json", json.dumps(manifest).encode())
        ctr(node, "images", "import", str(archive))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def import_sandbox_image(node: Node) -> None:
    """SANDBOX_IMAGE, unless containerd has it: /bin/busybox running a shell that waits for a signal."""
    import_scratch_image(node, SANDBOX_IMAGE, [
        ("bin", None, 0o755, tarfile.DIRTYPE, ""),
        ("bin/busybox", Path("/bin/busybox"), 0o755, tarfile.REGTYPE, ""),
        ("bin/sh", None, 0o777, tarfile.SYMTYPE, "busybox"),
    ], {"Entrypoint": ["/bin/sh", "-c",
                       "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait $!; done"]})


def image_id(node: Node, ref: str) -> str | None:
    """The image id (config digest, hex) containerd has for `ref`, or None."""
    listing = ctr(node, "images", "ls", f"name=={ref}", check=False)
    lines = listing.stdout.splitlines()[1:]
    if listing.returncode != 0 or not lines:
        return None
    blob = json.loads(ctr(node, "content", "get", lines[0].split()[2]).stdout)
    if "manifests" in blob:  # an index: the linux/amd64 (or first) manifest
        manifests = blob["manifests"]
        pick = next((m for m in manifests if m.get("platform", {}).get("architecture") == "amd64"), manifests[0])
        blob = json.loads(ctr(node, "content", "get", pick["digest"]).stdout)
    return str(blob["config"]["digest"]).removeprefix("sha256:")


def import_image(node: Node, ref: str) -> bool:
    """Copy an image of podman's storage in under the same name. Skipped (False) when containerd already has that
    name with the same image id (config digest); True when imported."""
    podman = shutil.which("podman")
    if podman is None:
        raise MissingToolsError(["podman"])
    inspect = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", ref], check=False, text=True,
                             capture_output=True)
    if inspect.returncode != 0:
        raise StackError(f"podman has no image {ref}: {inspect.stderr.strip()}")
    want = inspect.stdout.strip().removeprefix("sha256:")
    if image_id(node, ref) == want:
        return False
    archive = node.dir / "tmp" / f"image-{secrets.token_hex(4)}.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([podman, "save", "--format", "docker-archive", "-o", str(archive), ref], check=True,
                       capture_output=True, text=True)
        ctr(node, "images", "import", "--no-unpack=false", str(archive))
    except subprocess.CalledProcessError as err:
        raise StackError(f"podman save {ref} failed: {err.stderr.strip()}") from None
    finally:
        archive.unlink(missing_ok=True)
    if (got := image_id(node, ref)) != want:
        raise StackError(f"imported {ref} into containerd, but it has image id {got}, podman {want}")
    return True


def trust_registry(node: Node, host: str, ca_file: Path | None = None, plain_http: bool = False) -> None:
    """Pulls from `host` (HOST:PORT) over HTTPS trusting `ca_file`, or over plain HTTP."""
    server = f"{'http' if plain_http else 'https'}://{host}"
    lines = [f'server = "{server}"', "", f'[host."{server}"]', '  capabilities = ["pull", "resolve"]']
    if ca_file is not None:
        lines.append(f'  ca = "{Path(ca_file).resolve()}"')
    path = node.dir / "containerd" / "certs.d" / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def tasks(node: Node, all_states: bool = False) -> list[str]:
    """The ids of the running tasks (containers), of all of them with all_states."""
    if not node.containerd_address.is_socket():
        return []
    try:
        out = ctr(node, "tasks", "ls", check=False, timeout=15).stdout.splitlines()[1:]
    except subprocess.TimeoutExpired:
        return []
    return [f[0] for f in (line.split() for line in out) if f and (all_states or f[-1] == "RUNNING")]


def kill_tasks(node: Node) -> None:
    """SIGKILL every task and delete it (what the kubelet left, before containerd stops)."""
    for task in tasks(node, all_states=True):
        ctr(node, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False, timeout=30)
    for task in tasks(node, all_states=True):
        ctr(node, "tasks", "delete", "--force", task, check=False, timeout=30)


def kill_shims(node: Node) -> None:
    address = str(node.containerd_address)
    for pid in procs._pids():
        cmd = procs._cmdline(pid)
        if "containerd-shim" in cmd and f"-address {address} " in cmd + " ":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
