"""Re-syncing S3 -> OCI (resync.reusable_layers): an unchanged model downloads nothing and ends with the same
digest; a changed object re-downloads its layer only; a blob gone from the registry is pushed again; a record whose
ETag no longer matches is not trusted. Every run: the digest a full sync of the same bytes gives."""

from __future__ import annotations

import json
import os
import stat
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelsync import config, job, modelcar, tools
from modelsync.clients import aws
from modelsync.locations import Origin
from modelsync.oci_layout import OCI_MANIFEST

from ..support.jobs import job_env, s3loc, upload
from ..support.model_registry import the_artifact
from ..support.models import make_model

MIB = 1 << 20
BIG = "big/model.safetensors"


@pytest.fixture
def synced(stack, tmp_path, base_image, monkeypatch):
    """A model in S3 synced once to a fresh tag; returns a helper to sync it again to the same tag."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # pins `created`: equal bytes give equal digests
    model_dir = tmp_path / "model"
    expected = make_model(model_dir, big_bytes=70 * MIB)
    prefix = upload(stack, model_dir)
    ref = f"{stack.oci_registry}/resync/{uuid.uuid4().hex[:8]}:v1"
    log = tmp_path / "aws-calls"
    bin_dir = counting_aws(tmp_path, log)

    def sync(label: str, *, pipeline: bool = True, target: str = ref):
        env, name = job_env(stack, tmp_path, prefix, base_image, label)
        env["MODEL_SYNC_DESTINATION_OCI_URI"] = target
        log.write_text("")
        with monkeypatch.context() as m:
            m.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
            if not pipeline:
                m.setattr(job, "PIPELINES", ())
            published = job.run(config.load([], env))
        assert the_artifact(stack, name)["state"] == "LIVE"
        return published, [line.split() for line in log.read_text().splitlines()]

    first, calls = sync("first")
    assert calls, "the first sync downloads"
    assert {f.path: f.sha256 for f in first.files} == expected
    return {"sync": sync, "first": first, "prefix": prefix, "ref": ref, "expected": expected, "stack": stack}


def counting_aws(tmp_path: Path, log: Path) -> Path:
    """A directory holding an `aws` that logs its arguments (one line a process) and runs the real one."""
    real = tools.which("aws")
    bin_dir = tmp_path / "counting-bin"
    bin_dir.mkdir()
    script = bin_dir / "aws"
    script.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\nexec '{real}' \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def registry_url(stack, ref: str, kind: str, what: str) -> str:
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    return f"http://{stack.oci_registry}/v2/{repo}/{kind}/{what}"


def manifest_of(stack, ref: str) -> dict:
    req = urllib.request.Request(registry_url(stack, ref, "manifests", ref.rsplit(":", 1)[1]),
                                 headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def model_layer(manifest: dict, path: str) -> dict:
    (layer,) = [lay for lay in manifest["layers"] if lay.get("annotations", {}).get(modelcar.TITLE) == path]
    return layer


def downloads(calls: list[list[str]]) -> list[str]:
    """What each aws process fetched: the URL, or the files named by --include."""
    assert all(call[:2] == ["s3", "cp"] for call in calls), calls
    return [" ".join(c for c in call[2:] if not c.startswith("-")) for call in calls]


@pytest.mark.stack
def test_unchanged_resync_downloads_nothing(synced):
    stack, first = synced["stack"], synced["first"]
    manifest = manifest_of(stack, synced["ref"])
    record = json.loads(model_layer(manifest, BIG)["annotations"][modelcar.SOURCE_RECORD])
    assert [(r["path"], r["size"], r["sha256"]) for r in record] == [(BIG, 70 * MIB, synced["expected"][BIG])]
    assert record[0]["url"].endswith(f"/{synced['prefix']}/{BIG}") and record[0]["etag"]

    again, calls = synced["sync"]("again")
    assert calls == [], f"an unchanged re-sync ran aws: {calls}"
    assert again.digest == first.digest
    assert again.files == first.files


@pytest.mark.stack
def test_a_changed_object_is_downloaded_again_alone(synced):
    stack, first = synced["stack"], synced["first"]
    loc = s3loc(stack, synced["prefix"])
    aws.client(loc).put_object(Bucket=stack.minio_bucket, Key=f"{synced['prefix']}/config.json",
                               Body=b'{"architectures": ["Tiny"], "hidden": 16}\n')  # same path, new bytes
    again, calls = synced["sync"]("changed")
    assert len(calls) == 1 and "config.json" in downloads(calls)[0] and BIG not in downloads(calls)[0], calls
    assert again.digest != first.digest
    changed = {f.path: f.sha256 for f in again.files}
    assert changed.pop("config.json") != synced["expected"].pop("config.json")
    assert changed == synced["expected"]
    # what a full sync of the same bytes gives (fetch-then-publish, a new tag: nothing to reuse)
    fresh_ref = f"{stack.oci_registry}/resync/{uuid.uuid4().hex[:8]}:v1"
    full, calls = synced["sync"]("full", pipeline=False, target=fresh_ref)
    assert len(calls) == 1 and "--recursive" in calls[0]
    assert full.digest == again.digest and full.files == again.files


@pytest.mark.stack
def test_a_blob_gone_from_the_registry_is_pushed_again(synced):
    stack, first = synced["stack"], synced["first"]
    digest = model_layer(manifest_of(stack, synced["ref"]), BIG)["digest"]
    url = registry_url(stack, synced["ref"], "blobs", digest)
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as resp:
        assert resp.status == 202
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)

    again, calls = synced["sync"]("deleted")
    assert [BIG in d for d in downloads(calls)] == [True], calls  # that layer only, from S3 again
    assert again.digest == first.digest and again.files == first.files
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as resp:
        assert int(resp.headers["Content-Length"]) == model_layer(manifest_of(stack, synced["ref"]), BIG)["size"]


@pytest.mark.stack
def test_a_record_with_another_etag_is_not_trusted(synced):
    """The tag's manifest rewritten so that config.json's record names another ETag (the object changed since,
    as far as the record can tell): that layer is downloaded; the others are reused."""
    stack, first = synced["stack"], synced["first"]
    manifest = manifest_of(stack, synced["ref"])
    layer = model_layer(manifest, "config.json")
    record = json.loads(layer["annotations"][modelcar.SOURCE_RECORD])
    record[0]["etag"] = "0" * 32
    layer["annotations"][modelcar.SOURCE_RECORD] = json.dumps(record)
    req = urllib.request.Request(registry_url(stack, synced["ref"], "manifests", synced["ref"].rsplit(":", 1)[1]),
                                 data=json.dumps(manifest).encode(), method="PUT",
                                 headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201

    again, calls = synced["sync"]("forged")
    assert len(calls) == 1 and "config.json" in downloads(calls)[0], calls
    assert again.digest == first.digest and again.files == first.files  # the record is written right again


def test_source_record_is_deterministic_and_bounded():
    from modelsync.locations import FileEntry
    files = (FileEntry("a.bin", 3, "0" * 64), FileEntry("b/c.bin", 5, "1" * 64))
    origins = {"a.bin": Origin("s3://b/p/a.bin", "e1"), "b/c.bin": Origin("s3://b/p/b/c.bin", "e2")}
    text = modelcar.source_record(files, origins)
    assert text == modelcar.source_record(files, dict(reversed(origins.items())))
    assert json.loads(text) == [{"etag": "e1", "path": "a.bin", "sha256": "0" * 64, "size": 3, "url": "s3://b/p/a.bin"},
                                {"etag": "e2", "path": "b/c.bin", "sha256": "1" * 64, "size": 5,
                                 "url": "s3://b/p/b/c.bin"}]
    assert modelcar.source_record(files, {"a.bin": origins["a.bin"]}) is None  # a file of unknown origin: none
    many = tuple(FileEntry(f"f{i:05d}", 1, "0" * 64) for i in range(400))
    assert modelcar.source_record(many, {f.path: Origin(f"s3://b/{f.path}", "e") for f in many}) is None
