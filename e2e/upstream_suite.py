"""`make e2e-upstream`: upstream's own integration suite for the async-upload job, unmodified, against our image, on
the local Kubernetes (e2e/kubernetes.py) with the services it expects deployed in it (e2e/upstream_services.py).

    python -m e2e.upstream_suite [--state-dir DIR] [--image REF] [--suite DIR] [--keep] [-- PYTEST_ARGS...]

Upstream's files (../shared/upstream-async-upload, kubeflow/hub's jobs/async-upload at a pinned commit, ORIGIN.md
there) are run from where they are and never written to: pytest runs with `-p no:cacheprovider`, no bytecode
(PYTHONDONTWRITEBYTECODE), its temporary directories under DIR/run; a listing of the suite's files (paths, sizes,
mtimes) before and after the run must be the same, else the run fails.

Steps: a fresh cluster in DIR/cluster (down, then up: an empty etcd; images imported earlier stay); the job image
imported; MinIO, the registry and the Model Registry on MariaDB deployed and available; port-forwards as upstream's
Makefile makes them (`kubectl port-forward`): MinIO on localhost:9000 (hard-coded in the suite's upload_to_minio:
when 9000 is taken the run stops and says so), the Model Registry on localhost:8080 or, when that is taken, a free
port passed as MR_HOST_URL (the suite reads it), the registry on a free port (to push the base image); the bucket
`default`; a busybox base (Debian's busybox-static, tests/support/oci_helpers) pushed into the in-cluster registry
and named by MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE, which the suite forwards into the Job; the suite's virtual
environment (cached); then pytest `--e2e tests/integration/ -v -rA` with CONTAINER_IMAGE_URI = the image.

The suite's client: model-registry==0.3.14 (the newest release inside upstream's ">=0.3.7,<0.4.0" that speaks the
v1alpha3 REST prefix): the only Model Registry server that builds here is v0.3.0, which serves only v1alpha3, and
0.3.15+ speak only v1. The client is the test's own set-up and check tool; the Job under test reaches the real
server through its Service (http://model-registry-service.kubeflow.svc.cluster.local:8080, from upstream's sample),
with no proxy in between, so pinning the test's client changes nothing the Job does.

mnist-8.onnx: the S3 case downloads it from GitHub in the test process with `requests`; here it gets a stand-in of
that name (STANDIN below, not the real model: the job only copies bytes) from e2e/standin_proxy.py (HTTPS_PROXY for
the test process, its throwaway CA as REQUESTS_CA_BUNDLE; VERIFY_SSL=true: the suite turns that variable into a
boolean, so it cannot name a CA file). The cases whose *Job* downloads it (MODEL_SYNC_SOURCE_TYPE=uri) are
deselected by id (DESELECTED, with the reason): upstream's sample empties the pod's proxy variables, the pod cannot
reach the internet here, and the pod would not trust a stand-in's CA.

Output: pytest's own, then each upstream test id with passed/failed/skipped/deselected (and why), the stand-in
requests, whether the host's own iptables rules (nft and legacy) are the same after the run as before (reported,
not failed on: another process may change them), and the time of each step; DIR/report.json holds the same.
Exit status: pytest's (1 also when the suite's files changed or a deselected id no longer exists). The cluster is
stopped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e import upstream_services as services
from e2e.component import REPO_ROOT, StackError, beside_checkout, free_ports
from e2e.kubernetes import Cluster
from e2e.kubernetes_network import host_rules
from e2e.kubernetes_node import CACHE, tool
from e2e.standin_proxy import StandinProxy, start_standin_proxy


def find_suite() -> Path | None:
    """Upstream's files: $UPSTREAM_ASYNC_UPLOAD_DIR, else shared/upstream-async-upload beside the checkout or beside
    one of its parent directories (the team's workspace keeps shared/ next to its clones)."""
    named = os.environ.get("UPSTREAM_ASYNC_UPLOAD_DIR")
    if named:
        return Path(named)
    found = beside_checkout("upstream-async-upload/tests/integration")
    return found.parent.parent if found is not None else None


SUITE = find_suite()
DEFAULT_STATE_DIR = CACHE / "e2e-upstream"
TEST_FILE = "tests/integration/test_integration_async_upload.py"
HTTP_SOURCE = ("https://github.com/onnx/models/raw/refs/heads/main/validated/vision/classification/mnist/model/"
               "mnist-8.onnx")  # the suite's own constant
URI_REASON = ("MODEL_SYNC_SOURCE_TYPE=uri: the Job's pod downloads mnist-8.onnx from github.com itself; upstream's "
              "sample empties the pod's HTTP(S)_PROXY, nothing beyond this machine is reachable, and the pod would "
              "not trust a stand-in's CA")
DESELECTED = {f"{TEST_FILE}::{case}": URI_REASON for case in (
    "test_update_artifact_integration[None-env0]",
    "test_create_model_integration[env0]",
    "test_create_version_integration[env0]",
)}
# The suite's integration dependencies (upstream's pyproject.toml: the integration group, what the tests import)
REQUIREMENTS = ("pytest>=8.3.5,<10", "kubernetes>=33,<34", "model-registry==0.3.14", "requests>=2.33.1,<3", "pyyaml",
                "boto3")
BASE_REPOSITORY = "library/busybox:latest"
MINIO_LOCAL_PORT = 9000  # upload_to_minio's endpoint_url="http://localhost:9000"
MR_LOCAL_PORT = 8080     # the suite's default MR_HOST_URL


def standin_content() -> bytes:
    """What the stand-in proxy serves as mnist-8.onnx: 26454 bytes (the real file's size), deterministic."""
    head = b"modelsync e2e stand-in for onnx/models mnist-8.onnx (no internet here); not a real model\n"
    out, block = bytearray(head), hashlib.sha256(head).digest()
    while len(out) < 26454:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:26454])


