"""retry.py, the one retry policy: against a real HTTP server on loopback (http.server) through the real registry
HTTP client (distribution.RegistryClient), and the policy's own arithmetic. No stack needed."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelsync import retry
from modelsync.clients.distribution import RegistryClient
from modelsync.errors import TransferError
from modelsync.locations import OciLocation
from modelsync.retry import Policy, Transient
from modelsync.secret import register

NO_JITTER = Policy(attempts=4, first_delay=0.05, max_delay=1.0, jitter=0.0, max_retry_after=2.0, timeout=5.0)
MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}'


class Script:
    """What the server answers, in order (the last answer repeats), and when each request came."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]):
        self.answers = answers
        self.seen: list[float] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script([(200, {})])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.seen.append(time.monotonic())
            status, headers = script.answers[min(len(script.seen), len(script.answers)) - 1]
            body = MANIFEST if status == 200 else b'{"errors": [{"code": "BUSY", "message": "try later"}]}'
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json" if status == 200
                             else "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(address: str, policy: Policy = NO_JITTER) -> RegistryClient:
    return RegistryClient(OciLocation(f"{address}/models/m:1", tls_verify=False), timeout=policy.timeout,
                          policy=policy)


def test_429_with_retry_after_then_503_then_200(server, caplog) -> None:
    address, script = server
    script.answers = [(429, {"Retry-After": "1"}), (503, {}), (200, {})]
    caplog.set_level(logging.WARNING)
    found = client(address).manifest("models/m", "1")
    assert found.data == MANIFEST
    assert len(script.seen) == 3
    assert script.seen[1] - script.seen[0] >= 0.95            # the server's Retry-After: 1 s, not the 0.05 s back-off
    assert 0.04 <= script.seen[2] - script.seen[1] < 0.9       # 503 without Retry-After: the back-off
    lines = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(lines) == 2, lines                              # each retry said once
    assert "(429)" in lines[0] and "as the server asked" in lines[0] and "(try 2 of 4)" in lines[0]
    assert "(503)" in lines[1] and "(try 3 of 4)" in lines[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "trying again" in r.getMessage())


def test_retry_after_as_an_http_date_is_honoured_and_capped(server) -> None:
    address, script = server
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)  # an hour: capped at max_retry_after (2 s)
    script.answers = [(503, {"Retry-After": later}), (200, {})]
    start = time.monotonic()
    client(address).manifest("models/m", "1")
    waited = script.seen[1] - script.seen[0]
    assert 1.9 <= waited < 3.0 and time.monotonic() - start < 4


def test_404_is_not_retried(server, caplog) -> None:
    address, script = server
    script.answers = [(404, {})]
    with pytest.raises(TransferError) as err:
        client(address).manifest("models/m", "1")
    assert len(script.seen) == 1 and "(404)" in str(err.value)
    assert "trying again" not in caplog.text


def test_attempts_bound_the_tries_and_the_error_says_so(server) -> None:
    address, script = server
    script.answers = [(502, {})]
    with pytest.raises(TransferError) as err:
        client(address, Policy(attempts=3, first_delay=0.02, jitter=0.0)).manifest("models/m", "1")
    assert len(script.seen) == 3
    assert "(502)" in str(err.value) and "gave up after 3 tries" in str(err.value)


def test_a_refused_connection_is_transient_and_bounded() -> None:
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    location = OciLocation(f"127.0.0.1:{port}/models/m:1", tls_verify=True)  # https: no TLS probe on a dead port
    policy = Policy(attempts=3, first_delay=0.02, jitter=0.0, timeout=2.0)
    with pytest.raises(TransferError) as err:
        RegistryClient(location, timeout=2.0, policy=policy).manifest("models/m", "1")
    assert "cannot reach registry" in str(err.value) and "gave up after 3 tries" in str(err.value)


# ---- the policy itself -------------------------------------------------------------------------------------------

def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    policy = Policy(attempts=6, first_delay=2.0, max_delay=10.0, jitter=0.25)
    assert [policy.backoff(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    for n in range(1, 6):
        drawn = [policy.delay(n) for _ in range(200)]
        assert all(0.75 * policy.backoff(n) <= d <= policy.backoff(n) for d in drawn)
        assert len(set(drawn)) > 1  # jittered
    assert policy.delay(1, server_asks=7.0) == 7.0
    assert policy.delay(1, server_asks=600.0) == policy.max_retry_after


def test_retry_after_values() -> None:
    now = time.time()
    assert retry.retry_after("5") == 5.0
    assert retry.retry_after(" 0 ") == 0.0
    assert abs(retry.retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) - 30) <= 1  # type: ignore
    assert retry.retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry.retry_after("soon") is None and retry.retry_after(None) is None and retry.retry_after("-3") is None


def test_statuses() -> None:
    assert {s for s in range(100, 600) if retry.http_status(s, "x")} == {408, 429, 500, 502, 503, 504}
    assert retry.http_status(503, "x", "4").retry_after == 4.0  # type: ignore[union-attr]
    assert retry.http_status(502, "x", "4").retry_after is None  # type: ignore[union-attr]


def test_call_stops_at_the_first_permanent_error_and_masks_the_reason(caplog) -> None:
    register("hunter2-secret-value")
    waits: list[float] = []
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Transient("refused by hunter2-secret-value")
        raise KeyError("permanent")

    with pytest.raises(KeyError):
        NO_JITTER.call("thing", attempt, wait=waits.append)
    assert len(calls) == 2 and waits == [0.05]
    assert "hunter2-secret-value" not in caplog.text and "refused by ***" in caplog.text


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Policy(attempts=0)
