"""A catalogue of bad configurations and inputs, each run through the real CLI (`python -m modelsync`) on the local
stack: the documented exit code (2 configuration, 1 run time), one clear single line naming the problem (and the
setting), no traceback, nothing LIVE in the Model Registry, and the storage path left without a `.modelsync-*`
directory.

One table, CASES: each case builds its own directory (metadata with a unique RegisteredModel name, a storage
path, files it needs) and changes one thing of a valid pvc -> pvc create_model job. The CLI processes run in
parallel (a thread pool in a module fixture); each parametrized test then checks one case's result.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from ..support.model_registry import mr_get
from ..support.models import make_model
from ..support.mounts import tmpfs
from ..support.servers import serve_directory

pytestmark = pytest.mark.stack

MR = "/api/model_registry/v1alpha3"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


# ---------------------------------------------------------------- the context a case builds in


@dataclass
class Ctx:
    stack: object
    root: Path          # this case's own directory
    base_image: str
    www: Path           # served by `url`
    url: str
    s3: object
    mounts: ExitStack
    name: str = field(default_factory=lambda: f"bad-{uuid.uuid4().hex[:10]}")
    artifact_id: str | None = None  # set by cases that use update_artifact on an artifact made for them

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def model_dir(self) -> Path:
        return self.root / "model-src"


def _mr_post(stack, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{stack.mr_url}{MR}/{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def make_artifact(c: Ctx) -> str:
    """A RegisteredModel/ModelVersion/ModelArtifact of this case's name, artifact not LIVE, for update_artifact."""
    rm = _mr_post(c.stack, "registered_models", {"name": c.name})
    mv = _mr_post(c.stack, f"registered_models/{rm['id']}/versions", {"name": "1.0.0", "registeredModelId": rm["id"]})
    art = _mr_post(c.stack, f"model_versions/{mv['id']}/artifacts",
                   {"artifactType": "model-artifact", "name": c.name, "state": "UNKNOWN"})
    c.artifact_id = art["id"]
    return art["id"]


def write_dir(path: Path, files: dict[str, str | bytes]) -> Path:
    """A Secret / ConfigMap directory as Kubernetes mounts it: one file per key."""
    path.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (path / key).write_bytes(value if isinstance(value, bytes) else value.encode())
    return path


def metadata_dir(c: Ctx, **extra: str | bytes) -> Path:
    files = {"RegisteredModel.name": c.name, "ModelVersion.name": "1.0.0", "ModelArtifact.name": c.name,
             "ModelArtifact.model_format_name": "onnx", **{k.replace("__", "."): v for k, v in extra.items()}}
    return write_dir(c.root / f"metadata-{uuid.uuid4().hex[:6]}", {k: v for k, v in files.items() if v is not None})


def dockerconfig(c: Ctx, doc: object | str, as_dir: bool = False) -> str:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    if as_dir:
        return str(write_dir(c.root / "docker-secret", {".dockerconfigjson": text}))
    path = c.root / "config.json"
    path.write_text(text)
    return str(path)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def serve_tar(c: Ctx, member: tarfile.TarInfo, data: bytes = b"") -> str:
    """A tar with one good file and one bad member, served over HTTP; returns its URL."""
    name = f"{c.root.name}.tar"
    with tarfile.open(c.www / name, "w") as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return f"{c.url}/{name}"


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


