"""A modelcar of many files, pushed to the stack's registry and run by a real container runtime (podman).

One layer per file made images that runtimes refuse past ~120 files (podman: `max depth exceeded` at 151 layers);
here a model of 300 files is built on the busybox base, pushed, copied into podman's storage and run, and its files
read back inside the container. Images made by the old one-file-per-layer code still extract.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from modelsync.destinations.oci import publish_modelcar
from modelsync.errors import TransferError
from modelsync.locations import OciLocation
from modelsync.modelcar_layers import MAX_IMAGE_LAYERS, MODEL_LAYER_BUDGET, check_layer_count, model_files, plan_layers
from modelsync.oci_copy import push_layout
from modelsync.oci_layout import TITLE
from modelsync.sources.oci import fetch_oci
from tests.conftest import unavailable
from tests.support.models import digests_of
from tests.support.oci_helpers import BUSYBOX, DATA_FILTER, busybox_layer, busybox_layout, entry, tar_bytes, write_image

pytestmark = pytest.mark.stack
FILES = 300
PODMAN_RUN = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "--rm", "--ulimit", "nofile=1024:1024",
              "--ulimit", "nproc=1024:1024", "--network", "none"]


@pytest.fixture(scope="module")
def tools_needed(require_tool) -> dict[str, str]:
    paths = {name: require_tool(name) for name in ("skopeo", "oras")}
    if not BUSYBOX.exists():
        unavailable("busybox-static is not installed (apt-get install busybox-static): the tests' base image")
    return paths


@pytest.fixture(scope="module")
def busybox_base(stack, tools_needed, tmp_path_factory) -> OciLocation:
    root = tmp_path_factory.mktemp("busybox")
    base = OciLocation(f"{stack.oci_registry}/base/busybox:runtime", tls_verify=False)
    push_layout(busybox_layout(root / "layout"), "latest", base, "runtime", root / "work", "skopeo")
    return base


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """300 small files in nested directories (one with a non-ASCII name), as a tokenizer-heavy model might have."""
    model = tmp_path_factory.mktemp("model300")
    for i in range(FILES):
        rel = f"shard-{i % 4}/part {i // 100}/file-{i:03d}{'-ü' if i == 7 else ''}.txt"
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(f"file {i}\n".encode() * (i + 1))
    return model, digests_of(model)


@pytest.fixture(scope="module")
def published(many_files, busybox_base, stack, tools_needed, tmp_path_factory):
    model, _ = many_files
    target = OciLocation(f"{stack.oci_registry}/models/{uuid.uuid4().hex[:10]}:v1", tls_verify=False)
    work = tmp_path_factory.mktemp("work")
    return publish_modelcar(model, target, busybox_base, work, backend="skopeo")


def _raw_manifest(ref: str) -> dict:
    out = subprocess.run([shutil.which("skopeo") or "skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{ref}"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.podman
def test_three_hundred_files_run_in_podman(published, many_files, require_tool):
    _, digests = many_files
    ref = published.uri.removeprefix("oci://")
    manifest = _raw_manifest(ref)
    assert 2 <= len(manifest["layers"]) <= 1 + MODEL_LAYER_BUDGET  # busybox + a few, not 1 + 300
    assert {f.path: f.sha256 for f in published.files} == digests and len(published.files) == FILES

    podman = require_tool("podman")
    name = f"localhost/modelsync-runtime-{uuid.uuid4().hex[:10]}:test"
    subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false", f"docker://{ref}",
                    f"containers-storage:{name}"], check=True, capture_output=True)
    try:
        def run(command: str) -> str:
            done = subprocess.run([podman, *PODMAN_RUN, name, "sh", "-c", command], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert run("find /models -type f | wc -l") == str(FILES)
        sample = "shard-3/part 2/file-299.txt"
        assert run(f"sha256sum '/models/{sample}'").split()[0] == digests[sample]
        assert run("head -n 1 '/models/shard-3/part 0/file-007-ü.txt'") == "file 7"
    finally:
        subprocess.run([podman, "rmi", "-f", name], capture_output=True)


def test_old_one_layer_per_file_layout_of_the_same_files_is_refused(many_files, published):
    """The same 300 files, one layer each as the old code built them, are over the limit: no push would happen."""
    model, _ = many_files
    listing = [(rel, path.stat().st_size) for rel, path in model_files(model)]
    old_layout = [(rel,) for rel, _ in listing]
    with pytest.raises(TransferError, match=rf"would have {1 + FILES} layers .* limit of {MAX_IMAGE_LAYERS}"):
        check_layer_count(1, len(old_layout))
    check_layer_count(1, len(plan_layers(listing)))  # what is built instead passes
    assert len(plan_layers(listing)) == len(_raw_manifest(published.uri.removeprefix("oci://"))["layers"]) - 1


@pytest.mark.parametrize("backend", ["skopeo", "oras"])
def test_fetch_oci_extracts_every_file_of_shared_layers(published, many_files, tmp_path, backend):
    _, digests = many_files
    files = fetch_oci(OciLocation(published.uri.removeprefix("oci://"), tls_verify=False), tmp_path / "dest",
                      tmp_path / "w", backend=backend)
    assert digests_of(tmp_path / "dest") == digests
    assert {f.path: f.sha256 for f in files} == digests


def test_oras_pull_saves_every_layer_under_its_title(published, many_files, tmp_path, tools_needed):
    _, digests = many_files
    ref = published.uri.removeprefix("oci://")
    subprocess.run([tools_needed["oras"], "pull", "--plain-http", "--no-tty", "-o", str(tmp_path / "pulled"), ref],
                   check=True, capture_output=True)
    for layer in _raw_manifest(ref)["layers"]:
        title = (layer.get("annotations") or {}).get(TITLE)
        if title is None:
            continue  # the busybox layer
        pulled = tmp_path / "pulled" / title
        assert "sha256:" + hashlib.sha256(pulled.read_bytes()).hexdigest() == layer["digest"]
        with tarfile.open(pulled) as tar:
            tar.extractall(tmp_path / "rootfs", **DATA_FILTER)
    assert digests_of(tmp_path / "rootfs" / "models") == digests


@pytest.mark.parametrize("backend", ["skopeo", "oras"])
def test_image_of_the_old_one_file_per_layer_code_still_extracts(tmp_path, stack, tools_needed, backend):
    """Old images: pax-format layers (a pax record for a non-ASCII name), one file each."""
    files = {"config.json": b"{}", "docs/read me \u00fc.md": b"unicode", "w/part-1.bin": bytes(range(256)) * 40}
    layers = [busybox_layer()]
    for rel, data in files.items():
        dirs = ["models/"] + ([f"models/{posixpath.dirname(rel)}/"] if "/" in rel else [])
        layers.append(tar_bytes([entry(d, kind=tarfile.DIRTYPE, mode=0o755) for d in dirs]
                                + [entry(f"models/{rel}", data)]))
    write_image(tmp_path / "old", layers)
    target = OciLocation(f"{stack.oci_registry}/models/old-{uuid.uuid4().hex[:8]}:v0", tls_verify=False)
    push_layout(tmp_path / "old", "latest", target, "v0", tmp_path / "w", "skopeo")
    fetched = fetch_oci(target, tmp_path / "dest", tmp_path / "w", backend=backend)
    assert {f.path: f.sha256 for f in fetched} == {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}


def test_publish_refuses_a_base_that_leaves_no_room_and_pushes_nothing(tmp_path, stack, many_files, tools_needed):
    model, _ = many_files
    base = OciLocation(f"{stack.oci_registry}/base/layered:{MAX_IMAGE_LAYERS}", tls_verify=False)
    write_image(tmp_path / "base", [tar_bytes([entry(f"etc/l{i}", b"x")]) for i in range(MAX_IMAGE_LAYERS)])
    push_layout(tmp_path / "base", "latest", base, str(MAX_IMAGE_LAYERS), tmp_path / "w", "skopeo")
    target = OciLocation(f"{stack.oci_registry}/models/{uuid.uuid4().hex[:10]}:v1", tls_verify=False)
    with pytest.raises(TransferError, match=rf"{MAX_IMAGE_LAYERS + 1} layers .* limit of {MAX_IMAGE_LAYERS}"):
        publish_modelcar(model, target, base, tmp_path / "w2", backend="skopeo")
    inspect = subprocess.run([tools_needed["skopeo"], "inspect", "--tls-verify=false", "--raw",
                              f"docker://{target.repository}:v1"], capture_output=True, text=True)
    assert inspect.returncode != 0  # nothing was pushed
