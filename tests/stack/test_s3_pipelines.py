"""OCI -> S3 and S3 -> S3 through their pipelines (modelsync/oci_s3_pipeline.py, s3_s3_pipeline.py) on the real stack:
the objects are fetch-then-publish's (keys, bytes, ETags, content types, metadata), scratch stays bounded while
they run, and a destination refusing an upload midway leaves the artifact ABANDONED, nothing LIVE, no scratch and
no child tool behind."""

from __future__ import annotations

import logging
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from modelsync import config, job, tools
from modelsync.errors import ModelSyncError
from modelsync.files import disk_bytes
from modelsync.locations import OciLocation
from modelsync.oci_copy import push_layout

from ..support.jobs import (
    base_env,
    children_of,
    destination_env,
    nth_call,
    read_back,
    s3_env,
    s3loc,
    sampled,
    source_env,
    upload,
    wrapped_tool,
)
from ..support.model_registry import the_artifact
from ..support.models import make_model, raw_weights, write_big
from ..support.oci_helpers import busybox_layer, entry, tar_bytes, write_image

pytestmark = pytest.mark.stack
MIB = 1 << 20


@pytest.fixture(autouse=True)
def no_cluster(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))


def objects(stack, published) -> dict[str, dict[str, object]]:
    """What the prefix holds: relative key -> size, ETag, content type and user metadata keys."""
    key = published.uri.split("/", 3)[3] + "/"
    loc = s3loc(stack, key)
    from modelsync.clients import aws
    client = aws.client(loc)
    out = {}
    for obj in aws.list_objects(loc, key):
        head = client.head_object(Bucket=loc.bucket, Key=obj["Key"])
        out[obj["Key"][len(key):]] = {"size": obj["Size"], "etag": obj["ETag"], "type": head.get("ContentType"),
                                      "metadata": sorted(head.get("Metadata", {}))}
    return out


def run_sampling(env: dict[str, str], caplog) -> tuple[object, int]:
    """job.run, the job's work directory measured every 5 ms (disk blocks): the result and the peak."""
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    with sampled(lambda: sum(disk_bytes(p) for p in storage.glob(".modelsync-*/work"))) as peak, \
            caplog.at_level(logging.DEBUG, logger="modelsync"):
        published = job.run(config.load([], env))
    return published, peak[0]


def both_ways(stack, tmp_path, monkeypatch, caplog, source: dict[str, str], label: str,
              extra: dict[str, str] | None = None):
    """The same source to two new prefixes: through the pipeline (scratch sampled), then fetch-then-publish."""
    runs = []
    for way in ("pipe", "old"):
        run_dir = tmp_path / f"{label}-{way}"
        run_dir.mkdir()
        name = f"{label}-{way}-{uuid.uuid4().hex[:6]}"
        env = {**base_env(stack, run_dir, name), **source,
               **destination_env("s3", stack, run_dir, None), **(extra or {})}
        if way == "old":
            monkeypatch.setattr(job, "PIPELINES", ())
        caplog.clear()
        published, peak = run_sampling(env, caplog)
        piped = any(r.name.endswith("s3_pipeline") for r in caplog.records)
        assert piped == (way == "pipe"), [r.getMessage() for r in caplog.records if "pipeline" in r.name]
        assert the_artifact(stack, name)["state"] == "LIVE"
        runs.append((published, peak))
    return runs


def test_oci_to_s3_gives_the_objects_of_fetch_then_publish(stack, tmp_path, base_image, monkeypatch, caplog):
    """A modelcar (a big file, small ones, a unicode name, an empty file): the same objects either way; scratch
    stays under 2 x the largest file + 64 MiB while the pipeline runs."""
    model_dir = tmp_path / "model"
    expected = make_model(model_dir, big_bytes=48 * MIB)
    for i in range(3):
        expected[f"shards/shard-{i}.bin"] = write_big(model_dir / f"shards/shard-{i}.bin", 40 * MIB)
    source = source_env("oci", stack, tmp_path, model_dir, None, base_image)
    (piped, peak), (fetched, _) = both_ways(stack, tmp_path, monkeypatch, caplog, source, "ocis3")
    assert piped.files == fetched.files
    assert {f.path: f.sha256 for f in piped.files} == expected
    assert objects(stack, piped) == objects(stack, fetched)
    (tmp_path / "rb").mkdir()
    assert read_back(piped, "s3", stack, tmp_path / "rb") == expected
    assert 40 * MIB < peak <= 2 * 48 * MIB + 64 * MIB, f"peak scratch {peak / MIB:.1f} MiB"


