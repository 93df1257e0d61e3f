"""Environment builders for whole-job tests on the local stack: the MODEL_SYNC_* settings of a job from each source
and to each destination type (its metadata directory and storage path under the test's tmp_path), the sample model
uploaded to the stack's S3, and a published model read back byte for byte (sha256 per file)."""

from __future__ import annotations

import stat
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from modelsync import tools
from modelsync.destinations.local import RECORD
from modelsync.destinations.oci import publish_modelcar
from modelsync.files import inventory
from modelsync.locations import OciLocation, S3Location
from modelsync.secret import Secret
from modelsync.sources.oci import fetch_oci
from modelsync.sources.s3 import fetch_s3

from .models import TEST_JOB, digests_of


def s3loc(stack, key: str) -> S3Location:
    return S3Location(bucket=stack.minio_bucket, key=key, endpoint=stack.minio_endpoint,
                      access_key_id=Secret(stack.minio_access_key), secret_access_key=Secret(stack.minio_secret_key))


def base_env(stack, tmp_path: Path, name: str) -> dict[str, str]:
    meta = tmp_path / "metadata"
    meta.mkdir()
    for key, value in {"RegisteredModel.name": name, "ModelVersion.name": "1.0.0", "ModelArtifact.name": name,
                       "ModelArtifact.model_format_name": "onnx"}.items():
        (meta / key).write_text(value)
    return {"MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
            "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": stack.mr_url, "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
            "MODEL_SYNC_STORAGE_PATH": str(tmp_path / "storage")}