def serve_zip(c: Ctx, name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> str:
    path = f"{c.root.name}.zip"
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    with zipfile.ZipFile(c.www / path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("ok.txt"), b"ok")
        zf.writestr(info, data)
    return f"{c.url}/{path}"


def s3_objects(c: Ctx, keys: dict[str, bytes]) -> dict[str, str]:
    """Objects put on the stack's MinIO under a fresh prefix; returns the S3 source settings for that prefix."""
    prefix = f"bad-src-{uuid.uuid4().hex[:8]}"
    for key, body in keys.items():
        c.s3.put_object(Bucket=c.stack.minio_bucket, Key=f"{prefix}/{key}", Body=body)
    return {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_PATH": None,
            "MODEL_SYNC_SOURCE_AWS_BUCKET": c.stack.minio_bucket, "MODEL_SYNC_SOURCE_AWS_KEY": prefix,
            "MODEL_SYNC_SOURCE_AWS_ENDPOINT": c.stack.minio_endpoint,
            "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": c.stack.minio_access_key,
            "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": c.stack.minio_secret_key}


def uri_source(url: str) -> dict[str, str | None]:
    return {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_PATH": None, "MODEL_SYNC_SOURCE_URI": url}


def s3_destination(c: Ctx, **extra: str | None) -> dict[str, str | None]:
    return {"MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_PATH": None,
            "MODEL_SYNC_DESTINATION_AWS_BUCKET": c.stack.minio_bucket,
            "MODEL_SYNC_DESTINATION_AWS_KEY": f"bad-dst-{uuid.uuid4().hex[:8]}",
            "MODEL_SYNC_DESTINATION_AWS_ENDPOINT": c.stack.minio_endpoint,
            "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": c.stack.minio_access_key,
            "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": c.stack.minio_secret_key, **extra}


def oci_destination(c: Ctx, **extra: str | None) -> dict[str, str | None]:
    return {"MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_PATH": None,
            "MODEL_SYNC_DESTINATION_OCI_URI": f"{c.stack.oci_registry}/bad-dst/{uuid.uuid4().hex[:8]}:v1",
            "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
            "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": c.base_image,
            "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false", **extra}


def tls_destination(c: Ctx, **extra: str | None) -> dict[str, str | None]:
    """The stack's TLS registry, which answers 401 to anyone without its user and password."""
    return oci_destination(c,
                           MODEL_SYNC_DESTINATION_OCI_URI=f"{c.stack.oci_tls_registry}/bad/{uuid.uuid4().hex[:8]}:v1",
                           MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY="true",
                           MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE=c.stack.oci_tls_ca, **extra)


def update_artifact(c: Ctx) -> dict[str, str | None]:
    return {"MODEL_SYNC_MODEL_UPLOAD_INTENT": "update_artifact", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": None,
            "MODEL_SYNC_MODEL_ARTIFACT_ID": make_artifact(c)}


def read_only_storage(c: Ctx) -> dict[str, str]:
    mnt = c.mounts.enter_context(tmpfs(c.root / "ro-storage", read_only=True))
    return {"MODEL_SYNC_STORAGE_PATH": str(mnt)}


def base_env(c: Ctx) -> dict[str, str]:
    """A valid job: pvc -> pvc, create_model of a name of its own."""
    make_model(c.model_dir)
    return {"MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model",
            "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(metadata_dir(c)),
            "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": c.stack.mr_url, "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
            "MODEL_SYNC_STORAGE_PATH": str(c.storage), "MODEL_SYNC_SOURCE_TYPE": "pvc",
            "MODEL_SYNC_SOURCE_PATH": str(c.model_dir), "MODEL_SYNC_DESTINATION_TYPE": "pvc",
            "MODEL_SYNC_DESTINATION_PATH": str(c.root / "dest")}


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    wrong: str
    build: Callable[[Ctx], dict[str, str | None]]  # env overrides on base_env (None: unset); may create files
    code: int                                        # 2 configuration, 1 run time
    expect: str                                      # the one problem line contains this
    args: tuple[str, ...] = ()


def env(**values: str | None) -> Callable[[Ctx], dict[str, str | None]]:
    return lambda c: values


CASES = [
    # -- every enum
    Case("source-type-enum", "source type not one of the list", env(MODEL_SYNC_SOURCE_TYPE="ftp"), 2,
         "MODEL_SYNC_SOURCE_TYPE"),
    Case("destination-type-enum", "destination type not one of the list", env(MODEL_SYNC_DESTINATION_TYPE="nfs"), 2,
         "MODEL_SYNC_DESTINATION_TYPE"),
    Case("intent-enum", "unknown upload intent", env(MODEL_SYNC_MODEL_UPLOAD_INTENT="delete_model"), 2,
         "MODEL_SYNC_MODEL_UPLOAD_INTENT"),
    Case("backend-enum", "unknown OCI backend",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_BACKEND="docker"), 2,
         "MODEL_SYNC_DESTINATION_OCI_BACKEND"),
    Case("log-format-enum", "log format xml", env(MODEL_SYNC_LOG_FORMAT="xml"), 2, "MODEL_SYNC_LOG_FORMAT"),
    Case("source-date-epoch", "SOURCE_DATE_EPOCH that is not a number of seconds", env(SOURCE_DATE_EPOCH="yesterday"),
         2, "SOURCE_DATE_EPOCH"),
    Case("log-level-enum", "log level name that logging does not know", env(MODEL_SYNC_LOG_LEVEL="loud"), 2,
         "MODEL_SYNC_LOG_LEVEL"),
    Case("registry-log-level-enum", "client log level unknown", env(MODEL_SYNC_REGISTRY_LOG_LEVEL="chatty"), 2,
         "MODEL_SYNC_REGISTRY_LOG_LEVEL"),
    Case("api-version-enum", "REST generation v2", env(MODEL_SYNC_REGISTRY_API_VERSION="v2"), 2,
         "MODEL_SYNC_REGISTRY_API_VERSION"),
    Case("source-type-arg", "bad enum given as an argument", env(), 2, "--source-type",
         args=("--source-type", "floppy")),
    # -- every boolean
    Case("bool-is-secure", "boolean 'maybe'", env(MODEL_SYNC_REGISTRY_IS_SECURE="maybe"), 2,
         "MODEL_SYNC_REGISTRY_IS_SECURE"),
    Case("bool-replace-existing", "boolean 'on'", env(MODEL_SYNC_DESTINATION_REPLACE_EXISTING="on"), 2,
         "MODEL_SYNC_DESTINATION_REPLACE_EXISTING"),
    Case("bool-tls-verify", "boolean 'nope'",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY="nope"), 2,
         "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY"),
    Case("bool-base-tls-verify", "boolean '2'",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY="2"), 2,
         "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY"),
    Case("bool-sign", "boolean 'perhaps'", env(MODEL_SYNC_SIGN="perhaps"), 2, "MODEL_SYNC_SIGN"),
    # -- numbers
    Case("port-word", "port 'http'", env(MODEL_SYNC_REGISTRY_PORT="http"), 2, "MODEL_SYNC_REGISTRY_PORT"),
    Case("port-range", "port 70000", env(MODEL_SYNC_REGISTRY_PORT="70000"), 2, "MODEL_SYNC_REGISTRY_PORT"),
    Case("size-word", "in-flight size 'lots'", env(MODEL_SYNC_MAX_IN_FLIGHT_BYTES="lots"), 2,
         "MODEL_SYNC_MAX_IN_FLIGHT_BYTES"),
    # -- URIs and references
    Case("source-uri-scheme", "ftp:// source URL", lambda c: uri_source("ftp://example.com/m.tar"), 2,
         "MODEL_SYNC_SOURCE_URI"),
    Case("destination-ref-upper", "image reference with upper case",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_URI="reg.example/UPPER/m:v1"), 2,
         "MODEL_SYNC_DESTINATION_OCI_URI"),
    Case("destination-ref-no-host", "image reference without a host",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_URI="just-a-name"), 2,
         "MODEL_SYNC_DESTINATION_OCI_URI"),
    Case("destination-ref-digest", "destination pinned by digest",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_URI=f"{c.stack.oci_registry}/m@sha256:{'a' * 64}"),
         2, "MODEL_SYNC_DESTINATION_OCI_URI"),
    Case("source-ref-bad-tag", "source image tag with a space",
         env(MODEL_SYNC_SOURCE_TYPE="oci", MODEL_SYNC_SOURCE_PATH=None,
             MODEL_SYNC_SOURCE_OCI_URI="reg.example/m:bad tag"),
         2, "MODEL_SYNC_SOURCE_OCI_URI"),
    Case("base-image-ref", "base image not a reference",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE="Not A Ref"), 2,
         "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE"),
    Case("registry-address-scheme", "Model Registry address that is no URL",
         env(MODEL_SYNC_REGISTRY_SERVER_ADDRESS="ftp://model-registry.example"), 2,
         "MODEL_SYNC_REGISTRY_SERVER_ADDRESS"),
    Case("artifact-id-word", "artifact id that is not an id",
         env(MODEL_SYNC_MODEL_UPLOAD_INTENT="update_artifact", MODEL_SYNC_METADATA_CONFIGMAP_PATH=None,
             MODEL_SYNC_MODEL_ARTIFACT_ID="../7"), 2, "MODEL_SYNC_MODEL_ARTIFACT_ID"),
    # -- unknown names
    Case("unknown-env", "a MODEL_SYNC_* typo", env(MODEL_SYNC_SORCE_TYPE="pvc"), 2, "MODEL_SYNC_SORCE_TYPE"),
    Case("unknown-arg", "an unknown option", env(), 2, "--sorce-type", args=("--sorce-type", "pvc")),
    # -- missing and contradictory, per type and intent
    Case("pvc-no-path", "pvc source without its path", env(MODEL_SYNC_SOURCE_PATH=None), 2, "MODEL_SYNC_SOURCE_PATH"),
    Case("pvc-path-missing", "pvc source path that does not exist",
         lambda c: {"MODEL_SYNC_SOURCE_PATH": str(c.root / "nowhere")}, 2, "MODEL_SYNC_SOURCE_PATH"),
    Case("s3-no-bucket", "s3 source with a key but no bucket",
         lambda c: {**s3_objects(c, {}), "MODEL_SYNC_SOURCE_AWS_BUCKET": None}, 2, "MODEL_SYNC_SOURCE_AWS_BUCKET"),
    Case("s3-half-pair", "s3 destination with an access key id but no secret",
         lambda c: s3_destination(c, MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY=None), 2,
         "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY"),
    Case("s3-destination-root", "s3 destination key '/' (the whole bucket)",
         lambda c: s3_destination(c, MODEL_SYNC_DESTINATION_AWS_KEY="/"), 2, "MODEL_SYNC_DESTINATION_AWS_KEY"),
    Case("oci-no-uri", "oci destination without a URI",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_URI=None), 2, "MODEL_SYNC_DESTINATION_OCI_URI"),
    Case("oci-half-pair", "oci username without password",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_USERNAME="u"), 2,
         "MODEL_SYNC_DESTINATION_OCI_PASSWORD"),
    Case("uri-none", "uri source without a URL", lambda c: uri_source(None), 2, "MODEL_SYNC_SOURCE_URI"),
    Case("update-no-artifact", "update_artifact without the artifact id",
         env(MODEL_SYNC_MODEL_UPLOAD_INTENT="update_artifact", MODEL_SYNC_METADATA_CONFIGMAP_PATH=None), 2,
         "MODEL_SYNC_MODEL_ARTIFACT_ID"),
    Case("create-model-no-metadata", "create_model without the metadata dir",
         env(MODEL_SYNC_METADATA_CONFIGMAP_PATH=None), 2, "MODEL_SYNC_METADATA_CONFIGMAP_PATH"),
    Case("create-version-no-model", "create_version without the model id",
         env(MODEL_SYNC_MODEL_UPLOAD_INTENT="create_version"), 2, "MODEL_SYNC_MODEL_ID"),
    Case("metadata-path-missing", "metadata dir that does not exist",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(c.root / "no-meta")}, 2,
         "MODEL_SYNC_METADATA_CONFIGMAP_PATH"),
    Case("destination-inside-source", "pvc destination inside the pvc source",
         lambda c: {"MODEL_SYNC_DESTINATION_PATH": str(c.model_dir / "out")}, 1, "MODEL_SYNC_DESTINATION_PATH"),
    Case("sign-without-sigstore", "--sign true without SIGSTORE_* URLs", env(MODEL_SYNC_SIGN="true"), 2,
         "MODEL_SYNC_SIGN"),
    Case("sigstore-url-not-http", "SIGSTORE_REKOR_URL that is not an http(s) URL",
         env(SIGSTORE_TUF_URL="http://tuf.invalid", SIGSTORE_FULCIO_URL="http://fulcio.invalid",
             SIGSTORE_REKOR_URL="rekor.invalid:3000"), 2, "SIGSTORE_REKOR_URL"),
    Case("sigstore-root-checksum", "root checksum that is not a sha256",
         env(MODEL_SYNC_SIGN="true", SIGSTORE_TUF_URL="http://tuf.invalid", SIGSTORE_FULCIO_URL="http://f.invalid",
             SIGSTORE_REKOR_URL="http://r.invalid", MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM="abc123"), 2,
         "MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM"),
    Case("sigstore-trust-config-missing", "local trust file that does not exist",
         lambda c: {"MODEL_SYNC_SIGN": "true", "MODEL_SYNC_SIGSTORE_TRUST_CONFIG": str(c.root / "trust.json")}, 2,
         "MODEL_SYNC_SIGSTORE_TRUST_CONFIG"),
    Case("sigstore-trust-config-not-json", "local trust file that is not JSON",
         lambda c: {"MODEL_SYNC_SIGN": "true", "MODEL_SYNC_SIGSTORE_TRUST_CONFIG":
                    str(write_dir(c.root / "t", {"trust.json": "not json"}) / "trust.json")}, 2,
         "MODEL_SYNC_SIGSTORE_TRUST_CONFIG"),
    Case("sigstore-trust-config-kind", "local trust file of another kind (a signing config)",
         lambda c: {"MODEL_SYNC_SIGN": "true", "MODEL_SYNC_SIGSTORE_TRUST_CONFIG": str(write_dir(c.root / "t", {
             "trust.json": '{"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json"}'}) / "trust.json")},
         2, "MODEL_SYNC_SIGSTORE_TRUST_CONFIG"),
    Case("signing-token-missing", "signing on, identity token file that does not exist",
         lambda c: {"MODEL_SYNC_SIGN": "true", "SIGSTORE_TUF_URL": "http://tuf.invalid",
                    "SIGSTORE_FULCIO_URL": "http://f.invalid", "SIGSTORE_REKOR_URL": "http://r.invalid",
                    "MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH": str(c.root / "token")}, 2,
         "MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH"),
    Case("token-envvar-unset", "token env var named but not set",
         env(MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR="NO_SUCH_TOKEN_VAR_X"), 2, "MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR"),
    Case("env-file-missing", ".env file that does not exist",
         lambda c: {"MODEL_SYNC_ENV_FILE": str(c.root / "missing.env")}, 2, "MODEL_SYNC_ENV_FILE"),
    # -- credential paths
    Case("ca-missing", "registry CA file that does not exist",
         lambda c: {"MODEL_SYNC_REGISTRY_CUSTOM_CA": str(c.root / "ca.pem")}, 2, "MODEL_SYNC_REGISTRY_CUSTOM_CA"),
    Case("s3-secret-missing", "S3 Secret dir that does not exist",
         lambda c: {**s3_destination(c, MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID=None,
                                     MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY=None),
                    "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH": str(c.root / "no-secret")}, 2,
         "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH"),
    Case("s3-secret-is-file", "S3 Secret path that is a file",
         lambda c: {**s3_destination(c), "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH":
                    str(write_dir(c.root / "s", {"AWS_ACCESS_KEY_ID": "x"}) / "AWS_ACCESS_KEY_ID")}, 2,
         "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH"),
    Case("s3-secret-unreadable-key", "S3 Secret key file that is not text",
         lambda c: {**s3_destination(c), "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH":
                    str(write_dir(c.root / "s", {"AWS_SECRET_ACCESS_KEY": b"\xff\xfe\x00bad"}))}, 2,
         "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH"),
    Case("s3-secret-missing-secret-key", "S3 Secret with AWS_ACCESS_KEY_ID only",
         lambda c: {**s3_destination(c, MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID=None,
                                     MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY=None),
                    "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH":
                        str(write_dir(c.root / "s", {"AWS_ACCESS_KEY_ID": "AK"}))},
         2, "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY"),
    Case("s3-secret-empty-keys", "S3 Secret whose key files are empty (no bucket given elsewhere)",
         lambda c: {**s3_destination(c, MODEL_SYNC_DESTINATION_AWS_BUCKET=None),
                    "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH":
                    str(write_dir(c.root / "s", {"AWS_BUCKET": "", "AWS_S3_BUCKET": "  \n"}))}, 2,
         "MODEL_SYNC_DESTINATION_AWS_BUCKET"),
    Case("dockerconfig-missing", "dockerconfigjson path that does not exist",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=str(c.root / "no.json")), 2,
         "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"),
    Case("dockerconfig-not-json", "dockerconfigjson that is not JSON",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=dockerconfig(c, "{auths: nope")), 2,
         "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"),
    Case("dockerconfig-auths-list", "dockerconfigjson whose auths is a list",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=dockerconfig(c, {"auths": []}, True)),
         2, "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"),
    Case("dockerconfig-bad-auth", "auth neither base64 of user:password nor that text",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=dockerconfig(
             c, {"auths": {c.stack.oci_registry: {"auth": "!!not-base64!!"}}})), 2,
         "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"),
    Case("dockerconfig-empty-secret-dir", "a Secret dir without .dockerconfigjson",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=str(write_dir(c.root / "empty", {}))),
         2, "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH"),
    Case("dockerconfig-half-pair", "an entry with a username and no password",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=dockerconfig(
             c, {"auths": {c.stack.oci_registry: {"username": "u"}}})), 2, "MODEL_SYNC_DESTINATION_OCI_PASSWORD"),
    # -- metadata
    Case("meta-json", "custom properties that are not JSON",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, ModelVersion__custom_properties="{a: 1"))},
         2, "ModelVersion.custom_properties"),
    Case("meta-list", "custom properties that are a list",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, RegisteredModel__custom_properties="[1]"))},
         2, "RegisteredModel.custom_properties"),
    Case("meta-int64", "an integer beyond int32",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, ModelArtifact__custom_properties='{"n": 3000000000}'))}, 2, "int32"),
    Case("meta-null", "a null property",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, ModelVersion__custom_properties='{"gone": null}'))}, 2, "'gone'"),
    Case("meta-nan", "a NaN property",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, ModelVersion__custom_properties='{"x": NaN}'))}, 2, "not a finite number"),
    Case("meta-reserved", "a property in the job's own namespace",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH":
                    str(metadata_dir(c, ModelArtifact__custom_properties='{"modelsync.digest": "x"}'))}, 2, "reserved"),
    Case("meta-no-name", "RegisteredModel.name empty",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(metadata_dir(c, RegisteredModel__name="  \n"))}, 2,
         "RegisteredModel.name"),
    Case("meta-not-utf8", "a metadata file that is not text",
         lambda c: {"MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(metadata_dir(c, ModelVersion__description=b"\xff\xfe"))},
         2, "ModelVersion.description"),
    # -- the storage path
    Case("storage-is-file", "storage path that is a file",
         lambda c: {"MODEL_SYNC_STORAGE_PATH": str(write_dir(c.root / "f", {"storage": "x"}) / "storage")}, 2,
         "MODEL_SYNC_STORAGE_PATH"),
    Case("storage-read-only", "storage path on a read-only file system", read_only_storage, 1,
         "MODEL_SYNC_STORAGE_PATH"),
    # -- run time: what only the services or the bytes show
    Case("anonymous-401", "registry host absent from auths (anonymous) on a registry that needs a login",
         lambda c: tls_destination(c, MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=dockerconfig(
             c, {"auths": {"elsewhere.example": {"auth": b64("u:p")}}})), 2, "requires credentials"),
    Case("base-image-missing", "a base image that does not exist",
         lambda c: oci_destination(c, MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE=f"{c.stack.oci_registry}/library/nope:1"),
         1, "--destination-oci-base-image"),
    Case("artifact-missing", "update_artifact of an artifact id that does not exist",
         env(MODEL_SYNC_MODEL_UPLOAD_INTENT="update_artifact", MODEL_SYNC_METADATA_CONFIGMAP_PATH=None,
             MODEL_SYNC_MODEL_ARTIFACT_ID="987654321"), 1, "987654321"),
    Case("model-id-missing", "create_version under a RegisteredModel id that does not exist",
         env(MODEL_SYNC_MODEL_UPLOAD_INTENT="create_version", MODEL_SYNC_MODEL_ID="987654321"), 1, "987654321"),
    Case("registry-unreachable", "Model Registry address where nothing listens",
         env(MODEL_SYNC_REGISTRY_SERVER_ADDRESS="http://127.0.0.1:9"), 1, "127.0.0.1"),
    Case("s3-prefix-empty", "S3 source prefix holding nothing", lambda c: s3_objects(c, {}), 1, "nothing found"),
    Case("s3-key-backslash", "S3 object key with a backslash",
         lambda c: s3_objects(c, {"ok.bin": b"ok", "win\\path.bin": b"x"}), 1, "S3 key"),
    Case("s3-key-twins", "two S3 keys that are one file name once Unicode-normalised",
         lambda c: s3_objects(c, {"caf\u00e9.bin": b"a", "cafe\u0301.bin": b"b"}), 1, "the same file as"),
    Case("s3-key-record-name", "S3 object named like the volume destination's own record of what it wrote",
         lambda c: s3_objects(c, {"ok.bin": b"ok", ".modelsync-files.json": b'{"files": {"../x": 1}}'}), 1,
         ".modelsync-files.json"),
    Case("s3-wrong-secret", "S3 source with a secret access key the store refuses",
         lambda c: {**s3_objects(c, {"ok.bin": b"ok"}), "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": "wrong-Secret-Zq9"},
         2, "the secret access key is wrong"),
    Case("tar-traversal", "tar member ../escape.txt",
         lambda c: uri_source(serve_tar(c, tar_member("../escape.txt"), b"x")), 1, "outside the model directory"),
    Case("tar-absolute", "tar member /etc/evil", lambda c: uri_source(serve_tar(c, tar_member("/etc/evil"), b"x")), 1,
         "outside the model directory"),
    Case("tar-symlink", "tar symlink to /etc/passwd, onto an artifact made for the case",
         lambda c: {**update_artifact(c), **uri_source(serve_tar(c, tar_member("l", tarfile.SYMTYPE, "/etc/passwd")))},
         1, "absolute path"),
    Case("tar-hardlink", "tar hard link out of the tree",
         lambda c: uri_source(serve_tar(c, tar_member("h", tarfile.LNKTYPE, "../outside"))), 1,
         "outside the model directory"),
    Case("tar-device", "tar character device",
         lambda c: uri_source(serve_tar(c, tar_member("dev", tarfile.CHRTYPE))), 1, "device or fifo"),
    Case("tar-fifo", "tar fifo", lambda c: uri_source(serve_tar(c, tar_member("fifo", tarfile.FIFOTYPE))), 1,
         "device or fifo"),
    Case("zip-traversal", "zip member a/../../escape.txt",
         lambda c: uri_source(serve_zip(c, "a/../../escape.txt", b"x")), 1, "outside the model directory"),
    Case("zip-symlink", "zip symlink member", lambda c: uri_source(serve_zip(c, "l", b"/etc/passwd", 0o120777)), 1,
         "not a regular file"),
    Case("name-taken", "a RegisteredModel name someone else already holds",
         lambda c: _mr_post(c.stack, "registered_models", {"name": c.name}) and {}, 1, "taken"),
]


