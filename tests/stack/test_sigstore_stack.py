"""The local stack's sigstore group (e2e/sigstore.py) works with unmodified clients: sigstore-python signs a blob and
a DSSE statement with the stack's service-account token and verifies them against the stack's trust config (also
bootstrapped over its TUF repository); cosign verifies the same bundles with --trusted-root; a wrong identity fails.
The same with Rekor v1 (trust_config_rekor_v1.json): one trusted root verifies bundles of both log generations."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.stack import REPO_ROOT

pytestmark = pytest.mark.stack

BLOB = b"modelsync: a small blob to sign\n"
PREDICATE_TYPE = "https://modelsync.invalid/test-predicate/v1"
SIGSTORE_KEYS = ("STACK_SIGSTORE_TUF_URL", "STACK_SIGSTORE_FULCIO_URL", "STACK_SIGSTORE_REKOR_URL",
                 "STACK_SIGSTORE_TSA_URL", "STACK_SIGSTORE_TOKEN_PATH", "STACK_SIGSTORE_IDENTITY",
                 "STACK_SIGSTORE_ISSUER", "STACK_SIGSTORE_TRUSTED_ROOT", "STACK_SIGSTORE_TRUST_CONFIG",
                 "STACK_SIGSTORE_REKOR_V1_URL", "STACK_SIGSTORE_TRUST_CONFIG_REKOR_V1",
                 "STACK_SIGSTORE_SIGNING_CONFIG_REKOR_V1")


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def isolated_sigstore_home(tmp_path, monkeypatch) -> dict[str, str]:
    """sigstore-python keeps TUF metadata under the user's data and cache dirs: keep them in tmp_path."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg-data"), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _sign(sigstore_stack, trust_config: str, root: Path) -> dict:
    """A blob and a DSSE statement signed by sigstore-python with `trust_config` and the stack's token."""
    from sigstore.dsse import StatementBuilder, Subject
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    blob = root / "blob.txt"
    blob.write_bytes(BLOB)
    trust = ClientTrustConfig.from_json(Path(trust_config).read_text())
    token = IdentityToken(Path(sigstore_stack.stack_sigstore_token_path).read_text(), client_id="sigstore")
    statement = (StatementBuilder()
                 .subjects([Subject(name="blob.txt", digest={"sha256": hashlib.sha256(BLOB).hexdigest()})])
                 .predicate_type(PREDICATE_TYPE).predicate({"purpose": "modelsync stack test"}).build())
    t0 = time.monotonic()
    with SigningContext.from_trust_config(trust).signer(token, cache=True) as signer:
        blob_bundle = signer.sign_artifact(BLOB)
        dsse_bundle = signer.sign_dsse(statement)
    (root / "blob.sigstore.json").write_text(blob_bundle.to_json())
    (root / "dsse.sigstore.json").write_text(dsse_bundle.to_json())
    return {"dir": root, "blob": blob, "trust": trust, "blob_bundle": blob_bundle, "dsse_bundle": dsse_bundle,
            "seconds": time.monotonic() - t0}


@pytest.fixture(scope="module")
def signed(sigstore_stack, tmp_path_factory) -> dict:
    """Signed with the stack's trust config: Rekor v2."""
    return _sign(sigstore_stack, sigstore_stack.stack_sigstore_trust_config, tmp_path_factory.mktemp("signed"))


@pytest.fixture(scope="module")
def signed_v1(sigstore_stack, tmp_path_factory) -> dict:
    """Signed with trust_config_rekor_v1.json: Rekor v1."""
    return _sign(sigstore_stack, sigstore_stack.stack_sigstore_trust_config_rekor_v1,
                 tmp_path_factory.mktemp("signed-v1"))


