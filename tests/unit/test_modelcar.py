"""modelcar.py, modelcar_layers.py and layer_extract.py without any tool or registry: layer bytes, headers,
config, manifest, base images."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from modelsync.errors import TransferError
from modelsync.layer_extract import TreeWriter
from modelsync.modelcar import build_modelcar
from modelsync.modelcar_layers import (
    LARGE_FILE_BYTES,
    MAX_IMAGE_LAYERS,
    MODEL_LAYER_BUDGET,
    PACK_TITLE,
    check_layer_count,
    layer_members,
    layer_titles,
    plan_layers,
    tar_header,
)
from modelsync.oci_layout import OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST, TITLE, Layout
from tests.support.models import SMALL_FILES, make_model
from tests.support.oci_helpers import entry, tar_bytes, write_image

WHEN = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def _layers(image) -> dict[str, bytes]:
    layout = Layout(image.layout)
    return {lay.title: layout.blob_path(lay.digest).read_bytes() for lay in image.layers}


def test_same_files_give_same_digests_in_any_creation_order(tmp_path):
    make_model(tmp_path / "a")
    for rel in reversed(list(SMALL_FILES)):  # other creation order -> other directory order on disk
        (tmp_path / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / rel).write_bytes((tmp_path / "a" / rel).read_bytes())
        os.utime(tmp_path / "b" / rel, (1, 1))  # mtimes and atimes must not matter
    one = build_modelcar(tmp_path / "a", tmp_path / "out1", created=WHEN)
    two = build_modelcar(tmp_path / "b", tmp_path / "out2", created=WHEN)
    assert one.manifest_digest == two.manifest_digest
    assert [lay.title for lay in one.layers] == sorted(SMALL_FILES)  # few files: one layer each


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
    assert blob[:2] != b"\x1f\x8b"  # uncompressed
    # it ends at its end-of-archive marker (two zero blocks after the last member's data), with no record padding
    # after it: a streaming reader that stops there (Go's archive/tar) has read the whole blob
    last = tarfile.open(fileobj=io.BytesIO(blob)).getmembers()[-1]
    assert len(blob) == last.offset_data + last.size + (-last.size % tarfile.BLOCKSIZE) + 2 * tarfile.BLOCKSIZE
    assert blob[-2 * tarfile.BLOCKSIZE:] == bytes(2 * tarfile.BLOCKSIZE)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["models", "models/weights", "models/weights/nested",
                                             "models/weights/nested/deeper",
                                             "models/weights/nested/deeper/part-00002.bin"]
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
            assert m.mode == (0o755 if m.isdir() else 0o644)
            assert m.pax_headers == {}  # GNU headers: never a pax record (no atime/ctime)
        data = tar.extractfile(members[-1]).read()
    assert data == SMALL_FILES["weights/nested/deeper/part-00002.bin"]


def test_empty_file_and_unicode_name_with_spaces(tmp_path):
    make_model(tmp_path / "m")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", created=WHEN)
    name = "docs/read me ünïcødé ✓.md"
    with tarfile.open(fileobj=io.BytesIO(_layers(image)[name])) as tar:
        member = tar.getmembers()[-1]
        assert member.name == f"models/{name}"
        assert member.pax_headers == {}  # the UTF-8 bytes in the GNU header's name field, no pax record
    with tarfile.open(fileobj=io.BytesIO(_layers(image)["tokenizer/empty.txt"])) as tar:
        member = tar.getmembers()[-1]
        assert member.size == 0 and member.isreg()
    empty = next(lay for lay in image.layers if lay.title == "tokenizer/empty.txt")
    assert empty.files[0].sha256 == hashlib.sha256(b"").hexdigest()


def test_header_of_a_sparse_file_over_8_gib_is_gnu_base_256(tmp_path):
    sparse = tmp_path / "big.bin"
    with open(sparse, "wb") as f:
        f.truncate(9 * 2**30 + 7)  # a hole: no byte written
    size = sparse.stat().st_size
    members = layer_members([("big.bin", size)])
    assert [m.name for m in members] == ["models", "models/big.bin"]
    header = tar_header(members[-1])
    assert len(header) == tarfile.BLOCKSIZE  # one plain header: no pax record, no longname entry
    assert header[257:265] == b"ustar  \0"  # GNU magic
    assert header[124] == 0x80 and int.from_bytes(header[125:136], "big") == size  # base-256 size field
    assert tarfile.TarInfo.frombuf(header, "utf-8", "strict").size == size
    # the layer as the builder lays it out, its data left a hole: Python's tarfile and GNU tar read the right size
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as f:
        f.write(b"".join(tar_header(m) for m in members))
        f.truncate(f.tell() + size + (-size % tarfile.BLOCKSIZE) + 2 * tarfile.BLOCKSIZE)
    with tarfile.open(layer) as tar:
        big = tar.getmember("models/big.bin")
        assert (big.size, big.isreg(), big.pax_headers) == (size, True, {})
    listing = subprocess.run(["tar", "-tvf", str(layer)], check=True, capture_output=True, text=True).stdout
    assert f" {size} " in listing and "models/big.bin" in listing


def test_long_and_unicode_names_round_trip_through_tarfile_and_gnu_tar(tmp_path):
    long_name = "deep/" + "d" * 60 + "/" + "ü" * 40 + "-shard.safetensors"  # > 100 bytes: a GNU longname entry
    make_model(tmp_path / "m")
    (tmp_path / "m" / long_name).parent.mkdir(parents=True)
    (tmp_path / "m" / long_name).write_bytes(b"long")
    image = build_modelcar(tmp_path / "m", tmp_path / "out", created=WHEN)
    blob = _layers(image)[long_name]
    assert b"././@LongLink" in blob and b"PaxHeader" not in blob
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getnames()[-1] == f"models/{long_name}" and tar.getmembers()[-1].pax_headers == {}
    for name in (long_name, "docs/read me ünïcødé ✓.md"):
        path = tmp_path / "layer.tar"
        path.write_bytes(_layers(image)[name])
        listed = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True,
                                env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout.decode()
        assert listed.splitlines()[-1] == f"models/{name}"
    assert build_modelcar(tmp_path / "m", tmp_path / "out2", created=WHEN).manifest_digest == image.manifest_digest


# ---- which files share a layer (plan_layers) --------------------------------------------------------------------


def _flat(groups) -> list[str]:
    return [path for group in groups for path in group]


def test_few_files_get_a_layer_each():
    listing = [("config.json", 100), ("model.safetensors", 5 * 2**30), ("tokenizer.json", 2_000_000)]
    assert plan_layers(listing) == [("config.json",), ("model.safetensors",), ("tokenizer.json",)]


def test_ten_thousand_small_files_fit_the_budget():
    listing = [(f"shards/{i:05d}.bin", (i * 7919) % 5_000_000) for i in range(10_000)]
    groups = plan_layers(listing)
    assert len(groups) <= MODEL_LAYER_BUDGET
    assert _flat(groups) == sorted(path for path, _ in listing)  # each file once, packed in path order


def test_five_hundred_files_of_one_gib_fit_the_budget():
    listing = [(f"w/{i:03d}.safetensors", 2**30) for i in range(500)]
    groups = plan_layers(listing)
    assert len(groups) <= MODEL_LAYER_BUDGET
    assert sorted(_flat(groups)) == sorted(path for path, _ in listing)


def test_large_files_keep_their_own_layer_and_small_ones_are_packed():
    big = [(f"model-{i:05d}-of-00040.safetensors", 4 * 2**30 + i) for i in range(40)]
    small = [(f"tokenizer/{i:04d}.json", 1000 + i) for i in range(300)]
    groups = plan_layers(small + big)
    assert len(groups) <= MODEL_LAYER_BUDGET
    assert [(path,) for path, _ in big] == [g for g in groups if g[0].startswith("model-")]
    assert [g for g in groups if g[0].startswith("tokenizer/")] == [tuple(path for path, _ in small)]


def test_only_large_files_over_budget_raise_the_threshold():
    listing = [(f"{i:03d}.bin", LARGE_FILE_BYTES * (1 + i % 3)) for i in range(90)]
    groups = plan_layers(listing)
    assert len(groups) <= MODEL_LAYER_BUDGET
    # 90 layers of their own do not fit: the threshold doubles to 2 * LARGE_FILE_BYTES, and the smallest third share
    alone = sorted(g[0] for g in groups if len(g) == 1)
    assert alone == sorted(path for path, size in listing if size >= 2 * LARGE_FILE_BYTES)


def test_plan_is_deterministic_and_ignores_listing_order():
    listing = [(f"d{i % 7}/f{i:04d}", (i * 104729) % (200 << 20)) for i in range(2000)]
    first = plan_layers(listing)
    assert plan_layers(list(reversed(listing))) == first == plan_layers(listing)
    with pytest.raises(ValueError, match="twice"):
        plan_layers(listing + listing[:1])


def test_changed_small_file_keeps_the_big_files_layers(tmp_path):
    # the plan: 120 small files and 3 large ones; one small file grows
    listing = [(f"small/{i:03d}.txt", 10_000 + i) for i in range(120)] + [(f"big-{i}.bin", 3 * 2**30) for i in range(3)]
    changed = [(p, s * 50 if p == "small/007.txt" else s) for p, s in listing]
    singles = lambda groups: [g for g in groups if len(g) == 1]  # noqa: E731
    assert singles(plan_layers(listing)) == singles(plan_layers(changed)) == [(f"big-{i}.bin",) for i in range(3)]
    # real layers: two large (sparse) files among more files than the budget keep their digests
    model = tmp_path / "m"
    for i in range(MODEL_LAYER_BUDGET + 10):
        (model / "small").mkdir(parents=True, exist_ok=True)
        (model / "small" / f"{i:03d}.txt").write_text(f"file {i}\n")
    for name in ("big-a.bin", "big-b.bin"):
        with open(model / name, "wb") as f:
            f.truncate(LARGE_FILE_BYTES)
    before = build_modelcar(model, tmp_path / "out1", created=WHEN)
    (model / "small" / "007.txt").write_text("changed\n")
    after = build_modelcar(model, tmp_path / "out2", created=WHEN)
    big = lambda image: {lay.title: lay.digest for lay in image.layers if lay.title.startswith("big-")}  # noqa: E731
    assert big(before) == big(after) and len(big(before)) == 2
    assert len(before.layers) == 3 and before.manifest_digest != after.manifest_digest


def test_shared_layer_tar_title_history_and_extraction(tmp_path):
    model = tmp_path / "m"
    expected = {}
    for i in range(150):
        rel = f"sub{i % 3}/deeper/f{i:03d}.txt"
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_text(f"content {i}\n")
        expected[rel] = hashlib.sha256(f"content {i}\n".encode()).hexdigest()
    image = build_modelcar(model, tmp_path / "out", created=WHEN)
    assert len(image.layers) == 1 and image.layers[0].title == PACK_TITLE.format(index=1)
    assert {f.path: f.sha256 for f in image.files} == expected and len(image.files) == 150
    assert image.manifest["layers"][0]["annotations"] == {  # olot marks a tarball of many files a directory
        TITLE: PACK_TITLE.format(index=1), "olot.layer.content.type": "directory",
        "olot.layer.content.inlayerpath": "/models/", "olot.layer.content.name": PACK_TITLE.format(index=1)}
    with tarfile.open(fileobj=io.BytesIO(_layers(image)[image.layers[0].title])) as tar:
        names = tar.getnames()
    dirs = ["models"] + [f"models/sub{i}{d}" for i in range(3) for d in ("", "/deeper")]
    assert names == dirs + [f"models/{p}" for p in sorted(expected)]  # dirs once, then the files in path order
    config = Layout(image.layout).read_json(image.manifest["config"]["digest"])
    created_by = config["history"][-1]["created_by"]
    assert created_by.startswith("modelsync: COPY 150 files /models/: sub0/deeper/f000.txt, sub0/deeper/f003.txt")
    assert created_by.endswith("more)") and len(created_by) < 600
    tree = _apply(tmp_path, *_layers(image).values())
    assert {e.path: e.sha256 for e in tree.entries()} == expected


def test_shared_layer_titles_never_clash_with_model_paths():
    groups = [("a", "b"), ("modelcar-layer-002.tar/x", "modelcar-layer-002.tar/y"), ("z",)]
    assert layer_titles(groups) == ["modelcar-layer-001.tar", "_modelcar-layer-002.tar", "z"]


def test_layer_count_over_the_limit_is_refused(tmp_path):
    check_layer_count(1, MAX_IMAGE_LAYERS - 1)
    with pytest.raises(TransferError, match=rf"^the modelcar would have {MAX_IMAGE_LAYERS + 1} layers "
                                            rf"\(1 base \+ {MAX_IMAGE_LAYERS} model\), over the limit of "
                                            rf"{MAX_IMAGE_LAYERS}"):
        check_layer_count(1, MAX_IMAGE_LAYERS)
    # a base that leaves no room: refused before any model byte is copied
    write_image(tmp_path / "base", [tar_bytes([entry(f"l{i}", b"x")]) for i in range(MAX_IMAGE_LAYERS)])
    make_model(tmp_path / "m")
    with pytest.raises(TransferError, match=f"{MAX_IMAGE_LAYERS + 1} layers"):
        build_modelcar(tmp_path / "m", tmp_path / "out", tmp_path / "base")


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
        (rel,) = [f.path for f in lay.files]
        sha = hashlib.sha256((tmp_path / "m" / rel).read_bytes()).hexdigest()
        # olot's content keys, so rh-model-signing and olot-aware tools find the file without pulling the layer
        assert desc["mediaType"] == OCI_LAYER_TAR and desc["annotations"] == {
            TITLE: lay.title, "olot.layer.content.digest": f"sha256:{sha}", "olot.layer.content.type": "file",
            "olot.layer.content.inlayerpath": f"/models/{rel}", "olot.layer.content.name": rel.rsplit("/", 1)[-1]}
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
    alias = next(f for f in image.files if f.path == "alias.json")
    assert alias.sha256 == hashlib.sha256(SMALL_FILES["config.json"]).hexdigest()
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
