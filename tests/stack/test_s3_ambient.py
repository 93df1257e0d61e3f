"""S3 with no access key configured: the standard AWS credential chain, for boto3 and the aws CLI alike.

Web identity is tested for real: the local stack's MinIO trusts the stack's own OIDC issuer (e2e/oidc.py) for
AssumeRoleWithWebIdentity, as AWS STS trusts an EKS cluster's issuer for IRSA. With an access key configured the
aws CLI child stays isolated from the operator's AWS_PROFILE and ~/.aws.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import urllib.error
import uuid
from pathlib import Path

import pytest

from modelsync import config, job, tools
from modelsync.clients import aws
from modelsync.destinations.s3 import publish_s3
from modelsync.errors import ConfigError, ModelSyncError
from modelsync.files import inventory
from modelsync.locations import S3Location
from modelsync.secret import Secret
from modelsync.sources.s3 import fetch_s3

from ..support.jobs import base_env, destination_env, read_back, s3loc
from ..support.model_registry import mr_get, the_artifact
from ..support.models import TEST_JOB, digests_of

# Everything of the chain that the operator's shell (or CI) could have set, plus what would redirect S3 or STS.
CHAIN_ENV = (*aws.AMBIENT_ENV, "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
             "AWS_DEFAULT_REGION")


@pytest.fixture
def clean_chain(tmp_path, monkeypatch):
    """No AWS credentials anywhere in this process's environment; no ~/.aws either; no instance metadata probe."""
    for name in CHAIN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # not on EC2: skip the 1 s metadata probe
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def web_identity(stack, tmp_path, monkeypatch, clean_chain):
    """use(**claims) -> the token text: a service-account token from the stack's issuer in a file, and the
    variables EKS sets for IRSA (plus where STS is: MinIO)."""

    def use(**claims) -> str:
        path = stack.write_oidc_token(tmp_path / f"token-{uuid.uuid4().hex[:6]}", **claims)
        monkeypatch.setenv("AWS_ROLE_ARN", stack.oidc_role_arn)
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(path))
        monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "modelsync-test")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", stack.minio_endpoint)
        return path.read_text()

    return use


@pytest.fixture
def children(monkeypatch):
    """Every (argv, env) given to tools.start, the one place a child is started (tools.run and a pipeline's
    tools.Group both go through it); the real start still happens."""
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = tools.start

    def spy(binary, args, **kw):
        seen.append(([binary, *map(str, args)], dict(kw.get("env") or {})))
        return real(binary, args, **kw)

    monkeypatch.setattr(tools, "start", spy)
    return seen


