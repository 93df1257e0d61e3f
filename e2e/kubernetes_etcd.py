"""etcd of the local Kubernetes (e2e/kubernetes.py): the apiserver's store.

    etcd    one member named default, plain HTTP on 127.0.0.1       GET http://127.0.0.1:P/health = 200
            client port `etcd`, peer port `etcd_peer`

Data in STATE_DIR/etcd. `reset` empties it before every fresh start: API objects of an earlier start (its pods among
them) would otherwise come back.
"""

from __future__ import annotations

import shutil

from e2e.component import http_status
from e2e.kubernetes_node import Node, need

NAME = "etcd"
PORTS = ("etcd", "etcd_peer")


def reset(node: Node) -> None:
    shutil.rmtree(node.dir / "etcd", ignore_errors=True)
    (node.dir / "etcd").mkdir(parents=True)


def argv(node: Node) -> list[str]:
    client, peer = f"http://127.0.0.1:{node.ports['etcd']}", f"http://127.0.0.1:{node.ports['etcd_peer']}"
    return [need("etcd"), "--name", "default", "--data-dir", str(node.dir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}", "--log-level", "warn"]


def healthy(node: Node) -> bool:
    return http_status(f"http://127.0.0.1:{node.ports['etcd']}/health") == 200
