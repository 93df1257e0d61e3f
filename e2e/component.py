"""What the local stack's component modules share: their interface, the `Site` they start on, small helpers.

A component module (e2e/oidc_issuer.py, minio.py, registry.py, mariadb.py, model_registry.py) has

    COMPONENTS: tuple[str, ...]           its processes, each on its own port (their names in stack.json)
    TOOLS: dict[str, tuple[str, ...]]     binaries each of them needs; a missing one means "not installed"
    DIRS: tuple[str, ...]                 its subdirectories of the state directory
    start...(site)                        write its config and files, spawn, wait until healthy
    healthy(site, name, port) -> bool     its health check
    env(site, port) -> dict[str, str]     what it adds to LocalStack.env() (and so to StackEnv)

e2e/stack.py composes them (ports, state file, start order); no component imports it. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """The stack could not be brought up, or is not up."""


class Site(Protocol):
    """The stack a component starts on (e2e.stack.LocalStack)."""

    dir: Path  # the state directory
    ports: dict[str, int]  # every port, picked at up time

    def secret(self, name: str, nbytes: int = 18) -> str:
        """A random secret kept in DIR/secrets/NAME (0600), created on first use and stable afterwards."""

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, match: str = "") -> None:
        """Start a component in its own session, its output in DIR/logs/NAME.log, and record it."""

    def wait_healthy(self, name: str) -> None:
        """Return once the component's health check passes; StackError when it exits or times out."""


def beside_checkout(relative: str) -> Path | None:
    """`shared/<relative>` beside the checkout or beside one of its parent directories (the team's workspace keeps
    shared/ next to its clones; a CI clone may sit a level deeper), or None: the user's documents and upstream's
    files live there, never in the repository."""
    for parent in REPO_ROOT.parents:
        found = parent / "shared" / relative
        if found.exists():
            return found
    return None


def find_tool(name: str) -> str | None:
    """Locate a binary: GOBIN / ~/go/bin first (the pinned Go builds), then PATH, then sbin (mariadbd)."""
    gobin = os.environ.get("GOBIN") or str(Path.home() / "go" / "bin")
    path = os.pathsep.join([gobin, os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=path)


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


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (0600), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


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
