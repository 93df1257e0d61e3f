"""The OCI source reads a ModelPack artifact in either naming: the CNCF one (modelpack.py, what modelsync writes)
and the legacy CNAI one modctl v0.1.1 builds (`application/vnd.cnai.model.<role>.v1.raw|tar`,
`org.cnai.model.filepath`): a raw layer is written at its filepath, a tar layer is unpacked, from a layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelsync.locations import OciLocation
from modelsync.oci_layout import TITLE, Layout
from modelsync.sources import oci
from tests.support.oci_helpers import entry, tar_bytes

FILES = {"config.json": b'{"a": 1}\n', "weights/model.safetensors": b"\x02" * 5000, "docs/READ ME.md": b"# m\n",
         "run.py": b"print(1)\n"}


def artifact(root: Path, naming: str, raw: bool) -> tuple[Layout, dict]:
    """A modctl-like manifest over FILES (one layer per file) written into a layout; the manifest."""
    layout = Layout(root)
    layout.init()
    layers = []
    for rel, data in FILES.items():
        role = {"config.json": "weight.config", "run.py": "code", "docs/READ ME.md": "doc"}.get(rel, "weight")
        blob = data if raw else tar_bytes([entry(rel, data)])
        layers.append(layout.add_bytes(blob, f"application/vnd.{naming}.model.{role}.v1.{'raw' if raw else 'tar'}",
                                       {f"org.{naming}.model.filepath": rel}))
    config = layout.add_bytes(b'{"modelfs": {}}', f"application/vnd.{naming}.model.config.v1+json")
    return layout, {"schemaVersion": 2, "artifactType": f"application/vnd.{naming}.model.manifest.v1+json",
                    "config": config, "layers": layers}


@pytest.mark.parametrize("naming", ["cnai", "cncf"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "tar"])
def test_a_modelpack_artifact_is_read_in_either_naming(tmp_path, naming, raw):
    layout, manifest = artifact(tmp_path / "layout", naming, raw)
    out = tmp_path / "out"
    files = oci._place_artifact(manifest, out, OciLocation("r.example/m:v1"), oci._from_layout(layout))
    assert {f.path: f.sha256 for f in files} == {rel: hashlib.sha256(d).hexdigest() for rel, d in FILES.items()}
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == FILES


def test_the_filepath_annotation_wins_over_the_title_and_is_checked(tmp_path):
    layout = Layout(tmp_path / "layout")
    layout.init()
    layer = layout.add_bytes(b"x", "application/vnd.cnai.model.weight.v1.raw",
                             {oci.CNAI_FILEPATH: "a/b.bin", TITLE: "b.bin"})
    manifest = {"config": {"mediaType": "application/vnd.cnai.model.config.v1+json"}, "layers": [layer]}
    files = oci._place_artifact(manifest, tmp_path / "out", OciLocation("r.example/m:v1"), oci._from_layout(layout))
    assert [f.path for f in files] == ["a/b.bin"]
    bad = layout.add_bytes(b"y", "application/vnd.cnai.model.weight.v1.raw", {oci.CNAI_FILEPATH: "../escape"})
    with pytest.raises(Exception, match="escape|\\.\\."):
        oci._place_artifact({"layers": [bad]}, tmp_path / "out2", OciLocation("r.example/m:v1"),
                            oci._from_layout(layout))
