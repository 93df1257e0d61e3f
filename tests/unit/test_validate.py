"""The spec's required-when rules, all problems reported at once, and the signing auto-detect table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelsync import config, secret
from modelsync.errors import ConfigError
from modelsync.settings import SETTINGS
from modelsync.validate import signing_decision

BASE = {  # a valid pvc -> pvc, update_artifact configuration; tests change one thing at a time
    "MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": "/",
    "MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": "/tmp/out",
    "MODEL_SYNC_MODEL_ARTIFACT_ID": "7", "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1",
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))


def problems(env: dict, argv=()) -> list[str]:
    try:
        config.load(list(argv), env)
    except ConfigError as exc:
        return exc.problems
    return []


def test_base_is_valid():
    assert problems(BASE) == []


def test_s3_source_needs_bucket_and_key_and_says_where_from():
    """No access key at all is fine (the pod's AWS credential chain); half a key pair is not."""
    got = problems({**BASE, "MODEL_SYNC_SOURCE_TYPE": "s3"})
    assert [p.split(" ", 1)[0] for p in got] == ["MODEL_SYNC_SOURCE_AWS_BUCKET", "MODEL_SYNC_SOURCE_AWS_KEY"]
    assert "--source-aws-bucket" in got[0] and "AWS_S3_BUCKET" in got[0] and "--source-s3-credentials-path" in got[0]
    got = problems({**BASE, "MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"})
    assert [p.split(" ", 1)[0] for p in got][-1] == "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY"


def test_s3_values_from_credentials_dir_satisfy_the_rule(tmp_path):
    d = tmp_path / "s3"
    d.mkdir()
    for k, v in {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secretvalue", "AWS_BUCKET": "b"}.items():
        (d / k).write_text(v + "\n")
    env = {**BASE, "MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_S3_CREDENTIALS_PATH": str(d),
           "MODEL_SYNC_DESTINATION_AWS_KEY": "models/x"}
    assert problems(env) == []


def test_oci_destination_rules_and_registry_derived_from_uri(tmp_path):
    got = problems({**BASE, "MODEL_SYNC_DESTINATION_TYPE": "oci"})  # no credentials at all: anonymous, fine
    assert [p.split(" ", 1)[0] for p in got] == ["MODEL_SYNC_DESTINATION_OCI_URI"]
    got = problems({**BASE, "MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_URI": "reg.example/m:1",
                    "MODEL_SYNC_DESTINATION_OCI_USERNAME": "u"})  # half of a pair is a mistake
    assert [p.split(" ", 1)[0] for p in got] == ["MODEL_SYNC_DESTINATION_OCI_PASSWORD"]
    env = {**BASE, "MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_URI": "reg.example/m/x:1",
           "MODEL_SYNC_DESTINATION_OCI_USERNAME": "u", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "pw12"}
    cfg = config.load([], env)
    assert cfg.destination_oci_registry == "reg.example" and cfg.origins["destination_oci_registry"] == "derived"


def test_dockerconfig_without_the_registry_means_anonymous_and_half_a_pair_names_the_file_option(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('{"auths": {"elsewhere.example": {"auth": "dTpw"}}}')
    env = {**BASE, "MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": "reg.example/m:1",
           "MODEL_SYNC_SOURCE_OCI_CREDENTIALS_PATH": str(f)}
    assert problems(env) == []
    got = problems({**env, "MODEL_SYNC_SOURCE_OCI_USERNAME": "u"})
    assert len(got) == 1 and "--source-oci-credentials-path" in got[0] and "MODEL_SYNC_SOURCE_OCI_PASSWORD" in got[0]


@pytest.mark.parametrize("ref", ["just-a-name", "reg.example/UPPER/case", "reg.example/m:bad tag"])
def test_bad_image_reference(ref):
    got = problems({**BASE, "MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_URI": ref,
                    "MODEL_SYNC_DESTINATION_OCI_USERNAME": "u", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "pw12"})
    assert any("is not an image reference" in p for p in got)


def test_uri_source_needs_a_http_url():
    assert problems({**BASE, "MODEL_SYNC_SOURCE_TYPE": "uri"})[0].startswith("MODEL_SYNC_SOURCE_URI is required")
    got = problems({**BASE, "MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": "ftp://x/y"})
    assert got == ["--source-uri / MODEL_SYNC_SOURCE_URI: 'ftp://x/y' is not an http(s):// URL"]


def test_pvc_source_must_exist():
    got = problems({**BASE, "MODEL_SYNC_SOURCE_PATH": "/does/not/exist"})
    assert got == ["--source-path / MODEL_SYNC_SOURCE_PATH: '/does/not/exist' does not exist"]


@pytest.mark.parametrize("intent,needs", [
    ("update_artifact", ["MODEL_SYNC_MODEL_ARTIFACT_ID"]),
    ("create_model", ["MODEL_SYNC_METADATA_CONFIGMAP_PATH"]),
    ("create_version", ["MODEL_SYNC_MODEL_ID", "MODEL_SYNC_METADATA_CONFIGMAP_PATH"]),
])
def test_intent_requirements(intent, needs):
    env = {k: v for k, v in BASE.items() if k != "MODEL_SYNC_MODEL_ARTIFACT_ID"}
    got = problems({**env, "MODEL_SYNC_MODEL_UPLOAD_INTENT": intent})
    assert [p.split(" ", 1)[0] for p in got] == needs
    assert all(f'the upload intent is "{intent}"' in p for p in got)


def test_metadata_dir_must_be_a_directory(tmp_path):
    got = problems({**BASE, "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model",
                    "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(tmp_path / "missing")})
    assert len(got) == 1 and "is not a directory" in got[0]


def test_all_problems_at_once_each_on_one_line():
    got = problems({"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_REGISTRY_PORT": "x", "MODEL_SYNC_SIGN": "maybe"})
    assert len(got) >= 6 and all("\n" not in p for p in got)


def test_missing_ca_bundle_file_fails_fast():
    got = problems({**BASE, "MODEL_SYNC_REGISTRY_CUSTOM_CA": "/no/ca.pem"})
    assert got == ["--registry-custom-ca / MODEL_SYNC_REGISTRY_CUSTOM_CA: '/no/ca.pem' is not a readable file"]


SIG = {"SIGSTORE_TUF_URL": "http://t", "SIGSTORE_FULCIO_URL": "http://f", "SIGSTORE_REKOR_URL": "http://r"}


@pytest.mark.parametrize("sign,env,enabled,warns", [
    ("true", SIG, True, False),
    ("false", SIG, False, False),
    (None, SIG, True, False),
    (None, {}, False, False),
    (None, {"SIGSTORE_TUF_URL": "http://t"}, False, True),
])
def test_signing_table(sign, env, enabled, warns):
    full = {**BASE, **env, **({"MODEL_SYNC_SIGN": sign} if sign else {})}
    decision, warning = signing_decision(config.load([], full))
    assert decision is enabled and (warning is not None) is warns


def test_sign_true_without_sigstore_vars_is_a_config_error():
    got = problems({**BASE, "MODEL_SYNC_SIGN": "true"})
    assert got == ["--sign / MODEL_SYNC_SIGN is true but SIGSTORE_TUF_URL, SIGSTORE_FULCIO_URL, SIGSTORE_REKOR_URL "
                   "are not set; set them or use --sign false"]


def test_setting_for_an_unused_type_is_warned_about(caplog):
    config.load([], {**BASE, "MODEL_SYNC_SOURCE_OCI_URI": "reg.example/m:1"})
    assert "MODEL_SYNC_SOURCE_OCI_URI is set but source type is pvc: it is ignored" in caplog.text


BAD_VALUES = ["bogus", "-1", "0", "x" * 300, "true", " ", "/does/not/exist", "http://", "::", "a b", "é", "99999"]


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name not in ("env_file",)], ids=lambda s: s.name)
def test_any_bad_value_of_any_setting_is_a_config_error_never_a_crash(setting, monkeypatch, tmp_path):
    """The class behind 'a validation step trips over a value that failed to convert': every setting, with values
    of every wrong shape, on top of a valid configuration, either loads or raises ConfigError."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    # secret settings register their values for masking, process-wide: "http://" given as a password would then
    # mask every URL of the tests that run after this one
    monkeypatch.setattr(secret, "_known", set(secret._known))
    for value in BAD_VALUES:
        try:
            config.load([], {**BASE, setting.env: value})
        except ConfigError as err:
            assert err.problems and all(p and "\n" not in p for p in err.problems), (value, err.problems)


@pytest.mark.parametrize("env", [{"MODEL_SYNC_SOURCE_TYPE": "bogus"}, {"MODEL_SYNC_DESTINATION_TYPE": "ftp"},
                                 {"MODEL_SYNC_MODEL_UPLOAD_INTENT": "delete_everything"},
                                 {"MODEL_SYNC_REGISTRY_PORT": "http"}, {"MODEL_SYNC_SIGN": "perhaps"}],
                         ids=lambda e: next(iter(e)))
def test_bad_enum_and_number_values_exit_2_with_one_line_each_through_the_cli(env, tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SYNC_")}
    done = subprocess.run([sys.executable, "-m", "modelsync"], env={**clean, **BASE, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert next(iter(env)) in done.stderr
