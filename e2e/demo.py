"""`make demo`: a real end-to-end sync on the local stack, with nothing but local defaults.

1. the local stack is started (or reused): MinIO, an OCI registry, the Model Registry on MariaDB;
2. a busybox base image (from Debian's busybox-static; no public registry is reachable) goes into the registry;
3. a small model (nested dirs, an empty file, a unicode name) goes into MinIO under models/demo/tiny-bert/;
4. `modelsync` runs as a user would run it (env configuration, intent create_model with a metadata dir):
   S3 -> KServe modelcar in the local registry -> RegisteredModel, ModelVersion, ModelArtifact LIVE;
5. the result is read back from the registry and the Model Registry and printed.

Run it again and it works again: the first run creates the model, later runs add a new version of it
(create_version), as a team re-publishing a model would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from e2e.stack import DEFAULT_STATE_DIR, LocalStack
from modelsync.clients import aws
from modelsync.locations import OciLocation, S3Location
from modelsync.oci_copy import push_layout
from modelsync.secret import Secret
from tests.support.oci_helpers import busybox_layout

MODEL_NAME = "tiny-bert-demo"
PREFIX = "demo/tiny-bert/"
MODEL_FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2}\n',
    "tokenizer/vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]).encode() + b"\n",
    "tokenizer/special_tokens_map.json": b'{"unk_token": "[UNK]"}\n',
    "weights/model.safetensors": os.urandom(3 * 1024 * 1024),
    "weights/extra/empty.bin": b"",
    "README ünïcødé.md": "A tiny model for the modelsync demo ✓\n".encode(),
}


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def main() -> int:
    say("starting the local stack")
    stack = LocalStack(DEFAULT_STATE_DIR)
    stack.up()
    env = stack.env()
    say(f"stack up: MinIO {env['MINIO_ENDPOINT']}, registry {env['OCI_REGISTRY']}, Model Registry {env['MR_URL']}")

    base = f"{env['OCI_REGISTRY']}/library/busybox:latest"
    with tempfile.TemporaryDirectory() as tmp:
        push_layout(busybox_layout(Path(tmp) / "layout"), "latest", OciLocation(base, tls_verify=False), "latest",
                    Path(tmp) / "work", "skopeo")
    say(f"base image {base} pushed (busybox from Debian's busybox-static)")

    s3 = aws.client(S3Location(bucket=env["MINIO_BUCKET"], key=PREFIX, endpoint=env["MINIO_ENDPOINT"],
                               access_key_id=Secret(env["MINIO_ACCESS_KEY"]),
                               secret_access_key=Secret(env["MINIO_SECRET_KEY"])))
    for rel, data in MODEL_FILES.items():
        s3.put_object(Bucket=env["MINIO_BUCKET"], Key=PREFIX + rel, Body=data)
    say(f"model uploaded to s3://{env['MINIO_BUCKET']}/{PREFIX} ({len(MODEL_FILES)} files)")

    model_id = _existing_model_id(env["MR_URL"])
    version = time.strftime("v%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        meta, creds = Path(tmp) / "metadata", Path(tmp) / "s3-secret"
        _write_dir(meta, _metadata(version, first=model_id is None))
        _write_dir(creds, {"AWS_ACCESS_KEY_ID": env["MINIO_ACCESS_KEY"],
                           "AWS_SECRET_ACCESS_KEY": env["MINIO_SECRET_KEY"],
                           "AWS_S3_ENDPOINT": env["MINIO_ENDPOINT"], "AWS_S3_BUCKET": env["MINIO_BUCKET"]})
        job_env = {
            "MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_KEY": PREFIX,
            "MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH": str(creds),
            "MODEL_SYNC_DESTINATION_TYPE": "oci",
            "MODEL_SYNC_DESTINATION_OCI_URI": f"{env['OCI_REGISTRY']}/models/{MODEL_NAME}:{version}",
            # the demo registry has no auth; the spec requires credentials for an oci destination anyway
            "MODEL_SYNC_DESTINATION_OCI_USERNAME": "demo", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "demo-unused",
            "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
            "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false",
            "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model" if model_id is None else "create_version",
            "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
            "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": env["MR_ADDRESS"], "MODEL_SYNC_REGISTRY_PORT": env["MR_PORT"],
            "MODEL_SYNC_REGISTRY_IS_SECURE": "false", "MODEL_SYNC_REGISTRY_AUTHOR": "make demo",
            "MODEL_SYNC_STORAGE_PATH": str(Path(tmp) / "storage"),
        }
        if model_id is not None:
            job_env["MODEL_SYNC_MODEL_ID"] = model_id
        say(f"running modelsync (intent {job_env['MODEL_SYNC_MODEL_UPLOAD_INTENT']}, version {version})")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
        done = subprocess.run([sys.executable, "-m", "modelsync"], env={**clean, **job_env}, stdout=subprocess.PIPE,
                              text=True)
        if done.returncode != 0:
            say(f"modelsync failed (exit {done.returncode})")
            return done.returncode
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    say("result")
    print(f"image:    {summary['uri']}")
    print(f"          {summary['files']} files, {summary['bytes']} bytes")
    _print_registered(env["MR_URL"], version)
    print(f"\nInspect it: skopeo inspect --tls-verify=false docker://{summary['uri'][len('oci://'):]}")
    print("Stop the stack: bin/modelsync-stack down")
    return 0


def _metadata(version: str, first: bool) -> dict[str, str]:
    meta = {
        "ModelVersion.name": version,
        "ModelVersion.description": "published by make demo",
        "ModelVersion.author": "make demo",
        "ModelVersion.custom_properties": json.dumps({"accuracy": 0.91, "epochs": 3}),
        "ModelArtifact.name": f"{MODEL_NAME}-{version}",
        "ModelArtifact.model_format_name": "safetensors",
        "ModelArtifact.model_format_version": "1",
    }
    if first:
        meta.update({"RegisteredModel.name": MODEL_NAME, "RegisteredModel.description": "the modelsync demo model",
                     "RegisteredModel.owner": "demo-team",
                     "RegisteredModel.custom_properties": json.dumps({"project": "demo"})})
    return meta


def _write_dir(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True)
    for key, value in files.items():
        (path / key).write_text(value + "\n")


def _get(mr_url: str, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{mr_url}/api/model_registry/v1alpha3/{path}", timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _existing_model_id(mr_url: str) -> str | None:
    model = _get(mr_url, f"registered_model?name={MODEL_NAME}")
    return model["id"] if model else None


def _print_registered(mr_url: str, version: str) -> None:
    model = _get(mr_url, f"registered_model?name={MODEL_NAME}")
    mv = _get(mr_url, f"model_version?name={version}&parentResourceId={model['id']}")
    arts = _get(mr_url, f"model_versions/{mv['id']}/artifacts") or {"items": []}
    print(f"model:    RegisteredModel {model['id']} {model['name']!r} (state {model.get('state')})")
    print(f"version:  ModelVersion {mv['id']} {mv['name']!r} (state {mv.get('state')})")
    for art in arts["items"]:
        print(f"artifact: ModelArtifact {art['id']} {art['name']!r} state {art.get('state')} uri {art.get('uri')}")


if __name__ == "__main__":
    sys.exit(main())
