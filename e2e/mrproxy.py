"""A small reverse proxy in front of the real Model Registry server, for tests.

The real server (v0.3.0) checks no token and speaks only the ``v1alpha3`` REST prefix. In clusters a proxy
(kube-rbac-proxy) checks bearer tokens, and newer servers speak ``v1`` (and mark ``v1alpha3`` deprecated, then
drop it). This proxy lets tests exercise those situations against the one real server we can build:

- ``require_token``: answer 401 unless ``Authorization: Bearer <token>`` matches.
- ``v1_only``: serve ``/api/model_registry/v1/...`` by rewriting it to ``/api/model_registry/v1alpha3/...``
  upstream, and answer ``404 page not found`` to ``/api/model_registry/v1alpha3/...`` (a server past the sunset).
- ``route_prefix``: serve the server under a path, as a gateway does (``/model-registry/<name>/api/...``); any
  path outside it answers 404.
- ``deprecation_sunset``: add ``Deprecation: true`` and ``Sunset: <date>`` to v1alpha3 responses (a server in the
  deprecation window).

Run it as a process::

    python -m e2e.mrproxy --listen-port P --upstream http://127.0.0.1:Q [--require-token FILE] [--v1-only]
                          [--deprecation-sunset DATE]

or in-process with :func:`start_proxy`, which returns a :class:`ProxyHandle` (``.port``, ``.url``, ``.stop()``).
Standard library only.
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import ssl
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

V1 = "/api/model_registry/v1/"
V1ALPHA3 = "/api/model_registry/v1alpha3/"
SUCCESSOR_LINK = f'<{V1}>; rel="successor-version"'

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
        "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)


@dataclass(frozen=True)
class ProxyConfig:
    upstream: str  # http://host:port
    token: str | None = None
    v1_only: bool = False
    deprecation_sunset: str | None = None
    route_prefix: str = ""
    quiet: bool = True


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients can keep connections alive; every answer therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    config: ProxyConfig  # set on the per-server subclass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        if self.config.token is not None and not self._token_ok():
            self._answer(401, b"Unauthorized\n", {"WWW-Authenticate": 'Bearer realm="model-registry"'})
            return
        path = self._upstream_path()
        if path is None:
            # what Go's http.ServeMux answers for an unknown route, as the real server does
            self._answer(404, b"404 page not found\n")
            return
        self._forward(path)

    def _token_ok(self) -> bool:
        scheme, _, presented = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self.config.token.encode())

    def _upstream_path(self) -> str | None:
        """The path to request upstream, or None when this proxy pretends the route does not exist."""
        path = self.path
        if self.config.route_prefix:
            if not path.startswith(self.config.route_prefix + "/"):
                return None
            path = path[len(self.config.route_prefix):]
        if not self.config.v1_only:
            return path
        if path.startswith(V1ALPHA3):
            return None
        if path.startswith(V1):
            return V1ALPHA3 + path[len(V1):]
        return path

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def _forward(self, path: str) -> None:
        body = self._read_body()
        headers = _end_to_end(self.headers.items(), self.headers.get("Connection", ""))
        upstream = urllib.parse.urlsplit(self.config.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=60)
        try:
            conn.request(self.command, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            payload = resp.read()
            out = _end_to_end(resp.getheaders(), resp.getheader("Connection", ""))
        except OSError as exc:
            self._answer(502, f"upstream {self.config.upstream}: {exc}\n".encode())
            return
        finally:
            conn.close()
        extra = {}
        if self.config.deprecation_sunset and self.path.startswith(V1ALPHA3):
            extra = {"Deprecation": "true", "Sunset": self.config.deprecation_sunset, "Link": SUCCESSOR_LINK}
        self._answer(resp.status, payload, extra, out, reason=resp.reason)

    def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None,
                headers: list[tuple[str, str]] | None = None, reason: str | None = None) -> None:
        if headers is None:
            headers = [("Content-Type", "text/plain; charset=utf-8")]
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "date", "server"):
                self.send_header(name, value)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        if not self.config.quiet:
            super().log_message(format, *args)


def _end_to_end(items, connection_header: str) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, including any the Connection header names, and Host/Content-Length (recomputed)."""
    named = {h.strip().lower() for h in connection_header.split(",") if h.strip()}
    drop = HOP_BY_HOP | named | {"host", "content-length"}
    return [(k, v) for k, v in items if k.lower() not in drop]


@dataclass
class ProxyHandle:
    server: ThreadingHTTPServer
    thread: threading.Thread
    scheme: str = "http"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def make_server(config: ProxyConfig, port: int = 0) -> ThreadingHTTPServer:
    handler = type("ModelRegistryProxyHandler", (_Handler,), {"config": config})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def start_proxy(upstream: str, *, port: int = 0, token: str | None = None, v1_only: bool = False,
                deprecation_sunset: str | None = None, tls: ssl.SSLContext | None = None,
                route_prefix: str = "") -> ProxyHandle:
    """Start a proxy in a background thread of this process (port 0: any free port); tls: serve HTTPS with it
    (a Model Registry behind a TLS-terminating proxy, for custom-CA tests)."""
    config = ProxyConfig(upstream=upstream.rstrip("/"), token=token, v1_only=v1_only,
                         deprecation_sunset=deprecation_sunset, route_prefix=route_prefix.rstrip("/"))
    server = make_server(config, port)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"mrproxy:{server.server_address[1]}", daemon=True)
    thread.start()
    return ProxyHandle(server, thread, "https" if tls is not None else "http")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.mrproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the Model Registry server")
    parser.add_argument("--require-token", type=Path, metavar="TOKEN_FILE",
                        help="file holding the bearer token to require (a file, so it stays out of argv)")
    parser.add_argument("--v1-only", action="store_true")
    parser.add_argument("--deprecation-sunset", metavar="DATE")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    token = args.require_token.read_text().strip() if args.require_token else None
    config = ProxyConfig(upstream=args.upstream.rstrip("/"), token=token, v1_only=args.v1_only,
                         deprecation_sunset=args.deprecation_sunset, quiet=args.quiet)
    server = make_server(config, args.listen_port)
    print(f"mrproxy listening on 127.0.0.1:{server.server_address[1]} -> {config.upstream}", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
