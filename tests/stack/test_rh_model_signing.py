"""Issue 25: a signed sync's image verifies by reference with Red Hat's unmodified verifier, rh-model-signing 1.0.5
(`model_signing verify sigstore <image-ref>`, from its own venv: e2e/rh_model_signing.py), on the real local
sigstore services and the stack's TLS registry with token auth (anonymous pull, as its oras-py client needs);
a tampered layer is refused.

Two images: one whose files each have a layer (olot `file` layers: the verifier reads their sha256 from the
annotations) and one of more files than the layer budget (shared olot `directory` layers: the verifier pulls and
hashes them). Tampering pushes a changed layer and manifest under the image's tag, then also copies the signature
to the new digest, as an attacker with push rights could.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from e2e import rh_model_signing
from modelsync.clients.distribution import RegistryClient
from modelsync.locations import OciLocation
from modelsync.oci_copy import repo_path
from modelsync.oci_layout import OCI_MANIFEST, canonical_json
from modelsync.secret import Secret
from modelsync.signing import oci_model

from ..conftest import unavailable
from ..support.cli import run_cli
from ..support.jobs import base_env, destination_env, source_env
from ..support.models import make_model
from ..support.signing import NO_PROXY, sigstore_env

pytestmark = pytest.mark.stack
MANY = 70  # files: more than the layer budget (64), so small files share layers


@pytest.fixture(scope="module")
def rh_cli() -> Path:
    path = rh_model_signing.cli()
    if path is None:
        unavailable(f"rh-model-signing not installed ({rh_model_signing.venv_dir()}); "
                    f"run e2e/install-tools.sh rh-model-signing")
    assert path is not None
    return path


def _token_location(sig, ref: str) -> OciLocation:
    return OciLocation(ref, username=sig.oci_token_username, password=Secret(sig.oci_token_password),
                       ca_bundle=sig.oci_token_ca)


def _sync(sig, base_image: str, tmp: Path, model_dir: Path, **extra: str) -> dict:
    ref = f"{sig.oci_token_registry}/rh/{uuid.uuid4().hex[:8]}:v1"
    env = {**base_env(sig, tmp, f"rh-{uuid.uuid4().hex[:8]}"),
           **source_env("s3", sig, tmp, model_dir, None, base_image),
           **destination_env("oci", sig, tmp, base_image), **sigstore_env(sig),
           "MODEL_SYNC_DESTINATION_OCI_URI": ref, "MODEL_SYNC_DESTINATION_OCI_USERNAME": sig.oci_token_username,
           "MODEL_SYNC_DESTINATION_OCI_PASSWORD": sig.oci_token_password,
           "MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE": sig.oci_token_ca,
           "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "true", **extra}
    result = run_cli(env, tmp)
    assert result.returncode == 0, result.stderr
    assert sig.oci_token_password not in result.stderr + result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"ref": ref, "digest": summary["digest"], "log": result.stderr, "tmp": tmp}


@pytest.fixture(scope="module")
def one_file_layers(sigstore_stack, base_image, tmp_path_factory) -> dict:
    """The sample model with its non-ASCII file name renamed (test_a_non_ascii_name_verifies_by_tag_and_digest
    keeps it)."""
    tmp = tmp_path_factory.mktemp("rh-file")
    make_model(tmp / "model")
    next((tmp / "model" / "docs").iterdir()).rename(tmp / "model" / "docs" / "README.md")
    return _sync(sigstore_stack, base_image, tmp, tmp / "model")


@pytest.fixture(scope="module")
def shared_layers(sigstore_stack, base_image, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("rh-shared")
    for i in range(MANY):
        (tmp / "model" / "shards").mkdir(parents=True, exist_ok=True)
        (tmp / "model" / "shards" / f"part-{i:03d}.json").write_text(json.dumps({"part": i}))
    return _sync(sigstore_stack, base_image, tmp, tmp / "model")


def verify(sig, ref: str, work: Path, identity: str | None = None):
    return rh_model_signing.verify_image(ref, identity=identity or sig.stack_sigstore_identity,
                                         issuer=sig.stack_sigstore_issuer,
                                         trust_config=sig.stack_sigstore_trust_config,
                                         ca_bundle=sig.oci_token_ca, work=work)


def _manifest(sig, image: dict) -> dict:
    loc = _token_location(sig, image["ref"])
    return RegistryClient(loc).manifest(repo_path(loc), image["digest"]).json()


def test_token_registry_serves_anonymous_pull_and_refuses_anonymous_push(sigstore_stack, one_file_layers):
    anonymous = OciLocation(one_file_layers["ref"], ca_bundle=sigstore_stack.oci_token_ca)
    client = RegistryClient(anonymous)
    assert client.manifest(repo_path(anonymous), one_file_layers["digest"]).digest == one_file_layers["digest"]
    with pytest.raises(Exception, match="authentication failed|refused"):
        client.put_blob(repo_path(anonymous), b"anonymous push")


def test_a_large_write_after_a_read_gets_a_push_token(sigstore_stack, one_file_layers):
    """modelsync's registry client: a read takes a pull token; a following PUT with a body larger than the socket
    buffers gets a push token first (the registry would close the connection mid-body: a TLS EOF, not a 401)."""
    loc = _token_location(sigstore_stack, one_file_layers["ref"])
    client, repo = RegistryClient(loc), repo_path(loc)
    manifest = client.manifest(repo, one_file_layers["digest"]).json()
    manifest["annotations"]["modelsync.test.padding"] = "x" * 300_000
    body = canonical_json(manifest)
    client.put_manifest(repo, f"padded-{uuid.uuid4().hex[:6]}", body, OCI_MANIFEST)
    assert client.manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest()).data == body


@pytest.mark.parametrize("which", ["one_file_layers", "shared_layers"])
def test_rh_model_signing_verifies_the_image_by_reference(which, sigstore_stack, rh_cli, request, tmp_path):
    image = request.getfixturevalue(which)
    manifest = _manifest(sigstore_stack, image)
    kinds = {(layer.get("annotations") or {}).get(oci_model.CONTENT_TYPE) for layer in manifest["layers"]}
    assert ("directory" in kinds) == (which == "shared_layers")
    assert "model.sig attached to the modelcar" in image["log"]
    repo = image["ref"].rsplit(":", 1)[0]
    for ref in (image["ref"], f"{repo}@{image['digest']}"):
        run = verify(sigstore_stack, ref, tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Verification succeeded" in run.stdout
    wrong = verify(sigstore_stack, image["ref"], tmp_path, "https://kubernetes.io/namespaces/x/serviceaccounts/y")
    assert wrong.returncode != 0


def test_a_hybrid_index_verifies_by_its_modelcar_entry(sigstore_stack, base_image, rh_cli, tmp_path):
    """--destination-oci-format hybrid: the tag names an index (modelpack.py), which rh-model-signing 1.0.5 does not
    resolve; model.sig is attached to the index's modelcar entry, which its CLI verifies by digest, and not to the
    index or the ModelPack entry (none of the two has a signature it could find)."""
    make_model(tmp_path / "model")
    image = _sync(sigstore_stack, base_image, tmp_path, tmp_path / "model",
                  MODEL_SYNC_DESTINATION_OCI_FORMAT="hybrid")
    index = _manifest(sigstore_stack, image)
    (modelcar,) = [e["digest"] for e in index["manifests"] if e.get("platform", {}).get("os") == "linux"]
    (pack,) = [e["digest"] for e in index["manifests"] if e["digest"] != modelcar]
    assert "model.sig attached to the modelcar" in image["log"] and "the hybrid's modelcar entry" in image["log"]
    repo = image["ref"].rsplit(":", 1)[0]
    run = verify(sigstore_stack, f"{repo}@{modelcar}", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    loc = _token_location(sigstore_stack, image["ref"])
    client = RegistryClient(loc)
    assert client.manifest(repo_path(loc), oci_model.sig_tag(modelcar)).json()["subject"]["digest"] == modelcar
    for other in (image["digest"], pack):
        assert client.find_manifest(repo_path(loc), oci_model.sig_tag(other)) is None


def test_a_non_ascii_name_verifies_by_tag_and_digest(sigstore_stack, base_image, rh_cli, tmp_path):
    """rh-model-signing 1.0.5 resolves a tag to `sha256(json.dumps(manifest, separators=(",", ":")))`, which escapes
    non-ASCII characters: our manifests are ASCII-only JSON (oci_layout.canonical_json), so for a model with a file
    name in another script that is still the manifest's digest and the tag verifies (with raw UTF-8 it found no
    signature); by digest it verifies as well."""
    make_model(tmp_path / "model")
    image = _sync(sigstore_stack, base_image, tmp_path, tmp_path / "model")
    repo = image["ref"].rsplit(":", 1)[0]
    run = verify(sigstore_stack, f"{repo}@{image['digest']}", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    names = [(layer.get("annotations") or {}).get("org.opencontainers.image.title", "")
             for layer in _manifest(sigstore_stack, image)["layers"]]
    assert any(ord(c) > 127 for name in names for c in name), names  # the model does name a non-ASCII file
    by_tag = verify(sigstore_stack, image["ref"], tmp_path)
    assert by_tag.returncode == 0, by_tag.stdout + by_tag.stderr


def test_the_signature_sits_under_the_sig_tag_and_as_a_referrer(sigstore_stack, one_file_layers):
    loc = _token_location(sigstore_stack, one_file_layers["ref"])
    client, repo = RegistryClient(loc), repo_path(loc)
    tagged = client.manifest(repo, oci_model.sig_tag(one_file_layers["digest"])).json()
    assert tagged["artifactType"] == oci_model.ARTIFACT_TYPE
    assert tagged["subject"]["digest"] == one_file_layers["digest"]
    (layer,) = tagged["layers"]
    assert layer["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    bundle = json.loads(client.blob(repo, layer["digest"]))
    assert "certificate" in bundle["verificationMaterial"]
    referrers = client.referrers(repo, one_file_layers["digest"])
    assert oci_model.ARTIFACT_TYPE in {r.get("artifactType") for r in referrers}


def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directory = tarfile.TarInfo("models")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for path, data in files.items():
            info = tarfile.TarInfo(f"models/{path}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tamper(sig, image: dict, *, keep_annotation: bool = False, copy_signature: bool) -> str:
    """Replace the image's first model layer by one whose first file has another byte, push the manifest under
    the image's tag; with copy_signature the `.sig` manifest is pushed for the new digest too. The new digest."""
    loc = _token_location(sig, image["ref"])
    client, repo = RegistryClient(loc), repo_path(loc)
    manifest = client.manifest(repo, image["digest"]).json()
    index = next(i for i, layer in enumerate(manifest["layers"])
                 if (layer.get("annotations") or {}).get(oci_model.CONTENT_TYPE))
    layer = manifest["layers"][index]
    with tarfile.open(fileobj=io.BytesIO(client.blob(repo, layer["digest"], limit=1 << 30))) as tar:
        files = {m.name.removeprefix("models/"): tar.extractfile(m).read()  # type: ignore[union-attr]
                 for m in tar if m.isfile()}
    first = sorted(files)[0]
    files[first] = files[first] + b" "
    data = _layer_tar(files)
    notes = dict(layer["annotations"])
    if notes[oci_model.CONTENT_TYPE] == "file" and not keep_annotation:
        notes[oci_model.CONTENT_DIGEST] = "sha256:" + hashlib.sha256(files[first]).hexdigest()
    manifest["layers"][index] = {**layer, "digest": client.put_blob(repo, data), "size": len(data),
                                 "annotations": notes}
    body = canonical_json(manifest)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client.put_manifest(repo, loc.tag or "v1", body, OCI_MANIFEST)
    if copy_signature:
        sig_manifest = client.manifest(repo, oci_model.sig_tag(image["digest"]))
        client.put_manifest(repo, oci_model.sig_tag(digest), sig_manifest.data, OCI_MANIFEST)
    return digest


