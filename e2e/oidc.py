"""A small OIDC issuer for tests: discovery + JWKS over plain HTTP on 127.0.0.1, and Kubernetes-shaped
service-account tokens signed with its RS256 key.

What trusts it: the local stack's MinIO (AssumeRoleWithWebIdentity, audience ``sts.amazonaws.com``, see
e2e/minio.py); anything else that verifies OIDC tokens (e.g. signing) can use another audience with the same
issuer and key.

    GET /.well-known/openid-configuration   {"issuer", "jwks_uri", ...}
    GET /jwks                               {"keys": [one RSA key, kid = its RFC 7638 thumbprint]}

The key is a PEM file (0600) created on first use and kept, so the issuer's JWKS (and every token minted with the
key) stays valid across restarts. Tokens are minted in-process from the key file; no endpoint mints them.

CLI::

    python -m e2e.oidc serve --key FILE --port P [--issuer URL]       serve until SIGTERM
    python -m e2e.oidc mint --key FILE --issuer URL --out FILE [--aud A]... [--namespace NS] [--service-account SA]
                            [--lifetime SECONDS] [--claim NAME=VALUE]...

Tokens are never printed by this module; ``mint`` writes them to a 0600 file. Needs the ``cryptography`` package.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

STS_AUDIENCE = "sts.amazonaws.com"  # what EKS projects into IRSA tokens; MinIO's client id must equal it
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA signing key in PEM file `path`, generated (2048 bits, 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    core = {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    kid = _b64url(hashlib.sha256(json.dumps(core, separators=(",", ":"), sort_keys=True).encode()).digest())
    return {**core, "kid": kid, "use": "sig", "alg": "RS256"}


def kubernetes_kid(key: rsa.RSAPrivateKey) -> str:
    """The key id kube-apiserver puts in the service-account tokens it signs with this key: base64url (no padding)
    of the sha256 of the public key's DER (SubjectPublicKeyInfo)."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha256(der).digest())


def sign_jwt(key: rsa.RSAPrivateKey, claims: dict, headers: dict | None = None) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": public_jwk(key)["kid"], **(headers or {})}
    signing_input = f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}." \
                    f"{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def service_account_claims(issuer: str, *, audience: str | list[str] = STS_AUDIENCE, namespace: str = "default",
                           service_account: str = "modelsync", lifetime: int = 3600, now: float | None = None,
                           extra: dict | None = None) -> dict:
    """Claims as the Kubernetes API server puts them in a projected service-account token. A negative lifetime
    gives a token that expired that many seconds ago (issued an hour before)."""
    now = int(time.time() if now is None else now)
    issued = now if lifetime > 0 else now - 3600
    return {"iss": issuer, "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "iat": issued, "nbf": issued, "exp": now + lifetime, "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": service_account, "uid": str(uuid.uuid5(
                                  uuid.NAMESPACE_URL, f"{namespace}/{service_account}"))}},
            **(extra or {})}


def mint_token(key_path: Path, issuer: str, **claims_options) -> str:
    """A signed service-account token (see service_account_claims for the options). Keep it out of logs."""
    return sign_jwt(load_or_create_key(Path(key_path)), service_account_claims(issuer, **claims_options))


def write_token(path: Path, key_path: Path, issuer: str, **claims_options) -> Path:
    """Mint a token into `path` (0600), as kubelet leaves a projected token; returns the path."""
    _write_private(Path(path), mint_token(key_path, issuer, **claims_options).encode())
    return Path(path)


# ---------------------------------------------------------------------------------------------------- the issuer


def _handler(issuer_ref: list[str], jwks: dict) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            issuer = issuer_ref[0]
            if self.path.split("?", 1)[0] == DISCOVERY_PATH:
                # authorization and token endpoints are announced (nothing serves them: tokens are minted to
                # files) because clients that build an OIDC issuer object eagerly (model-signing, for Fulcio's
                # issuer) insist on them
                body = {"issuer": issuer, "jwks_uri": f"{issuer}{JWKS_PATH}", "response_types_supported": ["id_token"],
                        "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token",
                        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf"]}
            elif self.path.split("?", 1)[0] == JWKS_PATH:
                body = jwks
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:  # quiet: MinIO and health probes poll it
            pass

    return Handler


@dataclass
class IssuerHandle:
    """An issuer serving in a thread of this process (tests); `.url` is its issuer URL, `.key_path` its key."""

    url: str
    key_path: Path
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    def token(self, **claims_options) -> str:
        return mint_token(self.key_path, self.url, **claims_options)

    def write_token(self, path: Path, **claims_options) -> Path:
        return write_token(path, self.key_path, self.url, **claims_options)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def make_server(key_path: Path, port: int = 0, issuer: str | None = None,
                host: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, str]:
    key = load_or_create_key(Path(key_path))
    # the same key under a second id: a test cluster's apiserver may sign its projected tokens with it (issuer =
    # this issuer), and verifiers look keys up by the token's kid
    jwks = {"keys": [public_jwk(key), {**public_jwk(key), "kid": kubernetes_kid(key)}]}
    ref = [issuer or ""]
    server = http.server.ThreadingHTTPServer((host, port), _handler(ref, jwks))
    server.daemon_threads = True
    if not issuer:
        ref[0] = f"http://{host}:{server.server_address[1]}"
    return server, ref[0]


def start_issuer(key_path: Path, port: int = 0, issuer: str | None = None) -> IssuerHandle:
    """Serve the issuer in a daemon thread of this process until `.stop()`."""
    server, url = make_server(key_path, port, issuer)
    thread = threading.Thread(target=server.serve_forever, name="oidc-issuer", daemon=True)
    thread.start()
    return IssuerHandle(url, Path(key_path), server, thread)


def _cmd_serve(args: argparse.Namespace) -> int:
    server, url = make_server(args.key, args.port, args.issuer)
    print(f"OIDC issuer {url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_mint(args: argparse.Namespace) -> int:
    extra = dict(c.split("=", 1) for c in args.claim)
    write_token(args.out, args.key, args.issuer, audience=args.aud or STS_AUDIENCE, namespace=args.namespace,
                service_account=args.service_account, lifetime=args.lifetime, extra=extra)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.oidc", description="A test OIDC issuer.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve discovery and JWKS on 127.0.0.1")
    serve.add_argument("--key", type=Path, required=True, help="RSA key PEM (created when missing)")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--issuer", help="issuer URL to announce (default http://127.0.0.1:PORT)")
    mint = sub.add_parser("mint", help="write a service-account token to a file (0600)")
    mint.add_argument("--key", type=Path, required=True)
    mint.add_argument("--issuer", required=True)
    mint.add_argument("--out", type=Path, required=True)
    mint.add_argument("--aud", action="append", help=f"audience (repeatable; default {STS_AUDIENCE})")
    mint.add_argument("--namespace", default="default")
    mint.add_argument("--service-account", default="modelsync")
    mint.add_argument("--lifetime", type=int, default=3600, help="seconds; negative: already expired")
    mint.add_argument("--claim", action="append", default=[], help="extra string claim NAME=VALUE")
    args = parser.parse_args(argv)
    return {"serve": _cmd_serve, "mint": _cmd_mint}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
