"""modelcar.py and layer_extract.py without any tool or registry: layer bytes, headers, config, manifest, base images."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from modelsync.errors import TransferError
from modelsync.layer_extract import TreeWriter
from modelsync.modelcar import build_modelcar, layer_headers
from modelsync.oci_layout import OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST, TITLE, Layout
from tests.models import SMALL_FILES, make_model
from tests.oci_helpers import entry, tar_bytes, write_image

WHEN = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def _layers(image) -> dict[str, bytes]:
    layout = Layout(image.layout)
    return {lay.path: layout.blob_path(lay.digest).read_bytes() for lay in image.layers}


def test_same_files_give_same_digests_in_any_creation_order(tmp_path):
    make_model(tmp_path / "a")
    for rel in reversed(list(SMALL_FILES)):  # other creation order -> other directory order on disk
        (tmp_path / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / rel).write_bytes((tmp_path / "a" / rel).read_bytes())
        os.utime(tmp_path / "b" / rel, (1, 1))  # mtimes and atimes must not matter
    one = build_modelcar(tmp_path / "a", tmp_path / "out1", created=WHEN)
    two = build_modelcar(tmp_path / "b", tmp_path / "out2", created=WHEN)
    assert one.manifest_digest == two.manifest_digest
    assert [lay.path for lay in one.layers] == sorted(SMALL_FILES)


def test_source_date_epoch_pins_created(tmp_path, monkeypatch):
    make_model(tmp_path / "m")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764072000")
    one = build_modelcar(tmp_path / "m", tmp_path / "out1")
    two = build_modelcar(tmp_path / "m", tmp_path / "out2")
    assert one.manifest_digest == two.manifest_digest
    assert one.manifest["annotations"]["org.opencontainers.image.created"] == "2025-11-25T12:00:00Z"


def test_layer_tar_headers_are_fixed_and_nested_dirs_kept(tmp_path):
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", created=WHEN)
    blob = _layers(image)["weights/nested/deeper/part-00002.bin"]
    assert blob[:2] != b"\x1f\x8b" and len(blob) % tarfile.RECORDSIZE == 0  # uncompressed, whole records
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["models", "models/weights", "models/weights/nested",
                                             "models/weights/nested/deeper",
                                             "models/weights/nested/deeper/part-00002.bin"]
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
            assert m.mode == (0o755 if m.isdir() else 0o644)
            assert m.pax_headers == {}  # ASCII short names: plain ustar headers, no atime/ctime
        data = tar.extractfile(members[-1]).read()
    assert data == SMALL_FILES["weights/nested/deeper/part-00002.bin"]


def test_empty_file_and_unicode_name_with_spaces(tmp_path):
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", created=WHEN)
    name = "docs/read me ünïcødé ✓.md"
    with tarfile.open(fileobj=io.BytesIO(_layers(image)[name])) as tar:
        member = tar.getmembers()[-1]
        assert member.name == f"models/{name}"
        assert member.pax_headers == {"path": f"models/{name}"}  # UTF-8 name in a pax record, nothing else
    with tarfile.open(fileobj=io.BytesIO(_layers(image)["tokenizer/empty.txt"])) as tar:
        member = tar.getmembers()[-1]
        assert member.size == 0 and member.isreg()
    empty = next(lay for lay in image.layers if lay.path == "tokenizer/empty.txt")
    assert empty.file.sha256 == hashlib.sha256(b"").hexdigest()


def test_size_over_8_gib_goes_in_a_pax_record():
    size = 9 * 1024**3 + 7  # does not fit the 11 octal digits of a ustar size field
    header = b"".join(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict") for info in layer_headers("big.bin", size))
    assert f"size={size}\n".encode() in header and b"atime" not in header and b"ctime" not in header
    with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r|") as tar:
        first, big = tar.next(), tar.next()
    assert first.name == "models"
    assert (big.name, big.size, big.isreg()) == ("models/big.bin", size, True)


def test_config_and_manifest_on_scratch(tmp_path):
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", created=WHEN, source="s3://bucket/model")
    layout = Layout(tmp_path / "out")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert json.loads(layout.read_verified(image.manifest_digest)) == image.manifest
    manifest = image.manifest
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["config"]["mediaType"] == OCI_CONFIG
    assert manifest["annotations"] == {"org.opencontainers.image.created": "2026-11-25T12:00:00Z",
                                       "org.opencontainers.image.source": "s3://bucket/model"}
    for desc, lay in zip(manifest["layers"], image.layers, strict=True):
        assert desc["mediaType"] == OCI_LAYER_TAR and desc["annotations"] == {TITLE: lay.path}
        assert desc["size"] == layout.blob_path(desc["digest"]).stat().st_size
    config = layout.read_json(manifest["config"]["digest"])
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [lay.digest for lay in image.layers]  # uncompressed: diff_id = digest
    assert [h["created_by"] for h in config["history"]][0] == "modelsync: COPY config.json /models/config.json"


@pytest.mark.parametrize("docker", [False, True])
def test_base_image_layers_first_and_media_types_oci(tmp_path, docker):
    base_layer = tar_bytes([entry("bin/", kind=tarfile.DIRTYPE, mode=0o755), entry("bin/sh", b"#!", mode=0o755)])
    write_image(tmp_path / "base", [base_layer], docker=docker)
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", tmp_path / "base", created=WHEN)
    base_digest = "sha256:" + hashlib.sha256(base_layer).hexdigest()
    layers = image.manifest["layers"]
    assert layers[0]["digest"] == base_digest and layers[0]["mediaType"] == OCI_LAYER_TAR
    assert all(lay["mediaType"].startswith("application/vnd.oci.") for lay in layers)
    config = Layout(image.layout).read_json(image.manifest["config"]["digest"])
    assert config["rootfs"]["diff_ids"][0] == base_digest and config["config"]["Cmd"] == ["sh"]
    assert len(config["history"]) == len(layers) and config["created"] == "2026-11-25T12:00:00Z"


def test_platform_is_picked_from_a_multi_arch_index(tmp_path):
    root = tmp_path / "base"
    write_image(root, [tar_bytes([entry("amd", b"1")])], arch="amd64", tag="amd")
    amd = json.loads((root / "index.json").read_text())["manifests"]
    write_image(root, [tar_bytes([entry("arm", b"2")])], arch="arm64", tag="arm")
    arm = json.loads((root / "index.json").read_text())["manifests"]
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": amd + arm}))
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", root, platform="linux/arm64")
    config = Layout(image.layout).read_json(image.manifest["config"]["digest"])
    assert config["architecture"] == "arm64"
    with pytest.raises(TransferError, match="no manifest for platform linux/s390x"):
        build_modelcar(tmp_path / "m", tmp_path / "out3", root, platform="linux/s390x")


def test_gzip_base_layer_type_kept(tmp_path):
    write_image(tmp_path / "base", [b"not really gzip"], layer_type=OCI_LAYER_GZIP)
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", tmp_path / "base")
    assert image.manifest["layers"][0]["mediaType"] == OCI_LAYER_GZIP


def test_symlinks_to_files_are_stored_as_files_and_to_dirs_refused(tmp_path):
    make_model(tmp_path / "m")
    (tmp_path / "m" / "alias.json").symlink_to("config.json")
    image = build_modelcar(tmp_path / "m", tmp_path / "out")
    alias = next(lay for lay in image.layers if lay.path == "alias.json")
    assert alias.file.sha256 == hashlib.sha256(SMALL_FILES["config.json"]).hexdigest()
    (tmp_path / "m" / "linked-dir").symlink_to("weights")
    with pytest.raises(TransferError, match="symlink to a directory"):
        build_modelcar(tmp_path / "m", tmp_path / "out2")


def test_empty_model_dir_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(TransferError, match="no files"):
        build_modelcar(tmp_path / "m", tmp_path / "out")


# ---- extraction (layer_extract.TreeWriter) ----------------------------------------------------------------------


def _apply(tmp_path: Path, *layers: bytes) -> TreeWriter:
    tree = TreeWriter(tmp_path / "dest", "models")
    for i, data in enumerate(layers):
        blob = tmp_path / f"layer{i}"
        blob.write_bytes(data)
        tree.apply(blob, OCI_LAYER_TAR, "sha256:" + hashlib.sha256(data).hexdigest())
    return tree


def test_round_trip_through_extraction(tmp_path):
    digests = make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out")
    tree = _apply(tmp_path, *_layers(image).values())
    assert {e.path: e.sha256 for e in tree.entries()} == digests


@pytest.mark.parametrize("bad", [
    [entry("models/../../evil", b"x")],
    [entry("/models/evil", b"x")],
    [entry("models/a/../../../evil", b"x")],
    [entry("models/link", kind=tarfile.SYMTYPE, link="../../etc/passwd")],
    [entry("models/link", kind=tarfile.SYMTYPE, link="/etc/passwd")],
    [entry("models/hard", kind=tarfile.LNKTYPE, link="etc/passwd")],
    [entry("models/dev", kind=tarfile.CHRTYPE)],
    [entry("models/fifo", kind=tarfile.FIFOTYPE)],
    [entry("models/dir", kind=tarfile.SYMTYPE, link="sub"), entry("models/dir/x", b"through the link")],
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-up", "symlink-abs", "hardlink-out", "chardev", "fifo",
        "write-through-symlink"])
def test_malicious_entries_are_refused(tmp_path, bad):
    with pytest.raises(TransferError, match="refused|outside"):
        _apply(tmp_path, tar_bytes(bad))
    assert not (tmp_path / "evil").exists()


def test_whiteouts_and_links_inside_the_tree(tmp_path):
    lower = tar_bytes([entry("models/keep", b"k"), entry("models/gone", b"g"), entry("models/d/old", b"o"),
                       entry("bin/sh", b"ignored outside models")])
    upper = tar_bytes([entry("models/.wh.gone", b""), entry("models/d/new", b"n"), entry("models/d/.wh..wh..opq", b""),
                       entry("models/alias", kind=tarfile.SYMTYPE, link="/models/keep"),
                       entry("models/copy", kind=tarfile.LNKTYPE, link="models/keep")])
    tree = _apply(tmp_path, lower, upper)
    dest = tmp_path / "dest"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["alias", "copy", "d", "d/new", "keep"]
    assert os.readlink(dest / "alias") == "keep" and (dest / "copy").read_bytes() == b"k"
    assert [e.path for e in tree.entries()] == ["alias", "copy", "d/new", "keep"]


def test_layer_digest_mismatch_is_refused(tmp_path):
    blob = tmp_path / "layer"
    blob.write_bytes(tar_bytes([entry("models/a", b"a")]))
    with pytest.raises(TransferError, match="does not match its digest"):
        TreeWriter(tmp_path / "dest", "models").apply(blob, OCI_LAYER_TAR, "sha256:" + "0" * 64)
