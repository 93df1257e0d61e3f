"""The real entry point as users run it: exit codes, --help, --dry-run JSON, log formats, no secret in output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from modelsync.settings import SETTINGS

SECRETS = {"MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": "s3-secret-Zq81", "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID":
           "AKIA-id-77Qx", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "oci-pass-Hh31",
           "MODEL_SYNC_REGISTRY_USER_TOKEN": "mr-token-Kk02"}
VALID = {**SECRETS, "MODEL_SYNC_SOURCE_AWS_BUCKET": "models", "MODEL_SYNC_SOURCE_AWS_KEY": "m/",
         "MODEL_SYNC_DESTINATION_OCI_URI": "127.0.0.1:5000/models/m:1", "MODEL_SYNC_DESTINATION_OCI_USERNAME": "u",
         "MODEL_SYNC_MODEL_ARTIFACT_ID": "1", "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1:9"}
# Nothing listens on 127.0.0.1:9: these dry runs resolve the configuration, then fail the preflight (exit 1) while
# still printing the settings. The preflight against a real server is tested in test_job.py.


def run(args, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
    return subprocess.run([sys.executable, "-m", "modelsync", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, cwd=cwd, timeout=60)


def assert_no_secret(*texts):
    for text in texts:
        for value in SECRETS.values():
            assert value not in text


def test_help_lists_every_setting_and_no_secret(tmp_path):
    out = run(["--help"], env=SECRETS, cwd=tmp_path)
    assert out.returncode == 0
    flat = " ".join(out.stdout.split())
    for s in SETTINGS:
        assert s.arg in flat and s.env in flat
    assert "[MODEL_SYNC_STORAGE_PATH; default: /tmp/model-sync]" in flat
    assert_no_secret(out.stdout, out.stderr)


def test_dry_run_prints_values_with_origins_and_masks_secrets(tmp_path):
    out = run(["--dry-run", "--source-aws-region", "eu-west-1"], env=VALID, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert "127.0.0.1:9" in report["preflight"]["error"]
    assert "preflight failed: " in out.stderr
    doc = report["settings"]
    assert doc["source_aws_region"] == {"value": "eu-west-1", "origin": "arg", "env": "MODEL_SYNC_SOURCE_AWS_REGION",
                                        "arg": "--source-aws-region"}
    assert doc["source_aws_bucket"]["origin"] == "env"
    assert doc["destination_oci_registry"] == {"value": "127.0.0.1:5000", "origin": "derived",
                                               "env": "MODEL_SYNC_DESTINATION_OCI_REGISTRY",
                                               "arg": "--destination-oci-registry"}
    assert doc["storage_path"]["origin"] == "default"
    for name in ("source_aws_secret_access_key", "destination_oci_password", "registry_user_token"):
        assert doc[name]["value"] == "***"
    assert_no_secret(out.stdout, out.stderr)


def test_dotenv_in_working_directory_is_used(tmp_path):
    (tmp_path / ".env").write_text("MODEL_SYNC_SOURCE_AWS_REGION=from-dotenv\n")
    out = run(["--dry-run"], env=VALID, cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)["settings"]["source_aws_region"] == {
        "value": "from-dotenv", "origin": "dotenv", "env": "MODEL_SYNC_SOURCE_AWS_REGION", "arg": "--source-aws-region"}


def test_config_error_exits_2_with_one_line_per_problem_and_no_secret(tmp_path):
    env = {**SECRETS, "MODEL_SYNC_REGISTRY_PORT": "http"}
    out = run([], env=env, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert all(" ERROR   config: " in line for line in lines[:-1])
    assert lines[-1].endswith(f"configuration invalid ({len(lines) - 1} problems); nothing was done")
    assert out.stdout == ""
    assert_no_secret(out.stdout, out.stderr)


def test_secret_given_as_arg_is_warned_about_but_never_printed(tmp_path):
    env = {k: v for k, v in VALID.items() if k != "MODEL_SYNC_DESTINATION_OCI_PASSWORD"}
    out = run(["--dry-run", "--destination-oci-password", SECRETS["MODEL_SYNC_DESTINATION_OCI_PASSWORD"]],
              env=env, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "--destination-oci-password was given on the command line" in out.stderr
    assert_no_secret(out.stdout, out.stderr)


def test_json_log_format_is_one_object_per_line(tmp_path):
    out = run([], env={**SECRETS, "MODEL_SYNC_LOG_FORMAT": "json"}, cwd=tmp_path)
    assert out.returncode == 2
    docs = [json.loads(line) for line in out.stderr.strip().splitlines()]
    assert docs and all(d["level"] == "error" and d["message"] for d in docs)
    assert_no_secret(out.stderr)


def test_version():
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("modelsync ")
