"""Issue 15, faults: the real CLI (`python -m modelsync`) against the real stack with faults injected by a real
Toxiproxy (tests/support/faults.py) in front of MinIO, the OCI registry and the Model Registry, a gateway answering 503,
and private MinIO / registry processes stopped and restarted mid-transfer.

Every case is an S3 -> OCI modelcar sync (the pipeline) of a model with one large file, create_model. A transient
fault must end in exit 0 with the artifact LIVE and the pushed image read back byte for byte; a permanent one in
exit 1, one ERROR line that says what failed, within a bounded time, nothing LIVE and no `.modelsync-*` left in the
storage path. Each case records what was injected, the outcome and the seconds it took; the module prints the
table at the end.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import unavailable
from ..support.fault_jobs import (
    RESULTS,
    RUNNING,
    Job,
    Model,
    assert_failed,
    assert_live,
    downloaded,
    job_env,
    processes_with,
    record,
    registered,
    remove_prefix,
    run,
    tags,
    the_artifact,
    upload,
    when,
)
from ..support.faults import Toxiproxy, dir_bytes, failing_gateway, private_minio, private_registry
from ..support.models import make_model
from ..support.mounts import tmpfs

pytestmark = pytest.mark.stack

BIG = 72 << 20            # the model's large file: one streamed layer (>= 64 MiB)
SLOW = 12288              # KB/s of a `bandwidth` toxic: the large file then takes about 6 s


@pytest.fixture(scope="module")
def toxi(tmp_path_factory, request):
    try:
        proxy = Toxiproxy.start(tmp_path_factory.mktemp("toxiproxy"))
    except FileNotFoundError as err:
        unavailable(str(err))
    yield proxy
    proxy.stop()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not RESULTS:
        return
    with capture.global_and_fixture_disabled():  # to the terminal, also with -q and without -s
        reporter.write_line("\nfault cases (what was injected -> outcome, seconds the job took):")
        for name, injected, outcome, seconds in RESULTS:
            reporter.write_line(f"  {name:<32} {injected:<70} {outcome:<36} {seconds:6.1f}s")
        reporter.write_line(f"  longest: {max(r[3] for r in RESULTS):.1f}s over {len(RESULTS)} job runs")



@pytest.fixture
def model(tmp_path, stack) -> Iterator[Model]:
    """The sample model with a BIG file, in the stack's MinIO under a prefix of its own (removed afterwards)."""
    root = tmp_path / "model-src"
    digests = make_model(root, BIG)
    where = (stack.minio_endpoint, stack.minio_access_key, stack.minio_secret_key, stack.minio_bucket)
    prefix = upload(root, *where)
    yield Model(root, digests, prefix)
    remove_prefix(*where, prefix)


@pytest.fixture(autouse=True)
def no_job_left_running() -> Iterator[None]:
    """A test that fails while its job runs must not leave the job (and its tools) behind."""
    yield
    while RUNNING:
        job = RUNNING.pop()
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.communicate(timeout=30)



# (lasting, after): reset every connection for 3 s (the tools' own retries ride it out), or a flapping link for
# 8 s, each connection cut after 1 MiB (their quick retries are cut too: the job's own, slower retries carry it)
CUTS = {"reset-3s": (3.0, None), "flapping-8s": (8.0, 1 << 20)}


def _cut(kind: str) -> str:
    lasting, after = CUTS[kind]
    return f"every connection reset for {lasting:g} s" if after is None else \
        f"each connection cut after {after >> 20} MiB, for {lasting:g} s"


