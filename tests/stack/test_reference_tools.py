"""The two outside tools the ModelPack and hybrid format tests compare against (issue #25's Show) work here:
modctl v0.1.1 (built from the Go module proxy) pulls and unpacks a ModelPack artifact from the stack's registries,
and olot 1.2.1 (its own virtual environment) writes the modelcar + ModelPack hybrid index. What each writes is
asserted, so a change of either tool's pin that moves it shows here first.

What modctl v0.1.1 `build` writes (raw, the default) for config.json, tokenizer.json, model.safetensors,
weights/*.bin, run.py, README.md, LICENSE, docs/*.md, tokenizer/empty.txt:

    manifest  mediaType application/vnd.oci.image.manifest.v1+json
              artifactType application/vnd.cnai.model.manifest.v1+json      (legacy CNAI, not vnd.cncf)
              annotations {org.cnai.modctl.modelfile: the Modelfile text}
    config    application/vnd.cnai.model.config.v1+json:
              {"descriptor": {"name": …, ["createdAt"], ["family"]}, "config": {["architecture", "format",
               "paramSize", "precision", …]}, "modelfs": {"type": "layers", "diff_ids": [layer digests]}}
    layers    one per file, ordered CONFIG, MODEL, CODE, DOC (each sorted by path):
              application/vnd.cnai.model.{weight.config|weight|code|doc}.v1.raw, digest = the file's sha256,
              annotations org.cnai.model.filepath = path under the model dir,
                          org.cnai.model.file.metadata+json = {"name","mode","uid":0,"gid":0,"size","mtime",
                                                               "typeflag":0}
    --raw=false: the same with .v1.tar (a PAX tar holding the one file by its path, no trailing record padding)

olot 1.2.1 for config.json, model.safetensors, README.md: see test_olot_hybrid_of_three_files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.support.modctl import Modctl, ModctlError, files_of, manifest_and_config, modelfile_roles
from tests.support.models import make_model
from tests.support.oci_helpers import BUSYBOX, busybox_layout
from tests.support.olot_ref import MODELPACK_ARTIFACT, OCI_INDEX, OCI_MANIFEST, hybrid

CNAI = "application/vnd.cnai.model"
EXTRA_FILES = {
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 40,
    "tokenizer.json": b'{"version": "1.0"}\n',
    "run.py": b"print('serve')\n",
    "README.md": b"# Tiny\nA model card.\n",
    "LICENSE": b"Apache-2.0\n",
}
# modctl's classification of those files plus tests/support/models.py's sample (`modelfile generate`)
EXPECTED_ROLES = {
    "config.json": "CONFIG", "tokenizer.json": "CONFIG",
    "model.safetensors": "MODEL", "weights/part-00001.bin": "MODEL", "weights/nested/deeper/part-00002.bin": "MODEL",
    "run.py": "CODE",
    "README.md": "DOC", "LICENSE": "DOC", "docs/read me ünïcødé ✓.md": "DOC", "tokenizer/empty.txt": "DOC",
}
ROLE_MEDIA = {"CONFIG": "weight.config", "MODEL": "weight", "CODE": "code", "DOC": "doc"}


def sample_model(root: Path) -> dict[str, bytes]:
    make_model(root)
    for rel, data in EXTRA_FILES.items():
        (root / rel).write_bytes(data)
    return files_of(root)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.stack
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "tar"])
def test_modctl_builds_pushes_pulls_and_extracts(stack, modctl_bin, tmp_path, raw):
    """modctl builds a ModelPack artifact of a model dir, pushes it to the plain registry; another modctl (empty
    storage) pulls it and unpacks every file byte for byte: raw in one go (pull --extract-from-remote), tar in two
    steps (pull, then extract). Nothing under $HOME: storage, logs and credentials live in each one's home."""
    model = tmp_path / "model"
    files = sample_model(model)
    builder = Modctl(modctl_bin, tmp_path / "builder")
    roles = modelfile_roles(builder.generate_modelfile(model))
    assert roles == EXPECTED_ROLES
    repo = f"modctl/{uuid.uuid4().hex[:8]}"
    target = f"{stack.oci_registry}/{repo}:v1"
    builder.build(model, target, raw=raw)
    builder.push(target, plain_http=True)

    manifest, config = manifest_and_config(stack.oci_registry, repo, "v1")
    assert manifest["artifactType"] == f"{CNAI}.manifest.v1+json"
    assert manifest["config"]["mediaType"] == f"{CNAI}.config.v1+json"
    assert "org.cnai.modctl.modelfile" in manifest["annotations"]
    layers = {layer["annotations"]["org.cnai.model.filepath"]: layer for layer in manifest["layers"]}
    assert set(layers) == set(files)
    for path, layer in layers.items():
        assert layer["mediaType"] == f"{CNAI}.{ROLE_MEDIA[roles[path]]}.v1.{'raw' if raw else 'tar'}"
        meta = json.loads(layer["annotations"]["org.cnai.model.file.metadata+json"])
        assert (meta["name"], meta["size"], meta["uid"], meta["gid"]) == (Path(path).name, len(files[path]), 0, 0)
        if raw:
            assert layer["digest"] == sha(files[path]) and layer["size"] == len(files[path])
    order = [roles[layer["annotations"]["org.cnai.model.filepath"]] for layer in manifest["layers"]]
    assert order == sorted(order, key=["CONFIG", "MODEL", "CODE", "DOC"].index)
    assert config["modelfs"] == {"type": "layers", "diff_ids": [layer["digest"] for layer in manifest["layers"]]}
    assert config["descriptor"]["name"] == "model" and "createdAt" not in config["descriptor"]  # --no-creation-time

    puller = Modctl(modctl_bin, tmp_path / "puller")
    out = tmp_path / "out"
    if raw:
        puller.pull_extract(target, out, plain_http=True)
    else:
        puller.pull(target, plain_http=True)
        puller.extract(target, out)
    assert files_of(out) == files
    for home in (builder.home, puller.home):
        assert (home / "storage").is_dir() and not (home / "home" / ".modctl").exists()


