"""`make e2e-local`: every sample Job (samples/*.yaml) on a real single-node Kubernetes built here (e2e/kubernetes.py)
against the local stack, with the checks of e2e/k8s_checks.py.

    python -m e2e.k8s_e2e [--state-dir DIR] [--image localhost/modelsync:dev] [--only NAME ...] [--keep]

Steps: the stack (with its sigstore group) and the cluster up, the job image imported into the cluster's
containerd; the run's data (a model in MinIO under sentiment-<run>/, a busybox base in the TLS registry, the model as
a .tar.gz over HTTP, Model Registry entities for the samples' ids 42 and 7); then each sample rendered
(e2e/k8s_samples.py), applied in a namespace of its own run and checked: the Job completes, the artifact is LIVE at a
digest-pinned URI, the termination message holds the ids, the files read back from the destination match byte for
byte, a modelcar runs as KServe runs it (a pod of that image, pulled by digest from the local registry by
containerd, prints the sha256 of every file under /models), and signed ones verify for the Job's service account.
Then the failures: a wrong registry password ends the Job at once through its podFailurePolicy (exit 2, one pod, the
artifact not LIVE), and deleting a Job mid-transfer (SIGTERM) leaves the artifact ABANDONED. A summary goes to
stdout and DIR/report.json; any failed check exits 1.

The pods run on the cluster network, as users' pods do (no hostNetwork anywhere): they reach the stack's services,
which listen on the host's 127.0.0.1, by in-cluster names. For each one the samples use (STACK_SERVICES: MinIO, the
TLS and the plain registry, the Model Registry, TUF, Fulcio, Rekor, the TSA; and the run's HTTP server, `models`)
the run makes, in namespace STACK_NS, a Service without selector and an EndpointSlice whose endpoint is the address
Cluster.expose_host_port gives for that port (the cluster's gateway, relaying to 127.0.0.1), so the rendered Jobs
say `http://minio.modelsync-stack.svc.cluster.local:9000`, `registry.modelsync-stack.svc.cluster.local:5000` (the
TLS registry's certificate names it, e2e/registry.py), ... resolved by CoreDNS, routed by kube-proxy. The job finds
the API server through the `kubernetes` Service (10.0.0.1:443) and its pod by its hostname, as in users' clusters.
The checks, on the host, reach the same services on 127.0.0.1 (`env`; `render_env` is what the pods are given,
`to_checks` maps a URI back). The modelcar pod's image is pulled by the node's containerd, which runs on the host:
its reference names the plain registry as the node reaches it (127.0.0.1:P), as a node pulls from the address it
reaches a registry by.

The cluster's service-account tokens are signed with the stack OIDC issuer's key under its issuer URL, so the
stack's Fulcio accepts the projected tokens of the signing samples (the apiserver still mints them itself).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e import k8s_checks as checks
from e2e import k8s_samples, registry
from e2e.component import REPO_ROOT, StackError, free_ports
from e2e.kubernetes_network import host_rules
from e2e.stack import LocalStack

if TYPE_CHECKING:
    from modelsync.locations import OciLocation

Job = dict[str, Any]

ORDER = ["s3-to-oci-env", "s3-to-oci-args", "s3-to-oci-mounted-secrets", "create-model-from-configmap",
         "create-version", "s3-to-oci-signed", "oci-to-s3", "uri-to-oci", "kitchen-sink"]
SIGNER = "modelsync-signer"
# Not on kind: signing (no sigstore services there) and the archive served from the runner's host.
KIND_SKIPS = ("s3-to-oci-signed", "kitchen-sink", "uri-to-oci")
STACK_NS = registry.IN_CLUSTER_NAMESPACE  # the local stack's Services, as kind's stack.yaml has its Deployments'
# stack env name -> (Service name, its port): the in-cluster name replaces the value's 127.0.0.1:PORT
STACK_SERVICES = {
    "MINIO_ENDPOINT": ("minio", 9000),
    "OCI_TLS_REGISTRY": (registry.IN_CLUSTER_SERVICE, 5000),
    "OCI_REGISTRY": ("registry-plain", 5000),
    "MR_URL": ("model-registry", 8080),
    "STACK_SIGSTORE_TUF_URL": ("tuf", 80),
    "STACK_SIGSTORE_FULCIO_URL": ("fulcio", 80),
    "STACK_SIGSTORE_REKOR_URL": ("rekor", 80),
    "STACK_SIGSTORE_TSA_URL": ("tsa", 80),
}
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:(\d+)")


def service_manifests(ns: str, services: dict[str, tuple[int, str]]) -> list[dict[str, Any]]:
    """The namespace, and for each name -> (port, "ADDRESS:PORT" outside the cluster) a Service without selector on
    `port` and the EndpointSlice that sends it to ADDRESS:PORT (kube-proxy routes a Service to the slices labelled
    with its name; the Service's own targetPort plays no part without a selector)."""
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    for name, (port, target) in services.items():
        address, _, target_port = target.rpartition(":")
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                     "spec": {"ports": [{"name": "tcp", "protocol": "TCP", "port": port,
                                         "targetPort": int(target_port)}]}})
        docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": f"{name}-host", "namespace": ns,
                                  "labels": {"kubernetes.io/service-name": name,
                                             "endpointslice.kubernetes.io/managed-by": "modelsync-e2e"}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                     "ports": [{"name": "tcp", "protocol": "TCP", "port": int(target_port)}]})
    return docs


