"""Configuration: the spec's names and defaults, precedence for every setting, typing and validation."""

from __future__ import annotations

import pytest

from modelsync import config
from modelsync.errors import ConfigError
from modelsync.secret import Secret
from modelsync.settings import BY_NAME, SETTINGS
from modelsync.stores import s3 as s3_store

# The spec's table, verbatim: env var -> (arg, default). A rename here is a breaking change for users.
SPEC = {
    "MODEL_SYNC_SOURCE_TYPE": ("--source-type", "s3"),
    "MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH": ("--source-s3-credentials-path", None),
    "MODEL_SYNC_SOURCE_OCI_CREDENTIALS_PATH": ("--source-oci-credentials-path", None),
    "MODEL_SYNC_SOURCE_URI_CREDENTIALS_PATH": ("--source-uri-credentials-path", None),
    "MODEL_SYNC_SOURCE_URI": ("--source-uri", None),
    "MODEL_SYNC_SOURCE_AWS_BUCKET": ("--source-aws-bucket", None),
    "MODEL_SYNC_SOURCE_AWS_KEY": ("--source-aws-key", None),
    "MODEL_SYNC_SOURCE_AWS_REGION": ("--source-aws-region", None),
    "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": ("--source-aws-access-key-id", None),
    "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": ("--source-aws-secret-access-key", None),
    "MODEL_SYNC_SOURCE_AWS_ENDPOINT": ("--source-aws-endpoint", None),
    "MODEL_SYNC_SOURCE_OCI_URI": ("--source-oci-uri", None),
    "MODEL_SYNC_SOURCE_OCI_REGISTRY": ("--source-oci-registry", None),
    "MODEL_SYNC_SOURCE_OCI_USERNAME": ("--source-oci-username", None),
    "MODEL_SYNC_SOURCE_OCI_PASSWORD": ("--source-oci-password", None),
    "MODEL_SYNC_DESTINATION_TYPE": ("--destination-type", "oci"),
    "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH": ("--destination-s3-credentials-path", None),
    "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH": ("--destination-oci-credentials-path", None),
    "MODEL_SYNC_DESTINATION_AWS_BUCKET": ("--destination-aws-bucket", None),
    "MODEL_SYNC_DESTINATION_AWS_KEY": ("--destination-aws-key", None),
    "MODEL_SYNC_DESTINATION_AWS_REGION": ("--destination-aws-region", None),
    "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": ("--destination-aws-access-key-id", None),
    "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": ("--destination-aws-secret-access-key", None),
    "MODEL_SYNC_DESTINATION_AWS_ENDPOINT": ("--destination-aws-endpoint", None),
    "MODEL_SYNC_DESTINATION_OCI_URI": ("--destination-oci-uri", None),
    "MODEL_SYNC_DESTINATION_OCI_REGISTRY": ("--destination-oci-registry", None),
    "MODEL_SYNC_DESTINATION_OCI_USERNAME": ("--destination-oci-username", None),
    "MODEL_SYNC_DESTINATION_OCI_PASSWORD": ("--destination-oci-password", None),
    "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": ("--destination-oci-base-image",
                                              "public.ecr.aws/docker/library/busybox:latest"),
    "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": ("--destination-oci-enable-tls-verify", "true"),
    "MODEL_SYNC_MODEL_UPLOAD_INTENT": ("--model-upload-intent", "update_artifact"),
    "MODEL_SYNC_MODEL_ID": ("--model-id", None),
    "MODEL_SYNC_MODEL_VERSION_ID": ("--model-version-id", None),
    "MODEL_SYNC_MODEL_ARTIFACT_ID": ("--model-artifact-id", None),
    "MODEL_SYNC_STORAGE_PATH": ("--storage-path", "/tmp/model-sync"),
    "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": ("--registry-server-address", None),
    "MODEL_SYNC_REGISTRY_PORT": ("--registry-port", "443"),
    "MODEL_SYNC_REGISTRY_IS_SECURE": ("--registry-is-secure", "true"),
    "MODEL_SYNC_REGISTRY_AUTHOR": ("--registry-author", None),
    "MODEL_SYNC_REGISTRY_USER_TOKEN": ("--registry-user-token", None),
    "MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR": ("--registry-user-token-envvar", None),
    "MODEL_SYNC_REGISTRY_CUSTOM_CA": ("--registry-custom-ca", None),
    "MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR": ("--registry-custom-ca-envvar", None),
    "MODEL_SYNC_REGISTRY_LOG_LEVEL": ("--registry-log-level", None),
    "MODEL_SYNC_SIGN": ("--sign", None),
    "MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH": ("--signing-identity-token-path", None),
    "MODEL_SYNC_METADATA_CONFIGMAP_PATH": ("--metadata-configmap-path", None),  # from the spec's intent section
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No ./.env and no service-account token of the machine running the tests leak into resolution."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "no-sa-token"))


@pytest.mark.parametrize("env", sorted(SPEC))
def test_every_spec_setting_exists_with_its_names_and_default(env):
    arg, default = SPEC[env]
    matches = [s for s in SETTINGS if s.env == env]
    assert matches, f"{env} is missing"
    assert matches[0].arg == arg
    assert matches[0].default == default


def test_spec_file_names_all_known_when_present():
    """A second check against the user's document itself, when it sits beside the checkout (the team's
    workspace). The suite needs nothing outside the repository: SPEC above holds the same facts, so a clone on
    its own skips only this duplicate."""
    import re

    from e2e.component import beside_checkout
    spec = beside_checkout("spec/async-upload-job-README.txt")
    if spec is None:
        pytest.skip("the spec document is not beside this checkout; SPEC above carries its table")
    names = set(re.findall(r"\bMODEL_SYNC_[A-Z0-9_]+[A-Z]", spec.read_text()))
    assert names <= {s.env for s in SETTINGS}
    assert names >= set(SPEC)


# --- precedence --------------------------------------------------------------------------------------------

def _two_values(s):
    """Two texts for setting s that convert to different values."""
    if s.kind == "bool":
        return "true", "no"
    if s.kind == "int":
        return "8443", "9443"
    if s.kind == "size":
        return "512Mi", "2Gi"
    if s.choices:
        return s.choices[0], s.choices[1]
    if s.name.endswith("_endpoint"):
        return f"https://first-{s.name}.example", f"http://second-{s.name}.example:9000"
    return f"first-{s.name}", f"second-{s.name}"


def _typed(s, text):
    value = config.convert(s, text)
    return value.reveal() if isinstance(value, Secret) else value


# Settings a credentials file can supply, and how to write such a file holding `text`.
def _s3_dir(tmp_path, key, text):
    d = tmp_path / "s3creds"
    d.mkdir(exist_ok=True)
    (d / key).write_text(text + "\n")
    return d


FILE_FED = {}
for _side in ("source", "destination"):
    for _suffix, _keys in s3_store.FILE_KEYS.items():
        FILE_FED[f"{_side}_{_suffix}"] = ("s3", _side, _keys[0])
    FILE_FED[f"{_side}_oci_username"] = ("oci", _side, "username")
    FILE_FED[f"{_side}_oci_password"] = ("oci", _side, "password")
FILE_FED["source_uri"] = ("uri", "source", "URI")
FILE_FED["registry_user_token"] = ("sa", None, None)


def _file_env(tmp_path, monkeypatch, name, text) -> dict[str, str]:
    """Write a credentials file that holds `text` for setting `name`; return the env that points at it."""
    kind, side, key = FILE_FED[name]
    if kind == "s3":
        return {f"MODEL_SYNC_{side.upper()}_S3_CREDENTIALS_PATH": str(_s3_dir(tmp_path, key, text)),
                f"MODEL_SYNC_{side.upper()}_TYPE": "s3"}  # only the types in use read their files
    if kind == "oci":
        import base64
        import json
        user, password = ("bob", text) if key == "password" else (text, "pw")
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        f = tmp_path / "docker.json"
        f.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth}}}))
        return {f"MODEL_SYNC_{side.upper()}_OCI_CREDENTIALS_PATH": str(f),
                f"MODEL_SYNC_{side.upper()}_OCI_URI": "reg.example:5000/models/x:1",
                f"MODEL_SYNC_{side.upper()}_TYPE": "oci"}
    if kind == "uri":
        d = tmp_path / "uricreds"
        d.mkdir(exist_ok=True)
        (d / "URI").write_text(text + "\n")
        return {"MODEL_SYNC_SOURCE_URI_CREDENTIALS_PATH": str(d), "MODEL_SYNC_SOURCE_TYPE": "uri"}
    token = tmp_path / "sa-token"
    token.write_text(text + "\n")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(token))
    return {}


