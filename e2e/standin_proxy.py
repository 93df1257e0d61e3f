"""An HTTPS proxy that answers exactly one URL with a local stand-in file, for tests that download from the internet
in their own process (upstream's integration suite fetches mnist-8.onnx from GitHub with `requests`).

    proxy = start_standin_proxy(url, content, work_dir)   # HTTPS_PROXY=proxy.url, REQUESTS_CA_BUNDLE=proxy.ca_file
    ...
    proxy.served      # [(host:port, method, path, status)] of every request it saw
    proxy.stop()

It accepts `CONNECT host:443` for the URL's host only, answers 200, then speaks TLS to the client itself with a
certificate for that host signed by a throwaway CA made here (openssl CLI; the CA file and key stay in work_dir), and
answers `GET <the URL's path>` with `content` and every other request with 404. CONNECT to any other host, and plain
HTTP proxying, get 403: nothing leaves this machine. The client must trust the CA (for `requests`:
REQUESTS_CA_BUNDLE, which it reads when its `verify` is True or None).

Listens on 127.0.0.1 on a free port, in threads of the calling process. Standard library and the openssl CLI.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from e2e.component import StackError, find_tool


def make_ca_and_cert(work: Path, host: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `host` signed by it: (ca.crt, server.crt, server.key)."""
    work.mkdir(parents=True, exist_ok=True)
    openssl = find_tool("openssl")
    if openssl is None:
        raise StackError("openssl is not installed (e2e/install-tools.sh apt)")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (work / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{host}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=modelsync stand-in proxy CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}"],
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "server.ext", "-out", "server.crt"],
    ]
    for argv in steps:
        run = subprocess.run(argv, cwd=work, check=False, capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(f"openssl {argv[1]}: {run.stderr.strip()}")
    for key in ("ca.key", "server.key"):
        os.chmod(work / key, 0o600)
    return work / "ca.crt", work / "server.crt", work / "server.key"


@dataclass
class _Site:
    host: str
    port: int
    path: str
    content: bytes
    tls: ssl.SSLContext
    served: list[tuple[str, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    site: _Site  # set on the per-server subclass
    tunnel: str | None = None  # host:port once CONNECTed

    def do_CONNECT(self) -> None:  # noqa: N802 (http.server naming)
        if self.tunnel is not None or self.path != f"{self.site.host}:{self.site.port}":
            self._answer(403, b"this proxy only serves a stand-in for one URL\n", close=True)
            return
        self._record(self.path, 200)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            conn = self.site.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        self.connection = conn
        self.rfile = conn.makefile("rb")
        self.wfile = conn.makefile("wb")
        self.tunnel = self.path
        self.close_connection = False

    def do_GET(self) -> None:  # noqa: N802
        if self.tunnel is None:  # plain-HTTP proxying: not offered
            self._answer(403, b"this proxy only serves a stand-in for one URL\n", close=True)
        elif self.path == self.site.path:
            self._answer(200, self.site.content, content_type="application/octet-stream")
        else:
            self._answer(404, b"not found (stand-in proxy)\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._answer(403 if self.tunnel is None else 405, b"not allowed (stand-in proxy)\n", close=True)

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _record(self, target: str, status: int) -> None:
        with self.site.lock:
            self.site.served.append((self.tunnel or target, self.command, self.path, status))

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain", close: bool = False) -> None:
        if self.command != "CONNECT":
            self._record(self.tunnel or "-", status)
        else:
            self._record(self.path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.tunnel is not None:
                try:
                    self.connection.close()
                except OSError:
                    pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@dataclass
class StandinProxy:
    server: ThreadingHTTPServer
    thread: threading.Thread
    ca_file: Path
    site: _Site

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def served(self) -> list[tuple[str, str, str, int]]:
        with self.site.lock:
            return list(self.site.served)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_standin_proxy(url: str, content: bytes, work: Path) -> StandinProxy:
    """Serve `content` at https `url` to clients using this proxy (see the module docstring)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"an https URL is needed: {url}")
    ca, cert, key = make_ca_and_cert(work, parts.hostname)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    site = _Site(parts.hostname, parts.port or 443, parts.path + (f"?{parts.query}" if parts.query else ""),
                 content, tls)
    handler = type("StandinProxyHandler", (_Handler,), {"site": site})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="standin-proxy",
                              daemon=True)
    thread.start()
    return StandinProxy(server, thread, ca, site)
