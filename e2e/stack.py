"""The real local test stack: MinIO, two OCI registries, MariaDB, the Model Registry server and a token proxy.

Everything runs as plain processes bound to 127.0.0.1 on free ports picked at ``up`` time; data, logs, secrets
and the state file (``stack.json``) live under one state directory. Tools come from ``e2e/install-tools.sh``
at the versions pinned in ``e2e/versions.env``.

Components (name: what, health check)
    minio           MinIO S3 server, bucket ``models`` created on up        GET /minio/health/live = 200
    registry        distribution v3 registry, plain HTTP, delete enabled   GET /v2/ = 200
    registry_tls    second registry: TLS (own CA in state dir), basic auth  GET /v2/ = 401 without credentials
    mariadb         MariaDB 10.11, own datadir, database and user ``mr``    MySQL handshake on its port
    model_registry  Kubeflow Model Registry server v0.3.0 (v1alpha3 API)   GET /readyz/health = 200
    mr_token_proxy  e2e.mrproxy in front of it requiring a bearer token     401 without the token
    oidc            e2e.oidc issuer (started before MinIO, which trusts it  GET discovery = 200
                    for AssumeRoleWithWebIdentity); kept out of status()

``env()`` / ``python -m e2e.stack env`` give (as ``export K='V'`` lines on the CLI):
    MODELSYNC_STACK_DIR     the state directory
    MINIO_ENDPOINT          http://127.0.0.1:P
    MINIO_ACCESS_KEY, MINIO_SECRET_KEY, MINIO_BUCKET (= models)
    OCI_REGISTRY            127.0.0.1:P (plain HTTP)
    OCI_TLS_REGISTRY        127.0.0.1:P (HTTPS, basic auth)
    OCI_TLS_CA              path of the CA certificate that signed its server certificate
    OCI_TLS_USERNAME, OCI_TLS_PASSWORD
    MR_ADDRESS              http://127.0.0.1
    MR_PORT, MR_URL         the Model Registry server itself (no token checked)
    MR_TOKEN_PORT, MR_TOKEN_URL, MR_TOKEN   the token-checking proxy and its token
    MARIADB_PORT
    OIDC_ISSUER_URL         http://127.0.0.1:P, the issuer MinIO trusts (role policy readwrite)
    OIDC_SIGNING_KEY        its RSA key (PEM, 0600): mint tokens with
                            ``e2e.oidc.write_token(path, OIDC_SIGNING_KEY, OIDC_ISSUER_URL, audience=...)``
                            or ``StackEnv.write_oidc_token(path, ...)``
    OIDC_STS_AUDIENCE       sts.amazonaws.com: the audience MinIO accepts (its OpenID client id)
    OIDC_ROLE_ARN           the role ARN MinIO gives web-identity callers (AWS_ROLE_ARN)

CLI::

    python -m e2e.stack up|down|status|env [--state-dir DIR]
        default DIR: ${MODELSYNC_STACK_DIR:-~/.cache/modelsync/stack}
        up --no-install     skip e2e/install-tools.sh
        down --purge        also delete the state directory (data, secrets)

Secrets never go on a command line: MinIO's and the Model Registry's via environment / a 0600 config file,
MariaDB's through stdin, passwords in 0600 files under ``DIR/secrets``. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from e2e import procs

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO_ROOT / "e2e" / "install-tools.sh"
DEFAULT_STATE_DIR = Path(os.environ.get("MODELSYNC_STACK_DIR") or Path.home() / ".cache/modelsync/stack")

BUCKET = "models"
TLS_USERNAME = "modelsync"
COMPONENTS = ("minio", "registry", "registry_tls", "mariadb", "model_registry", "mr_token_proxy")
AUXILIARY = ("oidc",)  # started, checked by is_up() and stopped like a component, not listed by status()
OIDC_CLIENT_ID = "sts.amazonaws.com"  # = e2e.oidc.STS_AUDIENCE (not imported: that module needs cryptography)
# binaries each component needs; a missing one means "not installed" (skip locally, fail in CI)
TOOLS = {
    "minio": ("minio", "aws"),
    "registry": ("registry",),
    "registry_tls": ("registry", "openssl", "htpasswd"),
    "mariadb": ("mariadbd", "mariadb-install-db", "mariadb"),
    "model_registry": ("model-registry",),
}
START_TIMEOUT = 120.0  # seconds; the Model Registry runs its migrations before answering


class StackError(Exception):
    """The stack could not be brought up, or is not up."""


class MissingToolsError(StackError):
    def __init__(self, missing: dict[str, list[str]]):
        self.missing = missing
        names = ", ".join(f"{tool} (for {', '.join(comps)})" for tool, comps in missing.items())
        super().__init__(f"not installed: {names}; run e2e/install-tools.sh")


def pinned_versions() -> dict[str, str]:
    """The KEY=VALUE pins of e2e/versions.env."""
    lines = (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))


def find_tool(name: str) -> str | None:
    """Locate a binary: GOBIN / ~/go/bin first (the pinned Go builds), then PATH, then sbin (mariadbd)."""
    gobin = os.environ.get("GOBIN") or str(Path.home() / "go" / "bin")
    path = os.pathsep.join([gobin, os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=path)


def missing_tools() -> dict[str, list[str]]:
    """{tool: [components needing it]} for every tool that is not installed."""
    missing: dict[str, list[str]] = {}
    for comp, tools in TOOLS.items():
        for tool in tools:
            if find_tool(tool) is None:
                missing.setdefault(tool, []).append(comp)
    return missing


def free_ports(count: int) -> list[int]:
    """Ask the kernel for `count` distinct free ports (all sockets held open together so none repeats)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_status(url: str, context: ssl.SSLContext | None = None, headers: dict | None = None) -> int | None:
    """Status of a GET, or None when nothing answers. Never through an HTTP proxy from the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ssl.SSLError):
        return None


def mysql_greets(port: int) -> bool:
    """MariaDB speaks first: a handshake packet with protocol version 10 means it accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return len(packet := s.recv(64)) > 4 and packet[4] == 10
    except OSError:
        return False


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class StackEnv:
    """What a test needs to reach the stack: `.env` (the dict of `LocalStack.env()`) and each of its keys as a
    lower-case attribute (`.minio_endpoint`, `.oci_tls_ca`, `.mr_url`, `.mr_token`, ...)."""

    env: dict[str, str]

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or name == "env":  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        try:
            return self.env[name.upper()]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def state_dir(self) -> Path:
        return Path(self.env["MODELSYNC_STACK_DIR"])

    def write_oidc_token(self, path: Path, **claims_options) -> Path:
        """A service-account token from the stack's OIDC issuer, written to `path` (0600); the options of
        e2e.oidc.service_account_claims (audience, namespace, service_account, lifetime, extra)."""
        from e2e.oidc import write_token
        return write_token(path, Path(self.env["OIDC_SIGNING_KEY"]), self.env["OIDC_ISSUER_URL"], **claims_options)