LAYERED = [s for s in SETTINGS if s.name != "env_file"]


@pytest.mark.parametrize("s", LAYERED, ids=lambda s: s.name)
def test_arg_beats_env(s):
    high, low = _two_values(s)
    cfg, _ = config.resolve([f"{s.arg}={high}"], {s.env: low})
    assert _plain(cfg, s) == _typed(s, high) and cfg.origins[s.name] == "arg"


@pytest.mark.parametrize("s", LAYERED, ids=lambda s: s.name)
def test_env_beats_dotenv(s, tmp_path):
    high, low = _two_values(s)
    (tmp_path / ".env").write_text(f"{s.env}={low}\n")
    cfg, _ = config.resolve([], {s.env: high})
    assert _plain(cfg, s) == _typed(s, high) and cfg.origins[s.name] == "env"


@pytest.mark.parametrize("s", LAYERED, ids=lambda s: s.name)
def test_dotenv_beats_default_and_files(s, tmp_path, monkeypatch):
    high, low = _two_values(s)
    env = _file_env(tmp_path, monkeypatch, s.name, low) if s.name in FILE_FED else {}
    (tmp_path / ".env").write_text(f"{s.env}={high}\n")
    cfg, _ = config.resolve([], env)
    assert _plain(cfg, s) == _typed(s, high) and cfg.origins[s.name] == "dotenv"


