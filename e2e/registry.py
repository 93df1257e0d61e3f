"""The local stack's three OCI registries: one distribution v3 binary (``registry``), three configs.

    registry        distribution v3 registry, plain HTTP, delete enabled   GET /v2/ = 200
    registry_tls    second registry: TLS (own CA in state dir), basic auth  GET /v2/ = 401 without credentials
    token_auth      e2e/token_auth.py: the token server (HTTPS, same CA)   GET /healthz = 200
    registry_token  third registry: TLS, token auth (`auth.token`)         GET /v2/ = 401, a Bearer challenge

Each keeps its config (0600, it holds the http secret) and data in DIR/<name>. The TLS one has a throwaway CA and a
server certificate in DIR/tls, and an htpasswd file whose password goes in on stdin. The certificate names 127.0.0.1,
localhost and IN_CLUSTER_NAMES: the names the Kubernetes e2e gives this registry in its cluster (e2e/k8s_e2e.py: a
Service without selector, `registry` in namespace `modelsync-stack`, whose endpoint relays to 127.0.0.1), so pods
verify it by a DNS name as users' pods verify theirs. A state dir whose certificate lacks a name gets a new one
(same CA) at the next start.

The token registry is what clients that speak only the Bearer token dance need (rh-model-signing's oras-py takes a
Basic realm for a token URL and has no plain-HTTP switch): it trusts tokens signed by the key whose self-signed
certificate is DIR/registry_token/token.crt (its `rootcertbundle`; key and certificate made here with openssl), and
e2e/token_auth.py issues them: pull-only to anonymous requests, pull/push/delete to OCI_TOKEN_USERNAME with
OCI_TOKEN_PASSWORD (read by the server from DIR/secrets, never from argv). It serves the same server certificate
as registry_tls (so OCI_TOKEN_CA is the same CA file).

env:
    OCI_REGISTRY            127.0.0.1:P (plain HTTP)
    OCI_TLS_REGISTRY        127.0.0.1:P (HTTPS, basic auth)
    OCI_TLS_CA              path of the CA certificate that signed its server certificate
    OCI_TLS_USERNAME, OCI_TLS_PASSWORD
    OCI_TOKEN_REGISTRY      127.0.0.1:P (HTTPS, token auth: anonymous pull, the user below pushes)
    OCI_TOKEN_CA            the CA certificate of its (and its token server's) server certificate
    OCI_TOKEN_USERNAME, OCI_TOKEN_PASSWORD
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from e2e.component import REPO_ROOT, Site, find_tool, http_status, write_private

COMPONENTS = ("registry", "registry_tls", "token_auth", "registry_token")
TOOLS = {"registry": ("registry",), "registry_tls": ("registry", "openssl", "htpasswd"),
         "token_auth": ("openssl",), "registry_token": ("registry", "openssl")}  # token_auth runs on this Python
DIRS = ("registry", "registry_tls", "registry_token", "tls")
TLS_USERNAME = "modelsync"
TOKEN_USERNAME = "modelsync-pusher"
TOKEN_SERVICE = "modelsync-token-registry"  # the `service` of the challenge and the tokens' `aud`
TOKEN_ISSUER = "modelsync-stack-token-auth"
SERVE_ENV = {"OTEL_TRACES_EXPORTER": "none"}  # v3 exports OpenTelemetry traces by default; there is no collector here
IN_CLUSTER_SERVICE, IN_CLUSTER_NAMESPACE = "registry", "modelsync-stack"
IN_CLUSTER_NAMES = (f"{IN_CLUSTER_SERVICE}.{IN_CLUSTER_NAMESPACE}.svc.cluster.local",
                    f"{IN_CLUSTER_SERVICE}.{IN_CLUSTER_NAMESPACE}.svc")


def _tool(name: str) -> str:
    """The binary's path (the stack checks TOOLS are there before it starts a component)."""
    return find_tool(name) or name


def ca_cert(site: Site) -> Path:
    return site.dir / "tls" / "ca.crt"


def tls_password(site: Site) -> str:
    return site.secret("registry-tls-password")


def token_password(site: Site) -> str:
    return site.secret("registry-token-password")


def config_yaml(root: Path, port: int, http_secret: str, extra: str = "", level: str = "info",
                host: str = "127.0.0.1") -> str:
    """A distribution registry's config: data under root/data, deletes allowed, on host:port; `extra` is
    appended (e.g. an auth section). The http secret signs upload state: a fixed one keeps uploads resumable
    across restarts."""
    return f"""version: 0.1
log:
  level: {level}
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
http:
  addr: {host}:{port}
  secret: {http_secret}
{extra}"""


def _config(site: Site, name: str, extra: str = "") -> Path:
    root = site.dir / name
    config = root / "config.yml"
    write_private(config, config_yaml(root, site.ports[name], site.secret(name + "-http-secret"), extra))
    return config


def start_plain(site: Site) -> None:
    config = _config(site, "registry")
    site.spawn("registry", [_tool("registry"), "serve", str(config)], SERVE_ENV)
    site.wait_healthy("registry")


