"""modelsync's ModelPack and hybrid images against the reference tools (issue #25's Show), on the real stack:

1. `modelpack` pushed from S3 -> modctl v0.1.1 unpacks it byte for byte, paths as in the source, both ways
   (`pull --extract-from-remote`, and `pull` then `extract`);
2. `hybrid`: its ModelPack entry (tagged on its own: modctl takes repo:tag only, and pulling the index's tag
   extracts nothing) -> modctl both ways gives the files under models/, as the tar layers hold them (the layer tars
   end at their end-of-archive marker, so the digest of what Go's tar reader consumed is the layer's: commit
   cb6da42); its modelcar entry is the very manifest `modelcar` pushes for the same files;
3. the hybrid against what olot 1.2.1 writes for the same files on the same busybox base: the same index shape,
   inside each image the ModelPack manifest over the modelcar's model layer blobs, the same files
   (olot.layer.content.digest), and every other difference one of those modelsync/modelpack.py's docstring lists,
   asserted one by one so that a new one fails here;
4. the reverse: modelsync's OCI source reads back what modctl builds (legacy CNAI names, raw and tar layers) and
   olot's hybrid (its modelcar) to a volume, byte for byte.

Under CI=true a missing modctl, olot or busybox fails (tests/conftest.py `unavailable`), never skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelsync import config, job, modelpack
from modelsync.clients.distribution import RegistryClient
from modelsync.destinations.local import RECORD
from modelsync.locations import OciLocation
from modelsync.modelcar import CONTENT_DIGEST, CREATED, SOURCE, SOURCE_RECORD
from modelsync.oci_layout import OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, TITLE

from ..conftest import unavailable
from ..support.jobs import base_env, destination_env, s3_env, upload
from ..support.modctl import Modctl, files_of
from ..support.models import make_model
from ..support.oci_helpers import BUSYBOX, busybox_layout
from ..support.olot_ref import hybrid

pytestmark = pytest.mark.stack
EXTRA = {"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 40,
         "run.py": b"print('serve')\n", "README.md": b"# Tiny\nA model card.\n", "LICENSE": b"Apache-2.0\n"}
AMD64 = {"architecture": "amd64", "os": "linux"}
UNKNOWN = {"architecture": "unknown", "os": "unknown"}
OLOT_KEYS = ("olot.layer.content.digest", "olot.layer.content.type", "olot.layer.content.inlayerpath",
             "olot.layer.content.name")


@pytest.fixture(autouse=True)
def pinned(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def olot(olot: Path) -> Path:
    """conftest's olot, and busybox-static: the base image of the olot hybrids compared here."""
    if not BUSYBOX.exists():
        unavailable("busybox-static is not installed (apt-get install busybox-static): the tests' base image")
    return olot


def sample(root: Path) -> dict[str, bytes]:
    """tests/support/models.py's sample (nested dirs, an empty file, a unicode name with spaces) plus one file of
    each other role modctl knows; {path: content}."""
    make_model(root)
    for rel, data in EXTRA.items():
        (root / rel).write_bytes(data)
    return files_of(root)


def run_job(stack, tmp_path: Path, prefix: str, base_image: str, oci_format: str, label: str, **extra: str):
    """One sync of s3://…/prefix to a new repository in `oci_format`; (published, client, repo, tag)."""
    run_dir = tmp_path / label
    run_dir.mkdir()
    env = {**base_env(stack, run_dir, f"interop-{label}-{uuid.uuid4().hex[:6]}"), **s3_env(stack, prefix),
           **destination_env("oci", stack, run_dir, base_image), "MODEL_SYNC_DESTINATION_OCI_FORMAT": oci_format,
           **extra}
    published = job.run(config.load([], env))
    target = OciLocation(env["MODEL_SYNC_DESTINATION_OCI_URI"], tls_verify=False)
    return published, RegistryClient(target), target.repository.split("/", 1)[1], target.tag


def tag_for_modctl(stack, client: RegistryClient, repo: str, digest: str, tag: str) -> str:
    """Tag manifest `digest` as `tag` (the same bytes, so the same digest); the repo:tag reference modctl takes."""
    found = client.manifest(repo, digest)
    assert found.digest == digest
    client.put_manifest(repo, tag, found.data, found.media_type)
    assert client.manifest(repo, tag).digest == digest
    return f"{stack.oci_registry}/{repo}:{tag}"


