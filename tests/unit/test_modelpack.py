"""--destination-oci-format modelpack / hybrid without a registry: roles, media types, the ModelPack config and
manifest checked against the spec's rules (written here from modelpack/model-spec docs/spec.md and
schema/config-schema.json), the hybrid index as olot 1.2.1 shapes it, determinism, and the setting."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from modelsync import config, modelpack
from modelsync.locations import FileEntry, Origin
from modelsync.modelcar import CONTENT_DIGEST, SOURCE_RECORD, build_modelcar
from modelsync.modelcar_layers import ModelcarLayer
from modelsync.oci_layout import OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, TITLE, Layout

WHEN = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CREATED = "2026-11-25T12:00:00Z"
FILES = {"config.json": b'{"a": 1}', "model.safetensors": b"\x01" * 3000, "README.md": b"# m\n",
         "tokenizer.model": b"tok", "modeling.py": b"print(1)\n", "sub/vocab.txt": b"a\nb\n",
         "notes": b"unknown small file", "LICENSE": b"MIT"}


def write(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def raw_layers(files: dict[str, bytes]) -> list[ModelcarLayer]:
    sizes = {rel: len(data) for rel, data in files.items()}
    out = []
    for (rel,) in modelpack.plan_raw(sizes):
        sha = hashlib.sha256(files[rel]).hexdigest()
        out.append(ModelcarLayer(rel, "sha256:" + sha, sizes[rel], (FileEntry(rel, sizes[rel], sha),)))
    return out


# ---- the spec's rules, by hand ------------------------------------------------------------------------------------

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DESCRIPTOR_KEYS = {"createdAt", "authors", "family", "name", "docURL", "sourceURL", "datasetsURL", "version",
                   "revision", "vendor", "licenses", "title", "description"}
CONFIG_KEYS = {"architecture", "format", "paramSize", "precision", "quantization", "capabilities"}


def check_model_config(doc: dict[str, Any]) -> None:
    """schema/config-schema.json: required descriptor, config, modelfs; no other keys; modelfs type 'layers' and
    at least one diffId; descriptor and config keys from the schema's lists, createdAt a date-time."""
    assert set(doc) == {"descriptor", "config", "modelfs"}
    assert set(doc["descriptor"]) <= DESCRIPTOR_KEYS and set(doc["config"]) <= CONFIG_KEYS
    if "createdAt" in doc["descriptor"]:
        assert RFC3339.match(doc["descriptor"]["createdAt"])
    assert set(doc["modelfs"]) == {"type", "diffIds"} and doc["modelfs"]["type"] == "layers"
    assert doc["modelfs"]["diffIds"] and all(isinstance(d, str) and DIGEST.match(d) for d in doc["modelfs"]["diffIds"])


def check_manifest(doc: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """docs/spec.md: an OCI image manifest, artifactType and config type fixed, layers of the listed types; the
    config's diffIds are the (uncompressed) layers' digests in order."""
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_MANIFEST
    assert doc["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert doc["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    cfg = layout.read_json(doc["config"]["digest"])
    assert len(layout.read_verified(doc["config"]["digest"])) == doc["config"]["size"]
    check_model_config(cfg)
    allowed = {f"application/vnd.cncf.model.{kind}.v1.{form}" for kind in ("weight", "weight.config", "doc", "code",
                                                                          "dataset") for form in ("raw", "tar")}
    assert doc["layers"] and all(layer["mediaType"] in allowed for layer in doc["layers"])
    assert all(DIGEST.match(layer["digest"]) for layer in doc["layers"])
    assert cfg["modelfs"]["diffIds"] == [layer["digest"] for layer in doc["layers"]]
    return cfg


# ---- roles --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "size", "role"), [
    ("config.json", 10, "config"), ("generation_config.json", 10, "config"), ("tokenizer.model", 10, "config"),
    ("sub/vocab.txt", 10, "config"), ("merges.txt", 10, "config"), ("chat_template.jinja", 9, "config"),
    ("model.safetensors", 10, "weight"), ("pytorch_model.bin", 10, "weight"), ("x.gguf", 1, "weight"),
    ("model-00001-of-00002.safetensors", 1, "weight"), ("tensor0_1", 1, "weight"), ("m.onnx_data", 1, "weight"),
    ("modeling.py", 10, "code"), ("requirements.txt", 10, "code"), ("Makefile", 10, "code"), ("lib.so", 1, "code"),
    ("README.md", 10, "doc"), ("LICENSE", 10, "doc"), ("notes.txt", 10, "doc"), ("img.PNG", 10, "doc"),
    ("notes", 10, "code"), ("blob", 200_000_000, "weight"), ("blob", 128_000_000, "code"),
])
def test_roles_follow_modctl(path, size, role):
    """modctl's InferFileType: config, then weight, code, doc patterns on the lower-cased base name, first match
    wins (requirements.txt: code's requirements*.txt before doc's *.txt); unknown: weight above 128 MB, else
    code."""
    assert modelpack.file_role(path, size) == role