def in_cluster(value: str, service: str, port: int, ns: str = STACK_NS) -> str:
    """`value` (a URL or HOST:PORT) with its 127.0.0.1:P replaced by the Service's DNS name (and its port, unless 80
    under http://)."""
    host = f"{service}.{ns}.svc.cluster.local"
    if not (port == 80 and value.startswith("http://")):
        host += f":{port}"
    return LOOPBACK_PORT.sub(host, value, count=1)


class Run:
    local = True          # the local cluster: the image imported, the stack exposed as Services, sigstore, modelcars

    kubectl: Callable[..., subprocess.CompletedProcess[str]]

    def __init__(self, state: Path, image: str):
        self.state, self.image = state, image
        self.run = uuid.uuid4().hex[:6]
        self.ns = f"e2e-{self.run}"
        self.work = state / f"run-{self.run}"
        self.work.mkdir(parents=True)
        self.results: list[dict[str, Any]] = []
        self.failures: list[str] = []

    # ---- set-up ---------------------------------------------------------------------------------------------------

    def up(self, stack_dir: Path) -> None:
        from e2e.kubernetes import Cluster
        t0 = time.monotonic()
        self.stack = LocalStack(stack_dir)
        self.stack.up(groups=("sigstore",))
        self.env = self.stack.env()
        self.cluster = Cluster(self.state / "cluster", issuer_url=self.env["OIDC_ISSUER_URL"],
                               service_account_key=Path(self.env["OIDC_SIGNING_KEY"]))
        self.cluster.down()  # a fresh start: the issuer it trusts is this stack's (its port changes per stack)
        self.cluster.up()
        self.cluster.import_image(self.image)
        self.kubectl = self.cluster.kubectl
        self._check_registry_names()
        self.render_env = {**self.env}
        exposed: dict[str, tuple[int, str]] = {}
        for key, (service, port) in STACK_SERVICES.items():
            match = LOOPBACK_PORT.search(self.env[key])
            if match is None:
                raise StackError(f"{key}={self.env[key]}: not a service on 127.0.0.1")
            exposed[service] = (port, self.cluster.expose_host_port(int(match.group(1))))
            self.render_env[key] = in_cluster(self.env[key], service, port)
        self.kubectl("apply", "-f", "-", input=k8s_samples.to_yaml(service_manifests(STACK_NS, exposed)))
        self.timing = {"stack and cluster up": round(time.monotonic() - t0, 1)}

    def _check_registry_names(self) -> None:
        """The TLS registry must serve a certificate naming its in-cluster name (a stack started before that name
        was added serves one without: restart it)."""
        ctx = ssl.create_default_context(cafile=self.env["OCI_TLS_CA"])
        host, _, port = self.env["OCI_TLS_REGISTRY"].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=10) as sock, \
                    ctx.wrap_socket(sock, server_hostname=registry.IN_CLUSTER_NAMES[0]):
                pass
        except ssl.SSLCertVerificationError as exc:
            raise StackError(f"the stack's TLS registry does not serve a certificate for {registry.IN_CLUSTER_NAMES[0]}"
                             f" ({exc.verify_message}): restart the stack (`bin/modelsync-stack down`)") from None

    def up_kind(self, context: str) -> None:
        """kind (e2e/kind/run.sh): the stack is deployed in the cluster; the checks reach it through port-forwards
        (the STACK names in the environment), the pods by the in-cluster names (E2E_POD_*)."""
        self.local = False
        names = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET", "OCI_TLS_REGISTRY",
                 "OCI_TLS_CA", "OCI_TLS_USERNAME", "OCI_TLS_PASSWORD", "OCI_REGISTRY", "MR_URL", "MR_TOKEN")
        self.env = {k: os.environ[k] for k in names}
        self.render_env = {**self.env, **{k.removeprefix("E2E_POD_"): v for k, v in os.environ.items()
                                          if k.startswith("E2E_POD_")}}

        def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["kubectl", "--context", context, *args], input=input, capture_output=True,
                                  text=True, check=check, timeout=300)
        self.kubectl = kubectl
        self.timing = {}

    def to_checks(self, uri: str) -> str:
        """A URI the pods wrote (in-cluster names) as the checks reach it (port-forwards)."""
        for key in ("OCI_TLS_REGISTRY", "MINIO_ENDPOINT"):
            uri = uri.replace(self.render_env[key], self.env[key])
        return uri

    def prepare(self) -> None:
        """The run's inputs: model files in MinIO, the base image, the archive over HTTP."""
        sys.path.insert(0, str(REPO_ROOT))
        from tests.support.models import make_model
        model = self.work / "model"
        self.expected = make_model(model)
        self._upload(model, f"sentiment-{self.run}/1.0.0")
        self._upload(model, f"sentiment-{self.run}/2.0.0")
        self._push_base()
        archive = self.work / "www" / f"sentiment-{self.run}" / "1.0.0" / "model.tar.gz"
        archive.parent.mkdir(parents=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(model, arcname=".")
        port = free_ports(1)[0]
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(self.work / "www"))
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.uri_base = f"http://127.0.0.1:{port}"
        if self.local:  # the pods' name for it, like the stack's services
            self.kubectl("apply", "-f", "-", input=k8s_samples.to_yaml(
                service_manifests(STACK_NS, {"models": (80, self.cluster.expose_host_port(port))})))
            self.uri_base = in_cluster(self.uri_base, "models", 80)

    def _s3(self) -> Any:
        import boto3
        return boto3.client("s3", endpoint_url=self.env["MINIO_ENDPOINT"], region_name="us-east-1",
                            aws_access_key_id=self.env["MINIO_ACCESS_KEY"],
                            aws_secret_access_key=self.env["MINIO_SECRET_KEY"])

    def _upload(self, model: Path, prefix: str) -> None:
        client = self._s3()
        for path in sorted(p for p in model.rglob("*") if p.is_file()):
            client.upload_file(str(path), self.env["MINIO_BUCKET"], f"{prefix}/{path.relative_to(model).as_posix()}")

    def _tls(self, reference: str) -> OciLocation:
        from modelsync.locations import OciLocation
        from modelsync.secret import Secret
        return OciLocation(reference, username=self.env["OCI_TLS_USERNAME"],
                           password=Secret(self.env["OCI_TLS_PASSWORD"]), ca_bundle=self.env["OCI_TLS_CA"])

    def _push_base(self) -> None:
        from modelsync.oci_copy import push_layout
        from tests.support.oci_helpers import busybox_layout
        layout = busybox_layout(self.work / "busybox")
        push_layout(layout, "latest", self._tls(f"{self.env['OCI_TLS_REGISTRY']}/library/busybox:latest"), "latest",
                    self.work / "push", "skopeo")
        from modelsync.locations import OciLocation  # and on the plain registry, for the UI's Jobs
        push_layout(layout, "latest", OciLocation(f"{self.env['OCI_REGISTRY']}/library/busybox:latest",
                                                  tls_verify=False), "latest", self.work / "push-plain", "skopeo")

    def _mr(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.env['MR_URL']}/api/model_registry/v1alpha3{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found

    def ids(self, sample: str) -> dict[str, str]:
        """A fresh RegisteredModel (for create_version's id 7) and ModelArtifact (for update_artifact's id 42)."""
        model = self._mr("POST", "/registered_models", {"name": f"e2e-{self.run}-{sample}-{uuid.uuid4().hex[:4]}"})
        version = self._mr("POST", "/model_versions", {"name": "0.0.1", "registeredModelId": model["id"]})
        artifact = self._mr("POST", f"/model_versions/{version['id']}/artifacts",
                            {"artifactType": "model-artifact", "name": f"e2e-{sample}", "uri": "s3://placeholder/x"})
        return {"model": model["id"], "artifact": artifact["id"]}

    # ---- one sample ---------------------------------------------------------------------------------------------

    def apply(self, sample: str, ns: str, edit: Callable[[Job], None] | None = None
              ) -> tuple[Job, dict[str, str], dict[str, str]]:
        ids = self.ids(sample)
        docs = k8s_samples.render(REPO_ROOT / "samples" / f"{sample}.yaml", self.render_env, self.image, self.run,
                                  ids, self.uri_base, local=self.local, edit=edit)
        self.kubectl("-n", ns, "apply", "-f", "-", input=k8s_samples.to_yaml(docs))
        job = k8s_samples.job_of(docs)
        return job, k8s_samples.env_of(job), ids

    def sample(self, sample: str) -> None:
        t0 = time.monotonic()
        ns = f"{self.ns}-{ORDER.index(sample)}"
        self.kubectl("create", "namespace", ns)
        self.kubectl("-n", ns, "apply", "-f", str(REPO_ROOT / "samples" / "events-rbac.yaml"))
        job, env, _ = self.apply(sample, ns)
        signed = any(k.startswith("SIGSTORE_") for k in env)
        intent = env.get("MODEL_SYNC_MODEL_UPLOAD_INTENT", "update_artifact")
        result = checks.check_sync(self.kubectl, ns, job["metadata"]["name"], self.env["MR_URL"],
                                   functools.partial(self.read_back, signed), self.expected, intent)
        result["pod_ip"] = checks.on_cluster_network(self.kubectl, ns, result["pod"])
        result["events"] = checks.job_events(self.kubectl, ns, result["pod"], ("TransferStarted", "TransferPublished"))
        uri = self.to_checks(result["uri"])
        if uri.startswith("oci://") and self.local:
            result["modelcar"] = self.run_modelcar(uri, ns, signed)
        if signed:
            result["signature"] = self.verify_signature(uri, ns)
        result["seconds"] = round(time.monotonic() - t0, 1)
        self.results.append({"sample": sample, **result})

    def read_back(self, signed: bool, uri: str) -> dict[str, str]:
        from tests.support.models import digests_of
        uri = self.to_checks(uri)
        out = self.work / f"read-{uuid.uuid4().hex[:6]}"
        if uri.startswith("oci://"):
            from modelsync.sources.oci import fetch_oci
            fetch_oci(self._tls(uri.removeprefix("oci://")), out, self.work / "fetch", "oras")
        else:
            from modelsync.locations import S3Location
            from modelsync.secret import Secret
            from modelsync.sources.s3 import fetch_s3
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            fetch_s3(S3Location(bucket=bucket, key=key + "/", endpoint=self.env["MINIO_ENDPOINT"],
                                access_key_id=Secret(self.env["MINIO_ACCESS_KEY"]),
                                secret_access_key=Secret(self.env["MINIO_SECRET_KEY"])), out)
        files = digests_of(out)
        if signed:
            checks.require(bool(files.pop("model.sig", None)), f"{uri}: no model.sig")
        return files

    def run_modelcar(self, uri: str, ns: str, signed: bool) -> str:
        """The image copied by digest to the plain local registry (the node's containerd, on the host, pulls from it
        at 127.0.0.1 with no set-up), then run the way KServe runs a modelcar (a pod on the cluster network)."""
        from modelsync.locations import OciLocation
        from modelsync.oci_copy import pull_to_layout, push_layout
        ref = uri.removeprefix("oci://")
        digest = ref.split("@", 1)[1]
        plain = f"{self.env['OCI_REGISTRY']}/modelcars/{ref.split('/', 1)[1].split('@')[0]}"
        layout, work = self.work / f"copy-{digest[7:19]}", self.work / "copy-work"
        pull_to_layout(self._tls(ref), layout, "modelcar", work, "oras")
        push_layout(layout, "modelcar", OciLocation(plain, tls_verify=False), digest[7:19], work, "oras")
        files = checks.modelcar_files(self.kubectl, ns, f"{plain}@{digest}", f"modelcar-{uuid.uuid4().hex[:6]}")
        if signed:
            checks.require(bool(files.pop("model.sig", None)), f"{uri}: the running modelcar has no /models/model.sig")
        checks.require(files == self.expected, f"{uri}: the running modelcar's files differ from the source")
        return f"{plain}@{digest}: {len(files)} files match"

    def verify_signature(self, uri: str, ns: str) -> str:
        identity = f"https://kubernetes.io/namespaces/{ns}/serviceaccounts/{SIGNER}"
        run = subprocess.run([str(REPO_ROOT / "bin" / "modelsync-verify"), uri, "--identity", identity,
                              "--issuer", self.env["OIDC_ISSUER_URL"], "--tuf-url", self.env["STACK_SIGSTORE_TUF_URL"],
                              "--registry-username", self.env["OCI_TLS_USERNAME"],
                              "--registry-ca-bundle", self.env["OCI_TLS_CA"]],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "MODEL_SYNC_VERIFY_REGISTRY_PASSWORD": self.env["OCI_TLS_PASSWORD"],
                                  "NO_PROXY": "127.0.0.1,localhost"})
        checks.require(run.returncode == 0, f"{uri}: {run.stderr.strip()}")
        return run.stdout.strip()

    # ---- failures -----------------------------------------------------------------------------------------------

    def wrong_credential(self) -> None:
        """A wrong registry password: exit 2, the podFailurePolicy fails the Job with its first pod, not LIVE."""
        t0 = time.monotonic()
        ns = f"{self.ns}-wrong"
        self.kubectl("create", "namespace", ns)
        self.kubectl("-n", ns, "apply", "-f", str(REPO_ROOT / "samples" / "events-rbac.yaml"))

        def break_password(job: Job) -> None:
            job["metadata"]["name"] = "modelsync-wrong-password"
            (c,) = job["spec"]["template"]["spec"]["containers"]
            c["env"] = [e if e["name"] != "MODEL_SYNC_DESTINATION_OCI_PASSWORD" else
                        {"name": e["name"], "value": "not-the-password"} for e in c["env"]]

        job, env, ids = self.apply("s3-to-oci-env", ns, edit=break_password)
        outcome, pod = checks.job_outcome(self.kubectl, ns, job["metadata"]["name"], 300)
        checks.require(outcome == "Failed: PodFailurePolicy", f"wrong password: {outcome}")
        checks.require(len(checks.pods_of(self.kubectl, ns, job["metadata"]["name"])) == 1, "wrong password: retried")
        checks.require(checks.exit_code(self.kubectl, ns, pod) == 2, "wrong password: exit code is not 2")
        message = checks.termination(self.kubectl, ns, pod)
        checks.require(message.startswith("modelsync failed (exit 2):") and "authentication failed" in message,
                       f"wrong password: termination message {message!r}")
        checks.require("not-the-password" not in message, "wrong password: the password is in the message")
        state = checks.artifact(self.env["MR_URL"], ids["artifact"])["state"]
        checks.require(state == "ABANDONED", f"wrong password: artifact {state}, not ABANDONED")
        checks.on_cluster_network(self.kubectl, ns, pod)
        events = checks.job_events(self.kubectl, ns, pod, ("TransferFailed",))
        self.results.append({"sample": "s3-to-oci-env with a wrong password", "outcome": outcome, "exit": 2,
                             "pods": 1, "artifact": state, "events": events,
                             "seconds": round(time.monotonic() - t0, 1)})

    def deleted_mid_transfer(self) -> None:
        """A 256 MiB model; the Job deleted (its pod gets SIGTERM) once the artifact is PENDING: ABANDONED."""
        t0 = time.monotonic()
        ns = f"{self.ns}-sigterm"
        self.kubectl("create", "namespace", ns)
        from tests.support.models import write_big
        big = self.work / "big"
        write_big(big / "weights.bin", 256 << 20)
        self._upload(big, f"sentiment-{self.run}/big")

        def big_model(job: Job) -> None:
            job["metadata"]["name"] = "modelsync-deleted"
            (c,) = job["spec"]["template"]["spec"]["containers"]
            for e in c["env"]:
                if e["name"] == "MODEL_SYNC_SOURCE_AWS_KEY":
                    e["value"] = f"sentiment-{self.run}/big/"
                if e["name"] == "MODEL_SYNC_DESTINATION_OCI_BACKEND":
                    e["value"] = "skopeo"  # fetch-then-publish: a longer window
        job, _, ids = self.apply("s3-to-oci-env", ns, edit=big_model)
        deadline = time.monotonic() + 300
        while checks.artifact(self.env["MR_URL"], ids["artifact"])["state"] != "PENDING":
            checks.require(time.monotonic() < deadline, "mid-transfer: the artifact never turned PENDING")
            time.sleep(0.2)
        self.kubectl("-n", ns, "delete", "job", job["metadata"]["name"], "--cascade=foreground", "--wait=false")
        deadline = time.monotonic() + 120
        state = "PENDING"
        while state == "PENDING" and time.monotonic() < deadline:
            time.sleep(0.5)
            state = checks.artifact(self.env["MR_URL"], ids["artifact"])["state"]
        checks.require(state == "ABANDONED", f"mid-transfer: artifact {state} after the Job was deleted")
        self.results.append({"sample": "s3-to-oci-env deleted mid-transfer", "artifact": state,
                             "seconds": round(time.monotonic() - t0, 1)})

    # ---- the Model Registry UI's own Jobs ---------------------------------------------------------------------------

    UI_CASES = ("create_model from s3", "create_version from s3", "update_artifact from s3", "create_model from uri")

    def ui_job(self, case: str) -> None:
        """The Job, Secrets and ConfigMap exactly as the Model Registry UI's backend writes them
        (tests/support/ui_jobs.py), for the local cluster changed only as every e2e Job is (the image imported) plus
        the modelcar's base image and TLS off for the stack's plain-HTTP registry (public.ecr.aws is out of reach
        here). LIVE, every custom property typed as written, the model-source fields, and the pod's events."""
        from tests.support.ui_jobs import UiJob, typed
        t0 = time.monotonic()
        intent, source = case.split(" from ")
        ns = f"{self.ns}-ui-{self.UI_CASES.index(case)}"
        self.kubectl("create", "namespace", ns)
        self.kubectl("-n", ns, "apply", "-f", str(REPO_ROOT / "samples" / "events-rbac.yaml"))
        props = {"team": typed("MetadataStringValue", "nlp"), "reviewed": typed("MetadataStringValue", ""),
                 "layers": typed("MetadataIntValue", "12"), "accuracy": typed("MetadataDoubleValue", 0.93),
                 "approved": typed("MetadataBoolValue", True)}
        fields: dict[str, Any] = {"version_props": props}
        if intent == "create_model":
            fields.update(model_name=f"ui-{self.run}-{source}", model_props=props, description="from the UI")
        else:
            model = self._mr("POST", "/registered_models", {"name": f"ui-{self.run}-{intent}"})
            fields["model_id"] = model["id"]
            if intent == "update_artifact":
                version = self._mr("POST", "/model_versions", {"name": "v1", "registeredModelId": model["id"]})
                art = self._mr("POST", f"/model_versions/{version['id']}/artifacts",
                               {"artifactType": "model-artifact", "name": "v1", "state": "PENDING"})
                fields.update(version_id=version["id"], artifact_id=art["id"])
        if source == "s3":
            fields.update(source_type="s3", bucket=self.render_env["MINIO_BUCKET"],
                          key=f"sentiment-{self.run}/1.0.0", endpoint=self.render_env["MINIO_ENDPOINT"],
                          access_key=self.render_env["MINIO_ACCESS_KEY"],
                          secret_key=self.render_env["MINIO_SECRET_KEY"])
        else:
            fields.update(source_type="uri", uri=f"{self.uri_base}/sentiment-{self.run}/1.0.0/model.tar.gz")
        job = UiJob(intent=intent, name=f"ui-{intent.replace('_', '-')}-{source}", namespace=ns,
                    registry_address=self.render_env["MR_URL"], author="ada", version_name="v1",
                    destination_uri=f"{self.render_env['OCI_REGISTRY']}/ui-{self.run}/{intent}-{source}:v1", **fields)
        docs = job.manifests(self.image)
        (container,) = docs[-1]["spec"]["template"]["spec"]["containers"]
        if self.local:
            container["imagePullPolicy"] = "Never"
        container["env"] += [
            {"name": "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE",
             "value": f"{self.render_env['OCI_REGISTRY']}/library/busybox:latest"},
            {"name": "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY", "value": "false"},
            {"name": "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY", "value": "false"}]
        self.kubectl("-n", ns, "apply", "-f", "-", input=k8s_samples.to_yaml(docs))
        outcome, pod = checks.job_outcome(self.kubectl, ns, job.name, 600)
        logs = self.kubectl("-n", ns, "logs", pod, check=False).stdout
        checks.require(outcome == "Complete", f"{case}: {outcome}; last log lines: {logs[-2000:]}")
        message = json.loads(checks.termination(self.kubectl, ns, pod))
        art = checks.artifact(self.env["MR_URL"], message["ModelArtifact"]["id"])
        checks.require(art["state"] == "LIVE", f"{case}: artifact {art['state']}")
        want = {"team": ("MetadataStringValue", "string_value", "nlp"),
                "reviewed": ("MetadataStringValue", "string_value", ""),
                "layers": ("MetadataIntValue", "int_value", "12"),
                "accuracy": ("MetadataDoubleValue", "double_value", 0.93),
                "approved": ("MetadataBoolValue", "bool_value", True)}
        entities = [("ModelArtifact", art)]
        if intent == "create_model":
            model_id = message["RegisteredModel"]["id"]
            entities.append(("RegisteredModel", self._mr("GET", f"/registered_models/{model_id}")))
        for what, entity in entities:
            got = entity.get("customProperties") or {}
            for name, (kind, field_name, value) in want.items():
                checks.require(name in got and got[name].get("metadataType") == kind and got[name].get(field_name)
                               == value, f"{case}: {what} property {name} is {got.get(name)}")
        source_fields = (art.get("modelSourceKind"), art.get("modelSourceClass"), art.get("modelSourceGroup"),
                         art.get("modelSourceName"))
        checks.require(source_fields == ("transfer_job", "async-upload", ns, job.name),
                       f"{case}: model source fields {source_fields}")
        pod_ip = checks.on_cluster_network(self.kubectl, ns, pod)
        events = checks.job_events(self.kubectl, ns, pod, ("TransferStarted", "TransferPublished"))
        self.results.append({"sample": f"the Model Registry UI's Job: {case}", "uri": art["uri"], "pod_ip": pod_ip,
                             "properties": len(want), "events": events, "seconds": round(time.monotonic() - t0, 1)})

    def guarded(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
            print(f"ok    {name}", flush=True)
        except Exception as exc:  # the report lists every failure, not just the first
            self.failures.append(f"{name}: {exc}")
            print(f"FAIL  {name}: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="e2e-local", description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("MODELSYNC_CACHE", Path.home() / ".cache" / "modelsync"))
    p.add_argument("--state-dir", type=Path, default=cache / "e2e-local")
    p.add_argument("--stack-dir", type=Path, default=Path(os.environ["MODELSYNC_STACK_DIR"])
                   if os.environ.get("MODELSYNC_STACK_DIR") else None)
    p.add_argument("--image", default=os.environ.get("MODELSYNC_IMAGE", "localhost/modelsync:dev"))
    p.add_argument("--only", nargs="*", default=None, help="sample names (default: all, then the failure cases)")
    p.add_argument("--keep", action="store_true", help="leave the cluster and stack running")
    p.add_argument("--kind", metavar="CONTEXT", help="run on kind (e2e/kind/run.sh sets it up): no signing samples, "
                                                     "no modelcar pod")
    args = p.parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    run = Run(args.state_dir, args.image)
    started = time.monotonic()
    rules_before = host_rules()
    try:
        if args.kind:
            run.up_kind(args.kind)
        else:
            run.up(args.stack_dir or args.state_dir / "stack")
        run.kubectl("create", "namespace", run.ns)
        run.prepare()
        for sample in args.only or [s for s in ORDER if run.local or s not in KIND_SKIPS]:
            run.guarded(sample, run.sample, sample)
        if args.only is None:
            run.guarded("kind's stack manifests accepted by the apiserver (dry run)", run.kubectl, "-n", run.ns,
                        "apply", "--dry-run=server", "-f", str(REPO_ROOT / "e2e" / "kind" / "stack.yaml"))
            for case in run.UI_CASES:
                run.guarded(f"the Model Registry UI's Job: {case}", run.ui_job, case)
            run.guarded("wrong credential", run.wrong_credential)
            run.guarded("deleted mid-transfer", run.deleted_mid_transfer)
    finally:
        if hasattr(run, "http"):
            run.http.shutdown()
        if not args.keep:
            import shutil
            shutil.rmtree(run.work, ignore_errors=True)  # the run's inputs (a 256 MiB model among them)
        if not args.keep and hasattr(run, "cluster"):
            run.cluster.down()
        if not args.keep and not args.stack_dir and hasattr(run, "stack"):
            run.stack.down()
    unchanged = host_rules() == rules_before  # the cluster's rules live in its own network namespace
    if not unchanged:
        run.failures.append("the host's own iptables rules changed during the run")
    print(f"host iptables rules ({', '.join(rules_before) or 'no iptables-save'}): "
          f"{'unchanged' if unchanged else 'CHANGED'} by the run, "
          + ", ".join(f"{len(lines)} lines in {save}" for save, lines in rules_before.items()))
    report = {"run": run.run, "timing": {**getattr(run, "timing", {}),
                                        "total": round(time.monotonic() - started, 1)},
              "results": run.results, "failures": run.failures, "host iptables unchanged": unchanged}
    (args.state_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"jobs": len(run.results), "failures": run.failures, "timing": report["timing"]}, indent=2))
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())

