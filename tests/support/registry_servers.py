"""Small HTTP servers for tests/stack/test_registry.py: not Model Registries, but what can stand between the job and
one."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler


class Flaky(BaseHTTPRequestHandler):
    """In front of the real server, a gateway having a bad minute: resets the first two GETs (aiohttp itself
    retries an idempotent request once, so two), answers 503 to the third, and forwards the first POST upstream
    but resets instead of answering (the entity exists, the client never hears so); then forwards everything."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    gets = posts = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        with self.lock:
            cls = type(self)
            if self.command == "GET":
                cls.gets += 1
            elif self.command == "POST":
                cls.posts += 1
            gets, posts = cls.gets, cls.posts
        if self.command == "GET" and gets <= 2:
            return self._reset()
        if self.command == "GET" and gets == 3:
            return self._send(503, b"upstream restarting", "text/plain")
        status, payload, content_type = self._forward(body)
        if self.command == "POST" and posts == 1:
            return self._reset()
        self._send(status, payload, content_type)

    do_POST = do_PATCH = do_GET

    def _forward(self, body: bytes | None) -> tuple[int, bytes, str]:
        target = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        try:
            conn.request(self.command, self.path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheader("Content-Type", "application/json")
        finally:
            conn.close()

    def _reset(self) -> None:
        # SO_LINGER 0: closing sends RST instead of FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class NotFoundEverywhere(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass
