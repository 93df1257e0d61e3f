"""olot (PyPI olot==$OLOT_VERSION, e2e/versions.env) as the reference for the hybrid index: what olot writes when it
layers a model's files on a base image with `--add-modelpack` (olot/basics.py `oci_layers_on_top(...,
add_modelpack=True)`), parsed, so a test compares modelsync's hybrid output with it.

olot runs from a virtual environment of its own, $MODELSYNC_CACHE/olot-$OLOT_VERSION (default
~/.cache/modelsync/olot-…, made by `e2e/install-tools.sh olot`): its pinned pydantic and click must not move the
project's. `olot_cli()` is None when it is not installed (tests: skip locally, fail under CI=true).

What olot 1.2.1 needs and does (read in its sources, checked by tests/stack/test_reference_tools.py):
- the base must be a multi-arch layout (index.json -> an image index -> image manifests): on a single-manifest
  layout `add_modelpack` raises "Can't add a ModelPack manifest to a single-arch oci-layout". `hybrid()` wraps a
  single-manifest base (what tests/support/oci_helpers.busybox_layout writes) in an image index first
  (`as_image_index`), as a multi-arch base image pulled with skopeo --all would be.
- it edits the layout in place (so `hybrid()` works on a copy): one uncompressed tar layer per model file
  (GNU tar, name `models/<path under root_dir>`, uid/gid 0, mode 0664, the file's mtime), the modelcard (`-m`) as
  a tar+gzip layer; appends them to every image manifest (rewriting its config's diff_ids and history) and adds one
  ModelPack manifest over the same layer blobs to the image index *and* to index.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.stack import pinned_versions

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
TIMEOUT = 300


class OlotError(RuntimeError):
    pass


def olot_venv() -> Path:
    cache = Path(os.environ.get("MODELSYNC_CACHE") or Path.home() / ".cache" / "modelsync")
    return cache / f"olot-{pinned_versions()['OLOT_VERSION']}"


def olot_cli() -> Path | None:
    """The pinned olot's CLI, or None when `e2e/install-tools.sh olot` has not made its virtual environment."""
    cli = olot_venv() / "bin" / "olot"
    return cli if cli.is_file() and os.access(cli, os.X_OK) else None


def _blob(root: Path, digest: str) -> bytes:
    data = (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} does not match its digest"
    return data


def _add_blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def as_image_index(layout: Path) -> None:
    """Rewrite a layout whose index.json names image manifests directly so that it names one image index holding
    them (platform kept, ref name moved to the index's entry); a layout that already has an index is left alone."""
    top = json.loads((layout / "index.json").read_text())
    if any(m.get("mediaType") == OCI_INDEX for m in top["manifests"]):
        return
    refs = {m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in top["manifests"]} - {None}
    entries = []
    for m in top["manifests"]:
        entry = {k: v for k, v in m.items() if k != "annotations"}
        entry.setdefault("platform", {"architecture": "amd64", "os": "linux"})
        entries.append(entry)
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    desc: dict[str, Any] = {"mediaType": OCI_INDEX, "digest": _add_blob(layout, data), "size": len(data)}
    if refs:
        desc["annotations"] = {"org.opencontainers.image.ref.name": sorted(refs)[0]}
    top["manifests"] = [desc]
    (layout / "index.json").write_text(json.dumps(top))


@dataclass
class OlotLayout:
    """An OCI layout olot wrote, parsed: index.json, the image index(es) it names, every manifest and config."""

    root: Path
    top: dict[str, Any]  # index.json
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> image index
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> manifest
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> config

    def blob(self, digest: str) -> bytes:
        return _blob(self.root, digest)

    @property
    def modelpack(self) -> tuple[str, dict[str, Any]]:
        """(digest, manifest) of the ModelPack manifest (artifactType application/vnd.cncf.model.manifest.v1+json)."""
        (found,) = [(d, m) for d, m in self.manifests.items() if m.get("artifactType") == MODELPACK_ARTIFACT]
        return found

    @property
    def modelcars(self) -> dict[str, dict[str, Any]]:
        """The image manifests (the modelcar, one per platform of the base)."""
        return {d: m for d, m in self.manifests.items() if m.get("artifactType") != MODELPACK_ARTIFACT}


def read_layout(root: Path) -> OlotLayout:
    out = OlotLayout(root, json.loads((root / "index.json").read_text()))
    todo = list(out.top["manifests"])
    while todo:
        desc = todo.pop(0)
        doc = json.loads(_blob(root, desc["digest"]))
        if desc["mediaType"] == OCI_INDEX:
            out.indexes[desc["digest"]] = doc
            todo.extend(doc["manifests"])
        elif desc["digest"] not in out.manifests:
            out.manifests[desc["digest"]] = doc
            out.configs[doc["config"]["digest"]] = json.loads(_blob(root, doc["config"]["digest"]))
    return out


def hybrid(model_dir: Path, base_layout: Path, out: Path, *, files: list[str] | None = None,
           modelcard: str | None = None, cli: Path | None = None) -> OlotLayout:
    """Copy base_layout to out and run the pinned olot on it: `olot --add-modelpack --root-dir model_dir [-m
    model_dir/MODELCARD] out FILES...` (files: paths under model_dir, default every regular file but the modelcard,
    sorted). Returns the result parsed; OlotError (with olot's output) when olot fails."""
    cli = cli or olot_cli()
    if cli is None:
        raise FileNotFoundError(f"olot not installed in {olot_venv()}: run e2e/install-tools.sh olot")
    if files is None:
        files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    files = [f for f in files if f != modelcard]
    shutil.copytree(base_layout, out)
    as_image_index(out)
    argv = [str(cli), "--add-modelpack", "--root-dir", str(model_dir)]
    if modelcard is not None:
        argv += ["--modelcard", str(model_dir / modelcard)]
    argv += [str(out), *(str(model_dir / f) for f in files)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if proc.returncode != 0:
        raise OlotError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return read_layout(out)