# ---------------------------------------------------------------- running them


def _run(case: Case, ctx: Ctx, overrides: dict[str, str | None]) -> dict:
    env = {k: v for k, v in {**base_env(ctx), **overrides}.items() if v is not None}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    done = subprocess.run([sys.executable, "-m", "modelsync", *case.args], env={**clean, **env}, cwd=ctx.root,
                          capture_output=True, text=True, timeout=240)
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    left = sorted(p.name for p in storage.glob(".modelsync-*")) if storage.is_dir() else []
    return {"proc": done, "left": left}


@pytest.fixture(scope="module")
def results(stack, base_image, tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    s3 = boto3.client("s3", endpoint_url=stack.minio_endpoint, aws_access_key_id=stack.minio_access_key,
                      aws_secret_access_key=stack.minio_secret_key, region_name="us-east-1")
    with serve_directory(www) as url, ExitStack() as mounts:
        jobs = []
        for case in CASES:
            ctx = Ctx(stack, tmp_path_factory.mktemp(case.id), base_image, www, url, s3, mounts)
            ctx.root.mkdir(exist_ok=True)
            jobs.append((case, ctx, case.build(ctx)))  # built in order here: files, mounts, objects, entities
        with ThreadPoolExecutor(8) as pool:
            futures = {case.id: (ctx, pool.submit(_run, case, ctx, over)) for case, ctx, over in jobs}
            out = {cid: (ctx, fut.result()) for cid, (ctx, fut) in futures.items()}
        yield out


def _not_live(stack, ctx: Ctx) -> list[str]:
    """States of every artifact under the case's RegisteredModel name (and of the artifact made for it)."""
    states = []
    try:
        rm = mr_get(stack, f"registered_model?name={ctx.name}")
    except urllib.error.HTTPError as err:
        assert err.code == 404
        rm = None
    if rm:
        for mv in mr_get(stack, f"registered_models/{rm['id']}/versions")["items"]:
            states += [a.get("state") for a in mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]]
    if ctx.artifact_id:
        states.append(mr_get(stack, f"model_artifacts/{ctx.artifact_id}").get("state"))
    return states


def test_the_table_is_big_and_distinct():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES) and len({c.wrong for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, results, stack):
    ctx, res = results[case.id]
    done, stderr = res["proc"], res["proc"].stderr
    assert done.returncode == case.code, f"{case.wrong}: exit {done.returncode}\n{stderr}"
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    lines = stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), f"a line that is not one log record:\n{stderr}"
    problems = [line for line in lines if " ERROR " in line or "config:" in line]
    if case.code == 2:
        problems = [line for line in problems if "configuration invalid" not in line]
        assert "configuration invalid (1 problem)" in stderr, stderr
    assert len(problems) == 1, f"{case.wrong}: want one problem line:\n{stderr}"
    assert case.expect in problems[0], problems[0]
    assert "LIVE" not in _not_live(stack, ctx), case.id
    assert res["left"] == [], res["left"]
    assert "wrong-Secret-Zq9" not in stderr + done.stdout
