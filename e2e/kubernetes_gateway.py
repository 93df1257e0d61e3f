"""The gateway of the local Kubernetes (e2e/kubernetes.py): what non-host-network pods reach the host's 127.0.0.1
services through. Standard library only; runs as a script (its own process group, like every cluster process).

    gateway   listens on HOST_ADDR (the host's end of the cluster's veth, kubernetes_network) on each port listed in
              STATE_DIR/gateway-ports.json and forwards each connection to 127.0.0.1 on the same port
                                                    a TCP connect to HOST_ADDR:<apiserver port> succeeds

The apiserver listens on 127.0.0.1 only and advertises HOST_ADDR (so the `kubernetes` Service, 10.0.0.1:443,
leads through kube-proxy's rules to HOST_ADDR:PORT, i.e. here): in-cluster clients (CoreDNS, kube-proxy itself)
reach it through the gateway, verifying its certificate as `kubernetes` (a name its certificate holds). The same
goes for any port `expose` adds (e.g. the local stack's MinIO or registry): the file is re-read every half second,
so ports are added while it runs. A plain TCP relay: TLS and HTTP pass through untouched. It listens on the host but
only on an address of the cluster's own link, which nothing outside this machine routes to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e2e.kubernetes_node import Node

NAME = "gateway"
PORTS_FILE = "gateway-ports.json"


def argv(node: Node, host_addr: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--state-dir", str(node.dir), "--listen", host_addr]


def expose(node: Node, port: int) -> None:
    """Add `port` to the ports the gateway forwards (it picks the change up within a second)."""
    path = node.dir / PORTS_FILE
    try:
        ports = set(json.loads(path.read_text()))
    except (OSError, ValueError):
        ports = set()
    ports.add(int(port))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(ports)))
    tmp.replace(path)


def healthy(host_addr: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host_addr, port), timeout=2):
        return True
    return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
    finally:
        for w in (client_w, up_w):
            with contextlib.suppress(OSError, RuntimeError):
                w.close()


async def _serve(state_dir: Path, listen: str) -> None:
    servers: dict[int, asyncio.Server] = {}
    while True:
        try:
            wanted = {int(p) for p in json.loads((state_dir / PORTS_FILE).read_text())}
        except (OSError, ValueError):
            wanted = set()
        for port in sorted(wanted - servers.keys()):
            try:
                servers[port] = await asyncio.start_server(partial(_relay, port), listen, port, reuse_address=True)
                print(f"gateway: {listen}:{port} -> 127.0.0.1:{port}", flush=True)
            except OSError as err:
                print(f"gateway: cannot listen on {listen}:{port}: {err}", flush=True)
        await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.state_dir, args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