@pytest.mark.parametrize("kind", CUTS)
def test_s3_connection_cut_mid_object(stack, toxi, model, tmp_path, kind):
    s3 = toxi.proxy(f"s3-{kind}", int(stack.minio_endpoint.rsplit(":", 1)[1]))
    toxi.toxic(f"s3-{kind}", "bandwidth", rate=SLOW)
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    job = Job(job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=model.prefix), tmp_path)
    downloaded(job)
    toxi.blip(f"s3-{kind}", CUTS[kind][0], after=CUTS[kind][1])
    job.wait()
    record(f"s3 cut mid-object ({kind})", f"{_cut(kind)}, 4 MiB into the object", job)
    assert_live(stack, job, model, registry_port, tmp_path)
    assert CUTS[kind][1] is None or "trying again" in job.stderr, "the flapping link never reached the job"


def test_s3_cut_on_every_connection_fails_in_bounded_time(stack, toxi, model, tmp_path):
    s3 = toxi.proxy("s3-dead", int(stack.minio_endpoint.rsplit(":", 1)[1]))
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    env = job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=model.prefix)
    toxi.toxic("s3-dead", "limit_data", bytes=1 << 20)  # listing passes, every download is cut at 1 MiB
    job = run(env, tmp_path)
    record("s3 cut on every connection", "limit_data: every connection closed after 1 MiB (permanent)", job)
    assert_failed(stack, job, says="s3://", within=120)


def test_minio_restarted_mid_download(stack, toxi, tmp_path):
    user, password = "faultuser", uuid.uuid4().hex
    minio, port = private_minio(tmp_path / "minio", user, password)
    try:
        root = tmp_path / "model-src"
        digests = make_model(root, BIG)
        prefix = upload(root, f"http://127.0.0.1:{port}", user, password, "private")
        s3 = toxi.proxy("s3-restart", port)
        toxi.toxic("s3-restart", "bandwidth", rate=SLOW)
        registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
        env = job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=prefix, s3_key=user,
                      s3_secret=password, bucket="private")
        job = Job(env, tmp_path)
        downloaded(job)
        minio.kill()  # as a crash or an OOM kill would end it: no graceful end of its connections
        minio.start()
        job.wait()
        record("minio restarted mid-download", "MinIO killed (SIGKILL) and started again after 4 MiB downloaded", job)
        assert_live(stack, job, Model(root, digests, prefix), registry_port, tmp_path)
    finally:
        minio.stop()


# ---------------------------------------------------------------- the OCI registry


@pytest.mark.parametrize("kind", CUTS)
def test_registry_connection_cut_mid_blob(stack, toxi, model, tmp_path, kind):
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    reg = toxi.proxy(f"oci-{kind}", registry_port)
    toxi.toxic(f"oci-{kind}", "bandwidth", stream="upstream", rate=SLOW)
    job = Job(job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]), registry_port=reg,
                      prefix=model.prefix), tmp_path)
    uploads = Path(stack.state_dir) / "registry" / "data" / "docker/registry/v2/repositories/faults" / job.name
    when(lambda: dir_bytes(uploads, "_uploads/*/data") > 4 << 20 or job.proc.poll() is not None)
    assert job.proc.poll() is None, "the job ended before the connection could be cut"
    toxi.blip(f"oci-{kind}", CUTS[kind][0], stream="upstream", after=CUTS[kind][1])
    job.wait()
    record(f"registry cut mid-blob ({kind})", f"{_cut(kind)}, 4 MiB into the large blob", job)
    assert_live(stack, job, model, registry_port, tmp_path)
    assert CUTS[kind][1] is None or "trying again" in job.stderr, "the flapping link never reached the job"


def test_registry_answering_503_for_a_while(stack, toxi, model, tmp_path):
    """503 to the first 3 requests (the preflight's), then again for 8 s once 4 MiB of the large blob went up:
    the blob uploads, checks and manifest push that come meanwhile are all refused."""
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    slow = toxi.proxy("oci-503", registry_port)
    toxi.toxic("oci-503", "bandwidth", stream="upstream", rate=SLOW)
    with failing_gateway(slow, failures=3) as gate:
        job = Job(job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]),
                          registry_port=gate.port, prefix=model.prefix), tmp_path)
        uploads = Path(stack.state_dir) / "registry" / "data" / "docker/registry/v2/repositories/faults" / job.name
        when(lambda: dir_bytes(uploads, "_uploads/*/data") > 4 << 20 or job.proc.poll() is not None)
        assert job.proc.poll() is None, "the job ended before the registry could fail"
        before = gate.failed()
        gate.fail_for(8.0)
        job.wait()
    record("registry 503 for a while", "503 to the first 3 requests, then to all for 8 s mid-push", job)
    assert before == 3 and gate.failed() > before, gate.seen  # both stretches of 503s were met
    assert_live(stack, job, model, registry_port, tmp_path)


