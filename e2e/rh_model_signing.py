"""rh-model-signing's CLI (Red Hat's model signer, PyPI rh-model-signing), run from its own virtual environment.

``e2e/install-tools.sh rh-model-signing`` makes ${MODELSYNC_CACHE:-~/.cache/modelsync}/rh-model-signing-VERSION
(VERSION = RH_MODEL_SIGNING_VERSION of e2e/versions.env): it cannot share the project's venv, where model-signing
1.1.1 owns the module name ``model_signing``. Its console script ``rh_model_signing`` is the same CLI as its
``model_signing``.

verify_image() runs ``rh_model_signing verify sigstore <image-ref>`` as a user would against the local stack: the
registry's CA through REQUESTS_CA_BUNDLE (its registry client, oras-py, uses requests and has no CA option), an
empty DOCKER_CONFIG (anonymous pull: the token registry gives anonymous callers pull-only tokens), no proxy for
loopback. Standard library only.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from e2e.component import REPO_ROOT

SCRIPT = "rh_model_signing"


def version() -> str:
    for line in (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines():
        if line.startswith("RH_MODEL_SIGNING_VERSION="):
            return line.split("=", 1)[1].strip()
    raise KeyError("RH_MODEL_SIGNING_VERSION is not in e2e/versions.env")


def venv_dir() -> Path:
    cache = Path(os.environ.get("MODELSYNC_CACHE") or Path.home() / ".cache" / "modelsync")
    return cache / f"rh-model-signing-{version()}"


def cli() -> Path | None:
    """The CLI's path, or None when `e2e/install-tools.sh rh-model-signing` has not made its venv."""
    path = venv_dir() / "bin" / SCRIPT
    return path if path.exists() and os.access(path, os.X_OK) else None


def verify_image(ref: str, *, identity: str, issuer: str, trust_config: str, ca_bundle: str, work: Path,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """`rh_model_signing verify sigstore REF --identity .. --identity-provider .. --trust-config ..` (exit 0 when
    verified); its output in .stdout/.stderr."""
    path = cli()
    if path is None:
        raise FileNotFoundError(f"rh-model-signing not installed ({venv_dir()}); run e2e/install-tools.sh "
                                f"rh-model-signing")
    docker = work / "docker-config"
    docker.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"REQUESTS_CA_BUNDLE": ca_bundle, "DOCKER_CONFIG": str(docker), "HOME": str(work),
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return subprocess.run([str(path), "verify", "sigstore", ref, "--identity", identity, "--identity-provider",
                           issuer, "--trust-config", trust_config], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=work)
