"""Issue 10: what a careless or hostile user found, each case on the real local stack (MinIO, the registries, the
Model Registry on MariaDB, real tmpfs mounts for volumes). The numbers are the issue's items; 2, 5 and 10 are in
test_modelcar*.py and test_archives.py, 6 and 8 also in test_registry.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from modelsync import config, job
from modelsync.errors import TransferError
from modelsync.workspace import claim

from ..support.cli import run_cli
from ..support.jobs import base_env, destination_env, pvc_job, source_env
from ..support.model_registry import mr_get, registered, the_artifact
from ..support.models import digests_of, raw_weights
from ..support.mounts import tmpfs

pytestmark = pytest.mark.stack


@pytest.fixture(autouse=True)
def no_service_account(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))


def env_name(tmp_path: Path) -> str:
    return (tmp_path / "metadata" / "RegisteredModel.name").read_text()


# ---------------------------------------------------------------- 1. a volume destination writes only what it owns


def test_1_volume_destination_keeps_unrelated_files(stack, tmp_path, model):
    model_dir, expected = model
    dest = tmp_path / "pvc" / "models"
    (dest / "other-model").mkdir(parents=True)
    (dest / "other-model" / "weights.bin").write_bytes(b"someone else's")
    (dest / "notes.txt").write_text("keep me")
    published = job.run(config.load([], pvc_job(stack, tmp_path, model_dir, dest)))
    assert (dest / "notes.txt").read_text() == "keep me"
    assert (dest / "other-model" / "weights.bin").read_bytes() == b"someone else's"
    assert {p: d for p, d in digests_of(dest).items() if p in expected} == expected
    assert published.uri == dest.resolve().as_uri()
    assert not list(dest.glob(".modelsync-staging-*")) and not list(dest.parent.glob(".*"))


def test_1_volume_destination_at_a_mount_root(stack, tmp_path, model):
    model_dir, expected = model
    with tmpfs(tmp_path / "pvc-root") as root:
        (root / "lost+found").mkdir()
        published = job.run(config.load([], pvc_job(stack, tmp_path, model_dir, root)))
        assert {p: d for p, d in digests_of(root).items() if p in expected} == expected
        assert (root / "lost+found").is_dir() and not list(root.glob(".modelsync-staging-*"))
        assert not list(root.parent.glob(".pvc-root*"))  # no staging copy beside the mount
        assert set(json.loads((root / ".modelsync-files.json").read_text())["files"]) == set(expected)
    art = the_artifact(stack, env_name(tmp_path))
    assert art["state"] == "LIVE" and art["uri"] == published.uri


def test_1_a_file_of_someone_else_at_a_model_path_is_refused_then_replaced_on_request(stack, tmp_path, model):
    model_dir, expected = model
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "config.json").write_text("a person's own config")
    env = pvc_job(stack, tmp_path, model_dir, dest)
    name = env_name(tmp_path)
    result = run_cli(env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "config.json" in result.stderr and "MODEL_SYNC_DESTINATION_REPLACE_EXISTING=true" in result.stderr
    assert "Traceback" not in result.stderr and not registered(stack, name)  # refused in preflight
    assert (dest / "config.json").read_text() == "a person's own config" and sorted(os.listdir(dest)) == ["config.json"]

    result = run_cli({**env, "MODEL_SYNC_DESTINATION_REPLACE_EXISTING": "true"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert digests_of(dest).items() >= expected.items()
    assert the_artifact(stack, name)["state"] == "LIVE"


def test_1_a_rerun_of_the_same_job_removes_only_its_own_old_files(stack, tmp_path, model):
    model_dir, expected = model
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "unrelated.txt").write_text("x")
    env = pvc_job(stack, tmp_path, model_dir, dest)
    job.run(config.load([], env))
    (model_dir / "config.json").unlink()  # the same Job runs again (a restart) with one file fewer at the source
    job.run(config.load([], env))
    job.run(config.load([], env))  # and a third time: its own files are overwritten freely
    other = {**env, "MODEL_SYNC_MODEL_UPLOAD_INTENT": "update_artifact",  # another job: its files are foreign
             "MODEL_SYNC_MODEL_ARTIFACT_ID": the_artifact(stack, env_name(tmp_path))["id"]}
    with pytest.raises(TransferError, match="not written by this job"):
        job.run(config.load([], other))
    assert not (dest / "config.json").exists() and (dest / "unrelated.txt").read_text() == "x"
    assert digests_of(dest).items() >= {k: v for k, v in expected.items() if k != "config.json"}.items()


# ---------------------------------------------------------------- 3. working directories never collide


def test_3_workspaces_of_running_jobs_are_never_cleared(tmp_path):
    first = claim(tmp_path, ".modelsync-", "samekey", "storage")
    (first.model).mkdir()
    (first.model / "weights.bin").write_bytes(b"1")
    second = claim(tmp_path, ".modelsync-", "samekey", "storage")  # same job identity, both alive
    assert first.root != second.root and (first.model / "weights.bin").exists()
    second.release()
    first.release()
    assert not list(tmp_path.iterdir())


def test_3_a_restarted_job_clears_its_crashed_attempt_and_only_that(tmp_path):
    code = ("import sys, os, signal; from pathlib import Path; from modelsync.workspace import claim;"
            "ws = claim(Path(sys.argv[1]), '.modelsync-', sys.argv[2], 's'); print(ws.root, flush=True);"
            "os.kill(os.getpid(), signal.SIGKILL)")
    crashed = subprocess.run([sys.executable, "-c", code, str(tmp_path), "key1"], capture_output=True, text=True)
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path), "key2"], capture_output=True, text=True)
    crashed_dir, other_dir = Path(crashed.stdout.strip()), Path(other.stdout.strip())
    assert crashed_dir.is_dir() and other_dir.is_dir()
    with claim(tmp_path, ".modelsync-", "key1", "storage") as restarted:
        assert not crashed_dir.exists() and other_dir.is_dir() and restarted.root.is_dir()


def test_3_two_versions_pushed_to_one_tag_at_once_from_one_storage_path(stack, tmp_path, model, base_image):
    """The issue's case: create_version v1 and v2 of one model, same source, same tag, same storage path, run
    at the same time by the real CLI. Both must end LIVE with their own digests."""
    model_dir, expected = model
    name = f"race-{uuid.uuid4().hex[:6]}"
    first = {**base_env(stack, tmp_path, name), **source_env("s3", stack, tmp_path, model_dir, None, base_image),
             **destination_env("oci", stack, tmp_path, base_image)}
    assert run_cli(first, tmp_path).returncode == 0
    model_id = mr_get(stack, f"registered_model?name={name}")["id"]
    procs = []
    for version in ("2.0.0", "3.0.0"):
        meta = tmp_path / f"meta-{version}"
        meta.mkdir()
        (meta / "ModelVersion.name").write_text(version)
        env = {**first, "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_version", "MODEL_SYNC_MODEL_ID": model_id,
               "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta)}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SYNC_")}
        procs.append(subprocess.Popen([sys.executable, "-m", "modelsync"], env={**clean, **env}, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for version in ("2.0.0", "3.0.0"):
        assert the_artifact(stack, name, version)["state"] == "LIVE"
    assert not list((tmp_path / "storage").glob(".modelsync-*"))


# ---------------------------------------------------------------- 4. URIs lose their secrets wherever shown


def test_4_dry_run_logs_errors_and_registry_never_show_url_credentials(stack, tmp_path):
    signature, password = "c0ffee5ignature77", "pa55-w0rd-Zz9"
    presigned = (f"http://127.0.0.1:9/bucket/model.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 f"&X-Amz-Credential=AKIAEXAMPLE%2F20261126&X-Amz-Signature={signature}")
    secret_dir = tmp_path / "uri-secret"
    secret_dir.mkdir()
    (secret_dir / "URI").write_text(presigned)
    name = f"url-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "uri",
           "MODEL_SYNC_SOURCE_URI_CREDENTIALS_PATH": str(secret_dir), "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out")}
    dry = run_cli(env, tmp_path, "--dry-run")
    shown = json.loads(dry.stdout)["settings"]["source_uri"]["value"]
    assert shown.startswith("http://127.0.0.1:9/bucket/model.tar.gz?X-Amz-Algorithm=***")
    assert "AKIAEXAMPLE" not in dry.stdout + dry.stderr and signature not in dry.stdout + dry.stderr

    failed = run_cli({**env, "MODEL_SYNC_LOG_FORMAT": "json"}, tmp_path)  # nothing listens on port 9
    assert failed.returncode == 1 and "model.tar.gz" in failed.stderr
    assert signature not in failed.stdout + failed.stderr and "AKIAEXAMPLE" not in failed.stderr
    assert signature not in json.dumps(the_artifact(stack, name))

    with_user = {**env, "MODEL_SYNC_SOURCE_URI": f"https://reader:{password}@models.example/m.zip"}
    dry = run_cli(with_user, tmp_path, "--dry-run")
    assert password not in dry.stdout + dry.stderr and "reader" not in dry.stdout
    assert json.loads(dry.stdout)["settings"]["source_uri"]["value"] == "https://***@models.example/m.zip"


def test_4_user_info_in_a_source_url_is_sent_as_basic_auth_not_in_the_url(tmp_path):
    from modelsync.sources.uri import spec
    cfg, _ = config.resolve([], {"MODEL_SYNC_SOURCE_TYPE": "uri",
                                 "MODEL_SYNC_SOURCE_URI": "https://u%40corp:p%3Ass@h.example/m.tar"})
    loc = spec(cfg)
    assert loc.url == "https://h.example/m.tar"
    import base64
    assert loc.headers["Authorization"].reveal() == "Basic " + base64.b64encode(b"u@corp:p:ss").decode()


# ---------------------------------------------------------------- 7. an S3 prefix holding others' objects


def test_7_s3_prefix_with_foreign_objects_is_refused_then_replaced_exactly(stack, tmp_path, model, base_image):
    model_dir, expected = model
    env = {**base_env(stack, tmp_path, f"s3own-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_SOURCE_TYPE": "pvc",
           "MODEL_SYNC_SOURCE_PATH": str(model_dir), **destination_env("s3", stack, tmp_path, base_image)}
    bucket, prefix = env["MODEL_SYNC_DESTINATION_AWS_BUCKET"], env["MODEL_SYNC_DESTINATION_AWS_KEY"]
    s3 = boto3.client("s3", endpoint_url=stack.minio_endpoint, aws_access_key_id=stack.minio_access_key,
                      aws_secret_access_key=stack.minio_secret_key, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/old-model.bin", Body=b"another model")
    name = env_name(tmp_path)

    result = run_cli(env, tmp_path)
    assert result.returncode == 1 and "old-model.bin" in result.stderr and "REPLACE_EXISTING" in result.stderr
    assert not registered(stack, name)

    published = job.run(config.load([], {**env, "MODEL_SYNC_DESTINATION_REPLACE_EXISTING": "true"}))
    keys = sorted(o["Key"][len(prefix) + 1:]
                  for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"])
    assert keys == sorted(expected) == sorted(f.path for f in published.files)
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["customProperties"]["modelsync.files"]["int_value"] == str(len(keys))

    # the same job again (a restart): its own objects are not "foreign", no setting needed
    job.run(config.load([], env))


# ---------------------------------------------------------------- 9. preflight catches it before the claim


def _oci_job(stack, tmp_path, model_dir, base_image, **extra) -> dict[str, str]:
    return {**base_env(stack, tmp_path, f"pre-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_SOURCE_TYPE": "pvc",
            "MODEL_SYNC_SOURCE_PATH": str(model_dir), **destination_env("oci", stack, tmp_path, base_image), **extra}


@pytest.mark.parametrize("case", ["wrong-password", "missing-ca", "no-base-image"])
def test_9_destination_problems_fail_before_the_claim(case, stack, tmp_path, model, base_image):
    model_dir, _ = model
    tls = {"MODEL_SYNC_DESTINATION_OCI_URI": f"{stack.oci_tls_registry}/pre/m:v1",
           "MODEL_SYNC_DESTINATION_OCI_USERNAME": stack.oci_tls_username,
           "MODEL_SYNC_DESTINATION_OCI_PASSWORD": stack.oci_tls_password,
           "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "true",
           "MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE": stack.oci_tls_ca}
    if case == "wrong-password":
        tls["MODEL_SYNC_DESTINATION_OCI_PASSWORD"] = "not-the-password-Q1"
        expected = "authentication failed (401 for user"
    elif case == "missing-ca":
        del tls["MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE"]
        expected = "CERTIFICATE_VERIFY_FAILED"
    else:
        tls["MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE"] = f"{stack.oci_registry}/library/no-such-base:1"
        expected = "--destination-oci-base-image"
    env = _oci_job(stack, tmp_path, model_dir, base_image, **tls)
    result = run_cli(env, tmp_path)
    # refused credentials are a configuration error (exit 2: a Job's podFailurePolicy ends it at once)
    assert result.returncode == (2 if case == "wrong-password" else 1), result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "not-the-password-Q1" not in result.stderr
    assert not registered(stack, env_name(tmp_path))


def test_9_destination_pinned_by_digest_is_a_config_error(stack, tmp_path, model, base_image):
    model_dir, _ = model
    env = _oci_job(stack, tmp_path, model_dir, base_image,
                   MODEL_SYNC_DESTINATION_OCI_URI=f"{stack.oci_registry}/pre/m@sha256:{'a' * 64}")
    result = run_cli(env, tmp_path)
    assert result.returncode == 2 and "pinned by digest" in result.stderr


def test_9_read_only_storage_path_fails_before_the_claim(stack, tmp_path, model, base_image):
    model_dir, _ = model
    with tmpfs(tmp_path / "ro-storage", read_only=True) as storage:
        env = _oci_job(stack, tmp_path, model_dir, base_image, MODEL_SYNC_STORAGE_PATH=str(storage))
        result = run_cli(env, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and "MODEL_SYNC_STORAGE_PATH" in lines[0] and "Read-only file system" in lines[0]
    assert not registered(stack, env_name(tmp_path))


def test_9_read_only_volume_destination_fails_before_the_claim(stack, tmp_path, model):
    model_dir, _ = model
    with tmpfs(tmp_path / "ro-pvc", read_only=True) as dest:
        env = pvc_job(stack, tmp_path, model_dir, dest)
        with pytest.raises(TransferError, match="MODEL_SYNC_DESTINATION_PATH.*not writable"):
            job.run(config.load([], env))
    assert not registered(stack, env_name(tmp_path))


def test_9_dry_run_reports_the_destination_checks(stack, tmp_path, model, base_image):
    model_dir, _ = model
    report, ok = job.dry_run(config.load(["--dry-run"], _oci_job(stack, tmp_path, model_dir, base_image)))
    assert ok, report["preflight"]
    facts = report["preflight"]["destination"]
    assert facts["type"] == "oci" and facts["base image"].startswith(f"{stack.oci_registry}/library/busybox@sha256:")



# ---------------------------------------------------------------- issue 20: links, names, a volume's re-run


def test_20_a_link_in_a_volume_destination_is_refused_before_the_claim(stack, tmp_path, model):
    """A directory of the model that is a link elsewhere (and, with replace, a file that is one): one line naming
    the link, exit 1 in preflight, nothing registered, nothing written outside."""
    model_dir, _ = model
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "part-00001.bin").write_bytes(b"someone else's")
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "weights").symlink_to(outside)
    env = pvc_job(stack, tmp_path, model_dir, dest)
    for extra in ({}, {"MODEL_SYNC_DESTINATION_REPLACE_EXISTING": "true"}):
        result = run_cli({**env, **extra}, tmp_path)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if "symbolic link" in line]
        assert len(errors) == 1 and f"'{dest}/weights' is a symbolic link (to '{outside}')" in errors[0]
        assert "Traceback" not in result.stderr and not registered(stack, env_name(tmp_path))
    (dest / "weights").unlink()
    (dest / "config.json").symlink_to(outside / "part-00001.bin")
    result = run_cli({**env, "MODEL_SYNC_DESTINATION_REPLACE_EXISTING": "true"}, tmp_path)
    assert result.returncode == 1 and "config.json' is a symbolic link" in result.stderr, result.stderr
    assert sorted(os.listdir(outside)) == ["part-00001.bin"]
    assert (outside / "part-00001.bin").read_bytes() == b"someone else's"
    assert sorted(os.listdir(dest)) == ["config.json"]


def test_20_a_link_swapped_in_while_the_job_copies_is_refused_and_the_artifact_abandoned(stack, tmp_path, model,
                                                                                       monkeypatch):
    from modelsync.destinations import local
    model_dir, _ = model
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "pvc"
    copy = local._copy_verified

    def copy_then_swap(*args):
        copy(*args)
        (dest / "weights").symlink_to(outside)

    monkeypatch.setattr(local, "_copy_verified", copy_then_swap)
    with pytest.raises(TransferError, match="weights' is a symbolic link"):
        job.run(config.load([], pvc_job(stack, tmp_path, model_dir, dest)))
    assert os.listdir(outside) == []
    art = the_artifact(stack, env_name(tmp_path))
    assert art["state"] == "ABANDONED"


def test_20_an_unchanged_rerun_on_a_nearly_full_volume_passes(stack, tmp_path, model):
    """The issue's case: a 6 MiB volume holding the model (5 MiB of it one file) has too little room for a second
    copy; the same Job run again finds every file unchanged and copies nothing. A changed model then fails before
    anything is copied, with the destination named as what is short of space."""
    model_dir, _ = model
    (model_dir / "weights" / "big.bin").write_bytes(raw_weights(5 << 20))
    with tmpfs(tmp_path / "vol", size="7m") as vol:
        env = pvc_job(stack, tmp_path, model_dir, vol / "model")
        for _ in range(2):
            result = run_cli(env, tmp_path)
            assert result.returncode == 0, result.stderr
        assert "unchanged since this job's last run: not copied again" in result.stderr
        (model_dir / "weights" / "big.bin").write_bytes(raw_weights(5 << 20))
        result = run_cli(env, tmp_path)
        assert result.returncode == 1
        assert f"destination path '{vol / 'model'}' has " in result.stderr and "the copy needs 5." in result.stderr
        assert "storage path" not in result.stderr
