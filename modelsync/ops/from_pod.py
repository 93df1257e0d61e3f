"""modelsync-from-pod: run a failing Job's container locally, from its pod spec, to debug it.

    kubectl get pod POD -o yaml > pod.yaml          (or the Job: kubectl get job JOB -o yaml)
    kubectl get secret s3-creds registry-push -o yaml > objects.yaml
    kubectl get configmap model-metadata -o yaml >> objects.yaml     (a `---` between documents, or a List)
    modelsync-from-pod pod.yaml --objects objects.yaml --check      preflight only: nothing is written
    modelsync-from-pod pod.yaml --objects objects.yaml              the real run

The container's env (values, and secretKeyRef / configMapKeyRef from the objects given) and args are taken as they
are. Each Secret, ConfigMap or projected volume it mounts is written under a private temporary directory, one file
per key as the kubelet writes them, and every env value or argument that points into a mount path is moved there;
an emptyDir becomes a temporary directory too. A projected service-account token comes from --token FILE. The job
then runs with exactly that configuration (`python -m modelsync`), with the operator's terminal as its output.
Secret values never reach a command line: they go in files and the environment.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import tools
from ..errors import ConfigError


class PodSpecError(ConfigError):
    """The spec or the objects cannot give the container's configuration; the message says what is missing."""


@dataclass
class Resolved:
    env: dict[str, str]
    args: list[str]
    root: Path                           # where the mounts were written
    mounts: dict[str, Path] = field(default_factory=dict)   # mount path in the pod -> local directory


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        docs.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    kind = doc.get("kind")
    spec: dict[str, Any]
    if kind == "Pod":
        spec = doc["spec"]
    elif kind == "Job":
        spec = doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        raise PodSpecError(f"{kind or 'the document'} is not a Pod, Job or CronJob")
    return spec


def object_data(doc: dict[str, Any]) -> dict[str, bytes]:
    """A Secret's or ConfigMap's keys as the kubelet writes them (Secret data is base64)."""
    out = {k: v.encode() for k, v in (doc.get("stringData") or {}).items()}
    for key, value in (doc.get("data") or {}).items():
        out[key] = base64.b64decode(value) if doc["kind"] == "Secret" else str(value).encode()
    for key, value in (doc.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


def resolve(spec: dict[str, Any], objects: list[dict[str, Any]], root: Path, container: str | None = None,
            token: Path | None = None) -> Resolved:
    """The container's env and args with its mounts written under root and paths moved there."""
    containers = spec.get("containers") or []
    chosen = [c for c in containers if c["name"] == container] if container else \
        ([c for c in containers if c["name"] == "modelsync"] or containers[:1])
    if not chosen:
        raise PodSpecError(f"no container {container or ''} in the pod spec".replace("  ", " "))
    c = chosen[0]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in objects if d.get("kind") in ("Secret", "ConfigMap")}

    def data(kind: str, name: str, optional: bool = False) -> dict[str, bytes]:
        found = by_name.get((kind, name))
        if found is None:
            if optional:
                return {}
            raise PodSpecError(f"{kind} {name} is used by the pod but not among --objects; add "
                               f"`kubectl get {kind.lower()} {name} -o yaml` to them")
        return object_data(found)

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in c.get("volumeMounts") or []:
        local = root / "mounts" / mount["mountPath"].strip("/").replace("/", "_")
        local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"].rstrip("/") or "/"] = local
        vol = volumes.get(mount["name"]) or {}
        files: dict[str, bytes] = {}
        if "secret" in vol:
            files = _select(data("Secret", vol["secret"]["secretName"], vol["secret"].get("optional", False)),
                            vol["secret"].get("items"))
        elif "configMap" in vol:
            files = _select(data("ConfigMap", vol["configMap"]["name"], vol["configMap"].get("optional", False)),
                            vol["configMap"].get("items"))
        elif "projected" in vol:
            for source in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    if token is None:
                        raise PodSpecError(f"volume {mount['name']} is a projected service-account token: give one "
                                           f"with --token FILE (e.g. `kubectl create token SA --audience "
                                           f"{source['serviceAccountToken'].get('audience', 'AUD')}`)")
                    files[source["serviceAccountToken"]["path"]] = token.read_bytes()
                for kind in ("secret", "configMap"):
                    if kind in source:
                        files.update(_select(data(kind[0].upper() + kind[1:], source[kind]["name"],
                                                  source[kind].get("optional", False)), source[kind].get("items")))
        sub = mount.get("subPath")
        for key, value in files.items():
            if sub and key != sub:
                continue
            target = local / (key if not sub else Path(key).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value)
            target.chmod(0o600)

    def localize(value: str) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(mounts[mount_path]) + value[len(mount_path):]
        return value

    env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = localize(str(item["value"]))
        elif "valueFrom" in item:
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
            if ref is None:
                continue  # fieldRef / resourceFieldRef: nothing the job reads
            kind = "Secret" if "secretKeyRef" in item["valueFrom"] else "ConfigMap"
            values = data(kind, ref["name"], ref.get("optional", False))
            if ref["key"] in values:
                env[item["name"]] = values[ref["key"]].decode()
            elif not ref.get("optional"):
                raise PodSpecError(f"{kind} {ref['name']} has no key {ref['key']} (env {item['name']})")
    args = []
    for arg in [*(c.get("command") or [])[2:], *(c.get("args") or [])] if _is_python_m(c) else c.get("args") or []:
        name, eq, value = arg.partition("=")
        args.append(f"{name}={localize(value)}" if eq else localize(arg))
    return Resolved(env=env, args=args, root=root, mounts=mounts)


