"""Re-syncing S3 -> OCI (resync.reusable_layers): an unchanged model downloads nothing and ends with the same
digest; a changed object re-downloads its layer only; a blob gone from the registry is pushed again; a record whose
ETag no longer matches is not trusted. Every run: the digest a full sync of the same bytes gives."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest

from modelsync import config, job, modelcar, resync
from modelsync.clients import aws
from modelsync.locations import Origin
from modelsync.oci_layout import OCI_MANIFEST

from ..support.jobs import counting_aws, job_env, s3loc, spy_gets, upload
from ..support.model_registry import mr_get, the_artifact
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

    names: list[str] = []

    def sync(label: str, *, pipeline: bool = True, target: str = ref, version: str = "1.0.0",
             extra: dict[str, str] | None = None):
        env, name = job_env(stack, tmp_path, prefix, base_image, label)
        env["MODEL_SYNC_DESTINATION_OCI_URI"] = target
        env["MODEL_SYNC_SCAN"] = "off"  # reuse alone; with the pickle check: test_the_pickle_check_reads_...
        env.update(extra or {})
        names.append(name)
        log.write_text("")
        with monkeypatch.context() as m:
            m.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
            gets = spy_gets(m)
            if not pipeline:
                m.setattr(job, "PIPELINES", ())
            published = job.run(config.load([], env))
        owner = names[0] if "MODEL_SYNC_MODEL_ID" in (extra or {}) else name  # create_version: the first's model
        assert the_artifact(stack, owner, version)["state"] == "LIVE"
        return published, gets, [line.split() for line in log.read_text().splitlines()]

    first, gets, calls = sync("first")
    assert gets and not calls, "the first sync downloads, with its own GETs"
    assert {f.path: f.sha256 for f in first.files} == expected
    return {"sync": sync, "first": first, "prefix": prefix, "ref": ref, "expected": expected, "stack": stack,
            "name": names[0], "tmp": tmp_path}


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


@pytest.mark.stack
def test_unchanged_resync_downloads_nothing(synced):
    stack, first = synced["stack"], synced["first"]
    manifest = manifest_of(stack, synced["ref"])
    record = json.loads(model_layer(manifest, BIG)["annotations"][modelcar.SOURCE_RECORD])
    assert [(r["path"], r["size"], r["sha256"]) for r in record] == [(BIG, 70 * MIB, synced["expected"][BIG])]
    assert record[0]["url"].endswith(f"/{synced['prefix']}/{BIG}") and record[0]["etag"]

    again, gets, calls = synced["sync"]("again")
    assert gets == calls == [], f"an unchanged re-sync downloaded: {gets} {calls}"
    assert again.digest == first.digest
    assert again.files == first.files


@pytest.mark.stack
def test_a_new_tag_of_the_same_repository_reuses_every_layer(synced):
    """Not the same tag: the repository's other tags are read (resync.MAX_TAGS), their layers reused."""
    again, gets, calls = synced["sync"]("new-tag", target=synced["ref"].rsplit(":", 1)[0] + ":v2")
    assert gets == calls == [], f"a new tag of an unchanged model downloaded: {gets} {calls}"
    assert again.digest == synced["first"].digest and again.files == synced["first"].files


@pytest.mark.stack
def test_the_pickle_check_reads_again_what_it_cannot_trust_unread(synced):
    """With the pickle check on (the default), a layer holding a file it must read (weights/*.bin, not
    .safetensors or .json) is downloaded and checked whatever an earlier image recorded (that image may have been
    made with --scan off); the big .safetensors layer is reused. Same digest."""
    again, gets, calls = synced["sync"]("scanned", extra={"MODEL_SYNC_SCAN": "refuse"})
    assert not calls and {"weights/part-00001.bin", "weights/nested/deeper/part-00002.bin"} <= set(gets), gets
    assert BIG not in gets, gets
    assert again.digest == synced["first"].digest and again.files == synced["first"].files


@pytest.mark.stack
def test_a_new_version_reuses_the_image_the_model_registry_names(synced, monkeypatch):
    """create_version of the synced model to a new tag, with the repository's tags not read (MAX_TAGS 0): only the
    Model Registry's answer (the model's latest LIVE version's artifact URI) can name the earlier image, and every
    layer is reused from it. Then one object changed: only its layer is downloaded."""
    stack = synced["stack"]
    monkeypatch.setattr(resync, "MAX_TAGS", 0)
    model_id = mr_get(stack, f"registered_model?name={synced['name']}")["id"]
    repo = synced["ref"].rsplit(":", 1)[0]

    def version(number: str, tag: str) -> tuple:
        meta = synced["tmp"] / f"meta-{number}"
        meta.mkdir()
        (meta / "ModelVersion.name").write_text(number)
        return synced["sync"](f"v{number}", target=f"{repo}:{tag}", version=number, extra={
            "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_version", "MODEL_SYNC_MODEL_ID": model_id,
            "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta)})

    second, gets, calls = version("2.0.0", "v2")
    assert gets == calls == [], f"a new version of an unchanged model downloaded: {gets} {calls}"
    assert second.digest == synced["first"].digest
    loc = s3loc(stack, synced["prefix"])
    aws.client(loc).put_object(Bucket=stack.minio_bucket, Key=f"{synced['prefix']}/config.json",
                               Body=b'{"architectures": ["Tiny"], "hidden": 32}\n')
    third, gets, calls = version("3.0.0", "v3")
    assert not calls and "config.json" in gets and BIG not in gets, gets
    assert third.digest != second.digest


@pytest.mark.stack
def test_a_changed_object_is_downloaded_again_alone(synced):
    stack, first = synced["stack"], synced["first"]
    loc = s3loc(stack, synced["prefix"])
    aws.client(loc).put_object(Bucket=stack.minio_bucket, Key=f"{synced['prefix']}/config.json",
                               Body=b'{"architectures": ["Tiny"], "hidden": 16}\n')  # same path, new bytes
    again, gets, calls = synced["sync"]("changed")
    assert not calls and "config.json" in gets and BIG not in gets, gets
    assert again.digest != first.digest
    changed = {f.path: f.sha256 for f in again.files}
    assert changed.pop("config.json") != synced["expected"].pop("config.json")
    assert changed == synced["expected"]
    # what a full sync of the same bytes gives (fetch-then-publish, a new tag: nothing to reuse)
    fresh_ref = f"{stack.oci_registry}/resync/{uuid.uuid4().hex[:8]}:v1"
    full, gets, calls = synced["sync"]("full", pipeline=False, target=fresh_ref)
    assert not gets and len(calls) == 1 and "--recursive" in calls[0]  # fetch-then-publish: one aws
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

    again, gets, calls = synced["sync"]("deleted")
    assert gets == [BIG] and not calls, gets  # that layer only, from S3 again
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

    again, gets, calls = synced["sync"]("forged")
    assert not calls and "config.json" in gets and BIG not in gets, gets
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