@pytest.mark.stack
def test_modctl_logs_in_to_the_tls_registry_and_fetches_some_files(stack, modctl_bin, tmp_path):
    """Against the TLS + basic-auth registry: login (password from a 0600 authfile, never argv; credentials stored
    in the test's DOCKER_CONFIG), the CA trusted through SSL_CERT_FILE, no --insecure; `fetch --patterns` (globs on
    the whole path) gets only the matching files; without the CA the same modctl is refused."""
    model = tmp_path / "model"
    files = sample_model(model)
    with pytest.raises(ModctlError, match="401|[Uu]nauthorized"):
        Modctl(modctl_bin, tmp_path / "wrong", ca_file=Path(stack.oci_tls_ca)).login(
            stack.oci_tls_registry, stack.oci_tls_username, "not-the-password")
    tool = Modctl(modctl_bin, tmp_path / "m", ca_file=Path(stack.oci_tls_ca))
    tool.login(stack.oci_tls_registry, stack.oci_tls_username, stack.oci_tls_password)
    auths = json.loads((tool.home / "docker" / "config.json").read_text())["auths"]
    assert list(auths) == [stack.oci_tls_registry]
    target = f"{stack.oci_tls_registry}/modctl/{uuid.uuid4().hex[:8]}:v1"
    tool.build(model, target)
    tool.push(target)
    out = tool.fetch(target, tmp_path / "out", ["*.json", "weights/*"])
    assert files_of(out) == {p: d for p, d in files.items() if p.endswith(".json") or p == "weights/part-00001.bin"}
    with pytest.raises(ModctlError, match="certificate"):
        Modctl(modctl_bin, tool.home).fetch(target, tmp_path / "out2", ["*.json"])