@pytest.mark.parametrize("name", sorted(FILE_FED))
def test_file_beats_default_but_not_env(name, tmp_path, monkeypatch):
    s = BY_NAME[name]
    high, low = _two_values(s)
    env = _file_env(tmp_path, monkeypatch, name, low)
    cfg, problems = config.resolve([], env)
    assert not problems
    assert _plain(cfg, s) == _typed(s, low) and cfg.origins[name] == "file"
    cfg, _ = config.resolve([], {**env, s.env: high})
    assert _plain(cfg, s) == _typed(s, high) and cfg.origins[name] == "env"
    cfg, _ = config.resolve([f"{s.arg}={high}"], env)
    assert _plain(cfg, s) == _typed(s, high) and cfg.origins[name] == "arg"


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.default is not None], ids=lambda s: s.name)
def test_default_when_nothing_given(s):
    cfg, _ = config.resolve([], {})
    assert _plain(cfg, s) == config.convert(s, s.default) and cfg.origins[s.name] == "default"


def _plain(cfg, s):
    value = cfg.values[s.name]
    return value.reveal() if isinstance(value, Secret) else value


def test_env_file_named_explicitly_is_read(tmp_path):
    f = tmp_path / "job.env"
    f.write_text("MODEL_SYNC_SOURCE_AWS_BUCKET=from-file\n")
    cfg, problems = config.resolve(["--env-file", str(f)], {})
    assert not problems and cfg.source_aws_bucket == "from-file" and cfg.origins["source_aws_bucket"] == "dotenv"


def test_missing_explicit_env_file_is_an_error():
    _, problems = config.resolve([], {"MODEL_SYNC_ENV_FILE": "/nonexistent/.env"})
    assert any("MODEL_SYNC_ENV_FILE" in p and "/nonexistent/.env" in p for p in problems)


def test_empty_env_var_counts_as_unset():
    cfg, _ = config.resolve([], {"MODEL_SYNC_SOURCE_TYPE": ""})
    assert cfg.source_type == "s3" and cfg.origins["source_type"] == "default"


def test_registry_token_from_named_env_var_beats_service_account(tmp_path, monkeypatch):
    sa = tmp_path / "sa"
    sa.write_text("sa-token-value\n")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(sa))
    cfg, _ = config.resolve([], {"MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR": "MY_TOKEN", "MY_TOKEN": "tok-1234"})
    assert cfg.registry_user_token.reveal() == "tok-1234"
    cfg, problems = config.resolve([], {"MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR": "UNSET_TOKEN"})
    assert any("UNSET_TOKEN" in p for p in problems)


# --- typing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("y", True),
                                        ("T", True), ("false", False), ("False", False), ("0", False),
                                        ("NO", False), ("n", False), ("f", False)])
def test_boolean_spellings(text, value):
    cfg, problems = config.resolve(["--registry-is-secure", text], {})
    assert not problems and cfg.registry_is_secure is value


