"""OCI destination and source against the real registries of the local stack, with the real skopeo and oras.

The plain-HTTP registry and the TLS + basic-auth one (own CA) come from the `stack` fixture; the base image is a
busybox built here (tests/oci_helpers.py) and pushed to the plain registry once per session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from modelsync import blob_read, tools
from modelsync.destinations import oci as oci_destination
from modelsync.destinations.oci import publish_modelcar
from modelsync.errors import ModelSyncError, ToolError, TransferError
from modelsync.layer_extract import TreeWriter
from modelsync.locations import OciLocation
from modelsync.oci_copy import push_layout
from modelsync.oci_layout import OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, Layout
from modelsync.secret import Secret
from modelsync.sources.oci import fetch_oci
from tests.conftest import unavailable
from tests.support.faults import failing_gateway
from tests.support.jobs import spy_blob_opens, wrapped_tool
from tests.support.models import digests_of, make_model, raw_weights
from tests.support.oci_helpers import BUSYBOX, DATA_FILTER, busybox_layer, busybox_layout, entry, tar_bytes, write_image

pytestmark = pytest.mark.stack
BACKENDS = ["skopeo", "oras"]
WHEN = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def tools_needed(require_tool) -> dict[str, str]:
    paths = {name: require_tool(name) for name in ("skopeo", "oras")}
    if not BUSYBOX.exists():
        unavailable("busybox-static is not installed (apt-get install busybox-static): the tests' base image")
    return paths


@pytest.fixture
def plain(stack, tools_needed):
    return lambda repo: OciLocation(f"{stack.oci_registry}/{repo}", tls_verify=False)


@pytest.fixture
def secure(stack, tools_needed):
    def make(repo: str, password: str | None = None) -> OciLocation:
        return OciLocation(f"{stack.oci_tls_registry}/{repo}", username=stack.oci_tls_username,
                           password=Secret(password or stack.oci_tls_password), ca_bundle=stack.oci_tls_ca)
    return make


@pytest.fixture(scope="session")
def busybox_base(stack, tools_needed, tmp_path_factory) -> OciLocation:
    root = tmp_path_factory.mktemp("busybox")
    base = OciLocation(f"{stack.oci_registry}/base/busybox:test", tls_verify=False)
    push_layout(busybox_layout(root / "layout"), "latest", base, "test", root / "work", "skopeo")
    return base


@pytest.fixture
def argv_seen(monkeypatch):
    """Every argv given to tools.run, plus the mode of each auth file while the tool ran (the real run happens)."""
    seen: list[list[str]] = []
    auth_files: dict[str, int] = {}
    real = tools.run

    def spy(binary, args, **kw):
        argv = [binary, *map(str, args)]
        seen.append(argv)
        for arg in argv:
            for flag in ("-authfile=", "registry-config="):
                if flag in arg:
                    path = arg.split("=", 1)[1]
                    auth_files[path] = os.stat(path).st_mode & 0o777
        return real(binary, args, **kw)

    monkeypatch.setattr(tools, "run", spy)
    seen_auth = auth_files
    return seen, seen_auth


def _repo() -> str:
    return f"models/{uuid.uuid4().hex[:10]}"


def _skopeo_inspect(ref: str, *extra: str) -> dict:
    out = subprocess.run([shutil.which("skopeo") or "skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _extract_pulled_layers(pulled: Path, manifest: dict, rootfs: Path) -> None:
    """Apply the layers oras pulled (files named by title) in manifest order, as a container runtime would."""
    for layer in manifest["layers"]:
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
        if title is None:
            continue  # the base layer: no title, oras pull leaves it out
        with tarfile.open(pulled / title) as tar:
            tar.extractall(rootfs, **DATA_FILTER)


@pytest.mark.parametrize("backend", BACKENDS)
def test_publish_to_plain_http_registry(tmp_path, plain, busybox_base, stack, tools_needed, backend):
    digests = make_model(tmp_path / "model")
    repo = _repo()
    published = publish_modelcar(tmp_path / "model", plain(f"{repo}:v1"), busybox_base, tmp_path / "work",
                                 backend=backend, source_annotation="s3://models/demo")
    host_repo = f"{stack.oci_registry}/{repo}"
    assert published.uri == f"oci://{host_repo}@{published.digest}"
    assert {f.path: f.sha256 for f in published.files} == digests

    # skopeo reads it, the tag points at the same digest, layers stayed uncompressed OCI layers
    assert _skopeo_inspect(f"{host_repo}:v1")["Digest"] == published.digest
    manifest = _skopeo_inspect(f"{host_repo}@{published.digest}", "--raw")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"]["org.opencontainers.image.source"] == "s3://models/demo"
    assert [lay["mediaType"] for lay in manifest["layers"]] == [OCI_LAYER_TAR] * (1 + len(digests))
    assert manifest["layers"][0]["size"] == len(busybox_layer())

    # oras pulls the layers; applied in order they give /models byte for byte
    subprocess.run([tools_needed["oras"], "pull", "--plain-http",
                    "--no-tty", "-o", str(tmp_path / "pulled"), f"{host_repo}@{published.digest}"],
                   check=True, capture_output=True)
    _extract_pulled_layers(tmp_path / "pulled", manifest, tmp_path / "rootfs")
    assert digests_of(tmp_path / "rootfs" / "models") == digests
    assert not list((tmp_path / "work").iterdir())  # nothing left behind


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_registry_with_basic_auth_round_trip(tmp_path, secure, busybox_base, stack, argv_seen, backend):
    seen, auth_modes = argv_seen
    digests = make_model(tmp_path / "model")
    target = secure(f"{_repo()}:rc1")
    published = publish_modelcar(tmp_path / "model", target, busybox_base, tmp_path / "work", backend=backend)
    files = fetch_oci(OciLocation(published.uri.removeprefix("oci://"), target.username, target.password,
                                  ca_bundle=target.ca_bundle), tmp_path / "fetched", tmp_path / "work",
                      backend=backend)
    assert digests_of(tmp_path / "fetched") == digests
    assert {f.path: f.sha256 for f in files} == digests

    flat = " ".join(" ".join(argv) for argv in seen)
    assert seen and stack.oci_tls_password not in flat
    assert auth_modes and set(auth_modes.values()) == {0o600}          # private while the tool ran ...
    assert not any(Path(p).exists() for p in auth_modes)               # ... and gone afterwards
    assert not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_verify_off_against_https_registry(tmp_path, stack, tools_needed, backend):
    """tls_verify=False on an HTTPS registry means HTTPS without verification (like Docker's insecure registries)."""
    digests = make_model(tmp_path / "model")
    target = OciLocation(f"{stack.oci_tls_registry}/{_repo()}:insecure", username=stack.oci_tls_username,
                         password=Secret(stack.oci_tls_password), tls_verify=False)
    published = publish_modelcar(tmp_path / "model", target, None, tmp_path / "w", backend=backend)
    assert {f.path: f.sha256 for f in published.files} == digests


def test_a_secret_in_argv_is_refused_before_running(stack):
    password = Secret(stack.oci_tls_password)
    with pytest.raises(ToolError, match="a secret would appear in its command line") as err:
        tools.run("skopeo", ["copy", f"--dest-creds=modelsync:{password.reveal()}", "oci:x", "docker://y"])
    assert stack.oci_tls_password not in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_password_is_one_line_without_the_password(tmp_path, secure, busybox_base, stack, backend):
    make_model(tmp_path / "model")
    wrong = "not-the-password-" + uuid.uuid4().hex
    with pytest.raises(ModelSyncError) as err:
        publish_modelcar(tmp_path / "model", secure(f"{_repo()}:x", password=wrong), busybox_base,
                         tmp_path / "work", backend=backend)
    message = str(err.value)
    assert "\n" not in message and wrong not in message and stack.oci_tls_password not in message
    assert "401" in message or "unauthorized" in message.lower() or "authentication" in message.lower()
    assert not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_republish_same_model_gives_same_digest(tmp_path, plain, busybox_base, backend):
    make_model(tmp_path / "model")
    target = plain(f"{_repo()}:same")
    first = publish_modelcar(tmp_path / "model", target, busybox_base, tmp_path / "w", backend=backend, created=WHEN)
    again = publish_modelcar(tmp_path / "model", target, busybox_base, tmp_path / "w", backend=backend, created=WHEN)
    assert first == again


def test_docker_v2s2_base_is_converted(tmp_path, plain, stack):
    base = plain("base/busybox-docker:v2s2")
    # oras copies the layout verbatim, so the registry holds a Docker v2s2 manifest
    write_image(tmp_path / "docker-base", [busybox_layer()], docker=True)
    push_layout(tmp_path / "docker-base", "latest", base, "v2s2", tmp_path / "w", "oras")
    assert "docker" in _skopeo_inspect(base.reference, "--raw")["mediaType"]
    make_model(tmp_path / "model")
    for backend in BACKENDS:
        published = publish_modelcar(tmp_path / "model", plain(f"{_repo()}:d"), base, tmp_path / "w", backend=backend)
        manifest = _skopeo_inspect(published.uri.removeprefix("oci://"), "--raw")
        assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        assert all(lay["mediaType"] == OCI_LAYER_TAR for lay in manifest["layers"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_arch_base_index_is_narrowed_to_the_platform(tmp_path, plain, backend):
    root = tmp_path / "multi"
    amd_layer, arm_layer = busybox_layer(), tar_bytes([entry("bin/sh", b"arm", mode=0o755)])
    entries = []
    for arch, layer in (("amd64", amd_layer), ("arm64", arm_layer)):
        write_image(root, [layer], arch=arch)
        entries += json.loads((root / "index.json").read_text())["manifests"]
    for desc in entries:
        desc.pop("annotations", None)
    layout = Layout(root)
    index = layout.add_bytes(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode(),
                             OCI_INDEX)
    layout.write_index(index, "multi")
    base = plain(f"base/multi-{backend}:1")
    push_layout(root, "multi", base, "1", tmp_path / "w", "oras")  # oras copies the index and both images
    make_model(tmp_path / "model")
    published = publish_modelcar(tmp_path / "model", plain(f"{_repo()}:m"), base, tmp_path / "w", backend=backend)
    manifest = _skopeo_inspect(published.uri.removeprefix("oci://"), "--raw")
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(amd_layer).hexdigest()


def test_scratch_base_has_only_model_layers(tmp_path, plain):
    digests = make_model(tmp_path / "model")
    published = publish_modelcar(tmp_path / "model", plain(f"{_repo()}:s"), OciLocation("scratch"), tmp_path / "w")
    manifest = _skopeo_inspect(published.uri.removeprefix("oci://"), "--raw")
    assert len(manifest["layers"]) == len(digests)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fetch_oras_artifact_places_files_at_their_titles(tmp_path, plain, stack, tools_needed, backend):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(raw_weights(1000))
    (src / "tree" / "x").mkdir(parents=True)
    (src / "tree" / "x" / "c.txt").write_bytes(b"in a pushed directory")
    ref = f"{stack.oci_registry}/{_repo()}:art"
    subprocess.run([tools_needed["oras"], "push", "--plain-http", "--no-tty",
                    "--artifact-type", "application/vnd.example.model", ref, "a.txt", "sub/b.bin", "tree"],
                   cwd=src, check=True, capture_output=True)
    files = fetch_oci(plain(ref.split("/", 1)[1]), tmp_path / "dest", tmp_path / "w", backend=backend)
    assert digests_of(tmp_path / "dest") == digests_of(src)
    assert sorted(f.path for f in files) == ["a.txt", "sub/b.bin", "tree/x/c.txt"]


def test_fetch_refuses_a_malicious_layer(tmp_path, plain):
    evil = tar_bytes([entry("models/ok.txt", b"fine"), entry("models/../../../escaped.txt", b"owned")])
    write_image(tmp_path / "evil", [evil])
    target = plain(f"{_repo()}:evil")
    push_layout(tmp_path / "evil", "latest", target, "evil", tmp_path / "w", "skopeo")
    with pytest.raises(TransferError, match=r"'\.\.' would lead outside the model directory"):
        fetch_oci(target, tmp_path / "a" / "b" / "dest", tmp_path / "w")
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_gib_model_push_repush_fetch(tmp_path, plain, busybox_base, monkeypatch, backend):
    make_model(tmp_path / "model", big_bytes=1 << 30)
    pushes: list[float] = []
    real_push = oci_destination.push_layout

    def timed_push(*args, **kw):
        start = time.monotonic()
        real_push(*args, **kw)
        pushes.append(time.monotonic() - start)

    monkeypatch.setattr(oci_destination, "push_layout", timed_push)
    target = plain(f"{_repo()}:big")
    times = {}
    start = time.monotonic()
    publish_modelcar(tmp_path / "model", target, busybox_base, tmp_path / "w", backend=backend)
    times["publish"] = time.monotonic() - start
    start = time.monotonic()
    published = publish_modelcar(tmp_path / "model", target, busybox_base, tmp_path / "w", backend=backend)
    times["republish"] = time.monotonic() - start
    start = time.monotonic()
    fetch_oci(OciLocation(published.uri.removeprefix("oci://"), tls_verify=False), tmp_path / "dest", tmp_path / "w",
              backend=backend)
    times["fetch"] = time.monotonic() - start
    print(f"\n{backend} 1 GiB: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
          + (f"; push {pushes[0]:.1f}s, re-push {pushes[1]:.1f}s" if pushes else ""))
    if backend == "skopeo":  # the layout is built again, then copied: blobs already there are not sent again
        assert pushes[1] < max(2.0, pushes[0] / 3)
    else:  # oras: layers go up from the files (no layout, no push_layout); one HEAD finds each already there
        assert not pushes and times["republish"] < max(2.5, times["publish"] / 2)
    assert digests_of(tmp_path / "dest") == digests_of(tmp_path / "model")


def test_fetch_with_oras_streams_layers_without_a_layout_copy(tmp_path, plain, busybox_base, monkeypatch):
    """Each layer goes from the job's own ranged GETs (blob_read.py) straight into place: no tool runs, the work dir
    never holds a blob, so the storage path needs the model's bytes once (with skopeo, the layout copy comes
    first)."""
    expected = make_model(tmp_path / "model", big_bytes=24 << 20)
    published = publish_modelcar(tmp_path / "model", plain(f"{_repo()}:s"), busybox_base, tmp_path / "w")
    ran = tmp_path / "calls"
    for tool in ("oras", "skopeo"):
        monkeypatch.setenv("PATH", f"{wrapped_tool(tmp_path, tool, f'echo {tool} >> {ran}', tool)}:"
                                   f"{os.environ['PATH']}")
    opens = spy_blob_opens(monkeypatch)
    work = tmp_path / "fetch-work"
    biggest = [0]
    real_apply = TreeWriter.apply

    def apply(self, blob, media_type, digest):
        biggest[0] = max(biggest[0], sum(p.stat().st_size for p in work.rglob("*") if p.is_file()))
        return real_apply(self, blob, media_type, digest)

    monkeypatch.setattr(TreeWriter, "apply", apply)
    files = fetch_oci(OciLocation(published.uri.removeprefix("oci://"), tls_verify=False), tmp_path / "dest", work,
                      backend="oras")
    assert {f.path: f.sha256 for f in files} == expected == digests_of(tmp_path / "dest")
    assert not ran.exists(), ran.read_text()
    ranges = [start for start, _ in opens]
    assert ranges.count(blob_read.PART) >= 1, ranges  # the big file's layer: more than one range
    assert biggest[0] < 1 << 20, f"{biggest[0]} bytes in the work dir while extracting"


def test_a_cut_layer_read_resumes(tmp_path, plain, busybox_base, monkeypatch, caplog):
    """A layer read cut mid-range (through tests/support/faults.failing_gateway) is asked again from the byte it
    reached, and the files come out whole."""
    expected = make_model(tmp_path / "model", big_bytes=20 << 20)
    published = publish_modelcar(tmp_path / "model", plain(f"{_repo()}:cut"), busybox_base, tmp_path / "w")
    monkeypatch.setattr(blob_read, "RANGES", dataclasses.replace(blob_read.RANGES, first_delay=0.1))
    registry, _, rest = published.uri.removeprefix("oci://").partition("/")
    with failing_gateway(int(registry.rsplit(":", 1)[1])) as gate:
        gate.cuts, gate.cut_after = 3, 1 << 20
        files = fetch_oci(OciLocation(f"127.0.0.1:{gate.port}/{rest}", tls_verify=False), tmp_path / "dest",
                          tmp_path / "fw", backend="oras")
    assert {f.path: f.sha256 for f in files} == expected == digests_of(tmp_path / "dest")
    resumed = [line for line in gate.seen if "/blobs/" in line and int(line.rsplit(" ", 1)[1].split("-")[0])
               % blob_read.PART == 1 << 20]
    assert resumed, gate.seen  # (a cut answer shorter than 1 MiB, as a small layer's, arrives whole)
    assert "trying again" in caplog.text


def test_oras_pushes_from_the_files_the_image_skopeo_copies_from_a_layout(tmp_path, plain, busybox_base):
    """With oras, publish_modelcar feeds each layer to `oras blob push` from the model's files (no layer tar, no
    layout): the same manifest digest as build_modelcar's layout copied by skopeo, and the model dir untouched
    (it may be a volume read in place)."""
    expected = make_model(tmp_path / "model", big_bytes=12 << 20)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "model").rglob("*")}
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    sig = tmp_path / "model.sig"
    sig.write_bytes(b'{"a signature": true}')
    out = {backend: publish_modelcar(tmp_path / "model", plain(f"{_repo()}:{backend}"), busybox_base,
                                     tmp_path / f"w-{backend}", backend=backend, created=when, signature=sig)
           for backend in ("oras", "skopeo")}
    assert out["oras"].digest == out["skopeo"].digest
    assert {f.path: f.sha256 for f in out["oras"].files} == expected
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "model").rglob("*")} == before
    assert not list((tmp_path / "w-oras").rglob("*.tar")) and not list((tmp_path / "w-oras").glob("pipeline-*"))
