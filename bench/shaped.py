"""The link of `python -m bench --shaped RATE`: MinIO and a registry behind a veth pair limited to RATE each way.

    host network namespace                          namespace msbench<PID> (made for the run)
      bench, D (aws), P (oras), the jobs,             MinIO        NS_ADDR:9000 (console :9001)
      the Model Registry (127.0.0.1, unshaped)        registry     NS_ADDR:5000 (distribution, plain HTTP)
                                                      a URL source (python -m http.server NS_ADDR:8000)
      msb<PID>h  HOST_ADDR/30  <------ veth ------>   link0  NS_ADDR/30
      tbf RATE (egress: uploads)                      tbf RATE (egress: downloads)

The stack's own MinIO and registry listen on 127.0.0.1 only, which a namespace cannot reach without a relay (a
userspace copy, whose CPU would be counted nowhere) or a host NAT rule (the host's tables are never touched). So
the run's own servers (servers.py) start inside the namespace, bound to NS_ADDR, their data under the bench's
temporary directory; the processes measured stay in the host namespace, unchanged, and reach
NS_ADDR through the veth: every byte of D, P and the jobs crosses the shaped link, one `tbf` qdisc on each end
(egress), i.e. RATE for downloads and RATE for uploads. The Model Registry (a few small calls) stays on 127.0.0.1.

The link's /30 comes from 198.18.0.0/15 (RFC 2544: set aside for benchmarks), checked against the host's
addresses and routes. The host's network changes only by the veth's own end while the run lasts (its connected /30
route and link-local address go with it): no qdisc, table, route or sysctl of the host is written. On exit —
normal, an exception, Ctrl-C or SIGTERM (`python -m bench` turns it into KeyboardInterrupt) — the servers are
stopped and the namespace and the veth pair deleted; a namespace left by a run that was killed outright (SIGKILL)
is removed by the next run (its owner's pid is in its name). Needs root, `ip` and `tc` (iproute2).

`probe` proves the shaping: a raw TCP transfer each way between the two ends (a sender in one namespace, a receiver
in the other, no server in between), timed by the receiver from the first byte to the last.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from bench.servers import OwnServers
from modelsync.locations import S3Location

MIB = 1024 * 1024
PREFIX = "msbench"  # namespace msbench<PID>, host veth end msb<PID>h
NS_VETH = "link0"
LINK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MINIO_PORT, CONSOLE_PORT, REGISTRY_PORT, WWW_PORT = 9000, 9001, 5000, 8000
HUB_PORT = 8090
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$")
_UNIT = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}  # tc's units: SI, bits per second


class LinkError(RuntimeError):
    pass


def parse_rate(rate: str) -> float:
    """Bits per second of a tc rate such as 800mbit (kbit, mbit, gbit: powers of 1000)."""
    m = _RATE.match(rate.strip().lower())
    if m is None:
        raise LinkError(f"rate {rate!r}: expected a number and kbit, mbit or gbit (e.g. 800mbit)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise LinkError(f"{name} not found (iproute2)")
    return path


def _run(*argv: str) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise LinkError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


class ShapedLink:
    """The namespace, the shaped veth pair and the servers in it, for one bench run (a context manager)."""

    def __init__(self, rate: str, work: Path):
        self.rate = rate.strip().lower()
        self.bits_per_second = parse_rate(self.rate)
        self.work = work / "shaped"
        self.ip, self.tc = _tool("ip"), _tool("tc")
        self.netns = f"{PREFIX}{os.getpid()}"
        self.host_veth = f"msb{os.getpid()}h"
        self.host_addr, self.ns_addr = self._pick_addresses()
        self.own = OwnServers(self.work, self.ns_addr, {"minio": MINIO_PORT, "console": CONSOLE_PORT,
                                                        "registry": REGISTRY_PORT}, wrap=self.in_netns)

    # ------------------------------------------------------------------ set-up and clean-up

    def __enter__(self) -> ShapedLink:
        remove_stale(self.ip)
        try:
            self._setup_link()
            self.own.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _pick_addresses(self) -> tuple[str, str]:
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for argv in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
            for line in _run(self.ip, *argv).splitlines():
                for word in line.split():
                    try:
                        taken.append(ipaddress.ip_network(word, strict=False))
                    except ValueError:
                        continue
        start = os.getpid() % (LINK_RANGE.num_addresses // 4)
        subnets = list(LINK_RANGE.subnets(new_prefix=30))
        for i in range(len(subnets)):
            net = subnets[(start + i) % len(subnets)]
            if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
                return str(net.network_address + 1), str(net.network_address + 2)
        raise LinkError(f"no free /30 in {LINK_RANGE}")

    def _setup_link(self) -> None:
        ip, ns = self.ip, self.netns
        _run(ip, "netns", "add", ns)
        _run(ip, "-n", ns, "link", "set", "lo", "up")
        _run(ip, "link", "add", self.host_veth, "type", "veth", "peer", "name", NS_VETH, "netns", ns)
        _run(ip, "addr", "add", f"{self.host_addr}/30", "dev", self.host_veth)
        _run(ip, "link", "set", self.host_veth, "up")
        _run(ip, "-n", ns, "addr", "add", f"{self.ns_addr}/30", "dev", NS_VETH)
        _run(ip, "-n", ns, "link", "set", NS_VETH, "up")
        # burst: 10 ms at the rate (at least 128 KiB, above a 64 KiB GSO packet); latency bounds the queue
        burst = max(int(self.bits_per_second / 8 / 100), 128 * 1024)
        tbf = ["root", "tbf", "rate", self.rate, "burst", str(burst), "latency", "50ms"]
        _run(self.tc, "qdisc", "add", "dev", self.host_veth, *tbf)
        _run(self.tc, "-n", ns, "qdisc", "add", "dev", NS_VETH, *tbf)

    def in_netns(self, argv: list[str]) -> list[str]:
        return [self.ip, "netns", "exec", self.netns, *argv]

    def serve_directory(self, directory: Path) -> str:
        """A plain HTTP file server for `directory` in the namespace (a URL source across the link); its URL."""
        self.own.spawn("www", [sys.executable, "-m", "http.server", "--bind", self.ns_addr, "--directory",
                               str(directory), str(WWW_PORT)])
        url = f"http://{self.ns_addr}:{WWW_PORT}/"
        self.own.wait(url, 200, "www")
        return url

    def serve_hub(self, directory: Path, repo_id: str) -> str:
        """The stand-in Hugging Face Hub (tests/support/hub_server.py) in the namespace, serving directory as
        repo_id's main revision (an hf:// source across the link); its URL (HF_ENDPOINT)."""
        self.own.spawn("hub", [sys.executable, "-m", "tests.support.hub_server", str(directory), repo_id, self.ns_addr,
                               str(HUB_PORT)], env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        url = f"http://{self.ns_addr}:{HUB_PORT}"
        self.own.wait(f"{url}/api/models/{repo_id}", 200, "hub", timeout=600)  # it hashes the files once
        return url

    def close(self) -> None:
        """Stop the servers (SIGTERM, then SIGKILL after 10 s), delete the namespace and the veth pair."""
        self.own.close()
        _remove(self.ip, self.netns, self.host_veth)

    # ------------------------------------------------------------------ what the bench uses

    def s3(self, key: str) -> S3Location:
        return self.own.s3(key)

    def env(self) -> dict[str, str]:
        """The stack env's MinIO and registry keys, pointing at the servers behind the link."""
        return self.own.env()

    def server_pids(self) -> list[int]:
        return self.own.server_pids()

    def describe(self) -> dict[str, object]:
        return {"rate": self.rate, "netns": self.netns, "host_veth": self.host_veth, "host_addr": self.host_addr,
                "ns_addr": self.ns_addr, "servers_in_netns": {"minio": f"{self.ns_addr}:{MINIO_PORT}",
                                                              "registry": f"{self.ns_addr}:{REGISTRY_PORT}"}}

    def probe(self, nbytes: int = 256 * MIB) -> dict[str, float]:
        """MiB/s of a raw TCP transfer of nbytes each way: namespace -> host (downloads), host -> namespace
        (uploads), each timed by its receiver."""
        return {"down_mib_per_s": round(self._probe(nbytes, ns_sends=True), 1),
                "up_mib_per_s": round(self._probe(nbytes, ns_sends=False), 1)}

    def _probe(self, nbytes: int, ns_sends: bool) -> float:
        with socket.create_server((self.host_addr, 0)) as listener:
            port = listener.getsockname()[1]
            result: list[float] = []
            child = subprocess.Popen(self.in_netns([sys.executable, "-c", _PROBE, "recv" if not ns_sends else "send",
                                                    self.host_addr, str(port), str(nbytes)]),
                                     stdout=subprocess.PIPE, text=True)
            listener.settimeout(30)
            conn, _ = listener.accept()
            with conn:
                worker = threading.Thread(target=_endpoint, args=(conn, "recv" if ns_sends else "send", nbytes, result))
                worker.start()
                worker.join()
            out, _ = child.communicate(timeout=120)
            if child.returncode != 0:
                raise LinkError(f"probe failed ({child.returncode})")
        seconds = result[0] if ns_sends else float(out.strip())
        return nbytes / MIB / seconds


def _endpoint(conn: socket.socket, mode: str, nbytes: int, result: list[float]) -> None:
    """One end of a probe: send nbytes (then close), or receive to EOF and append the seconds from the first
    byte to the last (the same code as _PROBE, which the other end runs in the namespace)."""
    if mode == "send":
        block = bytes(MIB)
        left = nbytes
        while left > 0:
            conn.sendall(block[:min(left, MIB)])
            left -= min(left, MIB)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
        return
    got, first = 0, 0.0
    while chunk := conn.recv(MIB):
        if not got:
            first = time.monotonic()
        got += len(chunk)
    result.append(time.monotonic() - first)


_PROBE = """
import socket, sys, time
mode, host, port, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conn = socket.create_connection((host, port))
if mode == "send":
    block, left = bytes(1 << 20), nbytes
    while left > 0:
        conn.sendall(block[:min(left, 1 << 20)]); left -= min(left, 1 << 20)
    conn.shutdown(socket.SHUT_WR); conn.recv(1)
else:
    got, first = 0, 0.0
    while chunk := conn.recv(1 << 20):
        first = first or time.monotonic(); got += len(chunk)
    print(time.monotonic() - first)
conn.close()
"""


def _remove(ip: str, netns: str, host_veth: str) -> None:
    """The namespace's remaining processes killed (a stale run's servers), the namespace and the veth deleted."""
    if Path(f"/run/netns/{netns}").exists():
        pids = subprocess.run([ip, "netns", "pids", netns], check=False, capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run([ip, "netns", "delete", netns], check=False, capture_output=True)
    if Path(f"/sys/class/net/{host_veth}").exists():
        subprocess.run([ip, "link", "delete", host_veth], check=False, capture_output=True)


def remove_stale(ip: str) -> None:
    """Namespaces (and veths) of earlier runs whose bench process is gone (killed outright)."""
    for path in sorted(Path("/run/netns").glob(f"{PREFIX}*")) if Path("/run/netns").is_dir() else []:
        pid = path.name.removeprefix(PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(ip, path.name, f"msb{pid}h")
