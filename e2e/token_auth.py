"""A small token server for the local stack's token-auth registry (distribution v3 `auth.token`), over HTTPS.

The registry answers 401 with `WWW-Authenticate: Bearer realm="https://127.0.0.1:P/token",service=S,scope=...`;
clients (oras, skopeo, oras-py in rh-model-signing, modelsync's own clients/distribution.py) ask this server

    GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]     Authorization: Basic (optional)
    POST /token   (form: grant_type=password, username, password, service, scope; OAuth2 as docker/oras-go send it)
    GET  /healthz                                                          200

and get `{"token", "access_token", "expires_in", "issued_at"}`: a JWT (ES256) whose header carries `x5c` = the
signing key's self-signed certificate, which is the registry's `rootcertbundle`, with claims `iss` (ISSUER),
`aud` (the service), `sub`, `iat`/`nbf`/`exp`, `jti` and `access` [{type, name, actions}].

Who gets what: anonymous requests (no Authorization) get pull only, whatever they asked for; the one user
(username + password file) gets every action it asked among pull, push and delete; wrong credentials get 401.
That is the shape of public registries (anonymous pull, credentials to push) that rh-model-signing's client and
the job's pull-only reads must handle.

The password is read from a file (0600, the stack's secret), never from argv, and never logged; the server logs
one line per token issued (subject and granted scopes, not the token). Needs the ``cryptography`` package.

CLI::

    python -m e2e.token_auth serve --port P --cert TLS_CERT --key TLS_KEY --signing-key K --signing-cert C
                                   --service S --issuer I --username U --password-file F
"""

from __future__ import annotations

import argparse
import base64
import hmac
import http.server
import json
import ssl
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

LIFETIME = 300  # seconds a token lives (distribution allows 60 s of leeway on exp/nbf)
ACTIONS = ("pull", "push", "delete")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert_der: bytes
    issuer: str
    service: str
    username: str
    password: str

    @classmethod
    def load(cls, key: Path, cert: Path, issuer: str, service: str, username: str, password_file: Path) -> Issuer:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: not an EC key")
        der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        return cls(private, der, issuer, service, username, password_file.read_text().strip())

    def token(self, subject: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "iat": now, "nbf": now,
                  "exp": now + LIFETIME, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = utils.decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def check(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username.encode(), self.username.encode()) and \
            hmac.compare_digest(password.encode(), self.password.encode())


def granted(scopes: list[str], authenticated: bool) -> list[dict]:
    """The `access` claim for the requested scopes: repository scopes only; pull for anyone, push and delete for
    the authenticated user."""
    access: dict[str, set[str]] = {}
    for scope in scopes:
        for one in scope.split(" "):
            kind, _, rest = one.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            allowed = {a for a in actions.split(",") if a in ACTIONS and (authenticated or a == "pull")}
            if "*" in actions.split(",") and authenticated:
                allowed |= set(ACTIONS)
            access.setdefault(name, set()).update(allowed)
    return [{"type": "repository", "name": name, "actions": sorted(actions)}
            for name, actions in sorted(access.items()) if actions]


def _handler(issuer: Issuer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                self._send(200, {"ok": True})
                return
            if url.path != "/token":
                self._send(404, {"error": "not found"})
                return
            query = urllib.parse.parse_qs(url.query)
            self._issue(query.get("scope", []), self._basic())

        def do_POST(self) -> None:  # noqa: N802
            if urllib.parse.urlsplit(self.path).path != "/token":
                self._send(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            creds = None
            if form.get("grant_type") == ["password"]:
                creds = (form.get("username", [""])[0], form.get("password", [""])[0])
            self._issue(form.get("scope", []), creds or self._basic())

        def _basic(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization") or ""
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return ("", "")
            return user, password

        def _issue(self, scopes: list[str], creds: tuple[str, str] | None) -> None:
            if creds is not None and not issuer.check(*creds):
                self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong username or password"}]})
                sys.stderr.write(f"token_auth: refused credentials for {creds[0]!r}\n")
                return
            subject = issuer.username if creds is not None else "anonymous"
            access = granted(scopes, creds is not None)
            token = issuer.token(subject, access)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._send(200, {"token": token, "access_token": token, "expires_in": LIFETIME, "issued_at": now})
            granted_text = " ".join(f"{a['name']}:{','.join(a['actions'])}" for a in access) or "-"
            sys.stderr.write(f"token_auth: {subject} granted {granted_text}\n")

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:  # the one line per token above is enough
            pass

    return Handler


def make_server(issuer: Issuer, port: int, cert: Path, key: Path,
                host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((host, port), _handler(issuer))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.token_auth")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve tokens until SIGTERM")
    for name in ("--cert", "--key", "--signing-key", "--signing-cert", "--password-file"):
        serve.add_argument(name, type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--service", required=True)
    serve.add_argument("--issuer", required=True)
    serve.add_argument("--username", required=True)
    args = parser.parse_args(argv)
    issuer = Issuer.load(args.signing_key, args.signing_cert, args.issuer, args.service, args.username,
                         args.password_file)
    server = make_server(issuer, args.port, args.cert, args.key)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