def start_tls(site: Site) -> None:
    tls = site.dir / "tls"
    _make_certs(tls)
    htpasswd = site.dir / "registry_tls" / "htpasswd"
    if not htpasswd.exists():
        # -i: password from stdin, so it never shows in argv
        subprocess.run([_tool("htpasswd"), "-B", "-i", "-c", str(htpasswd), TLS_USERNAME],
                       input=tls_password(site), text=True, check=True, capture_output=True)
    config = _config(site, "registry_tls", f"""  tls:
    certificate: {tls / 'server.crt'}
    key: {tls / 'server.key'}
auth:
  htpasswd:
    realm: modelsync
    path: {htpasswd}
""")
    site.spawn("registry_tls", [_tool("registry"), "serve", str(config)], SERVE_ENV)
    site.wait_healthy("registry_tls")


def start_token(site: Site) -> None:
    """The token server, then the registry that trusts its tokens (after start_tls: they share its certificates)."""
    tls, root = site.dir / "tls", site.dir / "registry_token"
    key, cert = root / "token.key", root / "token.crt"
    if not (key.exists() and cert.exists()):
        subprocess.run([_tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3650",
                        "-subj", "/CN=modelsync stack token signer"], check=True, capture_output=True)
        os.chmod(key, 0o600)
    token_password(site)  # created now, so the server reads it from its file
    port = site.ports["token_auth"]
    site.spawn("token_auth", [sys.executable, "-m", "e2e.token_auth", "serve", "--port", str(port),
                              "--cert", str(tls / "server.crt"), "--key", str(tls / "server.key"),
                              "--signing-key", str(key), "--signing-cert", str(cert),
                              "--service", TOKEN_SERVICE, "--issuer", TOKEN_ISSUER, "--username", TOKEN_USERNAME,
                              "--password-file", str(site.dir / "secrets" / "registry-token-password")],
               {"PYTHONPATH": str(REPO_ROOT)}, match="e2e.token_auth")
    site.wait_healthy("token_auth")
    config = _config(site, "registry_token", f"""  tls:
    certificate: {tls / 'server.crt'}
    key: {tls / 'server.key'}
auth:
  token:
    realm: https://127.0.0.1:{port}/token
    service: {TOKEN_SERVICE}
    issuer: {TOKEN_ISSUER}
    rootcertbundle: {cert}
""")
    site.spawn("registry_token", [_tool("registry"), "serve", str(config)], SERVE_ENV)
    site.wait_healthy("registry_token")


def _make_certs(tls: Path) -> None:
    """A throwaway CA (kept per state dir) and a server certificate signed by it for 127.0.0.1, localhost and
    IN_CLUSTER_NAMES (made again when its extensions file differs: an older state dir's certificate lacks names)."""
    ext = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
           "extendedKeyUsage=serverAuth\n"
           f"subjectAltName=IP:127.0.0.1,DNS:localhost,{','.join(f'DNS:{n}' for n in IN_CLUSTER_NAMES)}\n"
           "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    if (tls / "server.crt").exists() and (tls / "server.ext").exists() and (tls / "server.ext").read_text() == ext:
        return
    openssl = _tool("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (tls / "server.ext").write_text(ext)
    steps = [
        [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "3650", "-extfile", "server.ext", "-out", "server.crt"],
    ]
    if not ((tls / "ca.crt").exists() and (tls / "ca.key").exists()):
        steps.insert(0, [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                         "-subj", "/CN=modelsync local test CA",
                         "-addext", "basicConstraints=critical,CA:TRUE",
                         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for argv in steps:
        subprocess.run(argv, cwd=tls, check=True, capture_output=True)
    for key in ("ca.key", "server.key"):
        os.chmod(tls / key, 0o600)


def healthy(site: Site, name: str, port: int) -> bool:
    if name == "registry":
        return http_status(f"http://127.0.0.1:{port}/v2/") == 200
    ctx = ssl.create_default_context(cafile=str(ca_cert(site)))
    if name in ("registry_tls", "registry_token"):
        return http_status(f"https://127.0.0.1:{port}/v2/", context=ctx) == 401
    if name == "token_auth":
        return http_status(f"https://127.0.0.1:{port}/healthz", context=ctx) == 200
    raise ValueError(name)


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {
        "OCI_REGISTRY": f"127.0.0.1:{port['registry']}",
        "OCI_TLS_REGISTRY": f"127.0.0.1:{port['registry_tls']}",
        "OCI_TLS_CA": str(ca_cert(site)),
        "OCI_TLS_USERNAME": TLS_USERNAME,
        "OCI_TLS_PASSWORD": tls_password(site),
        "OCI_TOKEN_REGISTRY": f"127.0.0.1:{port['registry_token']}",
        "OCI_TOKEN_CA": str(ca_cert(site)),
        "OCI_TOKEN_USERNAME": TOKEN_USERNAME,
        "OCI_TOKEN_PASSWORD": token_password(site),
    }
