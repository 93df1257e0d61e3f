"""e2e/kind/ cannot run here (no container engine): its script, manifests and workflow are checked statically, and
for what they share with the local e2e (the sample renderer, the runner's kind mode), against that code. The local
Kubernetes e2e also validates stack.yaml with the real apiserver (`kubectl apply --dry-run=server`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

KIND = Path(__file__).resolve().parents[2] / "e2e" / "kind"
WORKFLOW = KIND.parent.parent / ".github" / "workflows" / "e2e-kind.yaml"
SCRIPT = (KIND / "run.sh").read_text()


def exported() -> set[str]:
    names = set()
    for line in SCRIPT.splitlines():
        if line.startswith("export "):
            names |= {tok.split("=", 1)[0] for tok in line[len("export "):].split() if re.match(r"^[A-Z_0-9]+", tok)}
    return names


def test_script_is_valid_bash_and_runs_the_shared_runner():
    assert subprocess.run(["bash", "-n", str(KIND / "run.sh")]).returncode == 0
    assert "python3 -m e2e.k8s_e2e --kind" in SCRIPT and "e2e/kind/stack.yaml" in SCRIPT
    assert "kind delete cluster" in SCRIPT  # cleaned up on exit (trap)
    assert "set -euo pipefail" in SCRIPT


def test_script_exports_everything_the_kind_mode_reads():
    import inspect

    from e2e.k8s_e2e import Run
    source = inspect.getsource(Run.up_kind)
    needed = set(re.findall(r'"([A-Z][A-Z_]+)"', source.split("names = (", 1)[1].split(")", 1)[0]))
    assert needed <= exported(), needed - exported()
    from e2e.k8s_samples import text_substitutions
    pod_keys = {n.removeprefix("E2E_POD_") for n in exported() if n.startswith("E2E_POD_")}
    assert pod_keys == {"MINIO_ENDPOINT", "OCI_TLS_REGISTRY", "MR_URL"}
    subs = inspect.getsource(text_substitutions)
    assert all(f'stack["{k}"]' in subs for k in pod_keys)  # the renderer uses exactly these


def test_stack_manifests_are_wired():
    docs = [d for d in yaml.safe_load_all((KIND / "stack.yaml").read_text()) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(deployments) == {"minio", "registry", "mariadb", "model-registry"} == set(services)
    created = set(re.findall(r"create secret (?:tls|generic) ([a-z-]+)", SCRIPT))
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == services[name]["spec"]["selector"]
        (container,) = pod["spec"]["containers"]
        assert not container["image"].endswith(":latest") and ":" in container["image"], container["image"]
        ports = {p["containerPort"] for p in container["ports"]}
        assert {p["port"] for p in services[name]["spec"]["ports"]} <= ports
        used = {v["secret"]["secretName"] for v in pod["spec"].get("volumes", []) if "secret" in v}
        used |= {e["secretRef"]["name"] for e in container.get("envFrom", [])}
        assert used <= created, used - created
    for port_forward in re.findall(r"forward (\S+) \d+ (\d+)", SCRIPT):
        service, port = port_forward
        assert int(port) in {p["port"] for p in services[service]["spec"]["ports"]}


def test_workflow_runs_the_script():
    flow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = flow["jobs"].values()
    assert job["timeout-minutes"] <= 90
    assert any(step.get("run", "").strip() == "e2e/kind/run.sh" for step in job["steps"])
    assert any("pip install -e '.[test]'" in step.get("run", "") for step in job["steps"])
