"""Issue 13: signed syncs on the real local sigstore services (Fulcio, TesseraCT, the TSA, Rekor v2 and a TUF
repository, e2e/sigstore.py), checked with the unmodified `cosign` and `model_signing` and with
bin/modelsync-verify. The stack's OIDC issuer mints the Kubernetes-shaped service-account token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from e2e.sigstore import pipe
from modelsync import config, job
from modelsync.locations import OciLocation

from ..support.cli import run_cli
from ..support.jobs import base_env, destination_env, read_back, source_env
from ..support.model_registry import registered, the_artifact
from ..support.models import digests_of
from ..support.signing import NO_PROXY, sigstore_env

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_service_account(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))


def signed_job(sig, tmp_path: Path, model_dir: Path, src: str, dst: str, base_image: str, **extra: str):
    name = f"sig-{uuid.uuid4().hex[:8]}"
    env = {**base_env(sig, tmp_path, name), **source_env(src, sig, tmp_path, model_dir, None, base_image),
           **destination_env(dst, sig, tmp_path, base_image), **sigstore_env(sig), **extra}
    return env, name


def verify_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "bin" / "modelsync-verify"), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **NO_PROXY})


def who(sig) -> list[str]:
    return ["--identity", sig.stack_sigstore_identity, "--issuer", sig.stack_sigstore_issuer]


def cosign(require_tool, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("cosign"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **NO_PROXY})


def model_signing_verify(sig, model_dir: Path, identity: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "sigstore", str(model_dir),
                           "--signature", str(model_dir / "model.sig"),
                           "--identity", identity or sig.stack_sigstore_identity,
                           "--identity_provider", sig.stack_sigstore_issuer,
                           "--trust_config", sig.stack_sigstore_trust_config],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **NO_PROXY})


# ---------------------------------------------------------------------------------------------- S3 -> OCI


@pytest.fixture(scope="module")
def signed_image(sigstore_stack, base_image, tmp_path_factory):
    """One signed S3 -> OCI sync (the pipeline, oras backend), through the real CLI."""
    from ..support.models import make_model
    tmp = tmp_path_factory.mktemp("signed-image")
    model_dir = tmp / "model-src"
    expected = make_model(model_dir)
    env, name = signed_job(sigstore_stack, tmp, model_dir, "s3", "oci", base_image,
                           MODEL_SYNC_DESTINATION_OCI_BACKEND="oras")
    t0 = time.monotonic()
    result = run_cli(env, tmp)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"env": env, "name": name, "uri": summary["uri"], "digest": summary["digest"], "expected": expected,
            "tmp": tmp, "log": result.stderr, "seconds": time.monotonic() - t0}


def test_signed_image_is_live_with_signature_facts(sigstore_stack, signed_image):
    art = the_artifact(sigstore_stack, signed_image["name"])
    assert art["state"] == "LIVE" and art["uri"] == signed_image["uri"]
    props = {k: v["string_value"] for k, v in art["customProperties"].items() if "string_value" in v}
    assert props["modelsync.signature.identity"] == sigstore_stack.stack_sigstore_identity
    assert props["modelsync.signature.issuer"] == sigstore_stack.stack_sigstore_issuer
    assert props["modelsync.signature.model_log_index"].isdigit()
    assert props["modelsync.signature.image_log_index"].isdigit()
    assert props["modelsync.signature.image_referrer"].startswith("sha256:")
    assert props["modelsync.signature.model_files"] == str(len(signed_image["expected"]))
    assert "signed the model" in signed_image["log"] and "signed the image" in signed_image["log"]


def test_cosign_verifies_the_signed_image(sigstore_stack, signed_image, require_tool):
    ref = signed_image["uri"].removeprefix("oci://")
    common = ["verify", "--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
              "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer, ref]
    run = cosign(require_tool, *common, "--certificate-identity", sigstore_stack.stack_sigstore_identity)
    assert run.returncode == 0, run.stderr
    wrong = cosign(require_tool, *common, "--certificate-identity",
                   "https://kubernetes.io/namespaces/other/serviceaccounts/other")
    assert wrong.returncode != 0


def test_the_image_carries_model_sig_that_model_signing_verifies(sigstore_stack, signed_image):
    published = job.Published(uri=signed_image["uri"], digest=signed_image["digest"], files=())
    files = read_back(published, "oci", sigstore_stack, signed_image["tmp"] / "rb")
    assert files.pop("model.sig")
    assert files == signed_image["expected"]
    out = signed_image["tmp"] / "rb" / "read-back"
    # one Fulcio certificate serves both signatures
    from modelsync.signing import image
    loc = OciLocation(signed_image["uri"].removeprefix("oci://"), tls_verify=False)
    (image_bundle,) = image.bundles(loc, signed_image["digest"])
    cert = json.loads(image_bundle)["verificationMaterial"]["certificate"]["rawBytes"]
    assert json.loads((out / "model.sig").read_text())["verificationMaterial"]["certificate"]["rawBytes"] == cert
    run = model_signing_verify(sigstore_stack, out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert model_signing_verify(sigstore_stack, out, "https://kubernetes.io/namespaces/x/serviceaccounts/y"
                                ).returncode != 0


def test_modelsync_verify_accepts_the_image_and_refuses_a_wrong_identity(sigstore_stack, signed_image):
    trust = ["--trust-config", sigstore_stack.stack_sigstore_trust_config, "--registry-insecure"]
    run = verify_cli(signed_image["uri"], *who(sigstore_stack), *trust)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("VERIFIED: image signature verified;")
    run = verify_cli(signed_image["uri"], "--identity", "https://kubernetes.io/namespaces/x/serviceaccounts/y",
                     "--issuer", sigstore_stack.stack_sigstore_issuer, *trust)
    assert run.returncode == 1 and run.stderr.startswith("NOT VERIFIED:") and len(run.stderr.splitlines()) == 1


def test_a_signature_moved_onto_another_image_fails(sigstore_stack, signed_image, require_tool, tmp_path, model):
    """The referrer (bundle and all) attached to a different image: cosign and modelsync-verify refuse it, since
    the signed statement names the first image's digest."""
    from modelsync.clients.distribution import RegistryClient
    from modelsync.destinations.oci import publish_modelcar
    from modelsync.oci_copy import repo_path
    from modelsync.signing import image

    first = OciLocation(signed_image["uri"].removeprefix("oci://"), tls_verify=False)
    other_ref = f"{sigstore_stack.oci_registry}/moved/{uuid.uuid4().hex[:8]}:v1"
    model_dir, _ = model
    other = publish_modelcar(model_dir, OciLocation(other_ref, tls_verify=False), None, tmp_path / "w")
    (bundle,) = image.bundles(first, signed_image["digest"])
    from sigstore.models import Bundle
    target = OciLocation(other.uri.removeprefix("oci://"), tls_verify=False)
    image.attach(target, other.digest, Bundle.from_json(bundle))
    client = RegistryClient(target)
    assert client.referrers(repo_path(target), other.digest)  # it is attached
    run = cosign(require_tool, "verify", "--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
                 "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer,
                 "--certificate-identity", sigstore_stack.stack_sigstore_identity, target.reference)
    assert run.returncode != 0
    run = verify_cli(other.uri, *who(sigstore_stack), "--trust-config", sigstore_stack.stack_sigstore_trust_config,
                     "--registry-insecure")
    assert run.returncode == 1 and "another image" in run.stderr, run.stderr


