"""The Model Registry in the local stack: the Kubeflow server on MariaDB, and e2e/mrproxy.py in front of it.

    model_registry  Kubeflow Model Registry server v0.3.0 (v1alpha3 API)   GET /readyz/health = 200
    mr_token_proxy  e2e.mrproxy in front of it requiring a bearer token     401 without the token

The server stores in MariaDB's database ``mr`` (e2e/mariadb.py, started before it) and runs its migrations before
answering. Its DSN holds the ``mr`` password, so it goes in a 0600 config file (DIR/mr/config.yaml), never on the
command line; the proxy reads its token from DIR/secrets/mr-token (0600).

env:
    MR_ADDRESS              http://127.0.0.1
    MR_PORT, MR_URL         the Model Registry server itself (no token checked)
    MR_TOKEN_PORT, MR_TOKEN_URL, MR_TOKEN   the token-checking proxy and its token
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from e2e import mariadb
from e2e.component import REPO_ROOT, Site, find_tool, http_status, write_private

COMPONENTS = ("model_registry", "mr_token_proxy")
TOOLS = {"model_registry": ("model-registry",)}  # the proxy runs on this Python
DIRS = ("mr",)


def token(site: Site) -> str:
    return site.secret("mr-token", 24)


def start_server(site: Site) -> None:
    """Start the server; MariaDB must already accept connections."""
    dsn = (f"mr:{mariadb.mr_password(site)}@tcp(127.0.0.1:{site.ports['mariadb']})/mr"
           "?charset=utf8mb4&parseTime=True")
    # the DSN holds a password: a 0600 config file instead of argv (also keeps ~/.model-registry.yaml out)
    config = site.dir / "mr" / "config.yaml"
    write_private(config, f"embedmd-database-dsn: {json.dumps(dsn)}\n")
    site.spawn("model_registry", [find_tool("model-registry"), "proxy", "--config", str(config),
                                  "--hostname", "127.0.0.1", "--port", str(site.ports["model_registry"]),
                                  "--datastore-type", "embedmd", "--embedmd-database-type", "mysql"])
    site.wait_healthy("model_registry")


def start_token_proxy(site: Site) -> None:
    token(site)
    site.spawn("mr_token_proxy", [sys.executable, "-m", "e2e.mrproxy", "--quiet",
                                  "--listen-port", str(site.ports["mr_token_proxy"]),
                                  "--upstream", f"http://127.0.0.1:{site.ports['model_registry']}",
                                  "--require-token", str(site.dir / "secrets" / "mr-token")],
               {"PYTHONPATH": str(REPO_ROOT)}, match="e2e.mrproxy")
    site.wait_healthy("mr_token_proxy")


def healthy(site: Site, name: str, port: int) -> bool:
    if name == "model_registry":
        return http_status(f"http://127.0.0.1:{port}/readyz/health") == 200
    if name == "mr_token_proxy":
        return http_status(f"http://127.0.0.1:{port}/readyz/health") == 401
    raise ValueError(name)


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {
        "MR_ADDRESS": "http://127.0.0.1",
        "MR_PORT": str(port["model_registry"]),
        "MR_URL": f"http://127.0.0.1:{port['model_registry']}",
        "MR_TOKEN_PORT": str(port["mr_token_proxy"]),
        "MR_TOKEN_URL": f"http://127.0.0.1:{port['mr_token_proxy']}",
        "MR_TOKEN": token(site),
    }
