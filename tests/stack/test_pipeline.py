"""S3 -> OCI through the pipeline (modelsync/pipeline.py) on the real stack: the same manifest digest as
fetch-then-publish, scratch bounded by --max-in-flight-bytes, a failing push abandons and cleans up, SIGTERM stops
everything within seconds; and the parts without a stack (stream layers, sizes, the aws CLI memory cap)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from modelsync import config, job, modelcar_layers, pipeline, tools
from modelsync.clients.aws import cli_env, cli_flags
from modelsync.errors import ModelSyncError, TransferError
from modelsync.files import disk_bytes
from modelsync.oci_layout import Layout
from modelsync.settings import parse_size

from ..support.cli import start_and_wait_for_pending
from ..support.jobs import children_of, job_env, nth_call, read_back, s3loc, sampled, upload, wrapped_tool
from ..support.model_registry import mr_get, the_artifact
from ..support.models import make_model, raw_weights, write_big

MIB = 1 << 20
PIPELINE_LOGGERS = {f"modelsync.{n}" for n in ("pipeline", "resync", "s3_download", "layer_push", "modelcar_push")}


# ---- without a stack ----------------------------------------------------------------------------------------------


def test_layer_parts_with_the_files_put_in_are_byte_for_byte_the_file_layer(tmp_path):
    """What the pipeline feeds oras (headers and padding around each file's bytes) is the layer write_layer writes."""
    data = {"a/b/weights.bin": raw_weights(9 * MIB + 123), "x" * 120 + "/long ünï.bin": raw_weights(700),  # longname
            "a/c.json": b"{}", "empty": b""}
    for rel, content in data.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(content)
    out = Layout(tmp_path / "out")
    out.init()
    for group in (["a/b/weights.bin"], ["x" * 120 + "/long ünï.bin"], sorted(data)):
        layer = modelcar_layers.write_layer([(rel, tmp_path / "src" / rel) for rel in group], out, "t")
        parts = modelcar_layers.layer_parts([(rel, len(data[rel])) for rel in group])
        assert [p for p in parts if isinstance(p, str)] == sorted(group)
        joined = b"".join(data[p] if isinstance(p, str) else p for p in parts)
        assert joined == out.blob_path(layer.digest).read_bytes()
        assert len(joined) == layer.size == modelcar_layers.layer_tar_size([(rel, len(data[rel])) for rel in group])


def test_sizes():
    assert parse_size("512Mi") == 512 * MIB and parse_size("2Gi") == 2 << 30 and parse_size("4G") == 4 * 10**9
    assert parse_size("1048576") == MIB and parse_size("1.5Ki") == 1536 and parse_size("64MiB") == 64 * MIB
    for bad in ("", "lots", "-1", "2Xi", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)



def test_storage_needed_is_the_largest_layer_of_files():
    files = {"big/a.bin": 100 * MIB, "big/b.bin": 64 * MIB, "config.json": 10, "tok/t.json": 5 * MIB}
    assert pipeline.storage_needed(None, files, None) == 100 * MIB
    many = {f"{i:03d}.bin": MIB for i in range(200)}  # packed: a layer holds many files
    groups = modelcar_layers.plan_layers(sorted(many.items()))
    assert pipeline.storage_needed(None, many, None) == max(len(g) for g in groups) * MIB > MIB


def test_the_aws_plugin_sets_transfer_defaults_the_cli_cannot():
    """In a fresh interpreter, as the aws child loads it: one submission at a time (files' ranges queued in order),
    2 MiB chunks in a short I/O queue; values passed explicitly still win."""
    from modelsync.clients.aws import PLUGIN_DIR
    code = ("import modelsync_no_expect as p\n"
            "class Cli:\n    def register(self, *a): pass\n"
            "p.awscli_initialize(Cli())\n"
            "from s3transfer.manager import TransferConfig as T\n"
            "c, e = T(), T(max_submission_concurrency=3)\n"
            "print(c.max_submission_concurrency, c.max_io_queue_size, c.io_chunksize, e.max_submission_concurrency)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "4", str(2 << 20), "3"]
    code += "\nprint(T().max_request_concurrency, T(max_request_concurrency=4).max_request_concurrency)"
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "MODELSYNC_AWS_MAX_REQUESTS": "6"}  # what the pipeline sets
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["6", "4"]


def test_a_file_changed_in_a_directory_being_pushed_is_named(tmp_path):
    """dir_to_modelcar's files are there already (no download): a file that changed since the listing is one line
    naming the directory and the file, not an error about a download that never was."""
    from modelsync.layer_push import LayerPusher
    from modelsync.locations import OciLocation
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.bin").write_bytes(b"abc")
    (tmp_path / "job").mkdir()
    run = LayerPusher({"a.bin": 5}, OciLocation("127.0.0.1:9/r:t", tls_verify=False), None, None, tmp_path / "job",
                      landed=tmp_path / "model")
    with pytest.raises(TransferError, match=rf"{tmp_path / 'model'}: a.bin is 3 bytes, 5 listed"):
        run._await("a.bin")
    with pytest.raises(TransferError, match=rf"{tmp_path / 'model'} is incomplete: b.bin is missing"):
        run._await("b.bin")


# ---- on the stack -------------------------------------------------------------------------------------------------

@pytest.mark.stack
def test_pipeline_gives_the_manifest_of_fetch_then_publish(stack, tmp_path, base_image, monkeypatch, caplog):
    """A big file and small ones: the same digest as the old path, LIVE, bytes read back."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # pins `created`: the whole image is reproducible
    model_dir = tmp_path / "model"
    expected = make_model(model_dir, big_bytes=70 * MIB)
    prefix = upload(stack, model_dir)

    env, name = job_env(stack, tmp_path, prefix, base_image, "new")
    with caplog.at_level(logging.INFO, logger="modelsync.pipeline"):
        streamed = job.run(config.load([], env))
    assert any(r.name == "modelsync.pipeline" and "to download" in r.getMessage() for r in caplog.records)
    assert the_artifact(stack, name)["state"] == "LIVE"
    assert {f.path: f.sha256 for f in streamed.files} == expected
    assert read_back(streamed, "oci", stack, tmp_path) == expected

    monkeypatch.setattr(job, "PIPELINES", ())  # fetch-then-publish, as before the pipeline
    caplog.clear()
    env, _ = job_env(stack, tmp_path, prefix, base_image, "old")
    env["MODEL_SYNC_DESTINATION_OCI_BACKEND"] = "skopeo"  # build_modelcar's layout: none of the pipeline's code
    with caplog.at_level(logging.INFO, logger="modelsync"):
        fetched = job.run(config.load([], env))
    assert not any(r.name in PIPELINE_LOGGERS for r in caplog.records)
    assert fetched.digest == streamed.digest
    assert fetched.files == streamed.files


def run_sampling_scratch(env: dict[str, str], caplog) -> tuple[object, int]:
    """job.run, the pipeline's download directory measured every 5 ms (disk blocks: the download writes ranges
    out of order); the published result and the peak."""
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    with sampled(lambda: sum(disk_bytes(p) for p in storage.glob(".modelsync-*/work/pipeline-*/download"))) as peak, \
            caplog.at_level(logging.DEBUG, logger="modelsync"):  # the pipeline's modules: PIPELINE_LOGGERS
        published = job.run(config.load([], env))
    return published, peak[0]


def capped_sync(stack, tmp_path: Path, base_image, monkeypatch, caplog, count: int, size: int, cap: str):
    """A model of count shards of size bytes synced S3 -> OCI with --max-in-flight-bytes cap: the shards' sha256,
    the model's name, the result and the peak of the download directory."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir = tmp_path / "model"
    expected = {f"shard-{i}.bin": write_big(model_dir / f"shard-{i}.bin", size) for i in range(count)}
    env, name = job_env(stack, tmp_path, upload(stack, model_dir), base_image, "cap")
    env["MODEL_SYNC_MAX_IN_FLIGHT_BYTES"] = cap
    published, peak = run_sampling_scratch(env, caplog)
    return expected, name, published, peak