def test_env_exports_the_sigstore_stack(sigstore_stack):
    out = subprocess.run([sys.executable, "-m", "e2e.stack", "env", "--state-dir", str(sigstore_stack.state_dir)],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert set(SIGSTORE_KEYS) <= set(exported)
    assert "MR_URL" in exported and "MINIO_ENDPOINT" in exported  # beside what it exported before
    token = Path(exported["STACK_SIGSTORE_TOKEN_PATH"].strip("'")).read_text()
    assert not token.endswith("\n")  # cosign sends the file verbatim
    claims = _claims(token)
    assert claims["aud"] == ["sigstore"] and claims["exp"] >= time.time() + 600
    assert claims["iss"] == sigstore_stack.stack_sigstore_issuer == sigstore_stack.oidc_issuer_url
    assert claims["sub"].startswith("system:serviceaccount:")
    for key in ("STACK_SIGSTORE_TRUSTED_ROOT", "STACK_SIGSTORE_TRUST_CONFIG"):
        assert json.loads(Path(exported[key].strip("'")).read_text())["mediaType"]


def test_issuer_discovery_has_what_clients_need(sigstore_stack):
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{sigstore_stack.stack_sigstore_issuer}/.well-known/openid-configuration") as resp:
        doc = json.load(resp)
    assert {"issuer", "jwks_uri", "authorization_endpoint", "token_endpoint"} <= set(doc)


def test_sigstore_python_signs_and_verifies_blob_and_dsse(sigstore_stack, signed):
    from sigstore.verify import Verifier, policy

    verifier = Verifier(trusted_root=signed["trust"].trusted_root)
    identity = policy.Identity(identity=sigstore_stack.stack_sigstore_identity,
                               issuer=sigstore_stack.stack_sigstore_issuer)
    verifier.verify_artifact(BLOB, signed["blob_bundle"], identity)
    payload_type, payload = verifier.verify_dsse(signed["dsse_bundle"], identity)
    assert payload_type == "application/vnd.in-toto+json"
    assert json.loads(payload)["predicateType"] == PREDICATE_TYPE
    cert = signed["blob_bundle"].signing_certificate
    assert sigstore_stack.stack_sigstore_identity in str(cert.extensions)
    bundle = json.loads(signed["blob_bundle"].to_json())
    assert bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"]["version"] == "0.0.2"  # Rekor v2
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]


def test_sigstore_python_refuses_wrong_identity_and_tampered_blob(sigstore_stack, signed):
    from sigstore.errors import VerificationError
    from sigstore.verify import Verifier, policy

    verifier = Verifier(trusted_root=signed["trust"].trusted_root)
    issuer = sigstore_stack.stack_sigstore_issuer
    wrong = policy.Identity(identity="https://kubernetes.io/namespaces/other/serviceaccounts/other", issuer=issuer)
    with pytest.raises(VerificationError):
        verifier.verify_artifact(BLOB, signed["blob_bundle"], wrong)
    with pytest.raises(VerificationError):
        verifier.verify_dsse(signed["dsse_bundle"], wrong)
    right = policy.Identity(identity=sigstore_stack.stack_sigstore_identity, issuer=issuer)
    with pytest.raises(VerificationError):
        verifier.verify_artifact(BLOB + b"x", signed["blob_bundle"], right)


def test_tuf_repository_bootstraps_sigstore_python(sigstore_stack, isolated_sigstore_home):
    from sigstore.models import ClientTrustConfig

    url, root = sigstore_stack.stack_sigstore_tuf_url, Path(sigstore_stack.stack_sigstore_tuf_root)
    trust = ClientTrustConfig.from_tuf(url, bootstrap_root=root)
    expected = ClientTrustConfig.from_json(Path(sigstore_stack.stack_sigstore_trust_config).read_text())
    assert trust.trusted_root.get_fulcio_certs() == expected.trusted_root.get_fulcio_certs()
    assert trust.signing_config.get_fulcio().url.startswith(sigstore_stack.stack_sigstore_fulcio_url)


