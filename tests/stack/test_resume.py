"""A killed Job resumes where it stopped, and the same source gives the same image (issue #24; URL and hf:// sources:
test_archives.py, test_hf_source.py).

Resume: the real CLI, S3 -> OCI, its `oras blob push` slowed by a wrapper (1.5 s before each layer, so the kill
lands mid-sync), SIGKILLed -- no handler runs, as when a node dies -- once the PENDING artifact on the real Model
Registry records a finished layer (resume.PROPERTY). The Job's next pod (a fresh storage path) downloads only
the files of the layers not recorded, and ends with the digest a full sync of the same objects gives.

Same image: SOURCE_DATE_EPOCH unset, the same S3 objects synced to two new repositories through the pipeline and
through fetch-then-publish give one manifest digest, whose `created` is the newest object's LastModified.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from modelsync import config, job
from modelsync.clients.distribution import RegistryClient
from modelsync.locations import OciLocation
from modelsync.resume import PROPERTY, Progress, Resume
from modelsync.secret import Secret
from modelsync.sources.s3 import list_s3

from ..support.jobs import job_env, s3loc, source_env, spy_gets, synced_twice, upload, wrapped_tool
from ..support.model_registry import the_artifact
from ..support.models import write_big

MIB = 1 << 20
SHARDS = [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]


@pytest.fixture
def sharded(stack, tmp_path, monkeypatch):
    """Four 24 MiB shards (one layer each) and a config in S3; SOURCE_DATE_EPOCH unset."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["Tiny"]}\n')
    for shard in SHARDS:
        write_big(model / shard, 24 * MIB)
    return upload(stack, model)


def slow_oras(tmp_path) -> str:
    """A directory holding an `oras` that waits 1.5 s before each blob push, then runs the real one."""
    return str(wrapped_tool(tmp_path, "oras", '[ "$1 $2" = "blob push" ] && sleep 1.5', "slow-bin"))


def recorded(art: dict) -> str | None:
    return (art.get("customProperties") or {}).get(PROPERTY, {}).get("string_value")


@pytest.mark.stack
def test_a_killed_job_resumes_with_what_it_had_finished(stack, tmp_path, base_image, sharded, monkeypatch):
    env, name = job_env(stack, tmp_path, sharded, base_image, "resume")
    ref = f"{stack.oci_registry}/resume/{uuid.uuid4().hex[:8]}:v1"
    env["MODEL_SYNC_DESTINATION_OCI_URI"] = ref
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SYNC_") and k != "SOURCE_DATE_EPOCH"}
    proc = subprocess.Popen([sys.executable, "-m", "modelsync"], cwd=tmp_path, start_new_session=True,
                            env={**clean, **env, "PATH": f"{slow_oras(tmp_path)}:{os.environ['PATH']}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, f"the job ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no progress recorded on the artifact in 120 s"
            try:
                art = the_artifact(stack, name)
            except Exception:  # noqa: BLE001 -- not claimed yet
                art = {}
            if recorded(art):
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    art = the_artifact(stack, name)
    assert art["state"] == "PENDING", "a SIGKILLed job marks nothing"
    target = OciLocation(ref, tls_verify=False)
    client = RegistryClient(target)
    done = json.loads(client.blob("resume/" + ref.split("/resume/")[1].split(":")[0], recorded(art)))["layers"]
    finished = {json.loads(d["annotations"]["io.modelsync.source.files"])[0]["path"] for d in done}
    assert finished and finished < set(SHARDS) | {"config.json"}, finished

    fetched = spy_gets(monkeypatch)
    env["MODEL_SYNC_STORAGE_PATH"] = str(tmp_path / "next-pod-storage")  # the next pod's empty scratch
    resumed = job.run(config.load([], env))
    assert not finished & set(fetched), (finished, fetched)
    assert set(SHARDS) - finished <= set(fetched), fetched
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and recorded(art) is None, "going LIVE drops the progress record"

    fresh = f"{stack.oci_registry}/resume/{uuid.uuid4().hex[:8]}:v1"
    full_env, _ = job_env(stack, tmp_path, sharded, base_image, "full")
    full_env["MODEL_SYNC_DESTINATION_OCI_URI"] = fresh
    with monkeypatch.context() as m:
        m.setattr(job, "PIPELINES", ())
        full = job.run(config.load([], full_env))
    assert resumed.digest == full.digest and resumed.files == full.files


@pytest.mark.stack
def test_another_jobs_progress_record_is_not_trusted(stack):
    repo = f"resume/{uuid.uuid4().hex[:8]}"
    target = OciLocation(f"{stack.oci_registry}/{repo}:v1", tls_verify=False)
    client = RegistryClient(target)
    doc = {"kind": "modelsync.progress/1", "job": "someone-else", "layers": [{"digest": "sha256:" + "0" * 64}]}
    digest = client.put_blob(repo, json.dumps(doc).encode())
    assert Progress(Resume(job="this-job", recorded=digest), client, target).earlier == []
    assert len(Progress(Resume(job="someone-else", recorded=digest), client, target).earlier) == 1


@pytest.mark.stack
def test_the_same_objects_give_the_same_image(stack, tmp_path, base_image, sharded, monkeypatch):
    digests, created = [], []
    for label, pipelines in (("pipe-a", job.PIPELINES), ("pipe-b", job.PIPELINES), ("fetched", ())):
        env, _ = job_env(stack, tmp_path, sharded, base_image, label)
        env["MODEL_SYNC_DESTINATION_OCI_URI"] = f"{stack.oci_registry}/same/{uuid.uuid4().hex[:8]}:v1"
        with monkeypatch.context() as m:
            m.setattr(job, "PIPELINES", pipelines)
            published = job.run(config.load([], env))
        digests.append(published.digest)
        target = OciLocation(env["MODEL_SYNC_DESTINATION_OCI_URI"], tls_verify=False)
        manifest = RegistryClient(target).manifest(target.repository.split("/", 1)[1], published.digest).json()
        created.append(manifest["annotations"]["org.opencontainers.image.created"])
        time.sleep(1.1)  # a `created` of the run's time would differ
    assert len(set(digests)) == 1, digests
    _, _, origins = list_s3(s3loc(stack, sharded))
    newest = max(o.modified for o in origins.values() if o.modified is not None)
    assert created[0] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest))


@pytest.mark.stack
@pytest.mark.parametrize("backend", ["oras", "skopeo"])
def test_the_same_source_image_gives_the_same_image(backend, stack, tmp_path, base_image, model, monkeypatch):
    """OCI -> OCI, SOURCE_DATE_EPOCH unset, twice a second apart: the files take the source image's `created`,
    so both copies have one manifest digest and that `created`."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir, _ = model
    src = source_env("oci", stack, tmp_path, model_dir, None, base_image)
    source = OciLocation(src["MODEL_SYNC_SOURCE_OCI_URI"], ca_bundle=stack.oci_tls_ca,
                         username=stack.oci_tls_username, password=Secret(stack.oci_tls_password))
    source_created = RegistryClient(source).manifest(source.repository.split("/", 1)[1], "v1").json()[
        "annotations"]["org.opencontainers.image.created"]
    digests, created = synced_twice(stack, tmp_path, base_image, "same-oci", src,
                                    {"MODEL_SYNC_DESTINATION_OCI_BACKEND": backend})
    assert len(digests) == 1, digests
    assert created == {source_created}