def olot_members(blob: bytes) -> list[tuple[str, int, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return [(m.name, m.mode, m.uid, m.gid) for m in tar.getmembers()]


@pytest.mark.parametrize("modelcard", [None, "README.md"], ids=["files", "modelcard"])
def test_olot_hybrid_of_three_files(olot, tmp_path, modelcard):
    """olot 1.2.1 `--add-modelpack` on a busybox base (wrapped in an image index: olot refuses a single-manifest
    base) for config.json, model.safetensors, README.md (README.md as a plain file, or as the modelcard `-m`):

    index.json      [image index (ref.name latest), ModelPack manifest]  -- the ModelPack manifest is listed twice:
    image index     [modelcar manifest (platform of the base), ModelPack manifest]   here and in index.json, both
                    ModelPack entries: platform {architecture: unknown, os: unknown}, annotations
                    {io.opendatahub.author: olot, io.opendatahub.modelcar.manifest.type: modelpack}
    modelcar        the base's layers + one application/vnd.oci.image.layer.v1.tar per file (the modelcard:
                    …tar+gzip), annotations org.opencontainers.image.title (basename), olot.layer.content.digest
                    (file's sha256), .type "file", .inlayerpath "/models/<path>", .name; modelcard also
                    io.opendatahub.modelcar.layer.type: modelcard; manifest annotations io.opendatahub.author: olot
                    (+ io.opendatahub.layers.modelcard: its layer digest); config: diff_ids and one history entry per
                    layer ("olot oci_layers_on_top NAME", created = the layer file's ctime)
    ModelPack       artifactType application/vnd.cncf.model.manifest.v1+json, config
                    application/vnd.cncf.model.config.v1+json = {"descriptor": {}, "modelfs": {"type": "layers",
                    "diffIds": [bare hex, no "sha256:"]}, "config": {}}; the SAME layer blobs, every file typed
                    application/vnd.cncf.model.weight.v1.tar whatever its role, the modelcard
                    application/vnd.cncf.model.doc.v1.tar+gzip; only annotation org.opencontainers.image.title
                    (no org.cncf.model.filepath)
    layer tars      GNU format, one member models/<path>, uid/gid 0, mode 0664, padded to 10240 bytes
    """
    model = tmp_path / "model"
    model.mkdir()
    files = {"config.json": b'{"architectures": ["Tiny"]}\n', "model.safetensors": EXTRA_FILES["model.safetensors"],
             "README.md": EXTRA_FILES["README.md"]}
    for rel, data in files.items():
        (model / rel).write_bytes(data)
    if not BUSYBOX.exists():
        unavailable("busybox-static is not installed (apt-get install busybox-static): the tests' base image")
    base = busybox_layout(tmp_path / "base")
    base_manifest = json.loads((base / "blobs" / "sha256" / json.loads((base / "index.json").read_text())
                                ["manifests"][0]["digest"].removeprefix("sha256:")).read_bytes())
    out = hybrid(model, base, tmp_path / "out", modelcard=modelcard, cli=olot)

    mp_digest, mp = out.modelpack
    (car_digest, car), = out.modelcars.items()
    (index_digest, index), = out.indexes.items()
    mp_entry = {"mediaType": OCI_MANIFEST, "digest": mp_digest, "size": len(out.blob(mp_digest)),
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"io.opendatahub.author": "olot", "io.opendatahub.modelcar.manifest.type": "modelpack"}}
    assert out.top["manifests"] == [
        {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(out.blob(index_digest)),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}, mp_entry]
    assert index["manifests"] == [
        {"mediaType": OCI_MANIFEST, "digest": car_digest, "size": len(out.blob(car_digest)),
         "platform": {"architecture": "amd64", "os": "linux"}}, mp_entry]

    order = sorted(f for f in files if f != modelcard) + ([modelcard] if modelcard else [])
    new = car["layers"][len(base_manifest["layers"]):]
    assert car["layers"][:len(base_manifest["layers"])] == base_manifest["layers"]
    assert [layer["annotations"]["olot.layer.content.name"] for layer in new] == order
    for name, layer in zip(order, new, strict=True):
        card = name == modelcard
        blob = out.blob(layer["digest"])
        annotations = {"org.opencontainers.image.title": name, "olot.layer.content.digest": sha(files[name]),
                       "olot.layer.content.type": "file", "olot.layer.content.inlayerpath": f"/models/{name}",
                       "olot.layer.content.name": name}
        if card:
            annotations["io.opendatahub.modelcar.layer.type"] = "modelcard"
        assert layer["annotations"] == annotations
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if card else "")
        tar = gzip.decompress(blob) if card else blob
        assert olot_members(tar) == [(f"models/{name}", 0o664, 0, 0)]
        assert len(tar) % 10240 == 0
    assert car["annotations"] == {"io.opendatahub.author": "olot",
                                  **({"io.opendatahub.layers.modelcard": new[-1]["digest"]} if modelcard else {})}
    car_config = out.configs[car["config"]["digest"]]
    assert car_config["history"][-len(order):] == [
        {"created": h["created"], "created_by": f"olot oci_layers_on_top {n}" + (" (modelcard)" if n == modelcard
                                                                                  else "")}
        for n, h in zip(order, car_config["history"][-len(order):], strict=True)]

    # the ModelPack manifest: the same blobs as the modelcar's model layers, in the same order
    assert mp["artifactType"] == MODELPACK_ARTIFACT and mp["mediaType"] == OCI_MANIFEST
    assert [(layer["digest"], layer["size"]) for layer in mp["layers"]] == [(layer["digest"], layer["size"])
                                                                            for layer in new]
    assert [layer["mediaType"] for layer in mp["layers"]] == [
        "application/vnd.cncf.model.doc.v1.tar+gzip" if n == modelcard else "application/vnd.cncf.model.weight.v1.tar"
        for n in order]
    assert [layer["annotations"] for layer in mp["layers"]] == [{"org.opencontainers.image.title": n} for n in order]
    assert mp["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    diff_ids = [hashlib.sha256(gzip.decompress(out.blob(layer["digest"])) if n == modelcard
                               else out.blob(layer["digest"])).hexdigest() for n, layer in zip(order, new, strict=True)]
    assert out.configs[mp["config"]["digest"]] == {"descriptor": {}, "modelfs": {"type": "layers", "diffIds": diff_ids},
                                                   "config": {}}