def test_sigstore_cli_signs_over_tuf_and_verifies_with_trust_config(sigstore_stack, isolated_sigstore_home,
                                                                   tmp_path):
    """The unmodified `sigstore` CLI: trust-instance with the root, sign with --instance (TUF), verify with
    --trust-config."""
    env = {**os.environ, **isolated_sigstore_home, "NO_PROXY": "127.0.0.1,localhost"}
    url = sigstore_stack.stack_sigstore_tuf_url

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sigstore", *args], env=env, capture_output=True, text=True)

    run = cli("--instance", url, "trust-instance", sigstore_stack.stack_sigstore_tuf_root)
    assert run.returncode == 0, run.stderr
    blob = tmp_path / "blob.txt"
    blob.write_bytes(BLOB)
    token = Path(sigstore_stack.stack_sigstore_token_path).read_text()
    run = cli("--instance", url, "sign", "--identity-token", token, "--bundle", str(tmp_path / "b.json"), str(blob))
    assert run.returncode == 0, run.stderr
    verify = ["--trust-config", sigstore_stack.stack_sigstore_trust_config, "verify", "identity",
              "--cert-oidc-issuer", sigstore_stack.stack_sigstore_issuer, "--bundle", str(tmp_path / "b.json")]
    run = cli(*verify, "--cert-identity", sigstore_stack.stack_sigstore_identity, str(blob))
    assert run.returncode == 0, run.stderr
    run = cli(*verify, "--cert-identity", "https://kubernetes.io/namespaces/x/serviceaccounts/y", str(blob))
    assert run.returncode != 0


