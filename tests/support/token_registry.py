"""A second, real distribution registry that demands Bearer tokens, and the token server that hands them out.

It behaves like a public registry that lets anyone, anonymous included, pull and push: every request to the
registry needs a token (`auth: token:` in its config, so a request without one gets 401 with a
`WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge), and the token server grants any client
exactly the scope it asks for. The server records each token request (and whether it carried an Authorization
header), so a test can prove that a client went through token auth, and did so anonymously.

What distribution v3.1 (registry/auth/token/) checks in a token, and how this one meets it:
- a compact JWS whose `alg` is in the default list (EdDSA, HS*, RS*, ES*, PS*): ES256 here, the signature the
  raw 64-byte r||s of JWS, not DER;
- the signing key trusted through `rootcertbundle`: either an `x5c` header chaining to a certificate of the
  bundle, or (when `x5c` is absent) a `kid` equal to the JWK thumbprint (SHA-256, RFC 7638 member order,
  base64url) of a bundle certificate's public key. v2's libtrust key ids are no longer accepted. Go builds the
  thumbprint from big.Int.Bytes(), i.e. coordinates without leading zero bytes, which is reproduced here;
  `key_header="x5c"` signs with the certificate chain instead;
- claims: `iss` == the configured issuer, `aud` (string or list) containing the configured service, `exp`
  not past and `nbf` not future (60 s leeway each), and `access`: [{type, name, actions}] covering every action
  the request needs ("*" covers all).

Usage (pytest)::

    @pytest.fixture(scope="module")
    def token_registry(tmp_path_factory, require_tool):
        with start_token_registry(tmp_path_factory.mktemp("token-registry"), require_tool("registry")) as reg:
            yield reg

    reg.host            127.0.0.1:PORT  (plain HTTP: tls_verify=False)
    reg.token_server.requests   [TokenRequest(method, service, scopes, authorization, granted), ...]
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from e2e.registry import config_yaml

SERVICE = "modelsync-token-registry"
ISSUER = "modelsync-test-token-issuer"
TOKEN_TTL = 300
START_TIMEOUT = 30.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _go_bytes(n: int) -> bytes:
    """big.Int.Bytes(): big-endian, no leading zero bytes."""
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """distribution's GetJWKThumbprint for a P-256 key (the `kid` it trusts for a rootcertbundle cert)."""
    numbers = public_key.public_numbers()
    x, y = _b64url(_go_bytes(numbers.x)), _b64url(_go_bytes(numbers.y))
    payload = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    return _b64url(hashlib.sha256(payload.encode()).digest())


class Signer:
    """An EC P-256 key and its self-signed certificate (the registry's rootcertbundle)."""

    def __init__(self, common_name: str = "modelsync test token signer"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.kid = jwk_thumbprint(self.key.public_key())

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, claims: dict, key_header: str = "kid") -> str:
        header: dict = {"typ": "JWT", "alg": "ES256"}
        if key_header == "x5c":
            header["x5c"] = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        else:
            header["kid"] = self.kid
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def parse_scope(scope: str) -> dict | None:
    """'repository:a/b:pull,push' -> {"type": "repository", "name": "a/b", "actions": ["pull", "push"]}."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not (kind and name and actions):
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass(frozen=True)
class TokenRequest:
    method: str
    service: str | None
    scopes: tuple[str, ...]
    authorization: str | None          # the scheme of the Authorization header ("Basic", ...), None if absent
    granted: tuple[dict, ...] = field(default=())


class TokenServer:
    """stdlib HTTP server on 127.0.0.1:0 answering GET (docker token protocol) and POST (OAuth2 form) at /token
    with a token for any client, granting the requested scopes."""

    def __init__(self, signer: Signer, service: str = SERVICE, issuer: str = ISSUER, key_header: str = "kid"):
        self.signer, self.service, self.issuer, self.key_header = signer, service, issuer, key_header
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.urlsplit(self.path).query
                server._answer(self, urllib.parse.parse_qs(query))

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                server._answer(self, urllib.parse.parse_qs(body))

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def token_for(self, scopes: list[str], subject: str = "") -> tuple[str, list[dict]]:
        access = [a for a in (parse_scope(s) for scope in scopes for s in scope.split()) if a]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + TOKEN_TTL, "nbf": now - 5,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        return self.signer.sign(claims, self.key_header), access

    def _answer(self, handler: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        if urllib.parse.urlsplit(handler.path).path != "/token":
            return self._send(handler, 404, {"error": "not found"})
        auth = handler.headers.get("Authorization")
        scopes = params.get("scope", [])
        service = (params.get("service") or [None])[0]
        token, access = self.token_for(scopes, subject="" if auth is None else "someone")
        with self._lock:
            self.requests.append(TokenRequest(handler.command, service, tuple(scopes),
                                              auth.split(" ", 1)[0] if auth else None, tuple(access)))
        self._send(handler, 200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL,
                                  "issued_at": dt.datetime.now(dt.UTC).isoformat()})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def snapshot(self) -> list[TokenRequest]:
        with self._lock:
            return list(self.requests)


@dataclass
class TokenRegistry:
    host: str                   # 127.0.0.1:PORT, plain HTTP
    token_server: TokenServer
    signer: Signer
    root: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    def get(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, Message]:
        """Status and headers (case-insensitive) of one request to the registry, with the given Bearer token
        or none."""
        req = urllib.request.Request(self.url + path, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def registry_config(root: Path, port: int, realm: str, bundle: Path, service: str = SERVICE,
                    issuer: str = ISSUER) -> Path:
    config = root / "config.yml"
    _write_private(config, config_yaml(root, port, secrets.token_hex(16), f"""auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
"""))
    return config


@contextlib.contextmanager
def start_token_registry(root: Path, registry_binary: str, key_header: str = "kid") -> Iterator[TokenRegistry]:
    """Start the token server and a `registry serve` behind token auth under root; stop both on exit."""
    root.mkdir(parents=True, exist_ok=True)
    signer = Signer()
    bundle = root / "token-signer.crt"
    bundle.write_bytes(signer.cert_pem())
    tokens = TokenServer(signer, key_header=key_header).start()
    proc = None
    try:
        for _attempt in range(3):  # the port is free when picked; another process could take it before we bind
            port = _free_port()
            config = registry_config(root, port, tokens.realm, bundle)
            with open(root / "registry.log", "ab") as log:
                proc = subprocess.Popen([registry_binary, "serve", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
            reg = TokenRegistry(f"127.0.0.1:{port}", tokens, signer, root, proc)
            if _wait_ready(reg):
                break
            _stop(proc)
            proc = None
        else:
            tail = (root / "registry.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("token registry did not start:\n" + "\n".join(tail))
        yield reg
    finally:
        if proc is not None:
            _stop(proc)
        tokens.stop()


def _wait_ready(reg: TokenRegistry) -> bool:
    """Ready when /v2/ answers 401 with a Bearer challenge naming our realm."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            return False
        try:
            status, headers = reg.get("/v2/")
            if status == 401 and reg.token_server.realm in headers.get("WWW-Authenticate", ""):
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