# ---------------------------------------------------------------------------------------------- S3 -> S3, volume


@pytest.mark.parametrize("dst", ["s3", "pvc"])
def test_signed_sync_to_s3_and_volume_verifies(dst, sigstore_stack, base_image, tmp_path, model):
    model_dir, expected = model
    env, name = signed_job(sigstore_stack, tmp_path, model_dir, "s3", dst, base_image)
    result = run_cli(env, tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    published = job.Published(uri=summary["uri"], digest=None, files=())
    files = read_back(published, dst, sigstore_stack, tmp_path)
    assert files.pop("model.sig") and files == expected
    out = tmp_path / "read-back" if dst == "s3" else Path(summary["uri"].removeprefix("file://"))
    run = model_signing_verify(sigstore_stack, out)
    assert run.returncode == 0, run.stdout + run.stderr
    run = verify_cli(str(out), *who(sigstore_stack), "--trust-config", sigstore_stack.stack_sigstore_trust_config)
    assert run.returncode == 0, run.stderr
    # one flipped byte in one model file
    victim = out / "weights" / "part-00001.bin"
    data = bytearray(victim.read_bytes())
    data[1234] ^= 0x01
    victim.write_bytes(bytes(data))
    run = verify_cli(str(out), *who(sigstore_stack), "--trust-config", sigstore_stack.stack_sigstore_trust_config)
    assert run.returncode == 1 and "weights/part-00001.bin is changed since signing" in run.stderr, run.stderr
    assert model_signing_verify(sigstore_stack, out).returncode != 0
    assert the_artifact(sigstore_stack, name)["state"] == "LIVE"


def test_model_sig_digests_come_from_the_transfer_not_a_reread(sigstore_stack, base_image, tmp_path, model):
    """model.sig's manifest equals the files' sha256 computed independently here."""
    from sigstore.models import Bundle

    from modelsync.signing.model import manifest_of
    model_dir, expected = model
    env, _ = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "pvc", base_image)
    assert run_cli(env, tmp_path).returncode == 0
    dest = Path(env["MODEL_SYNC_DESTINATION_PATH"])
    bundle = Bundle.from_json((dest / "model.sig").read_text())
    import base64
    payload = base64.b64decode(json.loads(bundle.to_json())["dsseEnvelope"]["payload"])
    assert manifest_of(payload) == expected
    assert digests_of(dest).keys() - {"model.sig", ".modelsync-files.json"} == expected.keys()


