"""The stack's OIDC issuer: e2e/oidc.py run as a process (``python -m e2e.oidc serve``), for MinIO to trust.

    oidc    e2e.oidc issuer                                         GET discovery = 200

Started before MinIO, which reads its discovery and keys when it starts and trusts it for
AssumeRoleWithWebIdentity (see e2e/minio.py). An auxiliary process: started, checked by is_up() and stopped like a
component, but kept out of status().

The signing key is DIR/secrets/oidc-signing-key.pem, created by e2e.oidc on first start and then kept. This module
only wires the process; the issuer itself (and its ``cryptography`` import) stays in e2e/oidc.py.

env:
    OIDC_ISSUER_URL     http://127.0.0.1:P, the issuer MinIO trusts (role policy readwrite)
    OIDC_SIGNING_KEY    its RSA key (PEM, 0600): mint tokens with
                        ``e2e.oidc.write_token(path, OIDC_SIGNING_KEY, OIDC_ISSUER_URL, audience=...)``
                        or ``StackEnv.write_oidc_token(path, ...)``
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from e2e.component import REPO_ROOT, Site, http_status

COMPONENTS = ("oidc",)
TOOLS: dict[str, tuple[str, ...]] = {}  # runs on this Python
DIRS: tuple[str, ...] = ()
DISCOVERY_PATH = "/.well-known/openid-configuration"  # = e2e.oidc.DISCOVERY_PATH (that module needs cryptography)


def signing_key(site: Site) -> Path:
    return site.dir / "secrets" / "oidc-signing-key.pem"  # created by e2e.oidc on first start, then kept


def discovery_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{DISCOVERY_PATH}"


def start(site: Site) -> None:
    site.spawn("oidc", [sys.executable, "-m", "e2e.oidc", "serve", "--key", str(signing_key(site)),
                        "--port", str(site.ports["oidc"])], {"PYTHONPATH": str(REPO_ROOT)}, match="e2e.oidc")
    site.wait_healthy("oidc")


def healthy(site: Site, name: str, port: int) -> bool:
    return http_status(discovery_url(port)) == 200


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {
        "OIDC_ISSUER_URL": f"http://127.0.0.1:{port['oidc']}",
        "OIDC_SIGNING_KEY": str(signing_key(site)),
    }