# ---- helpers ------------------------------------------------------------------------------------------------------

def port_free(port: int) -> bool:
    """Nothing listens on `port` of 127.0.0.1 or ::1 (what `localhost` may resolve to)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as err:
                if family == socket.AF_INET6 and err.errno in (97, 99):  # no IPv6 here: nothing can listen there
                    continue
                return False
    return True


def http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=3) as resp:
            return bool(200 <= resp.status < 300)
    except OSError:
        return False


def suite_listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_dir()}


class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.t0 = time.monotonic()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - t, 1)
            print(f"   {name}: {self.steps[name]}s", flush=True)


class PortForwards:
    """`kubectl port-forward` processes of ours, stopped (by their pids) at the end."""

    def __init__(self, cluster: Cluster, logs: Path):
        self.cluster, self.logs = cluster, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, namespace: str, service: str, local: int, remote: int, ready_url: str) -> None:
        argv = [tool("kubectl") or "kubectl", f"--kubeconfig={self.cluster.kubeconfig}", "port-forward",
                "-n", namespace, f"svc/{service}", f"{local}:{remote}"]
        log = open(self.logs / f"port-forward-{service}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not http_ok(ready_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (self.logs / f"port-forward-{service}.log").read_text(errors="replace")
                raise StackError(f"port-forward to {namespace}/{service} on localhost:{local} failed:\n{text}")
            time.sleep(0.3)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def suite_venv(root: Path) -> Path:
    """The suite's virtual environment (REQUIREMENTS), made once and reused while they are the same; its python."""
    python = root / "bin" / "python"
    stamp = root / ".requirements"
    want = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
                   check=True)
    stamp.write_text(want)
    return python


def push_base(local_registry: str, work: Path) -> None:
    """A busybox base (one layer: Debian's busybox-static) into the in-cluster registry, through its port-forward."""
    sys.path.insert(0, str(REPO_ROOT))
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import push_layout
    from tests.support.oci_helpers import busybox_layout
    layout = busybox_layout(work / "busybox")
    push_layout(layout, "latest", OciLocation(f"{local_registry}/{BASE_REPOSITORY}", tls_verify=False), "latest",
                work / "push", "skopeo")