@pytest.mark.parametrize("text", ["maybe", "on", "off", "2", "tru", "yess"])
def test_other_boolean_spellings_are_errors(text):
    _, problems = config.resolve([], {"MODEL_SYNC_SIGN": text})
    assert problems == [f"--sign / MODEL_SYNC_SIGN (from env): '{text}' is not a boolean; "
                        f"use true/false, 1/0 or yes/no"]


def test_bare_bool_flag_means_true():
    cfg, _ = config.resolve(["--sign"], {})
    assert cfg.sign is True


@pytest.mark.parametrize("text", ["abc", "0", "70000", "-1"])
def test_bad_port(text):
    _, problems = config.resolve(["--registry-port", text], {})
    assert len(problems) == 1 and "--registry-port" in problems[0]


def test_choice_is_checked():
    _, problems = config.resolve(["--source-type", "ftp"], {})
    assert problems == ["--source-type / MODEL_SYNC_SOURCE_TYPE (from arg): 'ftp' is not one of "
                        "s3, oci, uri, pvc, local"]


def test_unknown_env_var_is_reported_with_a_suggestion():
    _, problems = config.resolve([], {"MODEL_SYNC_SOURCE_AWS_BUKET": "x"})
    assert problems == ["MODEL_SYNC_SOURCE_AWS_BUKET in environment is not a modelsync setting; "
                        "did you mean MODEL_SYNC_SOURCE_AWS_BUCKET?"]


def test_unknown_arg_is_reported_with_a_suggestion_and_env_problems_too():
    with pytest.raises(ConfigError) as err:
        config.resolve(["--source-aws-buckt", "b"], {"MODEL_SYNC_TYPO": "1"})
    assert err.value.problems[0].startswith("unknown option --source-aws-buckt (did you mean --source-aws-bucket?)")
    assert any("MODEL_SYNC_TYPO" in p for p in err.value.problems)


def test_registry_ca_from_named_env_var_as_path_or_pem():
    cfg, problems = config.resolve([], {"MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR": "MY_CA", "MY_CA": "/etc/ca.pem"})
    assert not problems and cfg.registry_custom_ca == "/etc/ca.pem" and cfg.origins["registry_custom_ca"] == "env"
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    cfg, problems = config.resolve([], {"MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR": "MY_CA", "MY_CA": pem})
    assert not problems and cfg.registry_custom_ca is None and cfg.registry_ca_pem == pem
    _, problems = config.resolve([], {"MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR": "UNSET_CA"})
    assert problems == ["--registry-custom-ca-envvar / MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR names UNSET_CA, which is "
                        "not set; set it to a CA file path or PEM text"]


def test_a_base_image_on_the_destinations_registry_uses_its_credentials_and_ca(tmp_path):
    """Registry credentials belong to a host (as in a .dockerconfigjson): a base mirrored into the destination's
    registry is pulled with the destination's credentials and CA; a base elsewhere gets neither."""
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    env = {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(tmp_path),
           "MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_URI": "reg.example:5000/acme/m:v1",
           "MODEL_SYNC_DESTINATION_OCI_USERNAME": "robot", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "pw-123456",
           "MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE": str(ca), "MODEL_SYNC_MODEL_ARTIFACT_ID": "1",
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://mr.example"}
    same = config.load([], {**env, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE":
                            "reg.example:5000/library/busybox:latest"}).destination.base
    assert same.username == "robot" and same.password.reveal() == "pw-123456" and same.ca_bundle == str(ca)
    other = config.load([], {**env, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": "busybox:latest"}).destination.base
    assert same.tls_verify and other.tls_verify
    assert other.reference == "docker.io/library/busybox:latest" and other.username is None and other.ca_bundle is None


def test_a_base_image_on_the_destinations_registry_follows_its_tls_setting_unless_its_own_is_given(tmp_path):
    """Upstream's suite forwards only MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE, for a base on its plain-HTTP registry
    whose destination says MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY=false: the base is read the same way."""
    env = {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(tmp_path),
           "MODEL_SYNC_DESTINATION_OCI_URI": "reg.example:5001/m:v1", "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY":
           "false", "MODEL_SYNC_MODEL_ARTIFACT_ID": "1", "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://mr.example"}
    on_dest = {**env, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": "reg.example:5001/library/busybox:latest"}
    assert config.load([], on_dest).destination.base.tls_verify is False
    assert config.load([], {**on_dest, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "true"}
                       ).destination.base.tls_verify is True
    elsewhere = {**env, "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": "busybox:latest"}
    assert config.load([], elsewhere).destination.base.tls_verify is True