@pytest.mark.stack
def test_scratch_stays_under_the_in_flight_cap(stack, tmp_path, base_image, monkeypatch, caplog):
    """A file starts downloading only when it fits beside what is on disk under the cap; pushes free room."""
    cap = 150 * MIB  # two 64 MiB files and a little, not three
    expected, name, published, peak = capped_sync(stack, tmp_path, base_image, monkeypatch, caplog, 6, 64 * MIB,
                                                   "150Mi")
    assert {f.path: f.sha256 for f in published.files} == expected
    assert 64 * MIB < peak <= cap, f"peak scratch {peak / MIB:.1f} MiB"
    assert any("the download waits for the push" in r.getMessage() for r in caplog.records)
    assert the_artifact(stack, name)["state"] == "LIVE"


@pytest.mark.stack
def test_a_layer_larger_than_the_cap_goes_through_alone(stack, tmp_path, base_image, monkeypatch, caplog):
    """The download never waits while the next layer lacks a file and nothing is being pushed (no deadlock)."""
    expected, name, published, peak = capped_sync(stack, tmp_path, base_image, monkeypatch, caplog, 3, 48 * MIB,
                                                   "20Mi")
    assert {f.path: f.sha256 for f in published.files} == expected
    assert any("is over --max-in-flight-bytes" in r.getMessage() for r in caplog.records)
    assert 48 * MIB <= peak < 3 * 48 * MIB, f"peak scratch {peak / MIB:.1f} MiB"
    assert the_artifact(stack, name)["state"] == "LIVE"