class LocalStack:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir).resolve()
        self.state_file = self.dir / "stack.json"
        self._state: dict = {}
        self._procs: dict[str, subprocess.Popen] = {}  # children of this process, so we can reap them
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public API

    def up(self) -> bool:
        """Start everything; True if started, False if a healthy stack was already running (reused)."""
        if missing := missing_tools():
            raise MissingToolsError(missing)
        with self._exclusive():
            if self.is_up():
                self._state = self._load()
                return False
            self._down()
            self._start_all()
        return True

    def down(self, purge: bool = False) -> None:
        """Stop every process the state file (or this object) knows, whole process groups, then wait for them."""
        if not self.dir.exists():
            return
        with self._exclusive():
            self._down()
            if purge and self.dir.exists():
                shutil.rmtree(self.dir)

    @contextlib.contextmanager
    def _exclusive(self):
        """Serialise up/down on one state dir (two pytest sessions, or a test run and the CLI)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start_all(self) -> None:
        self._prepare()
        chains = (self._up_minio, self._up_registry, self._up_registry_tls, self._up_model_registry,
                  self._up_token_proxy)
        with concurrent.futures.ThreadPoolExecutor(len(chains)) as pool:
            errors = [f.exception() for f in [pool.submit(c) for c in chains]]
        if failed := [e for e in errors if e is not None]:
            self._down()
            raise StackError("; ".join(str(e) for e in failed))
        self._save(up=True)

    def _down(self) -> None:
        state = self._load() or self._state
        for name, info in reversed(list(state.get("components", {}).items())):
            if info.get("pid"):
                self._stop(name, info["pid"], info.get("match", ""))
        self._procs.clear()
        self._state = {}
        if self.state_file.exists():
            self.state_file.unlink()

    def is_up(self) -> bool:
        status = self.status()
        return bool(status) and all(c["alive"] and c["healthy"] for c in status.values()) and self._auxiliary_up()

    def _auxiliary_up(self) -> bool:
        """The auxiliary processes are there and answer (a stack started before they existed is not up)."""
        comps = self._load().get("components", {})
        return all(name in comps and procs.alive(comps[name]["pid"], comps[name]["match"])
                   and self._healthy(name, comps[name]["port"]) for name in AUXILIARY)

    def status(self) -> dict[str, dict]:
        """{component: {port, pid, alive, healthy}}; empty when no state file."""
        state = self._load()
        comps = state.get("components", {}) if state.get("up") else {}
        result = {}
        for name in COMPONENTS:
            info = comps.get(name)
            if info is None:
                continue
            alive = procs.alive(info["pid"], info["match"])
            result[name] = {"port": info["port"], "pid": info["pid"], "alive": alive,
                            "healthy": alive and self._healthy(name, info["port"])}
        return result

    def env(self) -> dict[str, str]:
        state = self._state if self._state.get("up") else self._load()
        if not state.get("up"):
            raise StackError(f"stack not up (no {self.state_file})")
        port = {name: info["port"] for name, info in state["components"].items()}
        sec = self._secret
        return {
            "MODELSYNC_STACK_DIR": str(self.dir),
            "MINIO_ENDPOINT": f"http://127.0.0.1:{port['minio']}",
            "MINIO_ACCESS_KEY": self._minio_user(),
            "MINIO_SECRET_KEY": sec("minio-password"),
            "MINIO_BUCKET": BUCKET,
            "OCI_REGISTRY": f"127.0.0.1:{port['registry']}",
            "OCI_TLS_REGISTRY": f"127.0.0.1:{port['registry_tls']}",
            "OCI_TLS_CA": str(self.dir / "tls" / "ca.crt"),
            "OCI_TLS_USERNAME": TLS_USERNAME,
            "OCI_TLS_PASSWORD": sec("registry-tls-password"),
            "MR_ADDRESS": "http://127.0.0.1",
            "MR_PORT": str(port["model_registry"]),
            "MR_URL": f"http://127.0.0.1:{port['model_registry']}",
            "MR_TOKEN_PORT": str(port["mr_token_proxy"]),
            "MR_TOKEN_URL": f"http://127.0.0.1:{port['mr_token_proxy']}",
            "MR_TOKEN": sec("mr-token"),
            "MARIADB_PORT": str(port["mariadb"]),
            "OIDC_ISSUER_URL": f"http://127.0.0.1:{port['oidc']}",
            "OIDC_SIGNING_KEY": str(self._oidc_key()),
            "OIDC_STS_AUDIENCE": OIDC_CLIENT_ID,
            "OIDC_ROLE_ARN": oidc_role_arn(OIDC_CLIENT_ID),
        }

    def info(self) -> StackEnv:
        return StackEnv(self.env())

    # ---------------------------------------------------------------- state, secrets, processes

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **extra) -> None:
        with self._lock:
            self._state.update(extra)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._state, indent=2))
            tmp.replace(self.state_file)

    def _secret(self, name: str, nbytes: int = 18) -> str:
        """A random secret kept in DIR/secrets/NAME (0600), created on first use and stable afterwards."""
        path = self.dir / "secrets" / name
        with self._lock:
            if not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _write_private(path, secrets.token_hex(nbytes))
            return path.read_text().strip()

    def _minio_user(self) -> str:
        return self._secret("minio-user", 8)  # MinIO caps access keys at 20 characters

    def _prepare(self) -> None:
        for sub in ("logs", "secrets", "minio", "registry", "registry_tls", "tls", "mariadb", "mr"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "secrets", 0o700)
        names = list(COMPONENTS) + list(AUXILIARY) + ["minio_console"]
        self._ports = dict(zip(names, free_ports(len(names))))
        self._state = {"up": False, "started_at": time.time(), "components": {}}
        self._save()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, match: str = "") -> None:
        """Start a component in its own session (so `down` can kill its whole process group) and record it."""
        log = open(self.dir / "logs" / f"{name}.log", "ab")
        with log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, cwd=self.dir, start_new_session=True)
        self._procs[name] = proc
        with self._lock:
            self._state["components"][name] = {"pid": proc.pid, "port": self._ports[name],
                                               "match": match or Path(argv[0]).name}
        self._save()

    def _wait_healthy(self, name: str, timeout: float = START_TIMEOUT) -> None:
        port, proc = self._ports[name], self._procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy(name, port):
                return
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}:\n{_log_tail(self.dir / 'logs' / f'{name}.log')}")
            time.sleep(0.1)
        raise StackError(f"{name} not healthy after {timeout:.0f}s:\n{_log_tail(self.dir / 'logs' / f'{name}.log')}")

    def _healthy(self, name: str, port: int) -> bool:
        base = f"http://127.0.0.1:{port}"
        if name == "minio":
            return http_status(f"{base}/minio/health/live") == 200
        if name == "registry":
            return http_status(f"{base}/v2/") == 200
        if name == "registry_tls":
            ctx = ssl.create_default_context(cafile=str(self.dir / "tls" / "ca.crt"))
            return http_status(f"https://127.0.0.1:{port}/v2/", context=ctx) == 401
        if name == "mariadb":
            return mysql_greets(port)
        if name == "model_registry":
            return http_status(f"{base}/readyz/health") == 200
        if name == "mr_token_proxy":
            return http_status(f"{base}/readyz/health") == 401
        if name == "oidc":
            return http_status(f"{base}/.well-known/openid-configuration") == 200
        raise ValueError(name)

    def _stop(self, name: str, pid: int, match: str, timeout: float = 10.0) -> None:
        proc = self._procs.get(name)
        if proc is None and not procs.alive(pid, match):
            return
        procs.stop_group(pid, proc, timeout)

    # ---------------------------------------------------------------- components

    def _oidc_key(self) -> Path:
        return self.dir / "secrets" / "oidc-signing-key.pem"  # created by e2e.oidc on first start, then kept

    def _up_oidc(self) -> None:
        self._spawn("oidc", [sys.executable, "-m", "e2e.oidc", "serve", "--key", str(self._oidc_key()),
                             "--port", str(self._ports["oidc"])], {"PYTHONPATH": str(REPO_ROOT)}, match="e2e.oidc")
        self._wait_healthy("oidc")

    def _up_minio(self) -> None:
        self._up_oidc()  # MinIO reads the issuer's discovery and keys when it starts
        data = self.dir / "minio"
        env = {"MINIO_ROOT_USER": self._minio_user(),
               "MINIO_ROOT_PASSWORD": self._secret("minio-password"),
               "MINIO_BROWSER": "off", "MINIO_UPDATE": "off",
               # AssumeRoleWithWebIdentity for tokens of the stack's issuer with aud = the client id
               "MINIO_IDENTITY_OPENID_CONFIG_URL": f"http://127.0.0.1:{self._ports['oidc']}"
                                                   "/.well-known/openid-configuration",
               "MINIO_IDENTITY_OPENID_CLIENT_ID": OIDC_CLIENT_ID,
               "MINIO_IDENTITY_OPENID_ROLE_POLICY": "readwrite"}
        self._spawn("minio", [find_tool("minio"), "server", str(data / "data"), "--quiet",
                              "--address", f"127.0.0.1:{self._ports['minio']}",
                              "--console-address", f"127.0.0.1:{self._ports['minio_console']}",
                              "--certs-dir", str(data / "certs")], env)
        self._wait_healthy("minio")
        self._create_bucket()

    def _create_bucket(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self._minio_user(),
               "AWS_SECRET_ACCESS_KEY": self._secret("minio-password"), "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        run = subprocess.run([find_tool("aws"), "s3api", "create-bucket", "--bucket", BUCKET,
                              "--endpoint-url", f"http://127.0.0.1:{self._ports['minio']}"],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0 and "BucketAlreadyOwnedByYou" not in run.stderr:
            raise StackError(f"create bucket {BUCKET}: {run.stderr.strip()}")

    def _registry_config(self, name: str, extra: str = "") -> Path:
        root = self.dir / name
        config = root / "config.yml"
        # the http secret signs upload state; fixed per state dir so restarts keep uploads resumable
        _write_private(config, f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self._ports[name]}
  secret: {self._secret(name + '-http-secret')}
{extra}""")
        return config

    def _up_registry(self) -> None:
        config = self._registry_config("registry")
        # v3 exports OpenTelemetry traces by default; there is no collector here
        self._spawn("registry", [find_tool("registry"), "serve", str(config)], {"OTEL_TRACES_EXPORTER": "none"})
        self._wait_healthy("registry")

    def _up_registry_tls(self) -> None:
        tls = self.dir / "tls"
        self._make_certs(tls)
        htpasswd = self.dir / "registry_tls" / "htpasswd"
        if not htpasswd.exists():
            # -i: password from stdin, so it never shows in argv
            subprocess.run([find_tool("htpasswd"), "-B", "-i", "-c", str(htpasswd), TLS_USERNAME],
                           input=self._secret("registry-tls-password"), text=True, check=True,
                           capture_output=True)
        config = self._registry_config("registry_tls", f"""  tls:
    certificate: {tls / 'server.crt'}
    key: {tls / 'server.key'}
auth:
  htpasswd:
    realm: modelsync
    path: {htpasswd}
""")
        self._spawn("registry_tls", [find_tool("registry"), "serve", str(config)], {"OTEL_TRACES_EXPORTER": "none"})
        self._wait_healthy("registry_tls")

    def _make_certs(self, tls: Path) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it (kept per state dir)."""
        if (tls / "server.crt").exists():
            return
        openssl = find_tool("openssl")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (tls / "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=modelsync local test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "server.ext", "-out", "server.crt"],
        ]
        for argv in steps:
            subprocess.run(argv, cwd=tls, check=True, capture_output=True)
        for key in ("ca.key", "server.key"):
            os.chmod(tls / key, 0o600)

    def _up_mariadb(self) -> None:
        root = self.dir / "mariadb"
        datadir, sock = root / "data", self._socket_path(root)
        as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without saying so
        if not (datadir / "mysql").is_dir():
            # socket auth: the OS user running the stack is MariaDB's admin, with no password anywhere
            subprocess.run([find_tool("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", *as_root,
                            "--auth-root-authentication-method=socket",
                            f"--auth-root-socket-user={getpass.getuser()}", "--skip-test-db"],
                           check=True, capture_output=True)
        self._spawn("mariadb", [find_tool("mariadbd"), "--no-defaults", f"--datadir={datadir}", *as_root,
                                f"--port={self._ports['mariadb']}", "--bind-address=127.0.0.1",
                                f"--socket={sock}", f"--pid-file={root / 'mariadbd.pid'}",
                                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                                "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2",
                                "--skip-innodb-doublewrite", "--log-warnings=1"])  # 1: no note per health probe
        self._wait_healthy("mariadb")
        self._create_mr_database(sock)

    def _socket_path(self, root: Path) -> Path:
        # unix socket paths are limited to 108 bytes; deep temporary dirs can exceed that
        sock = root / "mariadb.sock"
        return sock if len(str(sock)) < 100 else Path("/tmp") / f"modelsync-mariadb-{self._ports['mariadb']}.sock"

    def _create_mr_database(self, sock: Path) -> None:
        pw = self._secret("mariadb-mr-password")
        # both hosts: else the anonymous ''@'localhost' row shadows 'mr'@'%' for local connections
        sql = "CREATE DATABASE IF NOT EXISTS mr CHARACTER SET utf8mb4;\n" + "".join(
            f"CREATE USER IF NOT EXISTS 'mr'@'{h}'; ALTER USER 'mr'@'{h}' IDENTIFIED BY '{pw}';\n"
            f"GRANT ALL PRIVILEGES ON mr.* TO 'mr'@'{h}';\n" for h in ("localhost", "127.0.0.1"))
        run = subprocess.run([find_tool("mariadb"), "--no-defaults", "--protocol=socket", f"--socket={sock}",
                              "-u", getpass.getuser()], input=sql, text=True, capture_output=True)
        if run.returncode != 0:
            raise StackError(f"mariadb: creating database mr: {run.stderr.strip()}")
        # a client defaults-file for people and tests: `mariadb --defaults-file=DIR/mariadb/mr.cnf mr`
        _write_private(self.dir / "mariadb" / "mr.cnf", f"[client]\nuser=mr\npassword={pw}\nhost=127.0.0.1\n"
                                                         f"port={self._ports['mariadb']}\ndatabase=mr\n")

    def _up_model_registry(self) -> None:
        self._up_mariadb()
        pw = self._secret("mariadb-mr-password")
        dsn = f"mr:{pw}@tcp(127.0.0.1:{self._ports['mariadb']})/mr?charset=utf8mb4&parseTime=True"
        # the DSN holds a password: a 0600 config file instead of argv (also keeps ~/.model-registry.yaml out)
        config = self.dir / "mr" / "config.yaml"
        _write_private(config, f"embedmd-database-dsn: {json.dumps(dsn)}\n")
        self._spawn("model_registry", [find_tool("model-registry"), "proxy", "--config", str(config),
                                       "--hostname", "127.0.0.1", "--port", str(self._ports["model_registry"]),
                                       "--datastore-type", "embedmd", "--embedmd-database-type", "mysql"])
        self._wait_healthy("model_registry")

    def _up_token_proxy(self) -> None:
        self._secret("mr-token", 24)
        self._spawn("mr_token_proxy", [sys.executable, "-m", "e2e.mrproxy", "--quiet",
                                       "--listen-port", str(self._ports["mr_token_proxy"]),
                                       "--upstream", f"http://127.0.0.1:{self._ports['model_registry']}",
                                       "--require-token", str(self.dir / "secrets" / "mr-token")],
                    {"PYTHONPATH": str(REPO_ROOT)}, match="e2e.mrproxy")
        self._wait_healthy("mr_token_proxy")


def oidc_role_arn(client_id: str) -> str:
    """The role ARN MinIO gives an OpenID provider in role-policy mode (it logs it at start): stable per client id."""
    digest = base64.urlsafe_b64encode(hashlib.sha1(client_id.encode()).digest()).rstrip(b"=").decode()
    return f"arn:minio:iam:::role/{digest}"


# -------------------------------------------------------------------- CLI


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _cmd_up(stack: LocalStack, args: argparse.Namespace) -> int:
    if not args.no_install:
        subprocess.run([str(INSTALL_SCRIPT)], check=True)
    t0 = time.monotonic()
    started = stack.up()
    verb = "started" if started else "already up, reused"
    print(f"stack {verb} in {time.monotonic() - t0:.1f}s: {stack.dir}")
    print(f"  eval \"$(bin/modelsync-stack env --state-dir {stack.dir})\"")
    return 0


def _cmd_down(stack: LocalStack, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    stack.down(purge=args.purge)
    print(f"stack down in {time.monotonic() - t0:.1f}s{' (purged)' if args.purge else ''}")
    return 0


def _cmd_status(stack: LocalStack, args: argparse.Namespace) -> int:
    status = stack.status()
    if not status:
        print(f"not up ({stack.dir})")
        return 1
    for name, st in status.items():
        health = "healthy" if st["healthy"] else ("UNHEALTHY" if st["alive"] else "DEAD")
        print(f"{name:15} 127.0.0.1:{st['port']:<6} pid {st['pid']:<8} {health}")
    return 0 if all(s["healthy"] for s in status.values()) else 1


def _cmd_env(stack: LocalStack, args: argparse.Namespace) -> int:
    for key, value in stack.env().items():
        print(f"export {key}={_shell_quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.stack", description="The modelsync local test stack.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) the stack")
    up.add_argument("--no-install", action="store_true", help="do not run e2e/install-tools.sh first")
    down = sub.add_parser("down", help="stop everything the stack started")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    sub.add_parser("status", help="each component with port and health")
    sub.add_parser("env", help="export lines for a shell")
    # accept --state-dir after the subcommand too
    for p in sub.choices.values():
        p.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stack = LocalStack(args.state_dir)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "env": _cmd_env}[args.command]
    try:
        return handler(stack, args)
    except StackError as err:
        print(f"e2e.stack: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