def source_env(kind: str, stack, tmp_path, model_dir: Path, http_root, base_image) -> dict[str, str]:
    if kind == "s3":
        prefix = f"job-src-{uuid.uuid4().hex[:8]}"
        from modelsync.destinations.s3 import publish_s3
        from modelsync.files import inventory
        publish_s3(model_dir, inventory(model_dir), s3loc(stack, prefix), TEST_JOB)
        return {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": stack.minio_bucket,
                "MODEL_SYNC_SOURCE_AWS_KEY": prefix, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": stack.minio_endpoint,
                "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": stack.minio_access_key,
                "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": stack.minio_secret_key}
    if kind == "oci":
        ref = f"{stack.oci_tls_registry}/job-src/{uuid.uuid4().hex[:8]}:v1"
        target = OciLocation(ref, username=stack.oci_tls_username, password=Secret(stack.oci_tls_password),
                             ca_bundle=stack.oci_tls_ca)
        publish_modelcar(model_dir, target, OciLocation(base_image, tls_verify=False), tmp_path / "pre")
        return {"MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": ref,
                "MODEL_SYNC_SOURCE_OCI_USERNAME": stack.oci_tls_username,
                "MODEL_SYNC_SOURCE_OCI_PASSWORD": stack.oci_tls_password,
                "MODEL_SYNC_SOURCE_OCI_CA_BUNDLE": stack.oci_tls_ca}
    if kind == "uri":
        root, url = http_root
        with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
            tar.add(model_dir, arcname=".")
        return {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": f"{url}/model.tar.gz"}
    return {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(model_dir)}


def destination_env(kind: str, stack, tmp_path, base_image) -> dict[str, str]:
    if kind == "oci":
        return {"MODEL_SYNC_DESTINATION_TYPE": "oci",
                "MODEL_SYNC_DESTINATION_OCI_URI": f"{stack.oci_registry}/job-dst/{uuid.uuid4().hex[:8]}:v1",
                "MODEL_SYNC_DESTINATION_OCI_USERNAME": "any", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "unused-pw",
                "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false",
                "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": base_image,
                "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false"}
    if kind == "s3":
        return {"MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_AWS_BUCKET": stack.minio_bucket,
                "MODEL_SYNC_DESTINATION_AWS_KEY": f"job-dst-{uuid.uuid4().hex[:8]}/model",
                "MODEL_SYNC_DESTINATION_AWS_ENDPOINT": stack.minio_endpoint,
                "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": stack.minio_access_key,
                "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": stack.minio_secret_key}
    return {"MODEL_SYNC_DESTINATION_TYPE": "pvc", "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "pvc-out" / "model")}


def read_back(published, dest_kind: str, stack, tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "read-back"
    if dest_kind == "oci":
        fetch_oci(OciLocation(published.uri[len("oci://"):], tls_verify=False), out, tmp_path / "rb-work")
    elif dest_kind == "s3":
        key = published.uri.split("/", 3)[3]
        fetch_s3(s3loc(stack, key), out)
    else:
        out = Path(published.uri[len("file://"):])
        return {p: d for p, d in digests_of(out).items() if p != RECORD}  # the job's record of what it wrote
    return digests_of(out)


def pvc_job(stack, tmp_path: Path, model_dir: Path, dest: Path, name: str | None = None) -> dict[str, str]:
    return {**base_env(stack, tmp_path, name or f"vol-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_SOURCE_TYPE": "pvc",
            "MODEL_SYNC_SOURCE_PATH": str(model_dir), "MODEL_SYNC_DESTINATION_TYPE": "pvc",
            "MODEL_SYNC_DESTINATION_PATH": str(dest)}


def upload(stack, model_dir: Path) -> str:
    from modelsync.destinations.s3 import publish_s3
    prefix = f"pipe-src-{uuid.uuid4().hex[:8]}"
    publish_s3(model_dir, inventory(model_dir), s3loc(stack, prefix), TEST_JOB)
    return prefix


def s3_env(stack, prefix: str) -> dict[str, str]:
    return {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": stack.minio_bucket,
            "MODEL_SYNC_SOURCE_AWS_KEY": prefix, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": stack.minio_endpoint,
            "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": stack.minio_access_key,
            "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": stack.minio_secret_key}


def job_env(stack, tmp_path: Path, prefix: str, base_image: str, label: str) -> tuple[dict[str, str], str]:
    name = f"pipe-{label}-{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / name
    run_dir.mkdir()
    return {**base_env(stack, run_dir, name), **s3_env(stack, prefix),
            **destination_env("oci", stack, tmp_path, base_image)}, name


def wrapped_tool(tmp_path: Path, tool: str, before: str, dir_name: str = "fake-bin") -> Path:
    """A directory (tmp_path/dir_name, to put first on PATH) holding `tool`: a script that runs `before` (sh, with
    the tool's arguments as $1, $2, ...), then execs the real tool with them."""
    real = tools.which(tool)
    bin_dir = tmp_path / dir_name
    bin_dir.mkdir()
    script = bin_dir / tool
    script.write_text(f"#!/bin/sh\n{before}\nexec '{real}' \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def nth_call(when: str, count: Path, n: int, then: str) -> str:
    """sh for wrapped_tool: the calls for which the sh test `when` holds are counted in the file count; the n-th
    runs `then` (e.g. a message to stderr and `exit 1`)."""
    return (f"if {when}; then c=$(cat '{count}' 2>/dev/null || echo 0); c=$((c + 1)); echo $c > '{count}'; "
            f"if [ $c -eq {n} ]; then {then}; fi; fi")


def counting_aws(tmp_path: Path, log: Path) -> Path:
    """A directory holding an `aws` that logs its arguments (one line a process) and runs the real one."""
    return wrapped_tool(tmp_path, "aws", f"echo \"$*\" >> '{log}'", "counting-bin")


def children_of(pid: int) -> list[str]:
    """The pids of pid's child processes."""
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


@contextmanager
def sampled(*measures: Callable[[], int]) -> Iterator[list[int]]:
    """The peak of each measure (e.g. a directory's disk_bytes), taken every 5 ms while the block runs; a sample
    meeting a file removed meanwhile (OSError) is skipped. The list holds the final peaks once the block is left."""
    peaks, stop = [0] * len(measures), threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            for i, measure in enumerate(measures):
                try:
                    peaks[i] = max(peaks[i], measure())
                except OSError:
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        sampler.join()


def spy_gets(m: pytest.MonkeyPatch) -> list[str]:
    """The files the pipelines' S3 download (s3_download.S3Download, the job's own GETs) starts, in order, from now
    on under the monkeypatch context m: a spy that calls the real method."""
    from modelsync.s3_download import S3Download

    started: list[str] = []
    real = S3Download._start

    def start(self: S3Download, rel: str) -> object:
        started.append(rel)
        return real(self, rel)

    m.setattr(S3Download, "_start", start)
    return started


def spy_blob_opens(m: pytest.MonkeyPatch, position: Callable[[], int] = lambda: 0) -> list[tuple[int, int]]:
    """(first byte asked for, position() then) of every ranged GET of a registry blob (blob_read.py, through
    RegistryClient.open_blob) from now on under the monkeypatch context m: a spy that calls the real method."""
    from modelsync.clients.distribution import RegistryClient

    opens: list[tuple[int, int]] = []
    real = RegistryClient.open_blob

    def open_blob(self: RegistryClient, repo: str, digest: str, start: int, end: int) -> object:
        opens.append((start, position()))
        return real(self, repo, digest, start, end)

    m.setattr(RegistryClient, "open_blob", open_blob)
    return opens


def downloads(calls: list[list[str]]) -> list[str]:
    """What each aws process fetched: the URL, or the files named by --include."""
    assert all(call[:2] == ["s3", "cp"] for call in calls), calls
    return [" ".join(c for c in call[2:] if not c.startswith("-")) for call in calls]


def synced_twice(stack, tmp_path: Path, base_image: str, label: str, source: dict[str, str],
                 extra: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    """Two whole jobs of one source (its MODEL_SYNC_* settings) to two new OCI repositories, a second apart (a
    `created` of the run's time would differ): the manifest digests they pushed and the images' `created`."""
    from modelsync import config, job
    from modelsync.clients.distribution import RegistryClient

    digests, created = set(), set()
    for run in ("a", "b"):
        run_dir = tmp_path / f"{label}-{run}"
        run_dir.mkdir()
        env = {**base_env(stack, run_dir, f"{label}-{uuid.uuid4().hex[:6]}"), **source,
               **destination_env("oci", stack, run_dir, base_image), **(extra or {})}
        published = job.run(config.load([], env))
        target = OciLocation(env["MODEL_SYNC_DESTINATION_OCI_URI"], tls_verify=False)
        manifest = RegistryClient(target).manifest(target.repository.split("/", 1)[1], published.digest).json()
        digests.add(str(published.digest))
        created.add(manifest["annotations"]["org.opencontainers.image.created"])
        time.sleep(1.1)
    return digests, created
