"""kube-apiserver of the local Kubernetes (e2e/kubernetes.py), with its PKI, admin token and kubeconfig.

    kube-apiserver   TLS on 127.0.0.1, port `apiserver`          GET https://127.0.0.1:P/readyz = 200 (admin token)
                     advertised as the gateway's address (pods reach it as the `kubernetes` Service through it)

Files in STATE_DIR/pki, made once and kept across restarts of the same state dir:
    ca.crt/.key          a CA of its own (ca_file); it signed apiserver.crt (127.0.0.1, 10.0.0.1, localhost and the
                         kubernetes service names)
    admin.token          a static token in system:masters (tokens.csv), the only user: every component and the
                         kubeconfig (STATE_DIR/kubeconfig, JSON) use it
    sa.key/.pub          the service-account signing key pair (RSA 2048)
Authorization is RBAC, not AlwaysAllow: under AlwaysAllow the apiserver turns anonymous requests off, and OIDC
discovery must be anonymous. `allow_discovery` binds system:service-account-issuer-discovery to
system:unauthenticated (clusterrolebinding oidc-discovery-anonymous), so that anyone trusting ca_file can read
ISSUER/.well-known/openid-configuration and the keys.

Issuer: --service-account-issuer is the apiserver's own URL (https://127.0.0.1:P), unless the node was given an
external issuer and key (e.g. the local stack's OIDC issuer, which publishes that key, so the stack's Fulcio accepts
the cluster's projected tokens): then tokens are minted under that issuer with that key, and the apiserver's own URL
and key stay accepted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

from e2e.component import http_status, write_private
from e2e.kubernetes_node import Node, need

NAME = "kube-apiserver"
PORTS = ("apiserver",)
SERVICE_CIDR = "10.0.0.0/24"


def server_url(node: Node) -> str:
    return f"https://127.0.0.1:{node.ports['apiserver']}"


def admin_token(node: Node) -> str:
    """The admin token, made on first use."""
    path = node.dir / "pki" / "admin.token"
    if not path.exists():
        write_private(path, secrets.token_hex(24))
    return path.read_text().strip()


def make_pki(node: Node) -> None:
    """The CA, the apiserver's serving certificate and the service-account key pair, unless they exist."""
    pki = node.dir / "pki"
    admin_token(node)
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
    for step in steps:
        subprocess.run(step, cwd=pki, check=True, capture_output=True)
    for key in ("ca.key", "apiserver.key", "sa.key"):
        os.chmod(pki / key, 0o600)


def write_kubeconfig(node: Node) -> None:
    """tokens.csv (the admin token in system:masters) and the admin kubeconfig (JSON is YAML: no YAML writer)."""
    token = admin_token(node)
    write_private(node.dir / "pki" / "tokens.csv", f'{token},admin,admin,"system:masters"\n')
    write_private(node.kubeconfig, json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "modelsync-e2e",
        "clusters": [{"name": "modelsync-e2e", "cluster": {"server": server_url(node),
                                                           "certificate-authority": str(node.ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "modelsync-e2e", "context": {"cluster": "modelsync-e2e", "user": "admin",
                                                           "namespace": "default"}}],
    }, indent=2))


def _public_key(node: Node, private_key: Path) -> Path:
    out = node.dir / "pki" / "external-sa.pub"
    subprocess.run([shutil.which("openssl") or "openssl", "pkey", "-in", str(private_key), "-pubout",
                    "-out", str(out)], check=True, capture_output=True)
    return out


def argv(node: Node, external_issuer: str | None = None, external_key: Path | None = None,
         advertise_address: str = "127.0.0.1") -> list[str]:
    """The apiserver's command line; with external_issuer and external_key (an RSA private key, PEM) tokens are
    minted under that issuer with that key. advertise_address: the endpoint of the `kubernetes` Service (the
    gateway's address on the cluster's link, kubernetes_gateway, which forwards to 127.0.0.1)."""
    pki, own_url = node.dir / "pki", server_url(node)
    extra_keys = [f"--service-account-key-file={_public_key(node, external_key)}"] if external_key else []
    extra_issuers = [f"--service-account-issuer={own_url}"] if external_issuer else []
    return [need(NAME),
            f"--etcd-servers=http://127.0.0.1:{node.ports['etcd']}",
            "--bind-address=127.0.0.1", f"--advertise-address={advertise_address}",
            f"--secure-port={node.ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--anonymous-auth=true",
            f"--service-account-key-file={pki / 'sa.pub'}", *extra_keys,
            f"--service-account-signing-key-file={external_key or pki / 'sa.key'}",
            # the first issuer names the tokens it mints
            f"--service-account-issuer={external_issuer or own_url}", *extra_issuers,
            # else derived from the advertise address, which serves no certificate of that name
            f"--service-account-jwks-uri={own_url}/openid/v1/jwks",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
            f"--cert-dir={pki}", "--profiling=false"]


def healthy(node: Node) -> bool:
    ctx = ssl.create_default_context(cafile=str(node.ca_file))
    return http_status(f"{server_url(node)}/readyz", context=ctx,
                       headers={"Authorization": f"Bearer {admin_token(node)}"}) == 200


def allow_discovery(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Anonymous OIDC discovery (the clusterrolebinding oidc-discovery-anonymous), once; `kubectl`: Cluster.kubectl."""
    if kubectl("get", "clusterrolebinding", "oidc-discovery-anonymous", check=False).returncode != 0:
        kubectl("create", "clusterrolebinding", "oidc-discovery-anonymous",
                "--clusterrole=system:service-account-issuer-discovery", "--group=system:unauthenticated")