# ---------------------------------------------------------------------------------------------- the spec's table


def _volume_job(sig, tmp_path: Path, model_dir: Path, base_image: str, sigstore: dict[str, str], **extra: str):
    env, name = signed_job(sig, tmp_path, model_dir, "pvc", "pvc", base_image, **extra)
    env = {k: v for k, v in env.items() if not k.startswith("SIGSTORE_")}
    return {**env, **sigstore}, name


ROWS = {  # the spec's signing table: (--sign, which SIGSTORE_* vars) -> signed?, exit code, text on stderr
    "sign-true": ("true", "all", True, 0, None),
    "sign-false-with-vars": ("false", "all", False, 0, None),
    "sign-true-missing-vars": ("true", "none", False, 2, "SIGSTORE_TUF_URL, SIGSTORE_FULCIO_URL, SIGSTORE_REKOR_URL"),
    "unset-all-vars": (None, "all", True, 0, None),
    "unset-no-vars": (None, "none", False, 0, None),
    "unset-some-vars": (None, "some", False, 0, "signing skipped: SIGSTORE_TUF_URL, SIGSTORE_FULCIO_URL set but "
                                              "SIGSTORE_REKOR_URL missing"),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_spec_signing_table_end_to_end(row, sigstore_stack, base_image, tmp_path, model):
    sign, which, signed, code, text = ROWS[row]
    model_dir, expected = model
    every = {k: v for k, v in sigstore_env(sigstore_stack).items() if k.startswith("SIGSTORE_")}
    chosen = {"all": every, "none": {}, "some": {k: every[k] for k in ("SIGSTORE_TUF_URL", "SIGSTORE_FULCIO_URL")}}
    env, name = _volume_job(sigstore_stack, tmp_path, model_dir, base_image, chosen[which],
                            **({"MODEL_SYNC_SIGN": sign} if sign else {}))
    result = run_cli(env, tmp_path)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    if text:
        assert text in result.stderr
    dest = Path(env["MODEL_SYNC_DESTINATION_PATH"])
    if code:
        assert not dest.exists()
        return
    assert (dest / "model.sig").is_file() == signed
    assert ("signed the model" in result.stderr) == signed
    props = the_artifact(sigstore_stack, name)["customProperties"]
    assert ("modelsync.signature.identity" in props) == signed


# ---------------------------------------------------------------------------------------------- trust sources


def test_air_gapped_trust_file_signs_without_a_tuf_server(sigstore_stack, base_image, tmp_path, model):
    """--sigstore-trust-config: a client trust config file, no SIGSTORE_* at all (its signing config names the
    services)."""
    model_dir, _ = model
    env, _ = _volume_job(sigstore_stack, tmp_path, model_dir, base_image, {}, MODEL_SYNC_SIGN="true",
                         MODEL_SYNC_SIGSTORE_TRUST_CONFIG=sigstore_stack.stack_sigstore_trust_config)
    result = run_cli(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert model_signing_verify(sigstore_stack, Path(env["MODEL_SYNC_DESTINATION_PATH"])).returncode == 0


def test_trusted_root_file_needs_the_service_urls(sigstore_stack, base_image, tmp_path, model):
    model_dir, _ = model
    env, _ = _volume_job(sigstore_stack, tmp_path, model_dir, base_image, {}, MODEL_SYNC_SIGN="true",
                         MODEL_SYNC_SIGSTORE_TRUST_CONFIG=sigstore_stack.stack_sigstore_trusted_root)
    result = run_cli(env, tmp_path)
    assert result.returncode == 2 and "SIGSTORE_FULCIO_URL, SIGSTORE_REKOR_URL are not set" in result.stderr


def test_a_tuf_root_with_another_checksum_is_refused_before_anything_is_claimed(sigstore_stack, base_image,
                                                                               tmp_path, model):
    model_dir, _ = model
    env, name = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "pvc", base_image,
                           MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM="ab" * 32)
    result = run_cli(env, tmp_path)
    assert result.returncode == 1 and "--sigstore-root-checksum" in result.stderr, result.stderr
    assert not registered(sigstore_stack, name) and not Path(env["MODEL_SYNC_DESTINATION_PATH"]).exists()
    root = Path(sigstore_stack.stack_sigstore_tuf_root).read_bytes()
    import hashlib
    (tmp_path / "b").mkdir()
    env, name = signed_job(sigstore_stack, tmp_path / "b", model_dir, "pvc", "pvc", base_image,
                           MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM=hashlib.sha256(root).hexdigest())
    assert run_cli(env, tmp_path / "b").returncode == 0


# ---------------------------------------------------------------------------------------------- failures


class Relay:
    """A TCP relay in front of a real server that passes the first `allow` connections and then refuses (closes)
    every later one: the server "goes away" between the job's preflight check and its signature, at a point no
    sleep could hit reliably. The server itself is the real Fulcio."""

    def __init__(self, upstream_port: int, allow: int):
        import socket
        import threading
        self.upstream, self.allow, self.seen = upstream_port, allow, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.seen += 1
            if self.seen > self.allow:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("dst", ["oci", "pvc"])
def test_fulcio_gone_mid_run_leaves_the_artifact_abandoned(dst, sigstore_stack, base_image, tmp_path, model):
    model_dir, _ = model
    fulcio_port = int(sigstore_stack.stack_sigstore_fulcio_url.rsplit(":", 1)[1])
    relay = Relay(fulcio_port, allow=1)  # the preflight's root-certificate check, then nothing
    try:
        env, name = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", dst, base_image,
                               SIGSTORE_FULCIO_URL=f"http://127.0.0.1:{relay.port}")
        t0 = time.monotonic()
        result = run_cli(env, tmp_path)
    finally:
        relay.close()
    assert result.returncode == 1, result.stderr
    assert "signing the model failed" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - t0 < 120
    art = the_artifact(sigstore_stack, name)
    assert art["state"] == "ABANDONED" and "signing the model failed" in \
        art["customProperties"]["modelsync.error"]["string_value"]
    if dst == "pvc":
        assert not Path(env["MODEL_SYNC_DESTINATION_PATH"]).exists()  # nothing published unsigned


