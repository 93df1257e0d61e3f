"""What every Kubernetes e2e run asserts, shared by the local cluster (e2e/k8s_e2e.py) and kind (e2e/kind/run.sh):

    job_outcome        the Job's end (Complete / Failed with its reason) and its pod, read through the API
    termination        the pod's termination message (`kubectl get pod -o jsonpath=…terminated.message`)
    exit_code          the container's exit code
    artifact           the ModelArtifact as the Model Registry holds it (state, URI)
    check_sync         all of the above for a sync that must succeed: LIVE, digest-pinned URI, termination
                       message with the ids, the files read back from the destination byte for byte
    on_cluster_network the pod ran off the host network, with an IP of its own
    job_events         the job's own Kubernetes Events on its pod (`kubectl get events --field-selector
                       involvedObject.name=<pod>`), each wanted reason there
    modelcar_files     the modelcar run as KServe runs one: a pod on the cluster network whose container is the
                       image, pulled by digest by the node's container runtime (so the reference names the registry
                       as the node reaches it), printing the sha256 of every file under /models

`kubectl` is a callable (*args, input=None) -> CompletedProcess; nothing here knows which cluster it is.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

Kubectl = Callable[..., Any]


class CheckFailed(AssertionError):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def job_outcome(kubectl: Kubectl, ns: str, job: str, timeout: float = 600) -> tuple[str, str]:
    """("Complete" | "Failed: <reason>", the newest pod's name), waiting up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = json.loads(kubectl("-n", ns, "get", "job", job, "-o", "json").stdout)
        for cond in doc.get("status", {}).get("conditions") or []:
            if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
                outcome = cond["type"] if cond["type"] == "Complete" else f"Failed: {cond.get('reason')}"
                return outcome, newest_pod(kubectl, ns, job)
        time.sleep(1)
    raise CheckFailed(f"job {ns}/{job} did not finish in {timeout:.0f}s")


def pods_of(kubectl: Kubectl, ns: str, job: str) -> list[dict[str, Any]]:
    doc = json.loads(kubectl("-n", ns, "get", "pods", "-l", f"job-name={job}", "-o", "json").stdout)
    return sorted(doc["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def newest_pod(kubectl: Kubectl, ns: str, job: str) -> str:
    pods = pods_of(kubectl, ns, job)
    require(bool(pods), f"job {ns}/{job} has no pod")
    name: str = pods[-1]["metadata"]["name"]
    return name


def termination(kubectl: Kubectl, ns: str, pod: str) -> str:
    message: str = kubectl("-n", ns, "get", "pod", pod, "-o",
                           "jsonpath={.status.containerStatuses[0].state.terminated.message}").stdout
    return message


def exit_code(kubectl: Kubectl, ns: str, pod: str) -> int:
    return int(kubectl("-n", ns, "get", "pod", pod, "-o",
                       "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}").stdout)


def artifact(mr_url: str, artifact_id: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{mr_url}/api/model_registry/v1alpha3/model_artifacts/{artifact_id}", timeout=10) as resp:
        found: dict[str, Any] = json.load(resp)
    found.setdefault("state", "UNKNOWN")  # the server leaves out a state never set
    return found


def check_sync(kubectl: Kubectl, ns: str, job: str, mr_url: str, read_back: Callable[[str], Mapping[str, str]],
               expected: Mapping[str, str], intent: str, timeout: float = 600) -> dict[str, Any]:
    """A sample Job that must succeed: what it asserted, for the report."""
    outcome, pod = job_outcome(kubectl, ns, job, timeout)
    logs = kubectl("-n", ns, "logs", pod, check=False).stdout
    require(outcome == "Complete", f"{job}: {outcome}; last log lines: {logs[-2000:]}")
    message = json.loads(termination(kubectl, ns, pod))
    require(message.get("intent") == intent, f"{job}: termination message intent {message.get('intent')!r}")
    art_id = (message.get("ModelArtifact") or {}).get("id")
    require(bool(art_id), f"{job}: termination message has no ModelArtifact id: {message}")
    if intent != "update_artifact":
        require(bool(message.get("RegisteredModel")) and bool(message.get("ModelVersion")),
                f"{job}: termination message lacks the created model/version ids: {message}")
    art = artifact(mr_url, str(art_id))
    require(art["state"] == "LIVE", f"{job}: artifact {art_id} is {art['state']}")
    require(art["uri"] == message["uri"], f"{job}: artifact URI {art['uri']} != termination message {message['uri']}")
    if art["uri"].startswith("oci://"):
        require("@sha256:" in art["uri"], f"{job}: OCI URI not pinned by digest: {art['uri']}")
    files = dict(read_back(art["uri"]))
    require(files == dict(expected), f"{job}: files read back differ: "
                                     f"{sorted(set(files) ^ set(expected)) or 'same names, other bytes'}")
    return {"job": job, "pod": pod, "artifact": art_id, "uri": art["uri"], "files": len(files),
            "termination": message}


def on_cluster_network(kubectl: Kubectl, ns: str, pod: str) -> str:
    """The pod ran on the cluster network, as users' pods do: not hostNetwork, an address of its own. Its IP."""
    doc = json.loads(kubectl("-n", ns, "get", "pod", pod, "-o", "json").stdout)
    require(not doc["spec"].get("hostNetwork"), f"{ns}/{pod}: runs on the host network")
    ip: str = doc.get("status", {}).get("podIP", "")
    require(bool(ip) and ip != doc["status"].get("hostIP"), f"{ns}/{pod}: no pod IP of its own ({ip or 'none'})")
    return ip


def job_events(kubectl: Kubectl, ns: str, pod: str, want: tuple[str, ...]) -> list[str]:
    """The reasons of the events modelsync posted about its pod, in order; each of want must be there."""
    doc = json.loads(kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={pod}",
                             "-o", "json").stdout)
    ours = sorted((e for e in doc["items"] if (e.get("source") or {}).get("component") == "modelsync"),
                  key=lambda e: e.get("eventTime") or "")
    reasons = [e["reason"] for e in ours]
    missing = [r for r in want if r not in reasons]
    require(not missing, f"{ns}/{pod}: no {', '.join(missing)} event (found {reasons})")
    return reasons


def modelcar_files(kubectl: Kubectl, ns: str, image: str, name: str, timeout: float = 300) -> dict[str, str]:
    """{path under /models: sha256} printed by a pod running the modelcar image itself (pulled by digest)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "modelcar", "image": image, "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", "cd /models && find . -type f -exec sha256sum {} +"],
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "readOnlyRootFilesystem": True,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    out = kubectl("-n", ns, "logs", name, check=False).stdout
    require(phase == "Succeeded", f"modelcar pod {name}: {phase or 'not started'}: {out[-1000:]}")
    on_cluster_network(kubectl, ns, name)
    files = {}
    for line in out.splitlines():
        digest, _, path = line.partition("  ")
        files[path.removeprefix("./")] = digest
    return files