def test_registry_answering_503_for_good_fails_in_bounded_time(stack, toxi, model, tmp_path):
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    with failing_gateway(registry_port, failures=10**6) as gate:
        job = run(job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]),
                          registry_port=gate.port, prefix=model.prefix), tmp_path)
    record("registry 503 for good", "gateway answers 503 to every request (permanent)", job)
    assert_failed(stack, job, says="503", within=120)
    assert not registered(stack, job.name)  # refused in preflight: nothing claimed


def test_registry_stalling_mid_push_fails_in_bounded_time(stack, toxi, model, tmp_path):
    """From 4 MiB into the large blob on, the registry swallows every byte and holds every connection (Toxiproxy
    `timeout` 0): oras has no timeout of its own; the job stops a run that moves nothing for 30 s."""
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    reg = toxi.proxy("oci-stall", registry_port)
    toxi.toxic("oci-stall", "bandwidth", stream="upstream", rate=SLOW)
    job = Job(job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]), registry_port=reg,
                      prefix=model.prefix), tmp_path)
    uploads = Path(stack.state_dir) / "registry" / "data" / "docker/registry/v2/repositories/faults" / job.name
    when(lambda: dir_bytes(uploads, "_uploads/*/data") > 4 << 20 or job.proc.poll() is not None)
    assert job.proc.poll() is None, "the job ended before the registry could stall"
    toxi.toxic("oci-stall", "timeout", stream="upstream", timeout=0)
    job.wait()
    record("registry stalls mid-push", "registry swallows everything from 4 MiB into the blob on (permanent)", job)
    assert_failed(stack, job, says="made no progress", within=240)
    assert the_artifact(stack, job.name)["state"] == "ABANDONED"


def test_registry_restarted_mid_push(stack, toxi, model, tmp_path):
    registry, port = private_registry(tmp_path / "registry")
    try:
        reg = toxi.proxy("oci-restart", port)
        toxi.toxic("oci-restart", "bandwidth", stream="upstream", rate=SLOW)
        job = Job(job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]), registry_port=reg,
                          prefix=model.prefix), tmp_path)
        uploads = tmp_path / "registry" / "data"
        when(lambda: dir_bytes(uploads, "**/_uploads/*/data") > 4 << 20 or job.proc.poll() is not None)
        assert job.proc.poll() is None, "the job ended before the registry was restarted"
        registry.stop()
        registry.start()
        job.wait()
        record("registry restarted mid-push", "registry stopped and started again after 4 MiB of a blob", job)
        assert_live(stack, job, model, port, tmp_path)
    finally:
        registry.stop()


# ---------------------------------------------------------------- the Model Registry


def test_model_registry_unreachable_at_start(stack, toxi, model, tmp_path):
    mr = toxi.proxy("mr-down", int(stack.mr_url.rsplit(":", 1)[1]))
    toxi.enable("mr-down", False)
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    env = job_env(stack, tmp_path, s3_port=int(stack.minio_endpoint.rsplit(":", 1)[1]), registry_port=registry_port,
                  prefix=model.prefix, mr_url=f"http://127.0.0.1:{mr}")
    job = run(env, tmp_path)
    record("model registry down at start", "Model Registry proxy refusing connections", job)
    assert_failed(stack, job, says="Model Registry", within=30)
    assert not registered(stack, job.name)
    repo = env["MODEL_SYNC_DESTINATION_OCI_URI"].split("/", 1)[1].rsplit(":", 1)[0]
    assert tags(stack, repo) == []  # nothing moved


