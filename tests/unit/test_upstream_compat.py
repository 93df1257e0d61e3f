"""Drop-in compatibility with upstream's async-upload job configuration (kubeflow/model-registry,
jobs/async-upload: tests/test_config.py, job/config.py, job/models.py, README.md, samples/*.yaml).

A TABLE of cases. Each names the upstream test (or upstream code path) it comes from, gives the inputs the Job
would hand the container (args, env vars, mounted Secret dirs / .dockerconfigjson / ConfigMap dirs, written under
tmp_path), and states the outcome on modelsync's side:

    expect   resolved values (Secrets compared by .reveal()), origins   -> the case is accepted
    warn     a WARNING (or, for `note`, INFO or louder) log line containing this text must be emitted
    refused  ConfigError whose text contains every one of these strings

`difference=True` marks a documented, deliberate difference from upstream; the case then asserts OUR behaviour
and `reason` says why. Upstream inputs and expected values are facts taken from upstream's tests; the test code
and the layout here are our own.

Differences that cannot be expressed as configuration (listed here so the table is complete):
  * a failed job marks the ModelArtifact ABANDONED (upstream leaves the artifact as it was / relies on the
    caller); see tests/stack/test_job.py for that behaviour.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelsync import config
from modelsync.errors import ConfigError
from modelsync.metadata import ids_in, parse_metadata_dir
from modelsync.secret import Secret

SAMPLES = Path(__file__).resolve().parents[1] / "support" / "upstream_samples"

MR = "https://registry.example.com"  # upstream's registry address in every config test


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dockerconfig(registry: str, entry: dict | None) -> str:
    """A .dockerconfigjson holding `entry` for `registry` (entry None: an entry for some other registry only)."""
    auths = {registry: entry} if entry is not None else {"other-registry.example": {"auth": b64("x:y")}}
    return json.dumps({"auths": auths})


# --- inputs shared by many upstream tests (their fixtures, restated as plain data) ---------------------------

# upstream fixture destination_oci_env_vars
DEST_OCI_ENV = {
    "MODEL_SYNC_DESTINATION_TYPE": "oci",
    "MODEL_SYNC_DESTINATION_OCI_URI": "quay.io/example/oci",
    "MODEL_SYNC_DESTINATION_OCI_REGISTRY": "quay.io",
    "MODEL_SYNC_DESTINATION_OCI_USERNAME": "oci_username_env",
    "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "oci_password_env",
}
DEST_OCI_EXPECT = {"destination_type": "oci", "destination_oci_uri": "quay.io/example/oci",
                   "destination_oci_username": "oci_username_env", "destination_oci_password": "oci_password_env"}
# upstream fixture source_s3_env_vars
SRC_S3_ENV = {
    "MODEL_SYNC_SOURCE_TYPE": "s3",
    "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": "source_key_env",
    "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": "source_secret_env",
    "MODEL_SYNC_SOURCE_AWS_REGION": "us-east-1",
    "MODEL_SYNC_SOURCE_AWS_BUCKET": "source-bucket-env",
    "MODEL_SYNC_SOURCE_AWS_KEY": "source-key-env",
}
# upstream fixture update_artifact_intent_env_vars
UPDATE_ENV = {"MODEL_SYNC_MODEL_ARTIFACT_ID": "1234", "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": MR}

# upstream fixture s3_credentials_folder (its random suffixes fixed to 4242)
S3_DIR_UPSTREAM = {
    "AWS_ACCESS_KEY_ID": "file_key_4242",
    "AWS_SECRET_ACCESS_KEY": "file_secret_4242",
    "AWS_REGION": "eu-west-1_4242",
    "AWS_S3_BUCKET": "file-bucket_4242",
    "AWS_S3_ENDPOINT": "file-endpoint_4242",
}
URI_DIR_UPSTREAM = {"URI": "hf://test/model/4242"}  # upstream fixture uri_credentials_folder

# inputs of upstream's test_oci_credentials_file_loading (both sides read the same .dockerconfigjson)
OCI_FILE_ENV = {
    "MODEL_SYNC_SOURCE_TYPE": "oci",
    "MODEL_SYNC_SOURCE_OCI_URI": "registry.example.com/source/model",
    "MODEL_SYNC_SOURCE_OCI_REGISTRY": "registry.example.com",
    "MODEL_SYNC_DESTINATION_TYPE": "oci",
    "MODEL_SYNC_DESTINATION_OCI_URI": "registry.example.com/dest/model",
    "MODEL_SYNC_DESTINATION_OCI_REGISTRY": "registry.example.com",
    "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": MR,
}
OCI_FILE_ARGS = ["--source-oci-credentials-path", "{tmp}/.dockerconfigjson",
                 "--destination-oci-credentials-path", "{tmp}/.dockerconfigjson", "--model-artifact-id", "123"]


def both_oci(user: str | None, password: str | None) -> dict[str, Any]:
    return {f"{side}_oci_{k}": v for side in ("source", "destination")
            for k, v in (("username", user), ("password", password))}


@dataclass
class Case:
    id: str
    upstream: str                                  # upstream test (or code path) the case comes from
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path under tmp_path -> content; "x/" = empty dir
    via: str = "load"                              # load | resolve | metadata:<intent>
    expect: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    warn: str | None = None                        # text a WARNING-or-louder log line must contain
    note: str | None = None                        # text an INFO-or-louder log line must contain
    refused: tuple[str, ...] = ()                  # texts the ConfigError must contain
    difference: bool = False
    reason: str = ""


def s3_dir(name: str, data: dict[str, str]) -> dict[str, str]:
    return {f"{name}/{k}": v for k, v in data.items()}


CASES = [
    # ---------------------------------------------------------------- tests/test_config.py, one case per test
    Case("s3-dir-to-oci-env", "test_s3_file_to_oci_env_config",
         argv=["--source-type", "s3", "--source-s3-credentials-path", "{tmp}/s3", "--source-aws-key", "my-key",
               "--registry-server-address", MR],
         env={**DEST_OCI_ENV, **UPDATE_ENV}, files=s3_dir("s3", S3_DIR_UPSTREAM),
         expect={"source_aws_access_key_id": "file_key_4242", "source_aws_secret_access_key": "file_secret_4242",
                 "source_aws_region": "eu-west-1_4242", "source_aws_bucket": "file-bucket_4242",
                 # upstream keeps the scheme-less endpoint as written; the product decision reads it as https://
                 "source_aws_endpoint": "https://file-endpoint_4242",
                 "source_aws_key": "my-key", **DEST_OCI_EXPECT},
         origins={"source_aws_access_key_id": "file", "source_aws_key": "arg"},
         warn="https://file-endpoint_4242"),
    Case("s3-env-to-oci-env", "test_env_based_s3_to_oci_config",
         env={**UPDATE_ENV, **SRC_S3_ENV, **DEST_OCI_ENV},
         expect={"source_type": "s3", "source_aws_access_key_id": "source_key_env",
                 "source_aws_secret_access_key": "source_secret_env", "source_aws_region": "us-east-1",
                 "source_aws_bucket": "source-bucket-env", **DEST_OCI_EXPECT,
                 "model_artifact_id": "1234", "registry_server_address": MR}),
    Case("oci-args-to-s3-args", "test_params_based_config",
         argv=["--source-type", "oci", "--source-oci-uri", "quay.io/example/params", "--source-oci-registry",
               "quay.io", "--destination-type", "s3", "--destination-aws-bucket", "destination-bucket-params",
               "--destination-aws-key", "destination-key-params", "--destination-aws-region", "eu-central-1",
               "--destination-aws-access-key-id", "destination_key_params",
               "--destination-aws-secret-access-key", "destination_secret_params",
               "--model-upload-intent", "update_artifact", "--model-artifact-id", "5678",
               "--registry-server-address", MR],
         # no source username/password at all: upstream pulls anonymously (both None is valid there)
         expect={"source_type": "oci", "source_oci_uri": "quay.io/example/params", "source_oci_username": None,
                 "source_oci_password": None, "destination_type": "s3",
                 "destination_aws_access_key_id": "destination_key_params",
                 "destination_aws_secret_access_key": "destination_secret_params",
                 "destination_aws_region": "eu-central-1", "destination_aws_bucket": "destination-bucket-params"}),
    Case("args-beat-env", "test_params_will_override_env_config",
         argv=["--source-type", "s3", "--source-aws-bucket", "source-bucket-4242", "--source-aws-region",
               "eu-central-4242", "--source-aws-access-key-id", "source-key-4242",
               "--source-aws-secret-access-key", "source-secret-4242", "--model-upload-intent", "update_artifact",
               "--model-artifact-id", "5678", "--registry-server-address", MR],
         env={**UPDATE_ENV, **SRC_S3_ENV, **DEST_OCI_ENV},
         expect={"source_aws_access_key_id": "source-key-4242", "source_aws_secret_access_key": "source-secret-4242",
                 "source_aws_region": "eu-central-4242", "source_aws_bucket": "source-bucket-4242",
                 "source_aws_key": "source-key-env", "model_artifact_id": "5678"},
         origins={"source_aws_bucket": "arg", "source_aws_key": "env", "model_artifact_id": "arg"}),
    Case("uri-dir-to-oci-env", "test_uri_file_to_oci_env_config",
         argv=["--source-type", "uri", "--source-uri-credentials-path", "{tmp}/uri",
               "--registry-server-address", MR],
         env={**DEST_OCI_ENV, **UPDATE_ENV}, files=s3_dir("uri", URI_DIR_UPSTREAM),
         # upstream's own test URI has three path parts; its config accepts it (only its download would object)
         expect={"source_type": "uri", "source_uri": "hf://test/model/4242",
                 "source_uri_credentials_path": "{tmp}/uri", **DEST_OCI_EXPECT},
         origins={"source_uri": "file"}),
    Case("uri-arg-hf", "test_uri_params_to_oci_config",
         argv=["--source-type", "uri", "--source-uri", "hf://test/model/params", "--registry-server-address", MR],
         env={**UPDATE_ENV, **DEST_OCI_ENV},
         expect={"source_type": "uri", "source_uri": "hf://test/model/params", "source_uri_credentials_path": None,
                 "destination_oci_uri": "quay.io/example/oci"}),
    Case("uri-arg-beats-dir", "test_uri_credentials_override_params",
         argv=["--source-type", "uri", "--source-uri", "hf://cli/model/override",
               "--source-uri-credentials-path", "{tmp}/uri", "--registry-server-address", MR],
         env={**DEST_OCI_ENV, **UPDATE_ENV}, files=s3_dir("uri", URI_DIR_UPSTREAM), via="resolve",
         expect={"source_uri": "hf://cli/model/override", "source_uri_credentials_path": "{tmp}/uri"},
         origins={"source_uri": "arg"},
         difference=True,
         reason="upstream: the URI file overrides --source-uri (its test asserts the file value); modelsync: "
                "credentials files rank below args and env, as upstream's README documents"),
    Case("uri-dir-missing", "test_uri_credentials_missing_folder_error",
         argv=["--source-type", "uri", "--source-uri-credentials-path", "/non/existent/path",
               "--registry-server-address", MR],
         env={**UPDATE_ENV, **DEST_OCI_ENV},
         refused=("--source-uri-credentials-path", "/non/existent/path")),
    Case("uri-dir-without-URI", "test_uri_credentials_missing_uri_file_error",
         argv=["--source-type", "uri", "--source-uri-credentials-path", "{tmp}/uri",
               "--registry-server-address", MR],
         env={**UPDATE_ENV, **DEST_OCI_ENV}, files={"uri/": ""},
         refused=("MODEL_SYNC_SOURCE_URI", "URI")),
    Case("uri-dir-from-env", "test_uri_credentials_env_var_support",
         argv=["--source-type", "uri", "--registry-server-address", MR],
         env={**UPDATE_ENV, **DEST_OCI_ENV, "MODEL_SYNC_SOURCE_URI_CREDENTIALS_PATH": "{tmp}/uri"},
         files=s3_dir("uri", URI_DIR_UPSTREAM),
         expect={"source_uri": "hf://test/model/4242", "source_uri_credentials_path": "{tmp}/uri"},
         origins={"source_uri": "file", "source_uri_credentials_path": "env"}),
    Case("oci-file-base64", "test_oci_credentials_file_loading[base64-encoded]",
         argv=OCI_FILE_ARGS, env=OCI_FILE_ENV,
         files={".dockerconfigjson": dockerconfig("registry.example.com", {
             "auth": b64("testuser:testpass123"), "email": "test@example.com"})},
         expect=both_oci("testuser", "testpass123")),  # upstream's `email` has no modelsync setting
    Case("oci-file-plaintext", "test_oci_credentials_file_loading[plaintext]",
         argv=OCI_FILE_ARGS, env=OCI_FILE_ENV,
         files={".dockerconfigjson": dockerconfig("registry.example.com", {
             "auth": "plainuser:plainpass456", "email": "plain@example.com"})},
         expect=both_oci("plainuser", "plainpass456"), warn="deprecat"),
    Case("oci-file-empty-auth", "test_oci_credentials_file_loading[empty-auth]",
         argv=OCI_FILE_ARGS, env=OCI_FILE_ENV,
         files={".dockerconfigjson": dockerconfig("registry.example.com", {
             "auth": "", "email": "user@example.com"})},
         expect=both_oci(None, None), note="anonymous"),

    # ---------------------------------------------------------------- upstream code paths its tests do not reach
    Case("oci-file-no-entry", "job/config.py _load_oci_credentials (upstream: KeyError on a missing registry)",
         argv=OCI_FILE_ARGS, env=OCI_FILE_ENV,
         files={".dockerconfigjson": dockerconfig("registry.example.com", None)},
         expect=both_oci(None, None), note="anonymous"),
    Case("s3-endpoint-no-scheme", "job/config.py (endpoint passed through as written)",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": "minio.example:9000"},
         expect={"source_aws_endpoint": "https://minio.example:9000"}, warn="https://minio.example:9000"),
    Case("s3-dir-key-order", "job/config.py _load_s3_credentials (AWS_REGION, AWS_ENDPOINT_URL, AWS_BUCKET first)",
         argv=["--source-s3-credentials-path", "{tmp}/s3"],
         env={**DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_SOURCE_AWS_KEY": "k"},
         files=s3_dir("s3", {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret",
                             "AWS_REGION": "region-preferred", "AWS_DEFAULT_REGION": "region-fallback",
                             "AWS_ENDPOINT_URL": "http://preferred.example:9000",
                             "AWS_S3_ENDPOINT": "http://fallback.example:9000",
                             "AWS_BUCKET": "bucket-preferred", "AWS_S3_BUCKET": "bucket-fallback"}),
         expect={"source_aws_region": "region-preferred", "source_aws_endpoint": "http://preferred.example:9000",
                 "source_aws_bucket": "bucket-preferred"}),
    Case("s3-dir-vs-env", "job/config.py get_config (S3 file values overwrite args/env)",
         argv=["--source-s3-credentials-path", "{tmp}/s3"], via="resolve",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, **UPDATE_ENV}, files=s3_dir("s3", S3_DIR_UPSTREAM),
         expect={"source_aws_access_key_id": "source_key_env", "source_aws_bucket": "source-bucket-env",
                 "source_aws_endpoint": "https://file-endpoint_4242"},
         origins={"source_aws_access_key_id": "env", "source_aws_endpoint": "file"},
         difference=True,
         reason="upstream's code lets every key present in the S3 Secret overwrite args/env (its README says the "
                "opposite); modelsync: files rank below args and env"),
    Case("oci-file-vs-env", "job/config.py get_config (.dockerconfigjson overwrites username/password, even with None)",
         argv=OCI_FILE_ARGS, via="resolve",
         env={**OCI_FILE_ENV, "MODEL_SYNC_SOURCE_OCI_USERNAME": "env-user", "MODEL_SYNC_SOURCE_OCI_PASSWORD": "env-pw"},
         files={".dockerconfigjson": dockerconfig("registry.example.com", {"auth": b64("fileuser:filepw")})},
         expect={"source_oci_username": "env-user", "source_oci_password": "env-pw",
                 "destination_oci_username": "fileuser", "destination_oci_password": "filepw"},
         origins={"source_oci_username": "env", "destination_oci_username": "file"},
         difference=True,
         reason="upstream: the .dockerconfigjson replaces username and password given as args/env; modelsync: "
                "files rank below args and env"),
    Case("s3-dest-empty-key", "job/models.py S3StorageConfig (key must be truthy)",
         env={**SRC_S3_ENV, **UPDATE_ENV, "MODEL_SYNC_DESTINATION_TYPE": "s3",
              "MODEL_SYNC_DESTINATION_AWS_BUCKET": "b", "MODEL_SYNC_DESTINATION_AWS_KEY": "",
              "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": "id", "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": "s"},
         refused=("MODEL_SYNC_DESTINATION_AWS_KEY",)),  # upstream refuses "" too
    Case("s3-dest-root-key", "job/models.py S3StorageConfig (\"/\" is truthy: upstream accepts it)",
         env={**SRC_S3_ENV, **UPDATE_ENV, "MODEL_SYNC_DESTINATION_TYPE": "s3",
              "MODEL_SYNC_DESTINATION_AWS_BUCKET": "b", "MODEL_SYNC_DESTINATION_AWS_KEY": "/",
              "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": "id", "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": "s"},
         refused=("MODEL_SYNC_DESTINATION_AWS_KEY",),
         difference=True,
         reason="an empty destination prefix (\"/\" is the bucket root) would let the job write over a whole bucket; "
                "upstream accepts \"/\""),
    Case("bool-short-spellings", "job/config.py str2bool (y/n/t/f accepted)",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "f",
              "MODEL_SYNC_SIGN": "n"},
         expect={"destination_oci_enable_tls_verify": False, "sign": False}),
    Case("registry-log-level-number", "job/models.py RegistryConfig.log_level: int (default logging.WARNING)",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_REGISTRY_LOG_LEVEL": "20"},
         expect={"registry_log_level": "info"}),
    Case("intent-create-version-needs-model-id", "job/models.py CreateVersionIntent.model_id required",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": MR,
              "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_version", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": "{tmp}/cm"},
         files={"cm/ModelVersion.name": "1", "cm/ModelArtifact.name": "a"},
         refused=("MODEL_SYNC_MODEL_ID",)),
    Case("intent-update-needs-artifact-id", "job/models.py UpdateArtifactIntent.artifact_id required",
         env={**SRC_S3_ENV, **DEST_OCI_ENV, "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": MR},
         refused=("MODEL_SYNC_MODEL_ARTIFACT_ID",)),
    Case("hf-org-model", "job/download.py download_from_hf (source type uri, hf:// URI)",
         env={**DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": "hf://org/model"},
         expect={"source_type": "uri", "source_uri": "hf://org/model"}),
    Case("hf-org-model-revision", "job/download.py download_from_hf (upstream spells the revision ':')",
         env={**DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_SOURCE_TYPE": "uri",
              "MODEL_SYNC_SOURCE_URI": "hf://org/model@v1.0"},
         expect={"source_type": "uri", "source_uri": "hf://org/model@v1.0"}),
    Case("hf-org-model-colon-revision", "job/download.py download_from_hf (repo_id org/model, revision after ':')",
         env={**DEST_OCI_ENV, **UPDATE_ENV, "MODEL_SYNC_SOURCE_TYPE": "uri",
              "MODEL_SYNC_SOURCE_URI": "hf://org/model:main"},
         expect={"source_type": "uri", "source_uri": "hf://org/model:main"}),

    # ---------------------------------------------------------------- metadata ConfigMap (job/config.py, README)
    Case("meta-readme-create-model", "README.md ConfigMap Usage",
         files={f"cm/{k}": v for k, v in {
             "RegisteredModel.name": "my-model", "RegisteredModel.description": "Model description",
             "RegisteredModel.owner": "data-science-team",
             "RegisteredModel.custom_properties": '{"project": "sentiment-analysis", "team": "nlp"}\n',
             "ModelVersion.name": "1.0.0", "ModelVersion.description": "Initial release",
             "ModelVersion.author": "Jane Doe",
             "ModelVersion.custom_properties": '{"accuracy": 0.95, "f1_score": 0.93}\n',
             "ModelArtifact.name": "sentiment-analyzer", "ModelArtifact.model_format_name": "tensorflow",
             "ModelArtifact.model_format_version": "2.8", "ModelArtifact.storage_key": "s3-connection",
             "ModelArtifact.custom_properties": '{"model_size_mb": 438, "inference_time_ms": 120}\n'}.items()},
         via="metadata:create_model",
         expect={"RegisteredModel.name": "my-model", "ModelVersion.author": "Jane Doe",
                 "ModelArtifact.model_format_version": "2.8",
                 "ModelVersion.custom_properties": {"accuracy": 0.95, "f1_score": 0.93}}),
    Case("meta-unused-key", "job/config.py _load_configmap_metadata (pydantic ignores unknown fields)",
         files={"cm/RegisteredModel.name": "m", "cm/ModelVersion.name": "1", "cm/ModelVersion.descripton": "typo"},
         via="metadata:create_model", expect={"ModelVersion.name": "1"},
         warn="did you mean ModelVersion.description"),
    Case("meta-model-source-keys", "job/models.py ModelArtifactMetadata.model_source_* (upstream uses them)",
         files={"cm/RegisteredModel.name": "m", "cm/ModelVersion.name": "1",
                "cm/ModelArtifact.model_source_kind": "HuggingFace"},
         via="metadata:create_model",
         expect={"RegisteredModel.name": "m", "ModelArtifact.model_source_kind": "HuggingFace"}),
    Case("meta-create-version-with-model-id", "samples/create_version_example.yaml (RegisteredModel.id)",
         files={"cm/RegisteredModel.id": "12345", "cm/ModelVersion.name": "2.0.0", "cm/ModelArtifact.name": "a"},
         via="metadata:create_version", expect={"ModelVersion.name": "2.0.0"}),
]


# ------------------------------------------------------------------------------------------------ machinery

@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./.env of the machine running the tests
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "no-sa-token"))


def _sub(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [_sub(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: _sub(v, tmp) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Path):
        return str(value)
    return value


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _metadata_value(meta, key: str) -> Any:
    entity, name = key.split(".", 1)
    part = {"RegisteredModel": meta.registered_model, "ModelVersion": meta.model_version,
            "ModelArtifact": meta.model_artifact}[entity]
    return dict(part.custom_properties) if name == "custom_properties" else part.get(name)


def _run(case: Case, tmp: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """-> (values, origins); raises ConfigError when modelsync refuses."""
    if case.via.startswith("metadata:"):
        meta = parse_metadata_dir(tmp / "cm", case.via.split(":", 1)[1])
        return {k: _metadata_value(meta, k) for k in case.expect}, {}
    argv, env = _sub(case.argv, tmp), _sub(case.env, tmp)
    if case.via == "resolve":
        cfg, problems = config.resolve(argv, env)
        if problems:
            raise ConfigError(problems)
    else:
        cfg = config.load(argv, env)
    return {k: _plain(v) for k, v in cfg.values.items()}, dict(cfg.origins)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.id}{'[difference]' if c.difference else ''}")
def test_upstream_case(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="modelsync")
    _write(tmp_path, case.files)
    context = f"[{case.id}] from upstream {case.upstream}"
    if case.difference:
        context += f" (difference: {case.reason})"
    if case.refused:
        with pytest.raises(ConfigError) as err:
            _run(case, tmp_path)
        text = str(err.value)
        for needle in _sub(list(case.refused), tmp_path):
            assert needle in text, f"{context}: refusal does not name {needle!r}:\n{text}"
        return
    try:
        values, origins = _run(case, tmp_path)
    except ConfigError as exc:
        pytest.fail(f"{context}: upstream accepts this, modelsync refused it:\n{exc}", pytrace=False)
    for name, want in _sub(case.expect, tmp_path).items():
        assert values.get(name) == want, f"{context}: {name} is {values.get(name)!r}, expected {want!r}"
    for name, want in case.origins.items():
        assert origins.get(name) == want, f"{context}: origin of {name} is {origins.get(name)!r}, expected {want!r}"
    for needle, level in ((case.warn, logging.WARNING), (case.note, logging.INFO)):
        if needle:
            lines = [r.getMessage() for r in caplog.records if r.levelno >= level]
            assert any(needle.lower() in line.lower() for line in lines), (
                f"{context}: no {logging.getLevelName(level)}+ log line containing {needle!r}; got {lines}")


def test_table_is_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for c in CASES:
        assert c.upstream and (not c.difference or c.reason), c.id
        assert not (c.refused and (c.expect or c.warn or c.note)), c.id


# ------------------------------------------------------------------------ upstream samples, mounted as the Job does

def _mount(src: Path, dst: Path, only: tuple[str, ...] | None = None) -> Path:
    """Lay a Secret/ConfigMap out as the kubelet does: ..<stamp>/KEY, ..data -> it, KEY -> ..data/KEY."""
    stamp = dst / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    keys = [p.name for p in sorted(src.iterdir()) if only is None or p.name in only]
    for key in keys:
        shutil.copyfile(src / key, stamp / key)
    os.symlink(stamp.name, dst / "..data")
    for key in keys:
        os.symlink(f"..data/{key}", dst / key)
    return dst


SAMPLE_JOB = SAMPLES / "sample_job_s3_to_oci"
SAMPLE_REGISTRY = "distribution-registry-test-service.local-oci-registry-ns.svc.cluster.local:5001"


def _sample_job_env(creds: Path) -> dict[str, str]:
    """The container env of samples/sample_job_s3_to_oci.yaml, with the mount paths moved under tmp_path."""
    return {
        "HTTP_PROXY": "", "HTTPS_PROXY": "", "NO_PROXY": "minio.minio.svc.cluster.local,*.svc.cluster.local",
        "MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_KEY": "my-model",
        "MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH": str(creds / "source"),
        "MODEL_SYNC_DESTINATION_TYPE": "oci",
        "MODEL_SYNC_DESTINATION_OCI_URI": f"{SAMPLE_REGISTRY}/my-model:latest",
        "MODEL_SYNC_DESTINATION_OCI_REGISTRY": SAMPLE_REGISTRY,
        "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH": str(creds / "destination" / ".dockerconfigjson"),
        "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": "public.ecr.aws/docker/library/busybox:latest",
        "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
        "MODEL_SYNC_MODEL_UPLOAD_INTENT": "update_artifact", "MODEL_SYNC_MODEL_ARTIFACT_ID": "6",
        "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://model-registry-service.kubeflow.svc.cluster.local",
        "MODEL_SYNC_REGISTRY_PORT": "8080", "MODEL_SYNC_REGISTRY_AUTHOR": "Alice Bob",
        "MODEL_SYNC_REGISTRY_USER_TOKEN": "super-secret",
    }


def test_sample_job_s3_to_oci_secrets_are_accepted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """samples/sample_job_s3_to_oci.yaml: the S3 Secret mounted whole, the dockerconfigjson Secret mounted with
    items: [.dockerconfigjson] and pointed at as a file. Its "auth" is "": anonymous push."""
    caplog.set_level(logging.DEBUG, logger="modelsync")
    creds = tmp_path / "opt-creds"
    _mount(SAMPLE_JOB / "my-s3-credentials", creds / "source")
    _mount(SAMPLE_JOB / "my-oci-credentials", creds / "destination", only=(".dockerconfigjson",))
    try:
        cfg = config.load([], _sample_job_env(creds))
    except ConfigError as exc:
        pytest.fail(f"upstream's sample Job is refused:\n{exc}", pytrace=False)
    v = cfg.values
    assert v["source_aws_access_key_id"].reveal() == "placeholder-access-key"
    assert v["source_aws_secret_access_key"].reveal() == "placeholder-secret-key"
    assert v["source_aws_region"] == "us-east-1"
    assert v["source_aws_endpoint"] == "http://minio.minio.svc.cluster.local:9000"
    assert v["source_aws_bucket"] == "default"
    assert v["destination_oci_username"] is None and v["destination_oci_password"] is None
    assert v["destination_oci_enable_tls_verify"] is False
    assert v["registry_port"] == 8080 and v["registry_user_token"].reveal() == "super-secret"
    assert any("anonymous" in r.getMessage().lower() for r in caplog.records if r.levelno >= logging.INFO)


def test_sample_dockerconfig_secret_mounted_as_a_directory(tmp_path: Path) -> None:
    """The same dockerconfigjson Secret mounted whole (all its keys) and pointed at as a directory."""
    creds = tmp_path / "opt-creds"
    _mount(SAMPLE_JOB / "my-s3-credentials", creds / "source")
    _mount(SAMPLE_JOB / "my-oci-credentials", creds / "destination")
    env = {**_sample_job_env(creds), "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH": str(creds / "destination")}
    try:
        cfg = config.load([], env)
    except ConfigError as exc:
        pytest.fail(f"the sample's dockerconfigjson Secret mounted as a dir is refused:\n{exc}", pytrace=False)
    assert cfg.values["destination_oci_username"] is None


@pytest.mark.parametrize("sample,configmap,intent,checks", [
    ("create_model_example", "model-metadata-configmap", "create_model",
     {"RegisteredModel.name": "my-new-model", "RegisteredModel.owner": "data-science-team",
      "RegisteredModel.description": "A placeholder model used to check metadata parsing.\n"
                                     "Second line of the description.",
      "ModelVersion.custom_properties": {"training_dataset": "dataset-v1", "accuracy": 0.95, "f1_score": 0.93},
      "ModelArtifact.storage_path": "models/placeholder/", "ModelArtifact.model_source_kind": "HuggingFace",
      "ModelArtifact.custom_properties": {"model_size_mb": 438, "inference_time_ms": 120,
                                          "supported_languages": '["en","es","fr"]'}}),
    ("create_version_example", "model-version-metadata-configmap", "create_version",
     {"ModelVersion.name": "2.0.0", "ModelArtifact.model_format_version": "2.11",
      "ModelArtifact.service_account_name": "model-registry-sa"}),
])
def test_sample_configmaps_are_accepted(sample, configmap, intent, checks, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """samples/create_*_example.yaml ConfigMaps, mounted by the kubelet. ModelArtifact.model_source_* are read
    (the Model Registry stores them); RegisteredModel.id in the create_version one names the model, as
    MODEL_SYNC_MODEL_ID does (and as the Model Registry UI writes it): read, not warned away."""
    caplog.set_level(logging.DEBUG, logger="modelsync")
    mounted = _mount(SAMPLES / sample / configmap, tmp_path / "etc-model-metadata")
    try:
        meta = parse_metadata_dir(mounted, intent)
    except ConfigError as exc:
        pytest.fail(f"upstream's {sample} ConfigMap is refused:\n{exc}", pytrace=False)
    for key, want in checks.items():
        assert _metadata_value(meta, key) == want, key
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "RegisteredModel.id" not in warnings
    assert ids_in(mounted) == ({"model_id": ("12345", "RegisteredModel.id")} if intent == "create_version" else {})
    assert "model_source_kind is not used" not in warnings
