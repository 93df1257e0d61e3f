"""The command line of the local Kubernetes (e2e/kubernetes.py)::

    python -m e2e.kubernetes [--state-dir DIR] up|down|status|env
    python -m e2e.kubernetes [--state-dir DIR] kubectl ARGS...
        default DIR: ${MODELSYNC_K8S_DIR:-${MODELSYNC_CACHE:-~/.cache/modelsync}/kubernetes}

up: start (or reuse) and print the KUBECONFIG to export; down: stop; status: each process's pid and health (exit 1
when one is not healthy or nothing is up); env: `export` lines of Cluster.env(); kubectl: everything after it goes
to kubectl untouched, with the cluster's kubeconfig.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from e2e.component import StackError
from e2e.kubernetes import DEFAULT_STATE_DIR, Cluster
from e2e.kubernetes_node import tool


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m e2e.kubernetes",
                                     description="A real single-node Kubernetes for the e2e tests.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("command", choices=("up", "down", "status", "env", "kubectl"))
    # everything after `kubectl` goes to kubectl untouched
    rest: list[str] = []
    if "kubectl" in argv:
        i = argv.index("kubectl")
        argv, rest = argv[:i + 1], argv[i + 1:]
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    cluster = Cluster(args.state_dir)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            reused = cluster.is_up()
            cluster.up()
            print(f"cluster {'already up, reused' if reused else 'started'} in {time.monotonic() - t0:.1f}s: "
                  f"{cluster.dir}\n  export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            t0 = time.monotonic()
            cluster.down()
            print(f"cluster down in {time.monotonic() - t0:.1f}s")
        elif args.command == "status":
            status = cluster.status()
            if not status:
                print(f"not up ({cluster.dir})")
                return 1
            for name, st in status.items():
                health = "healthy" if st["healthy"] else ("UNHEALTHY" if st["alive"] else "DEAD")
                print(f"{name:24} pid {st['pid']:<8} {health}")
            print(f"ports {cluster.ports}")
            return 0 if all(s["healthy"] for s in status.values()) else 1
        elif args.command == "env":
            for key, value in cluster.env().items():
                print(f"export {key}='{value}'")
        else:
            if not cluster.kubeconfig.exists():
                raise StackError(f"cluster not up (no {cluster.kubeconfig})")
            argv = [tool("kubectl") or "kubectl", f"--kubeconfig={cluster.kubeconfig}", *rest]
            return subprocess.run(argv, check=False).returncode
    except StackError as err:
        print(f"e2e.kubernetes: {err}", file=sys.stderr)
        return 1
    return 0