@pytest.mark.parametrize("problem", ["expired", "wrong-audience"])
def test_a_token_fulcio_refuses_ends_abandoned_with_one_line(problem, sigstore_stack, base_image, tmp_path, model):
    model_dir, _ = model
    token = tmp_path / "token"
    options = {"lifetime": -60} if problem == "expired" else {"audience": "not-sigstore"}
    sigstore_stack.write_oidc_token(token, namespace="modelsync", service_account="modelsync-signer", **options)
    env, name = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "oci", base_image,
                           MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH=str(token))
    result = run_cli(env, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    print(errors)
    assert len(errors) == 1 and ("identity token" in errors[0] or "signing the model failed" in errors[0]), errors
    assert token.read_text() not in result.stderr + result.stdout
    assert the_artifact(sigstore_stack, name)["state"] == "ABANDONED"


def test_dry_run_reports_the_signing_services(sigstore_stack, base_image, tmp_path, model):
    model_dir, _ = model
    env, _ = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "oci", base_image)
    result = run_cli(env, tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["signing"]["enabled"] is True and report["preflight"]["ok"] is True
    assert report["signing"]["rekor"].endswith("(v2)") and report["signing"]["fulcio"]


def test_fetch_then_publish_modelcar_is_signed_with_its_own_last_layer(sigstore_stack, base_image, tmp_path, model,
                                                                       require_tool):
    """pvc -> oci with skopeo (fetch-then-publish, not the pipeline): model.sig is the image's last layer, alone,
    and both verifiers accept the image."""
    from modelsync.clients.distribution import RegistryClient
    from modelsync.oci_copy import repo_path
    model_dir, expected = model
    env, _ = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "oci", base_image,
                        MODEL_SYNC_DESTINATION_OCI_BACKEND="skopeo")
    result = run_cli(env, tmp_path)
    assert result.returncode == 0, result.stderr
    uri = json.loads(result.stdout.strip().splitlines()[-1])["uri"]
    loc = OciLocation(uri.removeprefix("oci://"), tls_verify=False)
    layers = RegistryClient(loc).manifest(repo_path(loc), loc.digest).json()["layers"]
    assert layers[-1]["annotations"]["org.opencontainers.image.title"] == "model.sig"
    assert layers[-2]["annotations"]["org.opencontainers.image.title"] != "model.sig"
    run = cosign(require_tool, "verify", "--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
                 "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer,
                 "--certificate-identity", sigstore_stack.stack_sigstore_identity, loc.reference)
    assert run.returncode == 0, run.stderr
    run = verify_cli(uri, *who(sigstore_stack), "--tuf-url", sigstore_stack.stack_sigstore_tuf_url,
                     "--registry-insecure")
    assert run.returncode == 0, run.stderr
    assert f"{len(expected)} files match model.sig" in run.stdout