@pytest.mark.parametrize("which", ["one_file_layers", "shared_layers"])
def test_a_tampered_layer_is_refused(which, sigstore_stack, rh_cli, request, tmp_path):
    image = dict(request.getfixturevalue(which))
    image["ref"] = image["ref"].rsplit(":", 1)[0] + f":tampered-{uuid.uuid4().hex[:6]}"
    loc = _token_location(sigstore_stack, image["ref"])
    client = RegistryClient(loc)
    original = client.manifest(repo_path(loc), image["digest"])
    client.put_manifest(repo_path(loc), loc.tag or "", original.data, OCI_MANIFEST)  # a tag of its own to tamper
    assert verify(sigstore_stack, image["ref"], tmp_path).returncode == 0
    _tamper(sigstore_stack, image, copy_signature=False)
    run = verify(sigstore_stack, image["ref"], tmp_path)
    assert run.returncode != 0 and "No signature found" in run.stdout + run.stderr, run.stdout + run.stderr
    _tamper(sigstore_stack, image, copy_signature=True)  # the signature copied onto the tampered image
    run = verify(sigstore_stack, image["ref"], tmp_path)
    assert run.returncode != 0, run.stdout + run.stderr
    assert "Verification failed" in run.stdout + run.stderr and "No signature found" not in run.stdout + run.stderr


