"""The jobs of tests/stack/test_faults.py: the real CLI run in its own process against the stack, what it must leave
behind (LIVE and verified, or failed cleanly), and the table of what each case injected and took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3

from modelsync.locations import OciLocation
from modelsync.sources.oci import fetch_oci

from .faults import dir_bytes, wait_for
from .jobs import base_env
from .model_registry import registered, the_artifact
from .models import digests_of

RESULTS: list[tuple[str, str, str, float]] = []  # (case, what was injected, outcome, seconds the job took)
RUNNING: list[Job] = []                          # every job started; the test module kills any left running


@dataclass
class Model:
    dir: Path
    digests: dict[str, str]
    prefix: str


def upload(model_dir: Path, endpoint: str, key: str, secret: str, bucket: str) -> str:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    for path in model_dir.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(model_dir).as_posix()}")
    return prefix


def remove_prefix(endpoint: str, key: str, secret: str, bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def job_env(stack, tmp_path: Path, *, s3_port: int, registry_port: int, prefix: str, mr_url: str | None = None,
            s3_key: str | None = None, s3_secret: str | None = None, bucket: str | None = None) -> dict[str, str]:
    name = f"fault-{uuid.uuid4().hex[:8]}"
    env = base_env(stack, tmp_path, name)
    env.update({
        "MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": bucket or stack.minio_bucket,
        "MODEL_SYNC_SOURCE_AWS_KEY": prefix, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": s3_key or stack.minio_access_key,
        "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": s3_secret or stack.minio_secret_key,
        "MODEL_SYNC_DESTINATION_TYPE": "oci",
        "MODEL_SYNC_DESTINATION_OCI_URI": f"127.0.0.1:{registry_port}/faults/{name}:v1",
        "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
        "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": "scratch"})
    if mr_url:
        env["MODEL_SYNC_REGISTRY_SERVER_ADDRESS"] = mr_url
    return env


class Job:
    """One run of the real CLI in its own process, watched from the test."""

    def __init__(self, env: dict[str, str], cwd: Path):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}
        self.env = env
        self.started = time.monotonic()
        self.cwd = cwd
        self.proc = subprocess.Popen([sys.executable, "-m", "modelsync"], env={**clean, **env}, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seconds = 0.0
        self.stdout = self.stderr = ""
        RUNNING.append(self)

    def wait(self, timeout: float = 300) -> Job:
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        self.seconds = time.monotonic() - self.started
        (self.cwd / f"job-{self.proc.pid}.log").write_text(self.stderr)  # kept with a failed test's tmp_path
        return self

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    @property
    def name(self) -> str:
        return Path(self.env["MODEL_SYNC_METADATA_CONFIGMAP_PATH"], "RegisteredModel.name").read_text()

    def scratch(self) -> list[Path]:
        storage = Path(self.env["MODEL_SYNC_STORAGE_PATH"])
        return sorted(storage.glob(".modelsync-*")) if storage.is_dir() else []


def run(env: dict[str, str], cwd: Path, timeout: float = 300) -> Job:
    return Job(env, cwd).wait(timeout)


def record(name: str, injected: str, job: Job) -> None:
    outcome = "LIVE, verified" if job.code == 0 else f"exit {job.code}, not LIVE, clean"
    outcome += f", job retried {job.stderr.count('trying again')}x" if "trying again" in job.stderr else ""
    RESULTS.append((name, injected, outcome, job.seconds))


def assert_live(stack, job: Job, model: Model, registry_port: int, tmp_path: Path) -> None:
    """Exit 0, the artifact LIVE with the pushed digest, the image read back (from the registry itself, not the
    proxy) holding the model byte for byte, and the storage path clean."""
    assert job.code == 0, job.stderr
    art = the_artifact(stack, job.name)
    assert art["state"] == "LIVE", art
    ref = art["uri"][len("oci://"):].split("/", 1)[1]
    out = tmp_path / f"read-back-{uuid.uuid4().hex[:6]}"
    fetch_oci(OciLocation(f"127.0.0.1:{registry_port}/{ref}", tls_verify=False), out, tmp_path / "rb-work")
    assert digests_of(out) == model.digests
    assert job.scratch() == []


def assert_failed(stack, job: Job, *, says: str, within: float) -> None:
    """Exit 1 within `within` seconds, one ERROR line naming the failure, no traceback, nothing LIVE, no scratch."""
    assert job.code == 1, f"exit {job.code}\n{job.stderr}"
    assert job.seconds < within, f"took {job.seconds:.1f}s\n{job.stderr}"
    assert "Traceback" not in job.stderr, job.stderr
    errors = [line for line in job.stderr.splitlines() if " ERROR " in line]
    assert errors and says in errors[-1], job.stderr
    assert len(errors) <= 2, job.stderr  # the failure, and at most that marking it ABANDONED failed too
    if registered(stack, job.name):
        assert the_artifact(stack, job.name)["state"] != "LIVE"
    assert job.scratch() == [], job.scratch()


def when(check, timeout: float = 60) -> None:
    wait_for(check, timeout, "the transfer to get under way")


def downloaded(job: Job, size: int = 4 << 20) -> None:
    """Return once the job's scratch under the storage path holds `size` bytes (the download is under way)."""
    storage = Path(job.env["MODEL_SYNC_STORAGE_PATH"])
    when(lambda: dir_bytes(storage, ".modelsync-*/**/*") > size or job.proc.poll() is not None)
    assert job.proc.poll() is None, "the job ended before the fault could be injected"


# ---------------------------------------------------------------- S3


def tags(stack, repo: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{stack.oci_registry}/v2/{repo}/tags/list", timeout=10) as resp:
            return json.load(resp).get("tags") or []
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return []


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found
