"""The real local test stack: MinIO, three OCI registries, MariaDB, the Model Registry server and a token proxy.

Everything runs as plain processes bound to 127.0.0.1 on free ports picked at ``up`` time; data, logs, secrets
and the state file (``stack.json``) live under one state directory. Tools come from ``e2e/install-tools.sh``
at the versions pinned in ``e2e/versions.env``.

This module only composes the components; each one's config files, command line, health check and env variables
are in its own module (the interface is in e2e/component.py):

    component       module                  started
    oidc            e2e/oidc_issuer.py      first: MinIO trusts it (auxiliary: kept out of status())
    minio           e2e/minio.py            after oidc
    registry        e2e/registry.py
    registry_tls    e2e/registry.py
    token_auth      e2e/registry.py         after registry_tls (its certificates; e2e/token_auth.py serves)
    registry_token  e2e/registry.py         after token_auth
    mariadb         e2e/mariadb.py
    model_registry  e2e/model_registry.py   after mariadb
    mr_token_proxy  e2e/model_registry.py

    group sigstore  e2e/sigstore.py         only when asked (``up(groups=("sigstore",))``, the CLI's ``up``):
                                            Fulcio, TesseraCT, the TSA, Rekor v2, Rekor v1 (Trillian on
                                            a database of MariaDB), a TUF repository

Independent chains start in parallel. ``env()`` / ``python -m e2e.stack env`` give (as ``export K='V'`` lines on
the CLI) ``MODELSYNC_STACK_DIR`` (the state directory), then MinIO's, the registries', the Model Registry's,
MariaDB's and the issuer's variables (each listed in its module), then those of each group that is up
(``STACK_SIGSTORE_*``, e2e/sigstore.py); ``StackEnv`` has them as attributes.

Groups: a set of components started after the base stack, on demand, into the same state file (``up`` with the
group reuses a running base stack and adds the group; ``down`` stops everything). The sigstore servers are one:
they start in seconds but are needed only by signing tests, so the pytest ``stack`` fixture leaves them out and the
``sigstore_stack`` fixture adds them.

CLI::

    python -m e2e.stack up|down|status|env [--state-dir DIR]
        default DIR: ${MODELSYNC_STACK_DIR:-~/.cache/modelsync/stack}
        up --no-install     skip e2e/install-tools.sh
        up --no-sigstore    leave out the sigstore group (started by default on the CLI)
        down --purge        also delete the state directory (data, secrets)

Secrets never go on a command line: MinIO's and the Model Registry's via environment / a 0600 config file,
MariaDB's through stdin, passwords in 0600 files under ``DIR/secrets``. Standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from e2e import mariadb, minio, model_registry, oidc_issuer, procs, registry, sigstore
from e2e.component import REPO_ROOT, Site, StackError, find_tool, free_ports, write_private

INSTALL_SCRIPT = REPO_ROOT / "e2e" / "install-tools.sh"
DEFAULT_STATE_DIR = Path(os.environ.get("MODELSYNC_STACK_DIR") or Path.home() / ".cache/modelsync/stack")

COMPONENTS = ("minio", "registry", "registry_tls", "token_auth", "registry_token", "mariadb", "model_registry",
              "mr_token_proxy")
AUXILIARY = ("oidc",)  # started, checked by is_up() and stopped like a component, not listed by status()
MODULES = (oidc_issuer, minio, registry, mariadb, model_registry)
# component groups started only when asked, after the base stack (each module's start() starts all of it)
GROUPS: dict[str, ModuleType] = {"sigstore": sigstore}
OWNER: dict[str, ModuleType] = {name: m for m in (*MODULES, *GROUPS.values())
                                for name in m.COMPONENTS}  # whose healthy() to ask
# binaries each component needs; a missing one means "not installed" (skip locally, fail in CI)
TOOLS: dict[str, tuple[str, ...]] = {comp: tools for m in MODULES for comp, tools in m.TOOLS.items()}
GROUP_TOOLS: dict[str, dict[str, tuple[str, ...]]] = {g: dict(m.TOOLS) for g, m in GROUPS.items()}
# start order: the steps of one chain run in turn, the chains in parallel
CHAINS: tuple[tuple[Callable[[Site], None], ...], ...] = (
    (oidc_issuer.start, minio.start),  # MinIO reads the issuer's discovery and keys when it starts
    (registry.start_plain,),
    (registry.start_tls, registry.start_token),  # the token registry serves registry_tls's certificate
    (mariadb.start, model_registry.start_server),
    (model_registry.start_token_proxy,),
)
# what env() gives, in this order, after MODELSYNC_STACK_DIR
ENV_PARTS = (minio.env, registry.env, model_registry.env, mariadb.env, oidc_issuer.env, minio.trust_env)
START_TIMEOUT = 120.0  # seconds; the Model Registry runs its migrations before answering


class MissingToolsError(StackError):
    def __init__(self, missing: dict[str, list[str]]):
        self.missing = missing
        names = ", ".join(f"{tool} (for {', '.join(comps)})" for tool, comps in missing.items())
        super().__init__(f"not installed: {names}; run e2e/install-tools.sh")


def pinned_versions() -> dict[str, str]:
    """The KEY=VALUE pins of e2e/versions.env."""
    lines = (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))


def missing_tools(groups: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """{tool: [components needing it]} for every tool of the base stack (and of `groups`) that is not installed."""
    missing: dict[str, list[str]] = {}
    wanted = dict(TOOLS)
    for group in groups:
        wanted.update(GROUP_TOOLS[group])
    for comp, tools in wanted.items():
        for tool in tools:
            if find_tool(tool) is None:
                missing.setdefault(tool, []).append(comp)
    return missing


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
        self.ports: dict[str, int] = {}  # picked by up()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public API

    def up(self, groups: tuple[str, ...] = ()) -> bool:
        """Start the base stack and `groups` (of GROUPS); True if anything was started, False if all of it was
        already running and healthy (reused). A group is added to a running base stack."""
        if unknown := set(groups) - set(GROUPS):
            raise StackError(f"unknown component group: {', '.join(sorted(unknown))}")
        if missing := missing_tools(tuple(groups)):
            raise MissingToolsError(missing)
        started = False
        with self._exclusive():
            if self.is_up():
                self._state = self._load()
            else:
                self._down()
                self._start_all()
                started = True
            for group in groups:
                if not self.group_up(group):
                    self._start_group(group)
                    started = True
        return started

    def group_up(self, group: str) -> bool:
        """Every component of `group` is recorded, alive and healthy."""
        status = self.group_status(group)
        return len(status) == len(GROUPS[group].COMPONENTS) and all(s["healthy"] for s in status.values())

    def group_status(self, group: str) -> dict[str, dict]:
        """{component: {port, pid, alive, healthy}} for the components of `group` the state file records."""
        comps = self._load().get("components", {})
        result = {}
        for name in GROUPS[group].COMPONENTS:
            if (info := comps.get(name)) is not None:
                alive = procs.alive(info["pid"], info["match"])
                result[name] = {"port": info["port"], "pid": info["pid"], "alive": alive,
                                "healthy": alive and self._healthy(name, info["port"])}
        return result

    def _start_group(self, group: str) -> None:
        """Start `group` beside the running base stack (its ports picked now); on failure stop what it started."""
        module = GROUPS[group]
        self._stop_group(group)  # what is left of an earlier, failed or dead, start
        self._state = self._load()
        self.ports = {name: info["port"] for name, info in self._state.get("components", {}).items()}
        names = list(module.COMPONENTS) + list(getattr(module, "EXTRA_PORTS", ()))
        self.ports.update(zip(names, free_ports(len(names)), strict=True))
        try:
            module.start(self)
        except Exception:
            self._stop_group(group)
            raise
        with self._lock:
            self._state["groups"] = sorted({*self._state.get("groups", []), group})
        self._save()

    def _stop_group(self, group: str) -> None:
        state = self._load() or self._state
        comps = state.get("components", {})
        for name in reversed(GROUPS[group].COMPONENTS):
            if (info := comps.pop(name, None)) and info.get("pid"):
                self._stop(name, info["pid"], info.get("match", ""))
                self._procs.pop(name, None)
        state["groups"] = [g for g in state.get("groups", []) if g != group]
        if self.state_file.exists():
            self._state = state
            self._save()

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
        with concurrent.futures.ThreadPoolExecutor(len(CHAINS)) as pool:
            errors = [f.exception() for f in [pool.submit(self._run_chain, c) for c in CHAINS]]
        if failed := [e for e in errors if e is not None]:
            self._down()
            raise StackError("; ".join(str(e) for e in failed))
        self._save(up=True)

    def _run_chain(self, steps: tuple[Callable[[Site], None], ...]) -> None:
        for start in steps:
            start(self)

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
        env = {"MODELSYNC_STACK_DIR": str(self.dir)}
        for part in ENV_PARTS:
            env.update(part(self, port))
        for group in state.get("groups", []):
            env.update(GROUPS[group].env(self, port))
        return env

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

    def secret(self, name: str, nbytes: int = 18) -> str:
        """A random secret kept in DIR/secrets/NAME (0600), created on first use and stable afterwards."""
        path = self.dir / "secrets" / name
        with self._lock:
            if not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_private(path, secrets.token_hex(nbytes))
            return path.read_text().strip()

    def _prepare(self) -> None:
        for sub in ("logs", "secrets", *(d for m in MODULES for d in m.DIRS)):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "secrets", 0o700)
        names = list(COMPONENTS) + list(AUXILIARY) + list(minio.EXTRA_PORTS)
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self._state = {"up": False, "started_at": time.time(), "components": {}}
        self._save()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, match: str = "") -> None:
        """Start a component in its own session (so `down` can kill its whole process group) and record it."""
        self._procs[name] = proc = procs.spawn(argv, env, cwd=self.dir, log=self.dir / "logs" / f"{name}.log")
        with self._lock:
            self._state["components"][name] = {"pid": proc.pid, "port": self.ports[name],
                                               "match": match or Path(argv[0]).name}
        self._save()

    def wait_healthy(self, name: str, timeout: float = START_TIMEOUT) -> None:
        port, proc, log = self.ports[name], self._procs[name], self.dir / "logs" / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy(name, port):
                return
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(log)}")
            time.sleep(0.1)
        raise StackError(f"{name} not healthy after {timeout:.0f}s:\n{procs.log_tail(log)}")

    def _healthy(self, name: str, port: int) -> bool:
        return OWNER[name].healthy(self, name, port)

    def _stop(self, name: str, pid: int, match: str, timeout: float = 10.0) -> None:
        proc = self._procs.get(name)
        if proc is None and not procs.alive(pid, match):
            return
        # a module's STOP_TIMEOUT shortens the wait before SIGKILL for servers that idle on SIGTERM (Trillian's)
        owner = OWNER.get(name)
        procs.stop_group(pid, proc, getattr(owner, "STOP_TIMEOUT", {}).get(name, timeout))


# -------------------------------------------------------------------- CLI


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _cmd_up(stack: LocalStack, args: argparse.Namespace) -> int:
    if not args.no_install:
        base = ["apt", "oras", "registry", "minio", "model-registry", "awscli"]
        subprocess.run([str(INSTALL_SCRIPT), *(base if args.no_sigstore else [])], check=True)
    t0 = time.monotonic()
    started = stack.up(groups=() if args.no_sigstore else ("sigstore",))
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
        print(f"{name:24} 127.0.0.1:{st['port']:<6} pid {st['pid']:<8} {health}")
    for group in stack._load().get("groups", []):
        group_status = stack.group_status(group)
        for name, st in group_status.items():
            health = "healthy" if st["healthy"] else ("UNHEALTHY" if st["alive"] else "DEAD")
            print(f"{name:24} 127.0.0.1:{st['port']:<6} pid {st['pid']:<8} {health}  (group {group})")
        status.update(group_status)
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
    up.add_argument("--no-sigstore", action="store_true", help="leave out the sigstore servers (e2e/sigstore.py)")
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