def _cosign(cosign: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([cosign, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})


@pytest.mark.parametrize("bundles", ["signed", "signed_v1"])
def test_cosign_verifies_the_same_bundles(sigstore_stack, bundles, request, require_tool):
    signed = request.getfixturevalue(bundles)
    cosign = require_tool("cosign")
    common = ["--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
              "--certificate-oidc-issuer", sigstore_stack.stack_sigstore_issuer]
    blob, root = str(signed["blob"]), signed["dir"]
    identity = ["--certificate-identity", sigstore_stack.stack_sigstore_identity]
    run = _cosign(cosign, "verify-blob", *common, *identity, "--bundle", str(root / "blob.sigstore.json"), blob)
    assert run.returncode == 0, run.stderr
    run = _cosign(cosign, "verify-blob-attestation", *common, *identity, "--type", PREDICATE_TYPE,
                  "--bundle", str(root / "dsse.sigstore.json"), blob)
    assert run.returncode == 0, run.stderr
    wrong = ["--certificate-identity", "https://kubernetes.io/namespaces/other/serviceaccounts/other"]
    run = _cosign(cosign, "verify-blob", *common, *wrong, "--bundle", str(root / "blob.sigstore.json"), blob)
    assert run.returncode != 0
    run = _cosign(cosign, "verify-blob-attestation", *common, *wrong, "--type", PREDICATE_TYPE,
                  "--bundle", str(root / "dsse.sigstore.json"), blob)
    assert run.returncode != 0


def test_cosign_signs_with_the_stack_signing_config(sigstore_stack, require_tool, tmp_path):
    cosign = require_tool("cosign")
    blob = tmp_path / "blob.txt"
    blob.write_bytes(BLOB)
    bundle = tmp_path / "cosign.sigstore.json"
    run = _cosign(cosign, "sign-blob", "--yes", "--identity-token", sigstore_stack.stack_sigstore_token_path,
                  "--trusted-root", sigstore_stack.stack_sigstore_trusted_root,
                  "--signing-config", sigstore_stack.stack_sigstore_signing_config,
                  "--bundle", str(bundle), str(blob))
    assert run.returncode == 0, run.stderr
    from sigstore.models import Bundle, ClientTrustConfig
    from sigstore.verify import Verifier, policy
    trust = ClientTrustConfig.from_json(Path(sigstore_stack.stack_sigstore_trust_config).read_text())
    Verifier(trusted_root=trust.trusted_root).verify_artifact(
        BLOB, Bundle.from_json(bundle.read_text()),
        policy.Identity(identity=sigstore_stack.stack_sigstore_identity, issuer=sigstore_stack.stack_sigstore_issuer))


def test_a_second_timestamp_authority_runs_beside_the_stack(sigstore_stack, require_tool, tmp_path):
    """The TSA binds :2112 (all interfaces) for metrics; the stack runs it in a network namespace of its own
    (`python -m e2e.sigstore netns`), so a second stack's (another pytest session's) starts too."""
    from e2e.component import free_ports, http_status
    from e2e.procs import log_tail, stop_group

    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "e2e.sigstore", "netns", "--port", str(port), "--",
            require_tool("timestamp-server"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--timestamp-signer", "memory", "--disable-ntp-monitoring"]
    log = tmp_path / "tsa.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 30
        while http_status(f"http://127.0.0.1:{port}/api/v1/timestamp/certchain") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log_tail(log)
            time.sleep(0.1)
        assert "network namespace" in log.read_text()
        tsa = sigstore_stack.stack_sigstore_tsa_url.removesuffix("/api/v1/timestamp")
        assert http_status(f"{tsa}/api/v1/timestamp/certchain") == 200  # the stack's own still answers
    finally:
        stop_group(proc.pid, proc)


# ---------------------------------------------------------------------------------------------- Rekor v1


def _get_json(url: str) -> tuple[int, object]:
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def test_trust_files_list_both_rekor_generations(sigstore_stack):
    v2 = json.loads(Path(sigstore_stack.stack_sigstore_trust_config).read_text())
    v1 = json.loads(Path(sigstore_stack.stack_sigstore_trust_config_rekor_v1).read_text())
    root = json.loads(Path(sigstore_stack.stack_sigstore_trusted_root).read_text())
    assert v1["trustedRoot"] == v2["trustedRoot"] == root
    urls = {t["baseUrl"]: t for t in root["tlogs"]}
    assert set(urls) == {sigstore_stack.stack_sigstore_rekor_url, sigstore_stack.stack_sigstore_rekor_v1_url}
    tlog_v1 = urls[sigstore_stack.stack_sigstore_rekor_v1_url]
    assert tlog_v1["publicKey"]["keyDetails"] == "PKIX_ECDSA_P256_SHA_256"
    spki = base64.b64decode(tlog_v1["publicKey"]["rawBytes"])
    assert base64.b64decode(tlog_v1["logId"]["keyId"]) == hashlib.sha256(spki).digest()
    assert [(u["url"], u["majorApiVersion"]) for u in v2["signingConfig"]["rekorTlogUrls"]] == [
        (sigstore_stack.stack_sigstore_rekor_url, 2)]
    assert [(u["url"], u["majorApiVersion"]) for u in v1["signingConfig"]["rekorTlogUrls"]] == [
        (sigstore_stack.stack_sigstore_rekor_v1_url, 1)]
    assert v1["signingConfig"]["tsaUrls"] == v2["signingConfig"]["tsaUrls"]
    assert json.loads(Path(sigstore_stack.stack_sigstore_signing_config_rekor_v1).read_text()) == v1["signingConfig"]
    assert json.loads(Path(sigstore_stack.stack_sigstore_signing_config).read_text()) == v2["signingConfig"]


def test_rekor_generations_answer_api_v1_log_differently(sigstore_stack):
    """GET /api/v1/log: Rekor v1 gives its tree (JSON: treeID, treeSize, rootHash, signedTreeHead); rekor-tiles
    has no such endpoint."""
    status, log = _get_json(f"{sigstore_stack.stack_sigstore_rekor_v1_url}/api/v1/log")
    assert status == 200 and {"treeID", "treeSize", "rootHash", "signedTreeHead"} <= set(log), log
    status_v2, _ = _get_json(f"{sigstore_stack.stack_sigstore_rekor_url}/api/v1/log")
    assert status_v2 != 200


def test_sigstore_python_signs_with_rekor_v1_and_verifies(sigstore_stack, signed_v1):
    from sigstore.verify import Verifier, policy

    verifier = Verifier(trusted_root=signed_v1["trust"].trusted_root)
    identity = policy.Identity(identity=sigstore_stack.stack_sigstore_identity,
                               issuer=sigstore_stack.stack_sigstore_issuer)
    verifier.verify_artifact(BLOB, signed_v1["blob_bundle"], identity)
    payload_type, payload = verifier.verify_dsse(signed_v1["dsse_bundle"], identity)
    assert payload_type == "application/vnd.in-toto+json"
    assert json.loads(payload)["predicateType"] == PREDICATE_TYPE
    root = json.loads(Path(sigstore_stack.stack_sigstore_trusted_root).read_text())
    v1_log_id = next(t["logId"]["keyId"] for t in root["tlogs"]
                     if t["baseUrl"] == sigstore_stack.stack_sigstore_rekor_v1_url)
    for name, kind in (("blob_bundle", "hashedrekord"), ("dsse_bundle", "dsse")):
        entry = json.loads(signed_v1[name].to_json())["verificationMaterial"]["tlogEntries"][0]
        assert entry["kindVersion"] == {"kind": kind, "version": "0.0.1"}  # Rekor v1's kinds
        assert entry["logId"]["keyId"] == v1_log_id
        assert entry["inclusionPromise"]["signedEntryTimestamp"]
        assert entry["inclusionProof"]["checkpoint"]["envelope"].startswith("127.0.0.1 - ")
        assert int(entry["integratedTime"]) > 0


def test_sigstore_python_refuses_rekor_v1_bundle_with_wrong_identity_or_blob(sigstore_stack, signed_v1):
    from sigstore.errors import VerificationError
    from sigstore.verify import Verifier, policy

    verifier = Verifier(trusted_root=signed_v1["trust"].trusted_root)
    issuer = sigstore_stack.stack_sigstore_issuer
    wrong = policy.Identity(identity="https://kubernetes.io/namespaces/other/serviceaccounts/other", issuer=issuer)
    with pytest.raises(VerificationError):
        verifier.verify_artifact(BLOB, signed_v1["blob_bundle"], wrong)
    right = policy.Identity(identity=sigstore_stack.stack_sigstore_identity, issuer=issuer)
    with pytest.raises(VerificationError):
        verifier.verify_artifact(BLOB + b"x", signed_v1["blob_bundle"], right)


def test_rekor_v1_entry_is_in_its_log(sigstore_stack, signed_v1):
    """The entry the bundle names is in Rekor v1 (served from Trillian), with the bundle's body."""
    entry = json.loads(signed_v1["blob_bundle"].to_json())["verificationMaterial"]["tlogEntries"][0]
    status, found = _get_json(f"{sigstore_stack.stack_sigstore_rekor_v1_url}/api/v1/log/entries"
                              f"?logIndex={entry['logIndex']}")
    assert status == 200, found
    (body,) = [e["body"] for e in found.values()]
    assert body == entry["canonicalizedBody"]


def test_rekor_v1_runs_in_a_network_namespace_of_its_own(sigstore_stack):
    """rekor-server v1.5.5 binds :2112 on all interfaces: it runs behind `python -m e2e.sigstore netns` and reaches
    Trillian's gRPC port (in the host's namespace) through --forward."""
    from e2e.stack import LocalStack

    pid = LocalStack(sigstore_stack.state_dir).group_status("sigstore")["sigstore_rekor_v1"]["pid"]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    cmdlines = {int(c): Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0] for c in children}
    (server,) = [c for c, argv0 in cmdlines.items() if argv0.endswith(b"rekor-server")]
    log = (sigstore_stack.state_dir / "logs" / "sigstore_rekor_v1.log").read_text()
    if "no network namespace" in log:
        pytest.skip("no network namespace can be made here: rekor-server runs directly")
    assert os.readlink(f"/proc/{server}/ns/net") != os.readlink("/proc/self/ns/net")
    assert "forwarded out" in log