def fake_oras(tmp_path: Path, fail_at: int) -> Path:
    """A directory holding an `oras` that runs the real one, except that its blob push number fail_at fails."""
    return wrapped_tool(tmp_path, "oras", nth_call('[ "$1 $2" = "blob push" ]', tmp_path / "blob-pushes", fail_at,
                                                   'echo "Error: simulated: the registry refused blob $c" >&2; exit 1'))


@pytest.mark.stack
def test_a_failing_push_midway_abandons_and_leaves_nothing(stack, tmp_path, base_image, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir = tmp_path / "model"
    for i in range(4):
        write_big(model_dir / f"shard-{i}.bin", 64 * MIB)
    prefix = upload(stack, model_dir)
    env, name = job_env(stack, tmp_path, prefix, base_image, "fail")
    # blob push 1 is busybox's layer, 2 the first shard: the third push fails with the pipeline in full flow
    monkeypatch.setenv("PATH", f"{fake_oras(tmp_path, 3)}:{os.environ['PATH']}")
    before = set(children_of(os.getpid()))  # the stack's servers, when this session started them
    with pytest.raises(ModelSyncError, match="simulated: the registry refused blob 3"):
        job.run(config.load([], env))
    art = the_artifact(stack, name)
    assert art["state"] == "ABANDONED"
    assert "simulated" in art["customProperties"]["modelsync.error"]["string_value"]
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    assert not any(storage.iterdir()), list(storage.iterdir())
    left = sorted(set(children_of(os.getpid())) - before)
    assert left == [], f"child tools still running: {left}"


@pytest.mark.stack
def test_too_small_storage_path_names_what_the_pipeline_needs(stack, tmp_path, base_image, monkeypatch):
    import collections

    from modelsync import files
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    model_dir = tmp_path / "model"
    make_model(model_dir)
    prefix = upload(stack, model_dir)
    env, name = job_env(stack, tmp_path, prefix, base_image, "space")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10 << 20, 10 << 20, 1024))
    with pytest.raises(ModelSyncError, match=r"has 1.0 KiB free but the pipeline's largest layer in flight needs"):
        job.run(config.load([], env))
    with pytest.raises(urllib.error.HTTPError):  # nothing registered: the refusal came before the claim
        mr_get(stack, f"registered_model?name={name}")


@pytest.mark.stack
@pytest.mark.slow
def test_sigterm_stops_the_pipeline_within_seconds(stack, tmp_path, base_image):
    model_dir = tmp_path / "model"
    for i in range(4):
        write_big(model_dir / f"shard-{i}.bin", 256 * MIB)
    prefix = upload(stack, model_dir)
    env, name = job_env(stack, tmp_path, prefix, base_image, "term")
    proc, mv = start_and_wait_for_pending(stack, env, name, tmp_path)
    time.sleep(1.5)  # into the transfer: a download and a push under way
    assert proc.poll() is None, "the transfer finished before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, f"took {time.monotonic() - sent:.1f}s to stop"
    assert proc.returncode == 1, err
    assert "stopped by SIGTERM" in err
    assert the_artifact(stack, name)["state"] == "ABANDONED"
    assert not list(Path(env["MODEL_SYNC_STORAGE_PATH"]).glob(".modelsync-*"))
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes of the job's session still running: {leftovers}"


@pytest.mark.stack
def test_aws_download_memory_is_capped_by_the_plugin(stack, tmp_path):
    """`aws s3 cp … -` into a consumer slower than the network: s3transfer's I/O queue would grow to ~250 MiB;
    the plugin caps it (4 chunks of 2 MiB) so the aws process stays near 110-145 MiB (VmHWM, its peak RSS)."""
    model_dir = tmp_path / "model"
    write_big(model_dir / "big.bin", 256 * MIB)
    prefix = upload(stack, model_dir)
    loc = s3loc(stack, f"{prefix}/big.bin")
    group = tools.Group()
    child = group.spawn("aws", ["s3", "cp", loc.url, "-", *cli_flags(loc)], env=cli_env(loc), stream=True)
    try:
        got, peak = 0, 0
        while data := child.stdout.read(1 << 20):
            if (got + len(data)) >> 20 > got >> 20:
                time.sleep(0.004)  # ~250 MB/s at most: slower than loopback MinIO
                peak = max(peak, _vm_hwm(child.proc.pid))
            got += len(data)
        child.wait(60)
    finally:
        group.finish(child)
    assert got == 256 * MIB
    assert 0 < peak < 170 * MIB, f"aws peak RSS {peak / MIB:.0f} MiB"


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
