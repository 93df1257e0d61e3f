"""kube-controller-manager and kube-scheduler of the local Kubernetes (e2e/kubernetes.py).

    kube-controller-manager  all controllers; the token controller signs with the apiserver's own service-account
                             key (STATE_DIR/pki/sa.key), and ca_file is the root CA it publishes to every
                             namespace                               GET https://127.0.0.1:P/healthz = 200
    kube-scheduler           the default scheduler                   GET https://127.0.0.1:P/healthz = 200

Both use the admin kubeconfig (system:masters) for the API and for delegated authentication and authorization, bind
their secure port (`controller_manager`, `scheduler`) to 127.0.0.1 with a self-signed certificate they make in
STATE_DIR/pki/NAME (only liveness is checked, unverified), and run without leader election (one of each).
"""

from __future__ import annotations

import ssl

from e2e.component import http_status
from e2e.kubernetes_node import Node, need

CONTROLLER_MANAGER, SCHEDULER = "kube-controller-manager", "kube-scheduler"
PORT_OF = {CONTROLLER_MANAGER: "controller_manager", SCHEDULER: "scheduler"}


def _common(node: Node, binary: str) -> list[str]:
    kc = node.kubeconfig
    return [need(binary), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1",
            f"--secure-port={node.ports[PORT_OF[binary]]}", "--leader-elect=false",
            f"--cert-dir={node.dir / 'pki' / binary}"]


def controller_manager_argv(node: Node) -> list[str]:
    return [*_common(node, CONTROLLER_MANAGER),
            f"--root-ca-file={node.ca_file}", f"--service-account-private-key-file={node.dir / 'pki' / 'sa.key'}",
            "--use-service-account-credentials=false", "--controllers=*"]


def scheduler_argv(node: Node) -> list[str]:
    return _common(node, SCHEDULER)


def healthy(node: Node, name: str) -> bool:
    """Liveness of CONTROLLER_MANAGER or SCHEDULER (their self-signed serving certificates are not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return http_status(f"https://127.0.0.1:{node.ports[PORT_OF[name]]}/healthz", context=ctx) == 200