def _tricky_image(stack, tmp_path: Path) -> dict[str, str]:
    """An image whose later layers remove, replace and link files of earlier ones, pushed to the plain registry;
    its source settings."""
    a, big = raw_weights(3 * MIB), raw_weights(12 * MIB)
    layers = [busybox_layer(),
              tar_bytes([entry("models/", kind=tarfile.DIRTYPE, mode=0o755), entry("models/a.bin", a),
                         entry("models/b.txt", b"old text\n"), entry("models/dir/", kind=tarfile.DIRTYPE),
                         entry("models/dir/c.json", b'{"c": 1}\n'), entry("models/gone.bin", b"whited out")]),
              tar_bytes([entry("models/big.bin", big)]),  # waits (cap) until every file before it is up
              tar_bytes([entry("models/.wh.gone.bin", b""), entry("models/b.txt", b"new text\n"),
                         entry("models/hard.bin", kind=tarfile.LNKTYPE, link="models/a.bin"),
                         entry("models/link.json", kind=tarfile.SYMTYPE, link="dir/c.json"),
                         entry("models/dir/abs.txt", kind=tarfile.SYMTYPE, link="/models/b.txt")])]
    write_image(tmp_path / "tricky", layers)
    ref = f"{stack.oci_registry}/tricky/{uuid.uuid4().hex[:8]}:v1"
    push_layout(tmp_path / "tricky", "latest", OciLocation(ref, tls_verify=False), "v1", tmp_path / "w", "oras")
    return {"MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": ref,
            "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false"}


def test_oci_to_s3_whiteouts_replacements_and_links_as_fetch_then_publish(stack, tmp_path, monkeypatch, caplog):
    """With a cap below one file every file is up (and emptied) before the next is written: a hard link to an
    uploaded file is copied from its object, a whited-out one is removed from the prefix, a replaced one ends with
    the new bytes, symlinks carry the bytes of what they lead to."""
    source = _tricky_image(stack, tmp_path)
    (piped, _), (fetched, _) = both_ways(stack, tmp_path, monkeypatch, caplog, source, "tricky",
                                         {"MODEL_SYNC_MAX_IN_FLIGHT_BYTES": "1Mi"})
    assert piped.files == fetched.files
    got = objects(stack, piped)
    assert got == objects(stack, fetched)
    assert sorted(got) == ["a.bin", "b.txt", "big.bin", "dir/abs.txt", "dir/c.json", "hard.bin", "link.json"]
    out = tmp_path / "rb"
    out.mkdir()
    back = read_back(piped, "s3", stack, out)
    assert back["hard.bin"] == back["a.bin"] and back["link.json"] == back["dir/c.json"]
    assert back["dir/abs.txt"] == back["b.txt"] == {f.path: f.sha256 for f in piped.files}["b.txt"]


def test_oci_artifact_to_s3_as_fetch_then_publish(stack, tmp_path, monkeypatch, caplog):
    """An ORAS artifact (a file a layer, a directory packed by oras): the same objects either way."""
    files = tmp_path / "artifact"
    make_model(files)
    ref = f"{stack.oci_registry}/artifact/{uuid.uuid4().hex[:8]}:v1"
    tools.run("oras", ["push", "--plain-http", ref, "config.json", "weights"], cwd=str(files))
    source = {"MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": ref,
              "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false"}
    (piped, _), (fetched, _) = both_ways(stack, tmp_path, monkeypatch, caplog, source, "artifact")
    assert piped.files == fetched.files and len(piped.files) > 2
    assert objects(stack, piped) == objects(stack, fetched)


