"""Fault injection for tests/stack/test_faults.py: a real Toxiproxy server, a gateway answering 503 for a while, and
private MinIO / registry processes that a test may stop and restart without touching the shared stack.

    toxi = Toxiproxy.start(workdir)                 one toxiproxy-server (e2e/versions.env) on a free port
    port = toxi.proxy("s3", upstream_port)          127.0.0.1:port now forwards to 127.0.0.1:upstream_port
    toxi.toxic("s3", "bandwidth", rate=2048)        toxics as in Toxiproxy's README (cut, stall, slow, time out)
    toxi.blip("s3", 3.0)                            every connection reset, new ones too, for 3 s
    toxi.blip("s3", 5.0, after=1 << 20)             a flapping link: each connection cut after 1 MiB, for 5 s
    toxi.enable("mr", False) / toxi.reset()         refuse connections / every proxy clean and enabled again

Toxiproxy's HTTP API is spoken with urllib (standard library only); every call has a timeout.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from e2e import procs
from e2e.component import free_ports, http_status
from e2e.registry import config_yaml
from e2e.stack import find_tool

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(check, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


class Server:
    """A binary started in its own process group (e2e/procs.py), output in a log file; stop() ends the group."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, log: Path, health: str):
        self.argv, self.env, self.log, self.health = argv, env, log, health
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.proc = procs.spawn(self.argv, self.env, self.log.parent, self.log)
        wait_for(lambda: self.proc.poll() is None and http_status(self.health) is not None
                 or self.proc.poll() is not None, timeout, f"{self.argv[0]} healthy")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.argv[0]} exited: {procs.log_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_group(self.proc.pid, self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
            self.proc = None


# ---------------------------------------------------------------- Toxiproxy


class Toxiproxy:
    def __init__(self, server: Server, api_port: int):
        self.server, self.api = server, f"http://127.0.0.1:{api_port}"
        self.ports: dict[str, int] = {}

    @classmethod
    def start(cls, workdir: Path) -> Toxiproxy:
        binary = find_tool("toxiproxy-server")
        if binary is None:
            raise FileNotFoundError("toxiproxy-server not installed; run e2e/install-tools.sh toxiproxy")
        workdir.mkdir(parents=True, exist_ok=True)
        (port,) = free_ports(1)
        server = Server([binary, "-host", "127.0.0.1", "-port", str(port), "-proxy-metrics"], None,
                        workdir / "toxiproxy.log", f"http://127.0.0.1:{port}/version")
        server.start()
        return cls(server, port)

    def _call(self, method: str, path: str, body: dict | None = None) -> bytes:
        import json
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"toxiproxy {method} {path}: HTTP {err.code} {err.read()[:200]!r}") from None

    def proxy(self, name: str, upstream_port: int) -> int:
        (port,) = free_ports(1)
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{port}",
                                        "upstream": f"127.0.0.1:{upstream_port}", "enabled": True})
        self.ports[name] = port
        return port

    def toxic(self, proxy: str, kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes) -> str:
        """Add a toxic; its name. stream: downstream (server -> client) or upstream (client -> server)."""
        name = f"{kind}_{stream}_{len(attributes)}_{time.monotonic_ns()}"
        self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": kind, "stream": stream,
                                                        "toxicity": toxicity, "attributes": attributes})
        return name

    def remove(self, proxy: str, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    def enable(self, proxy: str, enabled: bool) -> None:
        """Disabled, the proxy closes its connections and refuses new ones."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def reset(self) -> None:
        self._call("POST", "/reset")

    def bytes_through(self, proxy: str, stream: str = "downstream", counter: str = "sent") -> int:
        """Bytes the proxy has sent on (or, counter="received", read: before its toxics), in that direction, over
        all its connections (its Prometheus counters). Toxiproxy adds a connection's bytes when it ends: this
        tells what happened, not what is under way (dir_bytes of what is being written tells that)."""
        text = self._call("GET", "/metrics").decode()
        pattern = (rf'^toxiproxy_proxy_{counter}_bytes_total\{{[^}}]*direction="{stream}"[^}}]*proxy="{proxy}"'
                   rf'[^}}]*\}} (\S+)$')
        return sum(int(float(m)) for m in re.findall(pattern, text, re.M))

    def blip(self, proxy: str, lasting: float, stream: str = "downstream", after: int | None = None) -> None:
        """A bad stretch of network for `lasting` seconds, then the path is clear again. after=None: every
        connection, open or new, is reset at once (reset_peer). after=N: a flapping link, each connection cut once
        it carried N more bytes in `stream` (limit_data): a client's quick retries each get cut again."""
        if after is None:
            toxic = self.toxic(proxy, "reset_peer", "downstream", timeout=0)
        else:
            toxic = self.toxic(proxy, "limit_data", stream, bytes=after)
        time.sleep(lasting)
        self.remove(proxy, toxic)

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------- a gateway answering 503 for a while


class Gate:
    """What a failing_gateway answers: 503 to the next `failures` requests, and to all until `until`; the next
    `cuts` blob GETs cut after `cut_after` bytes of their body; with `strip_range`, Range headers dropped (a
    registry that ignores them)."""

    def __init__(self, port: int, failures: int):
        self.port, self.failures, self.until = port, failures, 0.0
        self.cuts, self.cut_after, self.strip_range = 0, 0, False
        self.seen: list[str] = []  # "503 METHOD path", "METHOD path" or "METHOD path bytes=a-b", in order
        self.lock = threading.Lock()

    def cut_now(self, method: str, path: str) -> bool:
        with self.lock:
            if method != "GET" or "/blobs/sha256:" not in path or self.cuts <= 0:
                return False
            self.cuts -= 1
            return True

    def fail_for(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def failed(self) -> int:
        return sum(line.startswith("503") for line in self.seen)

    def decide(self, request: str) -> bool:
        with self.lock:
            fail = self.failures > 0 or time.monotonic() < self.until
            self.failures -= 1 if self.failures > 0 else 0
            self.seen.append(f"{'503 ' if fail else ''}{request}")
            return fail


@contextmanager
def failing_gateway(upstream_port: int, failures: int = 0) -> Iterator[Gate]:
    """An HTTP gateway to 127.0.0.1:upstream_port answering `503 Service Unavailable` to the first `failures`
    requests (and during gate.fail_for(seconds)), cutting or narrowing blob reads as the Gate says, forwarding
    every other request (Content-Length bodies streamed:
    what oras and the job send; Host kept, so a registry's upload Locations point back here)."""
    (port,) = free_ports(1)
    gate = Gate(port, failures)

    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one_request(self) -> None:  # every method, one place
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or not self.parse_request():
                self.close_connection = True
                return
            length = int(self.headers.get("Content-Length") or 0)
            wanted = self.headers.get("Range")
            if gate.decide(f"{self.command} {self.path}" + (f" {wanted.removeprefix('bytes=')}" if wanted else "")):
                self.rfile.read(length)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            self._forward(length)

        def _forward(self, length: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in ("connection", "transfer-encoding") and \
                            not (gate.strip_range and key.lower() == "range"):
                        conn.putheader(key, value)
                conn.endheaders()
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    conn.send(chunk)
                    left -= len(chunk)
                resp = conn.getresponse()
                self.send_response_only(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                body = resp.read() if self.command != "HEAD" else b""
                self.send_header("Content-Length", resp.getheader("Content-Length", str(len(body)))
                                 if self.command == "HEAD" else str(len(body)))
                self.end_headers()
                if gate.cut_now(self.command, self.path):  # the connection dies part-way through the body
                    self.wfile.write(body[:gate.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
            finally:
                conn.close()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Gateway)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield gate
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---------------------------------------------------------------- private servers a test may restart


def private_minio(root: Path, user: str, password: str) -> tuple[Server, int]:
    """A MinIO of this test's own (data under root), started; (server, port). Credentials via env only."""
    port, console = free_ports(2)
    server = Server([find_tool("minio"), "server", str(root / "data"), "--quiet", "--address", f"127.0.0.1:{port}",
                     "--console-address", f"127.0.0.1:{console}"],
                    {"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password, "MINIO_BROWSER": "off",
                     "MINIO_UPDATE": "off"}, root / "minio.log", f"http://127.0.0.1:{port}/minio/health/live")
    root.mkdir(parents=True, exist_ok=True)
    server.start()
    return server, port


def private_registry(root: Path) -> tuple[Server, int]:
    """A distribution registry of this test's own (plain HTTP, data under root, a fixed http secret so uploads
    survive a restart), started; (server, port)."""
    (port,) = free_ports(1)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(config_yaml(root, port, os.urandom(16).hex(), level="warn"))
    server = Server([find_tool("registry"), "serve", str(config)], {"OTEL_TRACES_EXPORTER": "none"},
                    root / "registry.log", f"http://127.0.0.1:{port}/v2/")
    server.start()
    return server, port


def dir_bytes(root: Path, pattern: str = "**/*") -> int:
    """Bytes of the files under root matching pattern, as they grow (files may vanish while counted)."""
    total = 0
    for path in root.glob(pattern):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total