@pytest.mark.stack
@pytest.mark.parametrize("modelcard", [None, "README.md"], ids=["files", "modelcard"])
def test_modctl_on_olots_modelpack_manifest(stack, olot, modctl_bin, require_tool, tmp_path, modelcard):
    """What modctl v0.1.1 makes of olot's ModelPack manifest once pushed (oras cp of the whole layout, the ModelPack
    manifest tagged; modctl takes no digest reference): `pull` + `extract` unpacks the tar layers under models/
    (the tar's names, the title annotation unused); `pull --extract-from-remote` fails every tar layer's digest
    check (Go's tar reader stops at the end-of-archive blocks, before olot's padding to 10240 bytes, and modctl
    hashes only what it read); a modelcard layer (…doc.v1.tar+gzip) is refused by both: "unsupported codec type"."""
    model = tmp_path / "model"
    model.mkdir()
    files = {"config.json": b'{"architectures": ["Tiny"]}\n', "model.safetensors": EXTRA_FILES["model.safetensors"],
             "README.md": EXTRA_FILES["README.md"]}
    for rel, data in files.items():
        (model / rel).write_bytes(data)
    if not BUSYBOX.exists():
        unavailable("busybox-static is not installed (apt-get install busybox-static): the tests' base image")
    out = hybrid(model, busybox_layout(tmp_path / "base"), tmp_path / "out", modelcard=modelcard, cli=olot)
    oras = require_tool("oras")
    repo = f"{stack.oci_registry}/olot/{uuid.uuid4().hex[:8]}"
    subprocess.run([oras, "cp", "--from-oci-layout", f"{out.root}:latest", "--to-plain-http", f"{repo}:latest"],
                   check=True, capture_output=True)
    mp_digest, mp = out.modelpack
    subprocess.run([oras, "tag", "--plain-http", f"{repo}@{mp_digest}", "modelpack"], check=True, capture_output=True)
    tool = Modctl(modctl_bin, tmp_path / "m")
    with pytest.raises(ModctlError, match="invalid reference"):
        tool.pull_extract(f"{repo}@{mp_digest}", tmp_path / "x0", plain_http=True)
    tool.first_error("pull", f"{repo}:modelpack", "--extract-dir", str(tmp_path / "x1"), "--extract-from-remote",
                     "--plain-http", match="failed to validate the digest of the blob " + mp["layers"][0]["digest"])
    if modelcard:
        tool.first_error("pull", f"{repo}:modelpack", "--extract-dir", str(tmp_path / "x1"), "--extract-from-remote",
                         "--plain-http", match="application/vnd.cncf.model.doc.v1.tar+gzip: unsupported codec type")
    tool.pull(f"{repo}:modelpack", plain_http=True)
    if modelcard:
        with pytest.raises(ModctlError, match="unsupported codec type: "):
            tool.extract(f"{repo}:modelpack", tmp_path / "x2")
    else:
        extracted = tool.extract(f"{repo}:modelpack", tmp_path / "x2")
        assert files_of(extracted) == {f"models/{name}": data for name, data in files.items()}