@pytest.mark.parametrize("how", ["refused", "stalled"])
def test_model_registry_unreachable_at_the_end_then_a_rerun_finishes(stack, toxi, model, tmp_path, how):
    """refused: connections refused; stalled: requests swallowed, connections held open (Toxiproxy `timeout`
    with timeout 0), so only the client's own per-request timeout ends each try."""
    mr = toxi.proxy(f"mr-{how}", int(stack.mr_url.rsplit(":", 1)[1]))
    s3 = toxi.proxy(f"s3-{how}", int(stack.minio_endpoint.rsplit(":", 1)[1]))
    toxi.toxic(f"s3-{how}", "bandwidth", rate=SLOW)
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    env = job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=model.prefix,
                  mr_url=f"http://127.0.0.1:{mr}")
    job = Job(env, tmp_path)
    downloaded(job)  # claimed (PENDING) by now
    if how == "refused":
        toxi.enable(f"mr-{how}", False)
    else:
        stall = toxi.toxic(f"mr-{how}", "timeout", stream="upstream", timeout=0)
    job.wait()
    record(f"model registry {how} at the end", f"Model Registry {how} from 4 MiB into the download on", job)
    assert_failed(stack, job, says="Model Registry", within=90 if how == "refused" else 200)
    assert the_artifact(stack, job.name)["state"] != "LIVE"

    toxi.enable(f"mr-{how}", True) if how == "refused" else toxi.remove(f"mr-{how}", stall)
    again = run(env, tmp_path)
    record("  ... then the same job again", "nothing (the Model Registry is back)", again)
    assert_live(stack, again, model, registry_port, tmp_path)


# ---------------------------------------------------------------- the job's own machine


def test_storage_path_fills_up_mid_transfer(stack, toxi, model, tmp_path):
    s3 = toxi.proxy("s3-full", int(stack.minio_endpoint.rsplit(":", 1)[1]))
    toxi.toxic("s3-full", "bandwidth", rate=SLOW)
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    with tmpfs(tmp_path / "small", "200m") as storage:
        env = {**job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=model.prefix),
               "MODEL_SYNC_STORAGE_PATH": str(storage)}
        job = Job(env, tmp_path)
        downloaded(job)
        filler = storage / "someone-elses-file"
        with open(filler, "wb") as f:  # another tenant of the volume takes what is left
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        job.wait()
        record("storage path fills up", "the storage volume filled by another writer mid-download", job)
        assert_failed(stack, job, says="space", within=60)
        assert sorted(p.name for p in storage.iterdir()) == ["someone-elses-file"]
    assert the_artifact(stack, job.name)["state"] == "ABANDONED"


def test_sigterm_mid_transfer(stack, toxi, model, tmp_path):
    s3 = toxi.proxy("s3-term", int(stack.minio_endpoint.rsplit(":", 1)[1]))
    toxi.toxic("s3-term", "bandwidth", rate=SLOW)
    registry_port = int(stack.oci_registry.rsplit(":", 1)[1])
    job = Job(job_env(stack, tmp_path, s3_port=s3, registry_port=registry_port, prefix=model.prefix), tmp_path)
    downloaded(job)
    signalled = time.monotonic()
    job.proc.send_signal(signal.SIGTERM)
    job.wait(timeout=60)
    took = time.monotonic() - signalled
    record("SIGTERM mid-transfer", f"SIGTERM after 4 MiB of the object (exited {took:.1f}s after it)", job)
    assert took < 10, f"{took:.1f}s after SIGTERM\n{job.stderr}"
    assert_failed(stack, job, says="SIGTERM", within=120)
    assert the_artifact(stack, job.name)["state"] == "ABANDONED"
    assert not processes_with(model.prefix), "a child tool outlived the job"