def test_signed_sync_to_a_registry_with_credentials_and_its_own_ca(sigstore_stack, base_image, tmp_path, model):
    """The signature's referrer and index go up with the destination's credentials and CA (basic auth over TLS);
    modelsync-verify reads them back with a username and the password from its environment."""
    model_dir, expected = model
    ref = f"{sigstore_stack.oci_tls_registry}/signed/{uuid.uuid4().hex[:8]}:v1"
    env, name = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "oci", base_image,
                           MODEL_SYNC_DESTINATION_OCI_URI=ref,
                           MODEL_SYNC_DESTINATION_OCI_USERNAME=sigstore_stack.oci_tls_username,
                           MODEL_SYNC_DESTINATION_OCI_PASSWORD=sigstore_stack.oci_tls_password,
                           MODEL_SYNC_DESTINATION_OCI_CA_BUNDLE=sigstore_stack.oci_tls_ca,
                           MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY="true")
    result = run_cli(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sigstore_stack.oci_tls_password not in result.stderr + result.stdout
    uri = json.loads(result.stdout.strip().splitlines()[-1])["uri"]
    args = [uri, *who(sigstore_stack), "--trust-config", sigstore_stack.stack_sigstore_trust_config,
            "--registry-username", sigstore_stack.oci_tls_username, "--registry-ca-bundle", sigstore_stack.oci_tls_ca]
    run = subprocess.run([str(REPO / "bin" / "modelsync-verify"), *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **NO_PROXY,
                                           "MODEL_SYNC_VERIFY_REGISTRY_PASSWORD": sigstore_stack.oci_tls_password})
    assert run.returncode == 0, run.stderr
    assert f"{len(expected)} files match" in run.stdout
    run = verify_cli(*args)  # no password: the registry refuses
    assert run.returncode == 1 and "NOT VERIFIED" in run.stderr


@pytest.mark.parametrize("generation", [1, 2])
def test_signed_sync_against_each_rekor_generation(generation, sigstore_stack, base_image, tmp_path, model,
                                                   require_tool):
    """SIGSTORE_REKOR_URL names a Rekor v1 (Trillian on MariaDB, as RHTAS runs it) or v2 (rekor-tiles); the TUF
    signing config lists only the v2 log, so v1 is recognised from the server's answer. Both signatures of the
    image carry that log's entries, and cosign, model_signing and modelsync-verify accept them."""
    model_dir, expected = model
    rekor = sigstore_stack.stack_sigstore_rekor_v1_url if generation == 1 else sigstore_stack.stack_sigstore_rekor_url
    env, name = signed_job(sigstore_stack, tmp_path, model_dir, "pvc", "oci", base_image, SIGSTORE_REKOR_URL=rekor)
    result = run_cli(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"rekor {rekor} (v{generation})" in result.stderr
    uri = json.loads(result.stdout.strip().splitlines()[-1])["uri"]
    props = the_artifact(sigstore_stack, name)["customProperties"]
    assert props["modelsync.signature.rekor"]["string_value"] == f"{rekor} (v{generation})"
    loc = OciLocation(uri.removeprefix("oci://"), tls_verify=False)
    from modelsync.signing import image
    (bundle,) = image.bundles(loc, loc.digest)
    (entry,) = json.loads(bundle)["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"]["version"] == ("0.0.1" if generation == 1 else "0.0.2")
    run = cosign(require_tool, "verify", "--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
                 "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer,
                 "--certificate-identity", sigstore_stack.stack_sigstore_identity, loc.reference)
    assert run.returncode == 0, run.stderr
    run = verify_cli(uri, *who(sigstore_stack), "--tuf-url", sigstore_stack.stack_sigstore_tuf_url,
                     "--registry-insecure")
    assert run.returncode == 0, run.stderr
    read_back(job.Published(uri=uri, digest=loc.digest, files=()), "oci", sigstore_stack, tmp_path)
    assert model_signing_verify(sigstore_stack, tmp_path / "read-back").returncode == 0