def test_raw_plan_is_modctls_order():
    sizes = {rel: len(data) for rel, data in FILES.items()}
    planned = [group[0] for group in modelpack.plan_raw(sizes)]
    assert planned == ["config.json", "sub/vocab.txt", "tokenizer.model", "model.safetensors", "modeling.py",
                       "notes", "LICENSE", "README.md"]


def test_media_types_are_the_specs():
    assert modelpack.media_type("weight", True) == "application/vnd.cncf.model.weight.v1.raw"
    assert modelpack.media_type("config", True) == "application/vnd.cncf.model.weight.config.v1.raw"
    assert modelpack.media_type("doc", False) == "application/vnd.cncf.model.doc.v1.tar"
    assert modelpack.media_type("dataset", True) == "application/vnd.cncf.model.dataset.v1.raw"
    assert len(modelpack.MEDIA_TYPES) == 10 and len(modelpack.RAW_TYPES) == 5


# ---- the ModelPack artifact ---------------------------------------------------------------------------------------


def build_pack(root: Path, files: dict[str, bytes] = FILES, **kw: Any):
    out = Layout(root)
    out.init()
    return out, modelpack.finish_modelpack(out, "t", raw_layers(files), CREATED, "s3://b/m", **kw)


def test_modelpack_manifest_and_config_follow_the_spec(tmp_path):
    out, image = build_pack(tmp_path / "a")
    doc = out.read_json(image.manifest_digest)
    assert doc == image.manifest
    cfg = check_manifest(doc, out)
    assert cfg["descriptor"] == {"createdAt": CREATED, "sourceURL": "s3://b/m"} and cfg["config"] == {}
    assert doc["annotations"]["org.opencontainers.image.created"] == CREATED
    for layer in doc["layers"]:
        path = layer["annotations"][modelpack.FILEPATH]
        data = FILES[path]
        assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()  # the blob IS the file
        assert layer["size"] == len(data) and layer["mediaType"].endswith(".raw")
        assert layer["mediaType"] == modelpack.media_type(modelpack.file_role(path, len(data)), True)
        assert layer["annotations"][TITLE] == path
        meta = json.loads(layer["annotations"][modelpack.FILE_METADATA])
        assert meta == {"name": path.rsplit("/", 1)[-1], "mode": 0o644, "uid": 0, "gid": 0, "size": len(data),
                        "mtime": CREATED, "typeflag": 0}
    assert json.loads((tmp_path / "a" / "index.json").read_text())["manifests"][0]["digest"] == image.manifest_digest


def test_modelpack_is_deterministic_and_carries_source_records(tmp_path):
    origins = {rel: Origin(url=f"s3://b/m/{rel}", etag=f'"{i}"') for i, rel in enumerate(FILES)}
    _, one = build_pack(tmp_path / "a", origins=origins)
    _, two = build_pack(tmp_path / "b", origins=origins)
    assert one.manifest_digest == two.manifest_digest
    assert all(SOURCE_RECORD in layer["annotations"] for layer in one.manifest["layers"])
    _, other = build_pack(tmp_path / "c", {**FILES, "README.md": b"changed"})
    assert other.manifest_digest != one.manifest_digest


def test_modelpack_signature_is_a_last_raw_layer(tmp_path):
    sig = b'{"signature": 1}'
    sha = hashlib.sha256(sig).hexdigest()
    layer = ModelcarLayer("model.sig", "sha256:" + sha, len(sig), (FileEntry("model.sig", len(sig), sha),))
    out, image = build_pack(tmp_path / "a", signature=layer)
    last = image.manifest["layers"][-1]
    assert last["digest"] == "sha256:" + sha and last["annotations"][modelpack.FILEPATH] == "model.sig"
    check_manifest(image.manifest, out)