def test_a_one_file_layer_is_checked_by_its_annotation_only(sigstore_stack, rh_cli, one_file_layers, tmp_path,
                                                              require_tool):
    """A limitation of rh-model-signing 1.0.5, measured: a one-file layer's bytes are not read, only its
    `olot.layer.content.digest`; a swapped blob under the old annotation, with the signature copied to the new
    digest, passes it. The image's cosign signature binds the manifest digest and refuses the same image."""
    image = dict(one_file_layers)
    image["ref"] = image["ref"].rsplit(":", 1)[0] + f":swapped-{uuid.uuid4().hex[:6]}"
    loc = _token_location(sigstore_stack, image["ref"])
    client = RegistryClient(loc)
    original = client.manifest(repo_path(loc), image["digest"])
    client.put_manifest(repo_path(loc), loc.tag or "", original.data, OCI_MANIFEST)
    digest = _tamper(sigstore_stack, image, keep_annotation=True, copy_signature=True)
    run = verify(sigstore_stack, image["ref"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    # cosign's signature copied too (its referrers tag-schema index, under the new digest): still refused, since
    # its statement names the original manifest digest
    index = client.manifest(repo_path(loc), image["digest"].replace(":", "-"))
    client.put_manifest(repo_path(loc), digest.replace(":", "-"), index.data, index.media_type)
    repo = image["ref"].rsplit(":", 1)[0]
    checked = subprocess.run([require_tool("cosign"), "verify", "--trusted-root",
                              sigstore_stack.stack_sigstore_trusted_root,
                              "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer,
                              "--certificate-identity", sigstore_stack.stack_sigstore_identity, f"{repo}@{digest}"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, **NO_PROXY, "SSL_CERT_FILE": sigstore_stack.oci_token_ca})
    assert checked.returncode != 0
    assert "no signatures found" not in checked.stderr.lower(), checked.stderr