def modctl_both_ways(modctl_bin: str, home: Path, reference: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The files modctl unpacks from reference: in one go (`pull --extract-from-remote`, which also checks each
    layer's digest against what it read), and with a fresh modctl by `pull` then `extract`."""
    streamed = Modctl(modctl_bin, home / "remote").pull_extract(reference, home / "out-remote", plain_http=True)
    two_step = Modctl(modctl_bin, home / "local")
    two_step.pull(reference, plain_http=True)
    extracted = two_step.extract(reference, home / "out-local")
    return files_of(streamed), files_of(extracted)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- 1. modelpack -> modctl


def test_modctl_unpacks_modelsyncs_modelpack_artifact(stack, base_image, modctl_bin, tmp_path):
    model = tmp_path / "model"
    files = sample(model)
    published, client, repo, tag = run_job(stack, tmp_path, upload(stack, model), base_image, "modelpack", "mp")
    assert client.manifest(repo, tag).digest == published.digest
    streamed, extracted = modctl_both_ways(modctl_bin, tmp_path / "modctl", f"{stack.oci_registry}/{repo}:{tag}")
    assert streamed == files
    assert extracted == files


# ---------------------------------------------------------------- 2. hybrid -> modctl; its modelcar = modelcar


def test_modctl_unpacks_the_hybrids_modelpack_entry_and_its_modelcar_is_the_modelcar_format(stack, base_image,
                                                                                          modctl_bin, tmp_path):
    model = tmp_path / "model"
    files = sample(model)
    prefix = upload(stack, model)
    published, client, repo, tag = run_job(stack, tmp_path, prefix, base_image, "hybrid", "hy")
    index = client.manifest(repo, tag)
    assert index.digest == published.digest and index.media_type == OCI_INDEX
    car_entry, pack_entry = index.json()["manifests"]
    assert pack_entry["annotations"][modelpack.MANIFEST_KIND] == "modelpack"
    pack = client.manifest(repo, pack_entry["digest"]).json()
    assert all(layer["mediaType"].endswith(".v1.tar") for layer in pack["layers"])
    for layer in pack["layers"]:  # each tar ends right at its end-of-archive marker: what Go's reader consumes
        assert client.blob(repo, layer["digest"])[-1024:] == b"\0" * 1024

    reference = tag_for_modctl(stack, client, repo, pack_entry["digest"], "modelpack")
    streamed, extracted = modctl_both_ways(modctl_bin, tmp_path / "modctl", reference)
    under_models = {f"models/{rel}": data for rel, data in files.items()}
    assert streamed == under_models  # --extract-from-remote: every layer digest matched what was read
    assert extracted == under_models

    car, _, _, _ = run_job(stack, tmp_path, prefix, base_image, "modelcar", "car")
    assert car_entry["digest"] == car.digest
    assert car_entry["size"] == len(client.manifest(repo, car_entry["digest"]).data)


# ---------------------------------------------------------------- 3. hybrid vs olot 1.2.1


def members(blob: bytes) -> list[tuple[str, int, int, int, int, bytes]]:
    """(name, mode, uid, gid, mtime, content) of each tar entry."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out.append((m.name, m.mode, m.uid, m.gid, int(m.mtime), f.read() if f else b""))
    return out


def end_of_archive(blob: bytes) -> int:
    """Bytes of a tar up to and including its two zero blocks (what Go's tar reader consumes)."""
    pos = 0
    while blob[pos:pos + 512] != b"\0" * 512:
        size = int(blob[pos + 124:pos + 136].rstrip(b"\0 ") or b"0", 8)
        pos += 512 + -(-size // 512) * 512
    return pos + 1024


def parent_dirs(rel: str) -> list[str]:
    """models and each directory above rel in it (tarfile's names: no trailing slash)."""
    parts = rel.split("/")[:-1]
    return ["models"] + [f"models/{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1)]


def test_the_hybrid_matches_olots_but_for_the_listed_differences(stack, base_image, olot, tmp_path):
    model = tmp_path / "model"
    files = sample(model)
    ours_published, client, repo, _ = run_job(stack, tmp_path, upload(stack, model), base_image, "hybrid", "hy")
    theirs = hybrid(model, busybox_layout(tmp_path / "base"), tmp_path / "olot", cli=olot)

    def ours_doc(digest: str) -> dict[str, Any]:
        return client.manifest(repo, digest).json()

    def ours_blob(digest: str) -> bytes:
        return client.blob(repo, digest, limit=64 << 20)

    # -- the index: two entries, the modelcar (the base's platform) and the ModelPack manifest (unknown/unknown)
    ours_index = ours_doc(ours_published.digest)
    (theirs_index_digest, theirs_index), = theirs.indexes.items()
    (o_car_entry, o_pack_entry), (t_car_entry, t_pack_entry) = ours_index["manifests"], theirs_index["manifests"]
    for car_entry in (o_car_entry, t_car_entry):
        assert set(car_entry) == {"mediaType", "digest", "size", "platform"}
        assert car_entry["mediaType"] == OCI_MANIFEST and car_entry["platform"] == AMD64
    for pack_entry in (o_pack_entry, t_pack_entry):
        assert pack_entry["mediaType"] == OCI_MANIFEST and pack_entry["platform"] == UNKNOWN
        assert pack_entry["annotations"][modelpack.MANIFEST_KIND] == "modelpack"
    # difference (listed): the entry's author, and ours names the manifest's artifactType
    assert t_pack_entry["annotations"] == {modelpack.AUTHOR: "olot", modelpack.MANIFEST_KIND: "modelpack"}
    assert o_pack_entry["annotations"] == {modelpack.AUTHOR: "modelsync", modelpack.MANIFEST_KIND: "modelpack"}
    assert set(o_pack_entry) - set(t_pack_entry) == {"artifactType"}
    assert o_pack_entry["artifactType"] == modelpack.ARTIFACT_TYPE
    # difference (listed): olot's index.json also lists the ModelPack manifest beside the image index
    assert [m["digest"] for m in theirs.top["manifests"]] == [theirs_index_digest, t_pack_entry["digest"]]
    # difference (listed): our index carries its created time; olot's none
    assert set(theirs_index) == {"schemaVersion", "mediaType", "manifests"}
    assert ours_index["annotations"] == {CREATED: "2023-11-14T22:13:20Z"}
    assert set(ours_index) == {"schemaVersion", "mediaType", "manifests", "annotations"}

    o_car, t_car = ours_doc(o_car_entry["digest"]), theirs.manifests[t_car_entry["digest"]]
    o_pack, t_pack = ours_doc(o_pack_entry["digest"]), theirs.manifests[t_pack_entry["digest"]]

    # -- the same base layer (the same busybox layout), then one layer per file in the same (path) order
    assert o_car["layers"][:1] == t_car["layers"][:1] and len(t_car["layers"]) == 1 + len(files)
    o_model, t_model = o_car["layers"][1:], t_car["layers"][1:]
    order = sorted(files)
    assert [layer["annotations"]["olot.layer.content.inlayerpath"] for layer in o_model] == \
           [layer["annotations"]["olot.layer.content.inlayerpath"] for layer in t_model] == \
           [f"/models/{rel}" for rel in order]

    # -- same blobs inside each image: the ModelPack manifest's layers are the modelcar's model layers
    for car_layers, pack in ((o_model, o_pack), (t_model, t_pack)):
        assert [(p["digest"], p["size"]) for p in pack["layers"]] == [(c["digest"], c["size"]) for c in car_layers]
        assert all(c["mediaType"] == OCI_LAYER_TAR for c in car_layers)

    # -- the modelcar layers, file by file
    padded = 0
    for rel, o_layer, t_layer in zip(order, o_model, t_model, strict=True):
        o_ann, t_ann = o_layer["annotations"], t_layer["annotations"]
        assert {k: o_ann[k] for k in OLOT_KEYS} == {k: t_ann[k] for k in OLOT_KEYS}  # incl. the files' sha256
        assert o_ann[CONTENT_DIGEST] == sha(files[rel])
        # difference (listed): the title is the file's path here, its base name in olot's
        assert (o_ann[TITLE], t_ann[TITLE]) == (rel, rel.rsplit("/", 1)[-1])
        # difference (listed): our layer carries the re-sync source record (s3:// url, etag, sha256)
        assert set(o_ann) - set(t_ann) == {SOURCE_RECORD} and set(t_ann) == {TITLE, *OLOT_KEYS}
        assert [f["sha256"] for f in json.loads(o_ann[SOURCE_RECORD])] == [o_ann[CONTENT_DIGEST][7:]]
        # difference (listed): the tars differ (so do their digests), the file in them is the same
        o_tar, t_tar = ours_blob(o_layer["digest"]), theirs.blob(t_layer["digest"])
        assert o_layer["digest"] != t_layer["digest"]
        o_members, t_members = members(o_tar), members(t_tar)
        (t_name, t_mode, t_uid, t_gid, t_mtime, t_data), = t_members  # one entry, mode 0664, the file's mtime
        assert (t_name, t_mode, t_uid, t_gid, t_data) == (f"models/{rel}", 0o664, 0, 0, files[rel])
        assert t_mtime == int((model / rel).stat().st_mtime)
        assert o_members == [(d, 0o755, 0, 0, 0, b"") for d in parent_dirs(rel)] + [
            (f"models/{rel}", 0o644, 0, 0, 0, files[rel])]
        # olot's tar is padded to the next 10240-byte record; ours ends at its end-of-archive marker
        assert len(t_tar) == -(-end_of_archive(t_tar) // 10240) * 10240
        padded += end_of_archive(t_tar) < len(t_tar)
        assert end_of_archive(o_tar) == len(o_tar)

    assert padded  # most of olot's layer tars carry bytes after the end-of-archive marker (not all: 70001 bytes fit)

    # -- the modelcar manifest and config
    # difference (listed): olot's manifest names its author; ours carries the image's created time and source
    assert t_car["annotations"] == {modelpack.AUTHOR: "olot"}
    assert set(o_car["annotations"]) == {CREATED, SOURCE} and o_car["annotations"][SOURCE].startswith("s3://")
    o_car_config = json.loads(ours_blob(o_car["config"]["digest"]))
    t_car_config = theirs.configs[t_car["config"]["digest"]]
    for car, cfg in ((o_car, o_car_config), (t_car, t_car_config)):
        assert cfg["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"] for layer in car["layers"]]}
        assert (cfg["os"], cfg["architecture"], cfg["config"]) == ("linux", "amd64", {"Cmd": ["sh"]})
    # difference (listed): the history lines and dates (olot: the time it ran; ours: the image's created time)
    assert t_car_config["history"][1:] == [{"created": h["created"], "created_by": f"olot oci_layers_on_top "
                                            f"{rel.rsplit('/', 1)[-1]}"}
                                           for rel, h in zip(order, t_car_config["history"][1:], strict=True)]
    assert o_car_config["history"][1:] == [{"created": "2023-11-14T22:13:20Z",
                                            "created_by": f"modelsync: COPY {rel} /models/{rel}"} for rel in order]
    assert o_car_config["history"][:1] == t_car_config["history"][:1]
    assert set(o_car_config) - set(t_car_config) == {"created"} and set(t_car_config) <= set(o_car_config)

    # -- the ModelPack manifest
    for pack in (o_pack, t_pack):
        assert (pack["schemaVersion"], pack["mediaType"], pack["artifactType"], pack["config"]["mediaType"]) == (
            2, OCI_MANIFEST, modelpack.ARTIFACT_TYPE, modelpack.CONFIG_TYPE)
    # difference (listed): olot's ModelPack manifest has no annotations; ours the image's created time and source
    assert "annotations" not in t_pack and o_pack["annotations"] == o_car["annotations"]
    assert set(o_pack) - {"annotations"} == set(t_pack)
    for rel, o_layer, t_layer in zip(order, o_pack["layers"], t_pack["layers"], strict=True):
        # difference (listed): olot types every layer weight; ours by the file's role (modctl's rules)
        assert t_layer["mediaType"] == "application/vnd.cncf.model.weight.v1.tar"
        assert o_layer["mediaType"] == modelpack.media_type(modelpack.file_role(rel, len(files[rel])), False)
        # difference (listed): olot annotates the title (base name) only; ours the path and where the tar puts it
        assert t_layer["annotations"] == {TITLE: rel.rsplit("/", 1)[-1]}
        assert o_layer["annotations"] == {TITLE: rel, modelpack.FILEPATH: f"models/{rel}"}
    assert {o["mediaType"] for o in o_pack["layers"]} == {"application/vnd.cncf.model.weight.config.v1.tar",
                                                         "application/vnd.cncf.model.weight.v1.tar",
                                                         "application/vnd.cncf.model.code.v1.tar",
                                                         "application/vnd.cncf.model.doc.v1.tar"}
    # difference (listed): the config's diffIds are digests here, bare hex in olot's; our descriptor is filled
    o_pack_config = json.loads(ours_blob(o_pack["config"]["digest"]))
    t_pack_config = theirs.configs[t_pack["config"]["digest"]]
    assert t_pack_config == {"descriptor": {}, "config": {},
                             "modelfs": {"type": "layers", "diffIds": [t["digest"][7:] for t in t_pack["layers"]]}}
    assert o_pack_config == {"descriptor": {"createdAt": "2023-11-14T22:13:20Z",
                                            "sourceURL": o_car["annotations"][SOURCE]}, "config": {},
                             "modelfs": {"type": "layers", "diffIds": [o["digest"] for o in o_pack["layers"]]}}


# ---------------------------------------------------------------- 4. the reverse: modelsync reads theirs


def read_with_modelsync(stack, tmp_path: Path, reference: str, label: str, backend: str = "oras") -> dict[str, bytes]:
    """A sync from the OCI source `reference` to a volume; the files it wrote."""
    run_dir = tmp_path / label
    run_dir.mkdir()
    dest = run_dir / "model"
    env = {**base_env(stack, run_dir, f"interop-{label}-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_SOURCE_TYPE": "oci",
           "MODEL_SYNC_SOURCE_OCI_URI": reference, "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false",
           "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend, "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(dest)}
    job.run(config.load([], env))
    return {p: d for p, d in files_of(dest).items() if p != RECORD}


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "tar"])
def test_modelsync_reads_what_modctl_builds(stack, modctl_bin, tmp_path, raw):
    """modctl's artifact is in the legacy CNAI names (application/vnd.cnai.model.*.v1.raw|tar,
    org.cnai.model.filepath): the OCI source reads it (sources/oci.py), raw layers at their filepath, tar layers
    unpacked, with either backend (skopeo hands an artifact to oras)."""
    model = tmp_path / "model"
    files = sample(model)
    reference = f"{stack.oci_registry}/modctl-src/{uuid.uuid4().hex[:8]}:v1"
    tool = Modctl(modctl_bin, tmp_path / "modctl")
    tool.build(model, reference, raw=raw)
    tool.push(reference, plain_http=True)
    manifest = RegistryClient(OciLocation(reference, tls_verify=False)).manifest(
        reference.split("/", 1)[1].rsplit(":", 1)[0], "v1").json()
    assert manifest["artifactType"] == "application/vnd.cnai.model.manifest.v1+json"
    assert all(layer["mediaType"].startswith("application/vnd.cnai.model.") and
               layer["mediaType"].endswith(".raw" if raw else ".tar") for layer in manifest["layers"])
    assert read_with_modelsync(stack, tmp_path, reference, "from-modctl") == files
    assert read_with_modelsync(stack, tmp_path, reference, "from-modctl-skopeo", "skopeo") == files


def test_modelsync_reads_olots_hybrid(stack, olot, require_tool, tmp_path):
    """olot's hybrid pushed whole (oras cp of the layout): the OCI source narrows the index to linux/amd64, its
    modelcar, and gives the files under /models byte for byte, with either backend."""
    model = tmp_path / "model"
    files = sample(model)
    theirs = hybrid(model, busybox_layout(tmp_path / "base"), tmp_path / "olot", cli=olot)
    reference = f"{stack.oci_registry}/olot-src/{uuid.uuid4().hex[:8]}:latest"
    subprocess.run([require_tool("oras"), "cp", "--from-oci-layout", f"{theirs.root}:latest", "--to-plain-http",
                    reference], check=True, capture_output=True, timeout=300)
    (index_digest, _), = theirs.indexes.items()
    assert RegistryClient(OciLocation(reference, tls_verify=False)).manifest(
        reference.split("/", 1)[1].rsplit(":", 1)[0], "latest").digest == index_digest
    assert read_with_modelsync(stack, tmp_path, reference, "from-olot") == files
    assert read_with_modelsync(stack, tmp_path, reference, "from-olot-skopeo", "skopeo") == files