def test_s3_to_s3_gives_the_objects_of_fetch_then_publish(stack, tmp_path, monkeypatch, caplog):
    model_dir = tmp_path / "model"
    expected = make_model(model_dir, big_bytes=48 * MIB)
    for i in range(3):
        expected[f"shards/shard-{i}.bin"] = write_big(model_dir / f"shards/shard-{i}.bin", 40 * MIB)
    source = s3_env(stack, upload(stack, model_dir))
    (piped, peak), (fetched, _) = both_ways(stack, tmp_path, monkeypatch, caplog, source, "s3s3")
    assert piped.files == fetched.files
    assert {f.path: f.sha256 for f in piped.files} == expected
    assert objects(stack, piped) == objects(stack, fetched)
    assert 40 * MIB < peak <= 2 * 48 * MIB + 64 * MIB, f"peak scratch {peak / MIB:.1f} MiB"


def to_s3(stack, tmp_path: Path, base_image, kind: str, model_dir: Path, label: str,
          max_in_flight: str) -> tuple[dict[str, str], str]:
    """The env of a job from model_dir, put in the stack's registry (kind oci) or S3 (kind s3), to the stack's S3
    with --max-in-flight-bytes, and its model's name."""
    source = (source_env("oci", stack, tmp_path, model_dir, None, base_image) if kind == "oci"
              else s3_env(stack, upload(stack, model_dir)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    name = f"{label}-{kind}-{uuid.uuid4().hex[:6]}"
    return {**base_env(stack, run_dir, name), **source, **destination_env("s3", stack, run_dir, None),
            "MODEL_SYNC_MAX_IN_FLIGHT_BYTES": max_in_flight}, name


@pytest.mark.parametrize("kind,cap", [("oci", 80), ("s3", 128)])
def test_scratch_stays_under_the_in_flight_cap(stack, tmp_path, base_image, caplog, kind, cap):
    """Six 32 MiB files with --max-in-flight-bytes: the download waits for the upload. The image's files are
    counted before each is written (80 MiB: never three at once); an S3 file starts downloading only once it fits
    beside the files on disk, partial ones and the upload's batch (s3_download.py)."""
    model_dir = tmp_path / "model"
    expected = {f"shard-{i}.bin": write_big(model_dir / f"shard-{i}.bin", 32 * MIB) for i in range(6)}
    env, name = to_s3(stack, tmp_path, base_image, kind, model_dir, "cap", f"{cap}Mi")
    published, peak = run_sampling(env, caplog)
    assert {f.path: f.sha256 for f in published.files} == expected
    assert 32 * MIB < peak <= cap * MIB, f"peak scratch {peak / MIB:.1f} MiB"
    waited = "the download waits for the upload" if kind == "oci" else "the download waits for the push"
    assert any(waited in r.getMessage() for r in caplog.records)
    assert the_artifact(stack, name)["state"] == "LIVE"


def refusing_aws(tmp_path: Path, fail_at: int) -> Path:
    """A directory holding an `aws` that runs the real one, except that its upload number fail_at (an `s3 cp` of a
    local directory to s3://) fails as a refusing destination would."""
    return wrapped_tool(tmp_path, "aws", nth_call('case "$3 $4" in /*" s3://"*) true;; *) false;; esac',
                                                  tmp_path / "uploads", fail_at,
                                                  'echo "upload failed: (AccessDenied) simulated refusal" >&2; exit 1'))


@pytest.mark.parametrize("kind", ["oci", "s3"])
def test_a_refused_upload_midway_abandons_and_leaves_nothing(stack, tmp_path, base_image, monkeypatch, kind):
    model_dir = tmp_path / "model"
    for i in range(4):
        write_big(model_dir / f"shard-{i}.bin", 24 * MIB)
    # 40 MiB: one file a batch, so the second upload fails midway
    env, name = to_s3(stack, tmp_path, base_image, kind, model_dir, "refused", "40Mi")
    monkeypatch.setenv("PATH", f"{refusing_aws(tmp_path, 2)}:{os.environ['PATH']}")
    before = set(children_of(os.getpid()))
    with pytest.raises(ModelSyncError, match="simulated refusal"):
        job.run(config.load([], env))
    art = the_artifact(stack, name)
    assert art["state"] == "ABANDONED"
    assert "simulated refusal" in art["customProperties"]["modelsync.error"]["string_value"]
    assert not any(Path(env["MODEL_SYNC_STORAGE_PATH"]).iterdir())
    assert sorted(set(children_of(os.getpid())) - before) == [], "child tools still running"
