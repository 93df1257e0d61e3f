"""Kubernetes Events on the job's own pod: what the Model Registry UI (and `kubectl get events`) shows of a transfer
while it runs.

Inside a pod the job finds the API server in KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT, and its service
account's token, namespace and CA under /var/run/secrets/kubernetes.io/serviceaccount (the token is read again for
each event: the kubelet rotates it). The event's object is the pod itself: its name is POD_NAME (set it from the
downward API where the hostname is not the pod's, e.g. with hostNetwork), else the hostname; its namespace is
POD_NAMESPACE, else the service account's. Outside a pod (an operator running the job by hand) nothing is sent.

    TransferStarted    where from, where to, how much
    TransferProgress   bytes done of the total, rate and ETA: at each tenth of a step's bytes, and every 30 s
                       while bytes move
    TransferPublished  the URI and digest
    TransferFailed     the one-line reason (Warning)

Events are sent from a thread of their own with a short timeout, so a slow or absent API server never holds the
transfer up. A service account that may not create events (403), or an API server that does not answer, is said once
at INFO, and the job goes on without events. Every message is masked like the logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from ..secret import mask

log = logging.getLogger("modelsync.events")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT = 3.0          # per request
FLUSH = 5.0            # how long the job's end waits for the last events
HEARTBEAT = 30.0       # a progress event at least this often while bytes move
COMPONENT = "modelsync"


class PodEvents:
    """Sends events about one pod to the API server, one at a time, from a background thread."""

    def __init__(self, server: str, namespace: str, pod: str, token_file: Path, ca_file: Path | None):
        self.server, self.namespace, self.pod = server.rstrip("/"), namespace, pod
        self.token_file = token_file
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._queue: queue.Queue[tuple[str, str, bool] | None] = queue.Queue(maxsize=100)
        self._off = False
        self._thread = threading.Thread(target=self._send_all, name="pod-events", daemon=True)
        self._thread.start()

    def emit(self, reason: str, message: str, warning: bool = False) -> None:
        if self._off:
            return
        try:
            self._queue.put_nowait((reason, mask(message)[:1024], warning))
        except queue.Full:
            pass  # the API server is behind: an event is not worth holding the transfer for

    def close(self) -> None:
        """Send what is queued (at most FLUSH seconds), then stop."""
        self._queue.put(None)
        self._thread.join(FLUSH)

    def _send_all(self) -> None:
        while (item := self._queue.get()) is not None:
            if not self._off:
                self._send(*item)

    def _send(self, reason: str, message: str, warning: bool) -> None:
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{self.pod}.", "namespace": self.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": self.pod, "namespace": self.namespace},
                "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
                "source": {"component": COMPONENT, "host": socket.gethostname()},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": reason,
                "reportingComponent": COMPONENT, "reportingInstance": self.pod}
        try:
            token = self.token_file.read_text().strip()
            request = urllib.request.Request(f"{self.server}/api/v1/namespaces/{self.namespace}/events",
                                             data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "Authorization": f"Bearer {token}"})
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                 urllib.request.HTTPSHandler(context=self._context))
            with opener.open(request, timeout=TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            self._stop(f"the API server answered HTTP {exc.code} to an event (the pod's service account needs "
                       f"'create' on 'events' in namespace {self.namespace}: see samples/events-rbac.yaml)"
                       if exc.code in (401, 403) else f"the API server answered HTTP {exc.code} to an event")
        except (OSError, ValueError) as exc:
            self._stop(f"the API server at {self.server} did not take an event ({getattr(exc, 'reason', exc)})")

    def _stop(self, why: str) -> None:
        self._off = True
        log.info("no Kubernetes events for this job: %s; it goes on without them", mask(why))


def from_pod(environ: Mapping[str, str] | None = None) -> PodEvents | None:
    """The pod's events, or None outside a pod (no API server in the environment, or no service-account token)."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT / "token"
    if not host or not token.is_file():
        return None
    try:
        namespace = env.get("POD_NAMESPACE") or (SERVICE_ACCOUNT / "namespace").read_text().strip()
    except OSError:
        return None
    pod = env.get("POD_NAME") or socket.gethostname()
    address = f"[{host}]" if ":" in host else host
    ca = SERVICE_ACCOUNT / "ca.crt"
    return PodEvents(f"https://{address}:{port}", namespace, pod, token, ca if ca.is_file() else None)


# ---- the job's one reporter -------------------------------------------------------------------------------------

_current: PodEvents | None = None
_steps: dict[str, tuple[int, float, int]] = {}  # progress label -> (last tenth reported, when, bytes then)
_lock = threading.Lock()


def start(events: PodEvents | None) -> None:
    global _current
    _current = events
    _steps.clear()


def stop() -> None:
    global _current
    if _current is not None:
        _current.close()
    _current = None


def emit(reason: str, message: str, warning: bool = False) -> None:
    if _current is not None:
        _current.emit(reason, message, warning)


def progress(label: str, done: int, total: int, line: Callable[[], str]) -> None:
    """A step's progress (progress.Progress calls this on every update): an event at each new tenth of its bytes,
    and every HEARTBEAT seconds while bytes move."""
    if _current is None:
        return
    now = time.monotonic()
    tenth = min(10, done * 10 // total) if total > 0 else 0
    with _lock:
        if label not in _steps:
            _steps[label] = (tenth, now, done)
            return
        last_tenth, last_time, last_done = _steps[label]
        if tenth <= last_tenth and (now - last_time < HEARTBEAT or done <= last_done):
            return
        _steps[label] = (max(tenth, last_tenth), now, done)
    emit("TransferProgress", line())