def s3_source(stack, model_dir: Path) -> dict[str, str]:
    """The model put into MinIO (with the stack's keys), and a source that names no key."""
    prefix = f"ambient-src-{uuid.uuid4().hex[:8]}"
    publish_s3(model_dir, inventory(model_dir), s3loc(stack, prefix), TEST_JOB)
    return {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": stack.minio_bucket,
            "MODEL_SYNC_SOURCE_AWS_KEY": prefix, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": stack.minio_endpoint}


def keyless(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.endswith(("_AWS_ACCESS_KEY_ID", "_AWS_SECRET_ACCESS_KEY"))}


def not_registered(stack, name: str) -> bool:
    try:
        mr_get(stack, f"registered_model?name={name}")
    except urllib.error.HTTPError as err:
        return err.code == 404
    return False


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m modelsync` as an operator runs it (debug logs), with this process's (patched) AWS variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    return subprocess.run([sys.executable, "-m", "modelsync", *args], env={**clean, **env,
                          "MODEL_SYNC_LOG_LEVEL": "debug"}, cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_nowhere(token: str, children, *texts: str) -> None:
    """Neither the token nor any of its three parts in a child's argv or env, nor in the texts given."""
    assert token.count(".") == 2
    for value in (token, *token.split(".")):
        for argv, env in children:
            assert value not in " ".join(argv) and value not in json.dumps(env)
        for text in texts:
            assert value not in text


def own_log(caplog) -> str:
    """modelsync's own log records, unformatted (so before any masking)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("modelsync"))


# ---------------------------------------------------------------- web identity, the whole job

@pytest.mark.stack
@pytest.mark.parametrize("dst", ["pvc", "s3"])
def test_web_identity_whole_job_ends_live(dst, stack, tmp_path, model, base_image, web_identity, children, caplog):
    caplog.set_level(logging.DEBUG)
    token = web_identity()
    model_dir, expected = model
    name = f"ambient-{dst}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_source(stack, model_dir),
           **keyless(destination_env(dst, stack, tmp_path, base_image))}
    children.clear()  # the source was put there with keys
    published = job.run(config.load([], env))
    ran = list(children)

    assert read_back(published, dst, stack, tmp_path) == expected
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    assert f"credentials web identity (AWS_ROLE_ARN {stack.oidc_role_arn}" in own_log(caplog)
    # the aws CLI got the chain (it assumes the role itself), never credentials, and the plugin config: for pvc
    # the download (fetch-then-publish); for s3 the uploads (the S3 -> S3 pipeline uploads in batches as files
    # land: one aws or more) while its download is this process's own GETs, with the same chain (s3_download.py)
    downloads = [argv for argv, _ in ran if argv[1:3] == ["s3", "cp"] and argv[3].startswith("s3://")]
    uploads = [argv for argv, _ in ran if argv[1:3] == ["s3", "cp"] and argv[4].startswith("s3://")]
    assert (not downloads and len(uploads) >= 1) if dst == "s3" else (len(downloads) == 1 and not uploads), ran
    for argv, child in ran:
        assert argv[0] == "aws" and child["AWS_WEB_IDENTITY_TOKEN_FILE"] == os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]
        assert child["AWS_ROLE_ARN"] == stack.oidc_role_arn and child["AWS_ENDPOINT_URL_STS"] == stack.minio_endpoint
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(child)
        assert child["AWS_CONFIG_FILE"] == str(aws.PLUGIN_CONFIG)
    assert_nowhere(token, ran, own_log(caplog), json.dumps(art))


@pytest.mark.stack
def test_dry_run_names_the_provider(stack, tmp_path, model, web_identity):
    token = web_identity()
    model_dir, _ = model
    env = {**base_env(stack, tmp_path, f"ambient-dry-{uuid.uuid4().hex[:6]}"), **s3_source(stack, model_dir),
           **keyless(destination_env("s3", stack, tmp_path, None))}
    run = run_cli(env, tmp_path, "--dry-run")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["preflight"]["ok"]
    assert report["preflight"]["destination"]["credentials"] == (
        f"web identity (AWS_ROLE_ARN {stack.oidc_role_arn}, token file {os.environ['AWS_WEB_IDENTITY_TOKEN_FILE']})")
    assert report["preflight"]["source"]["credentials"] == report["preflight"]["destination"]["credentials"]
    assert_nowhere(token, [], run.stdout, run.stderr)


@pytest.mark.stack
@pytest.mark.parametrize("claims,reason", [({"lifetime": -60}, "Token is expired"), ({"audience": "sigstore"}, "azp")],
                         ids=["expired", "wrong-audience"])
def test_refused_token_fails_in_preflight_and_registers_nothing(claims, reason, stack, tmp_path, model, web_identity,
                                                               children, caplog):
    caplog.set_level(logging.DEBUG)
    token = web_identity(**claims)
    model_dir, _ = model
    name = f"ambient-refused-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_source(stack, model_dir),
           "MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out")}
    children.clear()
    with pytest.raises(ModelSyncError) as exc:
        job.run(config.load([], env))
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"source s3://{stack.minio_bucket}/")
    assert "web identity" in message and reason in message and "audience" in message
    assert not children  # not one aws run
    assert not_registered(stack, name) and not (tmp_path / "out").exists()
    assert_nowhere(token, children, message, own_log(caplog))

    run = run_cli(env, tmp_path)  # as the operator sees it: one error line, no traceback, no token
    assert run.returncode == 1 and run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line or "WARNING" in line]
    assert len(errors) == 1 and reason in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert_nowhere(token, [], run.stderr)
    assert not_registered(stack, name)


@pytest.mark.stack
def test_no_credentials_at_all_is_one_line_naming_both_ways(stack, tmp_path, model, clean_chain, children):
    model_dir, _ = model
    name = f"ambient-none-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_source(stack, model_dir),
           "MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out")}
    children.clear()
    with pytest.raises(ConfigError) as exc:
        job.run(config.load([], env))
    (line,) = exc.value.problems
    assert "no S3 credentials" in line and "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID" in line and "IRSA" in line
    assert not children and not_registered(stack, name)


@pytest.mark.stack
def test_profile_from_the_users_files_with_the_plugin_still_loaded(stack, tmp_path, model, clean_chain,
                                                                   monkeypatch, require_tool):
    """AWS_PROFILE with the user's own config and credentials files: boto3 and the aws CLI use that profile, and
    the CLI's config is a copy with modelsync's plugin section first (the user's [plugins] left out)."""
    require_tool("aws")
    model_dir, expected = model
    (tmp_path / "aws-config").write_text("[plugins]\nsomething_else = not_a_module\n\n"
                                         "[profile minio-test]\nregion = us-east-1\n")
    (tmp_path / "aws-credentials").write_text(f"[minio-test]\naws_access_key_id = {stack.minio_access_key}\n"
                                              f"aws_secret_access_key = {stack.minio_secret_key}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "minio-test")
    prefix = f"ambient-profile-{uuid.uuid4().hex[:8]}"
    publish_s3(model_dir, inventory(model_dir), s3loc(stack, prefix), TEST_JOB)
    loc = S3Location(bucket=stack.minio_bucket, key=prefix, endpoint=stack.minio_endpoint)

    assert aws.credentials_in_use(loc, "source") == \
        f"shared credentials file {tmp_path / 'aws-credentials'} (profile minio-test)"
    env = aws.cli_env(loc)
    cli_config = Path(env["AWS_CONFIG_FILE"])
    assert env["AWS_PROFILE"] == "minio-test" and "AWS_EC2_METADATA_DISABLED" in env  # ours, from clean_chain
    assert stat.S_IMODE(cli_config.stat().st_mode) == 0o600
    text = cli_config.read_text()
    assert text.startswith(aws.PLUGIN_CONFIG.read_text().rstrip()) and "[profile minio-test]" in text
    assert "something_else" not in text
    assert tools.run("aws", ["configure", "get", "plugins.modelsync_no_expect"], env=env).strip() == \
        "modelsync_no_expect"
    fetch_s3(loc, tmp_path / "out")
    assert digests_of(tmp_path / "out") == expected


# ---------------------------------------------------------------- configured keys stay isolated (no stack)

def test_configured_keys_isolate_the_child_from_the_operators_aws(tmp_path, monkeypatch):
    (tmp_path / "config").write_text("[profile operator]\nregion = eu-west-3\n")
    (tmp_path / "credentials").write_text("[operator]\naws_access_key_id = OPERATORKEY\n"
                                          "aws_secret_access_key = operator-secret\n")
    for name, value in {"AWS_PROFILE": "operator", "AWS_CONFIG_FILE": str(tmp_path / "config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
                        "AWS_ROLE_ARN": "arn:aws:iam::1:role/x", "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "t"),
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
                        "AWS_ENDPOINT_URL_STS": "http://sts.example"}.items():
        monkeypatch.setenv(name, value)
    loc = S3Location(bucket="b", key="k", endpoint="http://127.0.0.1:9", access_key_id=Secret("CONFIGUREDKEY"),
                     secret_access_key=Secret("configured-secret"))
    env = aws.cli_env(loc)
    assert env["AWS_CONFIG_FILE"] == str(aws.PLUGIN_CONFIG) and env["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["AWS_ACCESS_KEY_ID"] == "CONFIGUREDKEY" and env["AWS_SECRET_ACCESS_KEY"] == "configured-secret"
    assert not {"AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_ENDPOINT_URL_STS"} & set(env)
    assert set(tools.child_env(env)) - set(env) <= set(tools._INHERITED)
    # boto3 too: the operator's profile is neither needed (no ProfileNotFound) nor used
    client = aws.client(loc)
    creds = client._request_signer._credentials
    assert (creds.access_key, creds.method) == ("CONFIGUREDKEY", "explicit")
    assert aws.credentials_in_use(loc, "source") == "access key (configured)"


def test_no_key_passes_the_chain_through(tmp_path, monkeypatch):
    for name in CHAIN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    for name, value in {"AWS_ROLE_ARN": "arn:aws:iam::1:role/x", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/t",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds",
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-auth-token-4242",
                        "AWS_STS_REGIONAL_ENDPOINTS": "regional"}.items():
        monkeypatch.setenv(name, value)
    env = aws.cli_env(S3Location(bucket="b", key="k"))
    assert env["AWS_CONFIG_FILE"] == str(aws.PLUGIN_CONFIG)  # no user config: the plugin's own
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env and "AWS_EC2_METADATA_DISABLED" not in env
    assert env["AWS_ROLE_ARN"] == "arn:aws:iam::1:role/x" and env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/t"
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://127.0.0.1:9/creds"
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    with pytest.raises(ModelSyncError, match="refusing"):  # the container token is masked and kept off argv
        tools.run("true", ["container-auth-token-4242"])


@pytest.mark.parametrize("given,missing", [("ACCESS_KEY_ID", "SECRET_ACCESS_KEY"),
                                           ("SECRET_ACCESS_KEY", "ACCESS_KEY_ID")])
def test_half_a_key_is_still_an_error(given, missing, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    env = {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": "b", "MODEL_SYNC_SOURCE_AWS_KEY": "k",
           f"MODEL_SYNC_SOURCE_AWS_{given}": "value-4242", "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "d"), "MODEL_SYNC_MODEL_ARTIFACT_ID": "1",
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1", "MODEL_SYNC_STORAGE_PATH": str(tmp_path)}
    with pytest.raises(ConfigError) as exc:
        config.load([], env)
    assert [p.split(" ", 1)[0] for p in exc.value.problems] == [f"MODEL_SYNC_SOURCE_AWS_{missing}"]
    del env[f"MODEL_SYNC_SOURCE_AWS_{given}"]
    assert config.load([], env).source_aws_access_key_id is None  # neither: the credential chain, no problem
