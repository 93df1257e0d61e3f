"""A static-file HTTP(S) server on loopback for the HTTP-source tests, optionally checking a bearer token."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve_directory(root: Path, *, tls: ssl.SSLContext | None = None, token: str | None = None,
                    private_prefix: str = "/private/") -> Iterator[str]:
    """Serve root; yield the base URL. With token, paths under private_prefix need `Authorization: Bearer token`."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            if token and self.path.startswith(private_prefix) and \
                    self.headers.get("Authorization") != f"Bearer {token}":
                self.send_error(401)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    with _serving(Handler, tls) as url:
        yield url


@contextmanager
def serve_cut(whole: bytes) -> Iterator[str]:
    """A server that announces whole (its Content-Length), sends its first two thirds and closes; yield its base
    URL (any path answers the same)."""

    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(whole)))
            self.end_headers()
            self.wfile.write(whole[:len(whole) * 2 // 3])

        def log_message(self, *a):
            pass

    with _serving(Cut) as url:
        yield url


@contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A threading server of handler on a free loopback port (TLS with tls); yield its base URL; shut down after."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