def _is_python_m(c: dict[str, Any]) -> bool:
    return (c.get("command") or [])[:2] in (["python", "-m"], ["python3", "-m"])


def _select(files: dict[str, bytes], items: list[dict[str, str]] | None) -> dict[str, bytes]:
    if not items:
        return files
    return {i.get("path", i["key"]): files[i["key"]] for i in items if i["key"] in files}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="modelsync-from-pod", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("spec", type=Path, help="a Pod, Job or CronJob as YAML (kubectl get … -o yaml)")
    p.add_argument("--objects", type=Path, action="append", default=[],
                   help="YAML holding the Secrets and ConfigMaps it uses (repeatable)")
    p.add_argument("--container", help="the container to run (default: `modelsync`, else the first)")
    p.add_argument("--token", type=Path, help="a service-account token for a projected token volume")
    p.add_argument("--check", action="store_true", help="preflight only (--dry-run): connectivity, credentials, "
                                                         "ids and names; nothing is written")
    p.add_argument("--keep", action="store_true", help="keep the directory the mounts were written to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(tempfile.mkdtemp(prefix="modelsync-from-pod-"))
    try:
        docs = load_docs(args.spec)
        spec = pod_spec(next(d for d in docs if d.get("kind") in ("Pod", "Job", "CronJob")))
        objects = [*docs, *(d for f in args.objects for d in load_docs(f))]
        resolved = resolve(spec, objects, root, args.container, args.token)
    except StopIteration:
        print(f"modelsync-from-pod: {args.spec} holds no Pod, Job or CronJob", file=sys.stderr)
        return 2
    except (PodSpecError, OSError, yaml.YAMLError, KeyError) as exc:
        print(f"modelsync-from-pod: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        return 2
    for mount_path, local in resolved.mounts.items():
        print(f"modelsync-from-pod: {mount_path} -> {local}", file=sys.stderr)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    argv_job = ["-m", "modelsync.ops.check" if args.check else "modelsync", *resolved.args]
    try:  # through the one child door (tools): secrets stay in the env and the mounted files, never in argv
        return tools.run_attached(sys.executable, argv_job, env={**clean, **resolved.env})
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
