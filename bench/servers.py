"""MinIO and a distribution registry of one bench run's own, started from the stack's binaries, their data under the
run's temporary directory (gone with it), bound to one address: 127.0.0.1 on free ports for a loopback run, the
namespace's address for the shaped link (shaped.py, which wraps each command in `ip netns exec`).

Why not the stack's: a run never writes into them, so runs do not slow as the stack fills with earlier runs' images
and objects, and leave nothing behind. With 15 GB of earlier runs in the stack's registry and MinIO, S3 -> S3
(8 x 128 MiB, loopback, median of 3) took 15.9 s; on a stack made anew 13.3 s. The Model Registry stays the stack's
(a few small calls).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from e2e.component import find_tool, free_ports, http_status, write_private
from e2e.procs import spawn, stop_group
from e2e.registry import SERVE_ENV, config_yaml
from modelsync.clients import aws
from modelsync.locations import S3Location
from modelsync.secret import Secret

BUCKET = "models"


class ServerError(RuntimeError):
    pass


class OwnServers:
    """The run's MinIO (and its bucket) and registry (plain HTTP), and any other server spawn() starts, each in a
    session of its own, stopped by close(); a context manager. Without ports, free ones on 127.0.0.1."""

    def __init__(self, work: Path, addr: str, ports: dict[str, int] | None = None,
                 wrap: Callable[[list[str]], list[str]] = list):
        self.work, self.addr, self.wrap = work, addr, wrap
        self.ports = ports or dict(zip(("minio", "console", "registry"), free_ports(3), strict=True))
        self.user, self.password = secrets.token_hex(8), secrets.token_hex(18)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> OwnServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        minio, registry = find_tool("minio"), find_tool("registry")
        if minio is None or registry is None:
            raise ServerError("minio or registry not installed (make tools-base)")
        data = self.work / "minio"
        self.spawn("minio", [minio, "server", str(data / "data"), "--quiet",
                             "--address", f"{self.addr}:{self.ports['minio']}",
                             "--console-address", f"{self.addr}:{self.ports['console']}",
                             "--certs-dir", str(data / "certs")],
                   {"MINIO_ROOT_USER": self.user, "MINIO_ROOT_PASSWORD": self.password, "MINIO_BROWSER": "off",
                    "MINIO_UPDATE": "off"})
        config = self.work / "registry" / "config.yml"
        write_private(config, config_yaml(self.work / "registry", self.ports["registry"], secrets.token_hex(16),
                                          level="warn", host=self.addr))
        self.spawn("registry", [registry, "serve", str(config)], SERVE_ENV)
        self.wait(f"{self.minio_url}/minio/health/live", 200, "minio")
        self.wait(f"http://{self.registry}/v2/", 200, "registry")
        aws.client(self.s3("")).create_bucket(Bucket=BUCKET)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """A server (wrap(argv) execs it: the pid is the server's) in its own session, its output in work/NAME.log."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs[name] = spawn(self.wrap(argv), env, self.work, self.work / f"{name}.log")

    def wait(self, url: str, status: int, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_status(url) == status:
                return
            if self.procs[name].poll() is not None:
                raise ServerError(f"{name} exited ({self.procs[name].returncode}); see {self.work / name}.log")
            time.sleep(0.1)
        raise ServerError(f"{name} not answering at {url} after {timeout:.0f} s")

    def close(self) -> None:
        """Stop the servers: SIGTERM to each one's group, then SIGKILL after 10 s."""
        for proc in self.procs.values():
            stop_group(proc.pid, proc)
        self.procs.clear()

    @property
    def minio_url(self) -> str:
        return f"http://{self.addr}:{self.ports['minio']}"

    @property
    def registry(self) -> str:
        return f"{self.addr}:{self.ports['registry']}"

    def s3(self, key: str) -> S3Location:
        return S3Location(bucket=BUCKET, key=key, endpoint=self.minio_url, access_key_id=Secret(self.user),
                          secret_access_key=Secret(self.password))

    def env(self) -> dict[str, str]:
        """The stack env's MinIO and registry keys, pointing at these servers."""
        return {"MINIO_ENDPOINT": self.minio_url, "MINIO_ACCESS_KEY": self.user, "MINIO_SECRET_KEY": self.password,
                "MINIO_BUCKET": BUCKET, "OCI_REGISTRY": self.registry}

    def server_pids(self) -> list[int]:
        return [self.procs[name].pid for name in ("minio", "registry")]