def results(junit: Path, collected: list[str]) -> list[dict[str, str]]:
    """Each collected test id with its outcome, from pytest's junit XML and the deselected list."""
    outcome: dict[str, tuple[str, str]] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            status, detail = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    status, detail = "failed", (child.get("message") or "")[:300]
                elif child.tag == "skipped":
                    status, detail = "skipped", child.get("message") or ""
            outcome[name] = (status, detail)
    rows = []
    for test_id in collected:
        status, detail = ("deselected", DESELECTED[test_id]) if test_id in DESELECTED else \
            outcome.get(test_id, ("not run", ""))
        rows.append({"id": test_id, "outcome": status, "detail": detail})
    return rows


# ---- the run ------------------------------------------------------------------------------------------------------

def run(state: Path, image: str, suite: Path, keep: bool, pytest_args: list[str], base: str = "registry") -> int:
    timer = Timer()
    if not (suite / TEST_FILE).is_file():
        raise StackError(f"upstream's suite is not at {suite} (UPSTREAM_ASYNC_UPLOAD_DIR)")
    if not port_free(MINIO_LOCAL_PORT):
        raise StackError(f"localhost:{MINIO_LOCAL_PORT} is taken: upstream's suite uploads to MinIO at "
                         f"http://localhost:{MINIO_LOCAL_PORT} (hard-coded in upload_to_minio), so the port-forward "
                         f"must use it; free it and run again")
    before = suite_listing(suite)
    rules_before = host_rules()
    work = state / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cluster = Cluster(state / "cluster")
    forwards = PortForwards(cluster, work / "logs")
    proxy: StandinProxy | None = None
    report: dict[str, Any] = {"image": image, "suite": str(suite)}
    try:
        with timer.step("cluster up (fresh)"):
            cluster.down()
            cluster.up()
        with timer.step(f"import {image}"):
            cluster.import_image(image)
        with timer.step("deploy MinIO, registry, MariaDB + Model Registry"):
            report["service images"] = services.deploy(cluster)
        with timer.step("port-forwards, bucket, base image"):
            mr_port = MR_LOCAL_PORT if port_free(MR_LOCAL_PORT) else free_ports(1)[0]
            registry_port = free_ports(1)[0]
            forwards.start(services.MINIO_NS, "minio", MINIO_LOCAL_PORT, 9000,
                           f"http://127.0.0.1:{MINIO_LOCAL_PORT}/minio/health/live")
            forwards.start(services.MR_NS, services.MR_SERVICE, mr_port, services.MR_PORT,
                           f"http://127.0.0.1:{mr_port}/readyz/health")
            forwards.start(services.REGISTRY_NS, services.REGISTRY_SERVICE, registry_port, services.REGISTRY_PORT,
                           f"http://127.0.0.1:{registry_port}/v2/")
            services.create_bucket(f"http://127.0.0.1:{MINIO_LOCAL_PORT}")
            if base == "registry":
                push_base(f"127.0.0.1:{registry_port}", work)
        with timer.step("suite venv"):
            python = suite_venv(CACHE / "upstream-suite-venv")
        proxy = start_standin_proxy(HTTP_SOURCE, standin_content(), work / "standin-ca")
        if base == "registry":
            base = f"{services.in_cluster(services.REGISTRY_SERVICE, services.REGISTRY_NS, services.REGISTRY_PORT)}/" \
                   f"{BASE_REPOSITORY}"
        env = {**os.environ, **cluster.env(),
               "CONTAINER_IMAGE_URI": image,
               "MR_HOST_URL": f"http://localhost:{mr_port}",
               "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base,
               "HTTPS_PROXY": proxy.url, "https_proxy": proxy.url,
               "NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
               "REQUESTS_CA_BUNDLE": str(proxy.ca_file), "VERIFY_SSL": "true",
               "PYTHONDONTWRITEBYTECODE": "1"}
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
            env.pop(var, None)
        report["env"] = {k: env[k] for k in ("CONTAINER_IMAGE_URI", "MR_HOST_URL",
                                             "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE", "VERIFY_SSL")}
        common = ["-p", "no:cacheprovider", "--rootdir", str(suite), "--e2e", "tests/integration/"]
        collect = subprocess.run([str(python), "-m", "pytest", *common, "--collect-only", "-q"], cwd=suite, env=env,
                                 capture_output=True, text=True, check=False)
        collected = [line.strip() for line in collect.stdout.splitlines() if "::" in line]
        missing = sorted(set(DESELECTED) - set(collected))
        if collect.returncode != 0 or missing:
            raise StackError(f"collecting upstream's suite: {missing and f'deselected ids not found: {missing}'}\n"
                             f"{collect.stdout}{collect.stderr}")
        junit = work / "junit.xml"
        argv = [str(python), "-m", "pytest", *common, "-v", "-rA", "--basetemp", str(work / "pytest"),
                f"--junitxml={junit}", *[f"--deselect={d}" for d in DESELECTED], *pytest_args]
        print("== upstream's suite: " + " ".join(argv[1:]), flush=True)
        t = time.monotonic()
        code = subprocess.run(argv, cwd=suite, env=env, check=False).returncode
        timer.steps["upstream's suite (pytest)"] = round(time.monotonic() - t, 1)
        rows = results(junit, collected)
        report.update(pytest_exit=code, results=rows, standin_requests=proxy.served)
        after = suite_listing(suite)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            print(f"upstream's suite dir changed during the run: {changed}", file=sys.stderr)
            code = code or 1
        print("\n== upstream's test ids (kubeflow/hub jobs/async-upload, unmodified) against " + image)
        for row in rows:
            print(f"  {row['outcome'].upper():10} {row['id']}" + (f"\n             {row['detail']}"
                                                                   if row["detail"] else ""))
        if any(r["outcome"] == "failed" for r in rows) and base.startswith(services.REGISTRY_SERVICE):
            print("   note: the base image is on the plain-HTTP in-cluster registry; the job reads it with "
                  "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY (default true), which upstream's suite does not "
                  "forward: a failure reading the base (WRONG_VERSION_NUMBER) is that; UPSTREAM_BASE_IMAGE=scratch "
                  "runs without a base")
        print(f"== stand-in proxy ({HTTP_SOURCE}): " +
              ", ".join(f"{m} {h}{p if m != 'CONNECT' else ''} -> {s}" for h, m, p, s in proxy.served) or "unused")
        return code
    finally:
        if proxy is not None:
            proxy.stop()
        forwards.stop()
        if not keep:
            with timer.step("cluster down"):
                cluster.down()
        rules_after = host_rules()
        report["host iptables unchanged"] = rules_after == rules_before
        print(f"== host iptables rules ({', '.join(rules_before) or 'no iptables-save'}): " +
              ("unchanged by the run, " + ", ".join(f"{len(v)} lines in {k}" for k, v in rules_after.items())
               if rules_after == rules_before else
               f"CHANGED during the run (by this run or another process): before {rules_before}, "
               f"after {rules_after}"), flush=True)
        timer.steps["total"] = round(time.monotonic() - timer.t0, 1)
        report["timings"] = timer.steps
        (state / "report.json").write_text(json.dumps(report, indent=2))
        print("== timings: " + ", ".join(f"{k} {v}s" for k, v in timer.steps.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.upstream_suite", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--image", default=os.environ.get("MODELSYNC_IMAGE") or "localhost/modelsync:dev")
    parser.add_argument("--suite", type=Path, default=SUITE)
    parser.add_argument("--where", action="store_true", help="print where upstream's suite is and exit (3: not found)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and its services up")
    parser.add_argument("--base", default=os.environ.get("UPSTREAM_BASE_IMAGE") or "registry",
                        help="MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE for the Jobs: `registry` (default: a busybox "
                             "pushed into the in-cluster registry), `scratch`, or any image reference")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.where or args.suite is None:
        if args.suite is None:
            print("e2e.upstream_suite: upstream's files are not beside this checkout (shared/upstream-async-upload in "
                  "a parent directory); set UPSTREAM_ASYNC_UPLOAD_DIR or --suite", file=sys.stderr)
            return 3
        print(args.suite)
        return 0
    try:
        return run(args.state_dir.resolve(), args.image, args.suite.resolve(), args.keep, args.pytest_args, args.base)
    except StackError as err:
        print(f"e2e.upstream_suite: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
