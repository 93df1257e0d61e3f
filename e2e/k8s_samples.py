"""Render samples/*.yaml for a test cluster: the documented, minimal substitution (samples/README.md), so what runs
is what users copy.

    1. text, everywhere in the file: the placeholder hosts and URLs become the stack's (TEXT below), the job image
       the one built here, `sentiment` gets the run's suffix (names, keys and repositories unique per run) and the
       ids 42 (a ModelArtifact) and 7 (a RegisteredModel) become ones the run created;
    2. Secrets, by name and key: the placeholder credentials become the stack's (SECRETS below);
    3. each Job's container: imagePullPolicy: Never on the local cluster (the job image is imported into its
       containerd, not pulled; kind's script skips this step and loads the image with `kind load`).

The pods stay on the cluster network, as users' pods: the stack values given (`stack`, `uri_base`) are the names
the pods reach the services by (on the local cluster `<service>.modelsync-stack.svc.cluster.local`, Services
without selector whose endpoints relay to the host's 127.0.0.1, e2e/k8s_e2e.py), and the job finds the API server
through the `kubernetes` Service and its pod by its hostname, with nothing set for it.

Standard library plus PyYAML (a test dependency).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
PLACEHOLDER_CA = ("-----BEGIN CERTIFICATE-----\n    replace with the registry's CA certificate\n"
                  "    -----END CERTIFICATE-----\n")


def text_substitutions(stack: Mapping[str, str], image: str, run: str, ids: Mapping[str, str],
                       uri_base: str) -> list[tuple[str, str]]:
    """(placeholder, value) pairs in the order applied. `stack`: the STACK env (e2e.stack env names)."""
    ca = Path(stack["OCI_TLS_CA"]).read_text()
    return [
        ("quay.io/acme/modelsync:latest", image),
        ("https://minio.example.com", stack["MINIO_ENDPOINT"]),
        ("https://model-registry.example.com", stack["MR_URL"]),     # its port wins over MODEL_SYNC_REGISTRY_PORT
        ("https://models.example.com", uri_base),
        ("https://tuf.example.com", stack.get("STACK_SIGSTORE_TUF_URL", "")),
        ("https://fulcio.example.com", stack.get("STACK_SIGSTORE_FULCIO_URL", "")),
        ("https://rekor.example.com", stack.get("STACK_SIGSTORE_REKOR_URL", "")),
        ("https://tsa.example.com", stack.get("STACK_SIGSTORE_TSA_URL", "").removesuffix("/api/v1/timestamp")),
        ("registry.example.com", stack["OCI_TLS_REGISTRY"]),
        (PLACEHOLDER_CA, "".join(f"    {line}\n" for line in ca.strip().splitlines()).lstrip()),
        ("sentiment", f"sentiment-{run}"),
        ('value: "42"', f'value: "{ids["artifact"]}"'),
        ("--model-artifact-id=42", f"--model-artifact-id={ids['artifact']}"),
        ('value: "7"', f'value: "{ids["model"]}"'),
    ]


def secret_values(stack: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Secret name -> key -> value, for the Secrets the samples define."""
    auth = base64.b64encode(f"{stack['OCI_TLS_USERNAME']}:{stack['OCI_TLS_PASSWORD']}".encode()).decode()
    return {
        "s3-model-store": {"AWS_ACCESS_KEY_ID": stack["MINIO_ACCESS_KEY"],
                           "AWS_SECRET_ACCESS_KEY": stack["MINIO_SECRET_KEY"]},
        "registry-push": {".dockerconfigjson": json.dumps({"auths": {stack["OCI_TLS_REGISTRY"]: {"auth": auth}}})},
        "registry-robot": {"username": stack["OCI_TLS_USERNAME"], "password": stack["OCI_TLS_PASSWORD"]},
        "model-registry-token": {"token": stack["MR_TOKEN"]},
    }


def render(path: Path, stack: Mapping[str, str], image: str, run: str, ids: Mapping[str, str], uri_base: str,
           local: bool = True, edit: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """The sample's objects, ready for `kubectl apply`; `edit` may change a Job further (a test's wrong credential)."""
    text = path.read_text()
    for placeholder, value in text_substitutions(stack, image, run, ids, uri_base):
        text = text.replace(placeholder, value)
    docs = [d for d in yaml.safe_load_all(text) if d]
    secrets = secret_values(stack)
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] in secrets:
            doc.setdefault("stringData", {}).update(
                {k: v for k, v in secrets[doc["metadata"]["name"]].items() if k in doc["stringData"]})
        if doc["kind"] == "Job":
            if local:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container["imagePullPolicy"] = "Never"
            if edit is not None:
                edit(doc)
    return docs


def job_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in docs if d["kind"] == "Job"]
    return job


def env_of(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])} | {
        "MODEL_SYNC_" + a.split("=", 1)[0].removeprefix("--").replace("-", "_").upper(): a.split("=", 1)[1]
        for a in container.get("args", []) if "=" in a}


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