# ---- the hybrid index ---------------------------------------------------------------------------------------------


def test_hybrid_is_one_index_of_the_modelcar_and_a_modelpack_manifest_over_its_blobs(tmp_path):
    car = build_modelcar(write(tmp_path / "m"), tmp_path / "out", created=WHEN)
    out = Layout(car.layout)
    image = modelpack.finish_hybrid(out, "t", car, "linux/amd64", CREATED, None)
    index = out.read_json(image.manifest_digest)
    assert image.media_type == OCI_INDEX and index["mediaType"] == OCI_INDEX and index == image.manifest
    car_entry, pack_entry = index["manifests"]
    assert car_entry["digest"] == car.manifest_digest and car_entry["platform"] == {"architecture": "amd64",
                                                                                     "os": "linux"}
    assert car_entry["size"] == len(out.read_verified(car.manifest_digest))
    assert pack_entry["platform"] == {"architecture": "unknown", "os": "unknown"}  # as olot 1.2.1 writes it
    assert pack_entry["annotations"]["io.opendatahub.modelcar.manifest.type"] == "modelpack"
    assert pack_entry["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    pack = out.read_json(pack_entry["digest"])
    check_manifest(pack, out)
    model_layers = [d for d in car.manifest["layers"] if d["annotations"].get(CONTENT_DIGEST) or
                    d["annotations"].get("olot.layer.content.type")]
    assert [(d["digest"], d["size"]) for d in pack["layers"]] == [(d["digest"], d["size"]) for d in model_layers]
    assert all(d["mediaType"] == OCI_LAYER_TAR for d in model_layers)
    for layer, car_layer in zip(pack["layers"], car.layers, strict=True):
        assert layer["mediaType"].endswith(".tar")
        if len(car_layer.files) == 1:
            only = car_layer.files[0]
            assert layer["annotations"][modelpack.FILEPATH] == f"models/{only.path}"
            assert layer["mediaType"] == modelpack.media_type(modelpack.file_role(only.path, only.size), False)
    assert [d for d, _ in image.manifests] == [car.manifest_digest, pack_entry["digest"]]
    again = build_modelcar(write(tmp_path / "m2"), tmp_path / "out2", created=WHEN)
    assert modelpack.finish_hybrid(Layout(again.layout), "t", again, "linux/amd64", CREATED,
                                   None).manifest_digest == image.manifest_digest


# ---- the setting --------------------------------------------------------------------------------------------------


def oci_env(**extra: str) -> dict[str, str]:
    return {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": "/tmp", "MODEL_SYNC_DESTINATION_TYPE": "oci",
            "MODEL_SYNC_DESTINATION_OCI_URI": "registry.example/m:v1", **extra}


def format_problems(env: dict[str, str]) -> list[str]:
    cfg, problems = config.resolve([], env)
    return [p for p in problems + config.validate(cfg) if "destination-oci-format" in p]


def test_the_format_setting_defaults_to_modelcar_and_names_itself_when_wrong():
    cfg, _ = config.resolve([], oci_env())
    assert cfg.values["destination_oci_format"] == "modelcar"
    cfg, _ = config.resolve(["--destination-oci-format", "Hybrid"], oci_env())
    assert cfg.values["destination_oci_format"] == "hybrid"
    assert not format_problems(oci_env(MODEL_SYNC_DESTINATION_OCI_FORMAT="modelpack"))
    (bad,) = format_problems(oci_env(MODEL_SYNC_DESTINATION_OCI_FORMAT="tarball"))
    assert "MODEL_SYNC_DESTINATION_OCI_FORMAT" in bad and "modelcar, modelpack, hybrid" in bad and "\n" not in bad


@pytest.mark.parametrize("oci_format", ["modelpack", "hybrid"])
def test_modelpack_and_hybrid_refuse_the_skopeo_backend_in_one_line(oci_format):
    (bad,) = format_problems(oci_env(MODEL_SYNC_DESTINATION_OCI_FORMAT=oci_format,
                                     MODEL_SYNC_DESTINATION_OCI_BACKEND="skopeo"))
    assert bad.startswith("--destination-oci-format / MODEL_SYNC_DESTINATION_OCI_FORMAT: ")
    assert "oras" in bad and "\n" not in bad
    assert not format_problems(oci_env(MODEL_SYNC_DESTINATION_OCI_BACKEND="skopeo"))  # modelcar: as before
