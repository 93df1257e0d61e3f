"""The real sigstore servers in the local stack (the component group ``sigstore``), for signing tests.

    sigstore_ct       TesseraCT (posix): the CT log Fulcio puts its precertificates in   GET /ct/v1/get-roots = 200
    sigstore_fulcio   Fulcio, file CA, trusting the stack's OIDC issuer (audience sigstore) GET /api/v1/rootCert = 200
    sigstore_tsa      the timestamp authority (memory signer), in a network namespace of its own
                                                                                        GET …/certchain = 200
    sigstore_rekor    Rekor v2 (rekor-tiles, posix)                                    GET /healthz = 200
    sigstore_trillian_server   Trillian's log server (Rekor v1's storage), on the database ``rekor_v1`` of the
                      stack's MariaDB (e2e/mariadb.py)                                 GET /healthz = 200
    sigstore_trillian_signer   Trillian's log signer (sequences the tree), same database GET /healthz = 200
    sigstore_rekor_v1 Rekor v1 (rekor-server), in a network namespace of its own; its search index in the same
                      database                                                         GET /api/v1/log = 200
    sigstore_tuf      a TUF repository (python-tuf) serving trusted_root.json and signing_config.v0.2.json, as
                      static files (python -m http.server)                             GET /root.json = 200

A *group*: ``LocalStack.up(groups=("sigstore",))`` starts it beside (after) the base stack, and
``bin/modelsync-stack up`` starts it unless ``--no-sigstore``; the pytest ``stack`` fixture does not (it keeps the
base stack's start time), the ``sigstore_stack`` fixture does. Built by ``e2e/install-tools.sh sigstore`` at the
pins of e2e/versions.env (recipe: /work/shared/SIGSTORE.md).

Key material, made with openssl on first start and then kept (DIR/secrets): the Fulcio root (EC P-384,
self-signed CA, encrypted PKCS#8), the CT log key (EC P-256, SEC1: TesseraCT wants that form), the Rekor v2 key
(Ed25519) and the Rekor v1 key (EC P-256, PKCS#8). The TSA's chain is new at every start (memory signer), so the
trust files are written after it answers, at every start of the group: a bundle made before a restart verifies only
against the trust files of its time.

The TSA binds a fixed metrics port (:2112, all interfaces) and exits when it is taken, so two stacks (two pytest
sessions) could not both run one. It runs behind ``python -m e2e.sigstore netns``: that process listens on the
TSA's port in the host's network namespace, enters a new network namespace (its own loopback; as root, or else in
a user namespace), starts the TSA there and relays connections to it. Where no namespace can be made it runs the
TSA directly (then only one stack at a time can have it). Rekor v1 (rekor-server v1.5.5) binds :2112 too (it
carries on without metrics when that is taken) and runs the same way, with ``--forward``: its connections to
Trillian's gRPC port inside its namespace are passed out to the host's by a process forked before the namespace is
made; it reaches MariaDB over the unix socket, which no network namespace hides.

Rekor v1 needs a Trillian tree: on the first start of a state directory rekor-server creates one
(``--trillian_log_server.tlog_id 0``), later starts find it in the database and reuse it, so the log and its
entries outlive a restart like Rekor v2's directory does. Database, user (password in DIR/secrets) and Trillian's
schema (storage.sql of the pinned module, from the Go module cache: ``e2e/install-tools.sh trillian``) are made
idempotently at every start.

Fulcio trusts the stack's OIDC issuer (e2e/oidc_issuer.py, the one MinIO trusts) with client id ``sigstore``, as a
``kubernetes`` issuer: a token ``sub system:serviceaccount:NS:SA`` gets a certificate for
``https://kubernetes.io/namespaces/NS/serviceaccounts/SA``, issuer extension = the issuer URL.

env (when the group is up):
    STACK_SIGSTORE_TUF_URL          http://127.0.0.1:P: the TUF repository (sigstore --instance URL, after
                                    ``sigstore trust-instance STACK_SIGSTORE_TUF_ROOT``; or
                                    ClientTrustConfig.from_tuf(URL, bootstrap_root=...))
    STACK_SIGSTORE_TUF_ROOT         its root.json (the bootstrap root, also served as URL/root.json)
    STACK_SIGSTORE_FULCIO_URL, STACK_SIGSTORE_REKOR_URL (Rekor v2), STACK_SIGSTORE_TSA_URL (…/api/v1/timestamp),
    STACK_SIGSTORE_CT_URL
    STACK_SIGSTORE_TOKEN_PATH       a service-account token (aud sigstore, no trailing newline), minted afresh by
                                    every env(): valid for an hour from then
    STACK_SIGSTORE_IDENTITY         the certificate's SAN for that token
    STACK_SIGSTORE_ISSUER           the certificate's OIDC issuer (= OIDC_ISSUER_URL)
    STACK_SIGSTORE_TRUSTED_ROOT     trusted_root.json (cosign --trusted-root, sigstore-python TrustedRoot)
    STACK_SIGSTORE_SIGNING_CONFIG   signing_config.v0.2.json (cosign --signing-config)
    STACK_SIGSTORE_TRUST_CONFIG     the client trust config of both (model_signing --trust_config,
                                    sigstore --trust-config)
    The trusted root lists both transparency logs (Rekor v2 and v1), so it verifies bundles of either; the signing
    config above (and the TUF repository's) signs with Rekor v2 (majorApiVersion 2). For Rekor v1:
    STACK_SIGSTORE_REKOR_V1_URL     http://127.0.0.1:P: Rekor v1 (/api/v1/log, /api/v1/log/publicKey, ...)
    STACK_SIGSTORE_SIGNING_CONFIG_REKOR_V1   signing_config_rekor_v1.json: rekorTlogUrls = Rekor v1
                                    (majorApiVersion 1); Fulcio, the issuer and the TSA as in the v2 one
    STACK_SIGSTORE_TRUST_CONFIG_REKOR_V1     trust_config_rekor_v1.json: the trusted root + that signing config

Standard library at import time; starting the group needs ``cryptography`` (e2e/oidc.py) and ``tuf``.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from e2e import mariadb, oidc_issuer
from e2e.component import REPO_ROOT, Site, StackError, find_tool, http_status, write_private

# stopped in reverse order: Rekor v1 before the Trillian it writes to
COMPONENTS = ("sigstore_ct", "sigstore_fulcio", "sigstore_tsa", "sigstore_rekor", "sigstore_trillian_server",
              "sigstore_trillian_signer", "sigstore_rekor_v1", "sigstore_tuf")
EXTRA_PORTS = ("sigstore_fulcio_grpc", "sigstore_fulcio_metrics", "sigstore_rekor_grpc", "sigstore_rekor_metrics",
               "sigstore_trillian_server_grpc", "sigstore_trillian_signer_grpc")
TOOLS: dict[str, tuple[str, ...]] = {
    "sigstore_ct": ("tesseract-posix", "openssl"),
    "sigstore_fulcio": ("fulcio", "openssl"),
    "sigstore_tsa": ("timestamp-server",),
    "sigstore_rekor": ("rekor-tiles-posix", "openssl"),
    "sigstore_trillian_server": ("trillian_log_server", "mariadb"),
    "sigstore_trillian_signer": ("trillian_log_signer",),
    "sigstore_rekor_v1": ("rekor-server", "openssl"),
    "sigstore_tuf": (),
}
DIRS = ("sigstore", "sigstore/ct", "sigstore/rekor", "sigstore/tuf")
# seconds from SIGTERM to SIGKILL (default 10): Trillian's servers sleep 5 s after SIGTERM "to tidy up" (the signer
# first winds down its election for about 5 s more); their state is in MariaDB transactions, so killing them is safe
STOP_TIMEOUT = {"sigstore_trillian_server": 1.0, "sigstore_trillian_signer": 1.0}
REKOR_V1_DB = "rekor_v1"  # database and user on the stack's MariaDB: Trillian's tables and Rekor v1's search index

AUDIENCE = "sigstore"  # Fulcio's client id for the stack's issuer: the token's aud
NAMESPACE = "modelsync"
SERVICE_ACCOUNT = "modelsync-signer"
CT_ORIGIN = "127.0.0.1"  # TesseraCT's log origin (no ':'): the host Fulcio sends to, else it warns each request
REKOR_ORIGIN = "127.0.0.1"  # rekor-tiles' --hostname: its checkpoints' origin, part of its log id
REKOR_V1_HOSTNAME = "127.0.0.1"  # rekor-server's --rekor_server.hostname: its checkpoints' origin is "HOST - TREEID"
OPERATOR = "modelsync-local-stack"
TOKEN_LIFETIME = 3600

TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"


# ---------------------------------------------------------------------------------------------- paths and URLs


def _pub(site: Site) -> Path:
    return site.dir / "sigstore"


def _secret(site: Site, name: str) -> Path:
    return site.dir / "secrets" / name


def identity(namespace: str = NAMESPACE, service_account: str = SERVICE_ACCOUNT) -> str:
    """The SAN Fulcio puts in the certificate for a Kubernetes service-account token."""
    return f"https://kubernetes.io/namespaces/{namespace}/serviceaccounts/{service_account}"


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------- key material


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    run = subprocess.run([find_tool("openssl") or "openssl", *args], input=stdin, capture_output=True)
    if run.returncode != 0:
        raise StackError(f"openssl {args[0]}: {run.stderr.decode(errors='replace').strip()}")
    return run.stdout


def _make_keys(site: Site) -> None:
    """Create the Fulcio root, the CT key and the Rekor key once (kept in DIR/secrets), their public halves in
    DIR/sigstore."""
    pub = _pub(site)
    site.secret("sigstore-fulcio-key-password")  # created on first use
    pw_file = _secret(site, "sigstore-fulcio-key-password")
    root_key, root_pem = _secret(site, "sigstore-fulcio-root.key"), pub / "fulcio-root.pem"
    if not root_key.exists() or not root_pem.exists():
        plain = _openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout")
        enc = _openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", f"file:{pw_file}", stdin=plain)
        write_private(root_key, enc.decode())
        cert = _openssl("req", "-x509", "-new", "-key", str(root_key), "-passin", f"file:{pw_file}",
                        "-subj", "/O=modelsync local stack/CN=modelsync local stack Fulcio root", "-days", "3650",
                        "-sha384",
                        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:1",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                        "-addext", "extendedKeyUsage=codeSigning")
        root_pem.write_bytes(cert)
    ct_key = _secret(site, "sigstore-ct.key")
    if not ct_key.exists():
        write_private(ct_key, _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout").decode())  # SEC1
    (pub / "ct.pub").write_bytes(_openssl("ec", "-in", str(ct_key), "-pubout"))
    rekor_key = _secret(site, "sigstore-rekor.key")
    if not rekor_key.exists():
        write_private(rekor_key, _openssl("genpkey", "-algorithm", "ed25519").decode())
    (pub / "rekor.pub").write_bytes(_openssl("pkey", "-in", str(rekor_key), "-pubout"))
    rekor_v1_key = _secret(site, "sigstore-rekor-v1.key")
    if not rekor_v1_key.exists():
        write_private(rekor_v1_key, _openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                                             "ec_paramgen_curve:P-256").decode())  # PKCS#8, unencrypted
    (pub / "rekor-v1.pub").write_bytes(_openssl("pkey", "-in", str(rekor_v1_key), "-pubout"))


# ---------------------------------------------------------------------------------------------- start


def start(site: Site) -> None:
    """Start the group: keys, the four servers (in parallel), then the trust files and the TUF repository."""
    pub, ports = _pub(site), site.ports
    for sub in DIRS:
        (site.dir / sub).mkdir(parents=True, exist_ok=True)
    _make_keys(site)
    issuer = _url(ports["oidc"])
    # Fulcio parses its config as JSON first (then the JSON field names count, not the YAML ones), then as YAML
    (pub / "fulcio.yaml").write_text(json.dumps({"OIDCIssuers": {issuer: {
        "IssuerURL": issuer, "ClientID": AUDIENCE, "Type": "kubernetes"}}}, indent=2))
    no_proxy = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    site.spawn("sigstore_ct", [find_tool("tesseract-posix"),
                               "--private_key", str(_secret(site, "sigstore-ct.key")),
                               "--origin", CT_ORIGIN, "--storage_dir", str(pub / "ct"),
                               "--roots_pem_file", str(pub / "fulcio-root.pem"),
                               "--ext_key_usages", "CodeSigning",
                               "--http_endpoint", f"127.0.0.1:{ports['sigstore_ct']}"], no_proxy)
    site.spawn("sigstore_fulcio", [
        find_tool("fulcio"), "serve", "--host", "127.0.0.1", "--port", str(ports["sigstore_fulcio"]),
        "--grpc-host", "127.0.0.1", "--grpc-port", str(ports["sigstore_fulcio_grpc"]),
        "--metrics-port", str(ports["sigstore_fulcio_metrics"]),
        # its legacy gRPC socket defaults to one fixed abstract name: two stacks' Fulcios would collide on it
        "--legacy-unix-domain-socket", f"@modelsync-fulcio-{ports['sigstore_fulcio']}",
        "--config-path", str(pub / "fulcio.yaml"), "--ca", "fileca",
        "--fileca-cert", str(pub / "fulcio-root.pem"),
        "--fileca-key", str(_secret(site, "sigstore-fulcio-root.key")),
        "--ct-log-url", _url(ports["sigstore_ct"]), "--ct-log-public-key-path", str(pub / "ct.pub")],
        # the key's password through the environment (viper: prefix FULCIO_SERVE, the flag's name as is)
        {"FULCIO_SERVE_FILECA-KEY-PASSWD": site.secret("sigstore-fulcio-key-password"), **no_proxy}, match="fulcio")
    tsa = [find_tool("timestamp-server"), "serve", "--host", "127.0.0.1", "--port", str(ports["sigstore_tsa"]),
           "--timestamp-signer", "memory", "--disable-ntp-monitoring"]
    site.spawn("sigstore_tsa", [sys.executable, "-m", "e2e.sigstore", "netns", "--port", str(ports["sigstore_tsa"]),
                                "--", *tsa], {"PYTHONPATH": str(REPO_ROOT), **no_proxy}, match="e2e.sigstore netns")
    site.spawn("sigstore_rekor", [
        find_tool("rekor-tiles-posix"), "serve",
        "--http-address", "127.0.0.1", "--http-port", str(ports["sigstore_rekor"]),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(ports["sigstore_rekor_grpc"]),
        "--http-metrics-port", str(ports["sigstore_rekor_metrics"]),
        "--hostname", REKOR_ORIGIN, "--storage-dir", str(pub / "rekor"),
        "--signer-filepath", str(_secret(site, "sigstore-rekor.key")), "--checkpoint-interval", "1s"], no_proxy)
    _start_rekor_v1(site, no_proxy)  # meanwhile
    for name in ("sigstore_ct", "sigstore_fulcio", "sigstore_tsa", "sigstore_rekor", "sigstore_rekor_v1"):
        site.wait_healthy(name)

    write_trust(site, ports)
    write_tuf_repo(site)
    site.spawn("sigstore_tuf", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                "--directory", str(pub / "tuf" / "repo"), str(ports["sigstore_tuf"])],
               match="http.server")
    site.wait_healthy("sigstore_tuf")


# ---------------------------------------------------------------------------------------------- Rekor v1


def trillian_schema() -> Path:
    """storage.sql of the pinned Trillian module, in the Go module cache (`e2e/install-tools.sh trillian`)."""
    pins = dict(line.split("=", 1) for line in (REPO_ROOT / "e2e" / "versions.env").read_text().splitlines()
                if "=" in line and not line.lstrip().startswith("#"))
    rel = Path(f"github.com/google/trillian@{pins['TRILLIAN_VERSION']}") / "storage/mysql/schema/storage.sql"
    caches = [os.environ.get("GOMODCACHE", ""), *(str(Path(p) / "pkg" / "mod")
                                                  for p in os.environ.get("GOPATH", "").split(os.pathsep) if p),
              str(Path.home() / "go" / "pkg" / "mod")]
    for cache in filter(None, caches):
        if (Path(cache) / rel).is_file():
            return Path(cache) / rel
    if go := find_tool("go"):
        run = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True)
        if run.returncode == 0 and (Path(run.stdout.strip()) / rel).is_file():
            return Path(run.stdout.strip()) / rel
    raise StackError(f"Trillian's MySQL schema ({rel}) is not in the Go module cache: "
                     "run e2e/install-tools.sh trillian")


def _rekor_v1_database(site: Site) -> str:
    """Database and user REKOR_V1_DB (password in DIR/secrets), Trillian's schema loaded (all idempotent: the
    schema's indexes get IF NOT EXISTS); the DSN for the go MySQL driver, over MariaDB's unix socket."""
    pw, db = site.secret("mariadb-rekor-v1-password"), REKOR_V1_DB
    mariadb.admin_sql(site, f"CREATE DATABASE IF NOT EXISTS {db};\n"
                            f"CREATE USER IF NOT EXISTS '{db}'@'localhost'; ALTER USER '{db}'@'localhost' "
                            f"IDENTIFIED BY '{pw}';\nGRANT ALL PRIVILEGES ON {db}.* TO '{db}'@'localhost';\n")
    schema = trillian_schema().read_text()
    for index in ("CREATE INDEX ", "CREATE UNIQUE INDEX "):
        schema = schema.replace(index, f"{index}IF NOT EXISTS ")
    mariadb.admin_sql(site, schema, db)
    return f"{db}:{pw}@unix({mariadb.socket_path(site)})/{db}"


def rekor_v1_tree_id(site: Site) -> int:
    """The active Trillian log tree (0: none yet; rekor-server then creates one)."""
    out = mariadb.admin_sql(site, "SELECT TreeId FROM Trees WHERE TreeType = 'LOG' AND TreeState = 'ACTIVE' "
                                  "AND NOT COALESCE(Deleted, FALSE) ORDER BY CreateTimeMillis LIMIT 1;",
                            REKOR_V1_DB, "-N", "-B")
    return int(out.strip() or 0)


def _start_rekor_v1(site: Site, env: dict[str, str]) -> None:
    """Trillian's log server and signer on the database REKOR_V1_DB, then rekor-server in a network namespace of its
    own (it binds :2112 on all interfaces), its gRPC connections to the log server forwarded out. Its tree: the
    active one of the database, else (first start) the one rekor-server creates, found in the database next time.
    Secrets through 0600 files (Trillian's flag file, rekor-server's config), not command lines."""
    ports = site.ports
    dsn = _rekor_v1_database(site)
    flags = _secret(site, "sigstore-trillian.flags")
    write_private(flags, f"--mysql_uri={dsn}\n")
    common = ["--config", str(flags), "--storage_system", "mysql", "--quota_system", "mysql"]
    site.spawn("sigstore_trillian_server", [
        find_tool("trillian_log_server"), *common,
        "--rpc_endpoint", f"127.0.0.1:{ports['sigstore_trillian_server_grpc']}",
        "--http_endpoint", f"127.0.0.1:{ports['sigstore_trillian_server']}"], env)
    site.spawn("sigstore_trillian_signer", [
        find_tool("trillian_log_signer"), *common, "--force_master", "--sequencer_interval", "100ms",
        "--rpc_endpoint", f"127.0.0.1:{ports['sigstore_trillian_signer_grpc']}",
        "--http_endpoint", f"127.0.0.1:{ports['sigstore_trillian_signer']}"], env)
    config = _secret(site, "sigstore-rekor-v1.yaml")  # JSON is YAML
    write_private(config, json.dumps({"search_index": {"storage_provider": "mysql", "mysql": {"dsn": dsn}}}))
    site.wait_healthy("sigstore_trillian_server")
    site.wait_healthy("sigstore_trillian_signer")  # rekor-server's first start waits for the new tree's first root
    trillian = ports["sigstore_trillian_server_grpc"]
    rekor = [find_tool("rekor-server"), "serve", "--config", str(config),
             "--rekor_server.address", "127.0.0.1", "--port", str(ports["sigstore_rekor_v1"]),
             "--rekor_server.hostname", REKOR_V1_HOSTNAME,
             "--rekor_server.signer", str(_secret(site, "sigstore-rekor-v1.key")),
             "--trillian_log_server.address", "127.0.0.1", "--trillian_log_server.port", str(trillian),
             "--trillian_log_server.tlog_id", str(rekor_v1_tree_id(site)), "--log_type", "prod"]
    site.spawn("sigstore_rekor_v1", [sys.executable, "-m", "e2e.sigstore", "netns",
                                     "--port", str(ports["sigstore_rekor_v1"]), "--forward", str(trillian),
                                     "--", *rekor], {"PYTHONPATH": str(REPO_ROOT), **env},
               match="e2e.sigstore netns")


def healthy(site: Site, name: str, port: int) -> bool:
    path = {"sigstore_ct": "/ct/v1/get-roots", "sigstore_fulcio": "/api/v1/rootCert",
            "sigstore_tsa": "/api/v1/timestamp/certchain", "sigstore_rekor": "/healthz",
            "sigstore_trillian_server": "/healthz", "sigstore_trillian_signer": "/healthz",
            "sigstore_rekor_v1": "/api/v1/log", "sigstore_tuf": "/root.json"}[name]
    return http_status(f"{_url(port)}{path}") == 200


# ---------------------------------------------------------------------------------------------- trust files


def _der_b64(pem: bytes) -> list[str]:
    """Each PEM block of `pem` as base64 DER."""
    out, inside, lines = [], False, []
    for line in pem.decode().splitlines():
        if line.startswith("-----BEGIN"):
            inside, lines = True, []
        elif line.startswith("-----END"):
            inside = False
            out.append("".join(lines))
        elif inside:
            lines.append(line.strip())
    return out


def _rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_details(spki_der: bytes) -> str:
    """The trusted root's keyDetails of an ECDSA or Ed25519 public key (DER SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    key = load_der_public_key(spki_der)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}[key.curve.name]
        return f"PKIX_ECDSA_P{bits}_SHA_{min(bits, 512)}"
    raise StackError(f"no keyDetails for a {type(key).__name__}")


def write_trust(site: Site, ports: Mapping[str, int]) -> dict:
    """trusted_root.json, signing_config.v0.2.json and trust_config.json in DIR/sigstore, from the servers' keys
    and the TSA's chain (fetched: it is new at every start); the trusted root has both Rekor logs, the signing
    config Rekor v2. Beside them signing_config_rekor_v1.json and trust_config_rekor_v1.json: the same trusted root,
    signing with Rekor v1."""
    pub = _pub(site)
    start = _rfc3339(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    valid = {"start": start}
    fulcio, ct, tsa, rekor = (_url(ports[n]) for n in ("sigstore_fulcio", "sigstore_ct", "sigstore_tsa",
                                                       "sigstore_rekor"))
    issuer = _url(ports["oidc"])

    ct_spki = base64.b64decode(_der_b64((pub / "ct.pub").read_bytes())[0])
    rekor_spki = base64.b64decode(_der_b64((pub / "rekor.pub").read_bytes())[0])
    rekor_raw = rekor_spki[-32:]  # Ed25519 SPKI = 12-byte prefix + the raw 32-byte key
    # a Rekor v2 (tlog-tiles) log id is the checkpoint key's note key hash input: origin, newline, 0x01, raw key
    rekor_log_id = hashlib.sha256(REKOR_ORIGIN.encode() + b"\n" + b"\x01" + rekor_raw).digest()
    tsa_chain = _fetch(f"{tsa}/api/v1/timestamp/certchain")
    # Rekor v1: the key it says it signs with; its log id is the SHA-256 of that key's DER SubjectPublicKeyInfo
    rekor_v1 = _url(ports["sigstore_rekor_v1"])
    rekor_v1_spki = base64.b64decode(_der_b64(_fetch(f"{rekor_v1}/api/v1/log/publicKey"))[0])
    subject = {"organization": "modelsync local stack", "commonName": "modelsync local stack"}

    trusted_root = {
        "mediaType": TRUSTED_ROOT_TYPE,
        "tlogs": [{"baseUrl": rekor, "hashAlgorithm": "SHA2_256",
                   "publicKey": {"rawBytes": base64.b64encode(rekor_spki).decode(), "keyDetails": "PKIX_ED25519",
                                 "validFor": valid},
                   "logId": {"keyId": base64.b64encode(rekor_log_id).decode()}},
                  {"baseUrl": rekor_v1, "hashAlgorithm": "SHA2_256",
                   "publicKey": {"rawBytes": base64.b64encode(rekor_v1_spki).decode(),
                                 "keyDetails": _key_details(rekor_v1_spki), "validFor": valid},
                   "logId": {"keyId": base64.b64encode(hashlib.sha256(rekor_v1_spki).digest()).decode()}}],
        "certificateAuthorities": [{"subject": subject, "uri": fulcio,
                                    "certChain": {"certificates": [
                                        {"rawBytes": c} for c in _der_b64((pub / "fulcio-root.pem").read_bytes())]},
                                    "validFor": valid}],
        "ctlogs": [{"baseUrl": ct, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": base64.b64encode(ct_spki).decode(),
                                  "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": valid},
                    "logId": {"keyId": base64.b64encode(hashlib.sha256(ct_spki).digest()).decode()}}],
        "timestampAuthorities": [{"subject": subject, "uri": f"{tsa}/api/v1/timestamp",
                                  "certChain": {"certificates": [{"rawBytes": c} for c in _der_b64(tsa_chain)]},
                                  "validFor": valid}],
    }

    def service(url: str, version: int) -> dict:
        return {"url": url, "majorApiVersion": version, "validFor": valid, "operator": OPERATOR}

    signing_config = {
        "mediaType": SIGNING_CONFIG_TYPE,
        "caUrls": [service(fulcio, 1)],
        "oidcUrls": [service(issuer, 1)],
        "rekorTlogUrls": [service(rekor, 2)],
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaUrls": [service(f"{tsa}/api/v1/timestamp", 1)],
        "tsaConfig": {"selector": "ANY"},
    }
    signing_config_v1 = {**signing_config, "rekorTlogUrls": [service(rekor_v1, 1)]}
    trust_config = {"mediaType": TRUST_CONFIG_TYPE, "trustedRoot": trusted_root, "signingConfig": signing_config}
    trust_config_v1 = {**trust_config, "signingConfig": signing_config_v1}
    for name, doc in (("trusted_root.json", trusted_root), ("signing_config.v0.2.json", signing_config),
                      ("trust_config.json", trust_config), ("signing_config_rekor_v1.json", signing_config_v1),
                      ("trust_config_rekor_v1.json", trust_config_v1)):
        tmp = pub / f".{name}.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(pub / name)
    return trust_config


def _fetch(url: str) -> bytes:
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return resp.read()


def write_tuf_repo(site: Site) -> None:
    """A TUF repository (python-tuf's Metadata API, one Ed25519 key for the four roles, made afresh at every start)
    in DIR/sigstore/tuf/repo, laid out as sigstore's TUF client fetches it: root.json (and 1.root.json),
    timestamp.json, snapshot.json, targets.json, targets/trusted_root.json, targets/signing_config.v0.2.json."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
    from tuf.api.serialization.json import JSONSerializer

    pub = _pub(site)
    repo = pub / "tuf" / "repo.new"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "targets").mkdir(parents=True)
    expires = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=365)
    signer = CryptoSigner.generate_ed25519()
    key = signer.public_key

    targets = Metadata(Targets(expires=expires))
    for name in ("trusted_root.json", "signing_config.v0.2.json"):
        shutil.copyfile(pub / name, repo / "targets" / name)
        targets.signed.targets[name] = TargetFile.from_file(name, str(repo / "targets" / name))
    snapshot = Metadata(Snapshot(expires=expires))
    snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
    timestamp = Metadata(Timestamp(expires=expires))
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
    root = Metadata(Root(expires=expires, consistent_snapshot=False))
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.signed.add_key(key, role)
    serializer = JSONSerializer(compact=False)
    for md, names in ((root, ("root.json", "1.root.json")), (targets, ("targets.json",)),
                      (snapshot, ("snapshot.json",)), (timestamp, ("timestamp.json",))):
        md.sign(signer)
        for name in names:
            md.to_file(str(repo / name), serializer)
    final = pub / "tuf" / "repo"
    shutil.rmtree(final, ignore_errors=True)
    repo.rename(final)
    shutil.copyfile(final / "root.json", pub / "tuf" / "root.json")


# ---------------------------------------------------------------------------------------------- env


def write_token(site: Site, issuer: str, path: Path, lifetime: int = TOKEN_LIFETIME, **options) -> Path:
    """A service-account token for Fulcio (aud sigstore) in `path` (0600, no trailing newline: cosign sends the
    file verbatim)."""
    from e2e.oidc import write_token as mint
    options.setdefault("namespace", NAMESPACE)
    options.setdefault("service_account", SERVICE_ACCOUNT)
    return mint(path, oidc_issuer.signing_key(site), issuer, audience=AUDIENCE, lifetime=lifetime, **options)


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    pub, issuer = _pub(site), _url(port["oidc"])
    token = write_token(site, issuer, pub / "token")
    return {
        "STACK_SIGSTORE_TUF_URL": _url(port["sigstore_tuf"]),
        "STACK_SIGSTORE_TUF_ROOT": str(pub / "tuf" / "root.json"),
        "STACK_SIGSTORE_FULCIO_URL": _url(port["sigstore_fulcio"]),
        "STACK_SIGSTORE_REKOR_URL": _url(port["sigstore_rekor"]),
        "STACK_SIGSTORE_TSA_URL": f"{_url(port['sigstore_tsa'])}/api/v1/timestamp",
        "STACK_SIGSTORE_CT_URL": _url(port["sigstore_ct"]),
        "STACK_SIGSTORE_TOKEN_PATH": str(token),
        "STACK_SIGSTORE_IDENTITY": identity(),
        "STACK_SIGSTORE_ISSUER": issuer,
        "STACK_SIGSTORE_TRUSTED_ROOT": str(pub / "trusted_root.json"),
        "STACK_SIGSTORE_SIGNING_CONFIG": str(pub / "signing_config.v0.2.json"),
        "STACK_SIGSTORE_TRUST_CONFIG": str(pub / "trust_config.json"),
        "STACK_SIGSTORE_REKOR_V1_URL": _url(port["sigstore_rekor_v1"]),
        "STACK_SIGSTORE_SIGNING_CONFIG_REKOR_V1": str(pub / "signing_config_rekor_v1.json"),
        "STACK_SIGSTORE_TRUST_CONFIG_REKOR_V1": str(pub / "trust_config_rekor_v1.json"),
    }


# ---------------------------------------------------------------------------------------------- netns runner

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _unshare_net() -> str:
    """Move this process into a new network namespace with its loopback up; say how, or raise OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    how = "network namespace"
    if libc.unshare(CLONE_NEWNET) != 0:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        how = "user + network namespace"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    return how


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until either side ends, then shut both down (one direction of a TCP relay)."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _relay(client: socket.socket, connect) -> None:
    """Copy bytes both ways between `client` and the socket connect() returns (None: drop the client)."""
    try:
        inner = connect()
    except OSError:
        inner = None
    if inner is None:
        client.close()
        return
    inner.settimeout(None)
    t = threading.Thread(target=pipe, args=(inner, client), daemon=True)
    t.start()
    pipe(client, inner)
    t.join()
    client.close()
    inner.close()


def _serve(listener: socket.socket, connect) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, connect), daemon=True).start()


def _connector(channel: socket.socket) -> None:
    """Stays in the host's network namespace: for each port asked over `channel` (2 bytes), connect to
    127.0.0.1:PORT here and pass the connected socket back (SCM_RIGHTS; an empty answer when that fails). Exits
    when the other end closes (its process is gone)."""
    while True:
        try:
            ask = channel.recv(2)
        except OSError:
            ask = b""
        if len(ask) != 2:
            os._exit(0)
        try:
            conn = socket.create_connection(("127.0.0.1", struct.unpack("!H", ask)[0]), timeout=10)
        except OSError:
            channel.send(b"-")
            continue
        socket.send_fds(channel, [b"+"], [conn.fileno()])
        conn.close()


def _outward(channel: socket.socket, lock: threading.Lock, port: int) -> socket.socket | None:
    """A connection to 127.0.0.1:PORT of the host's network namespace, made by the connector process."""
    with lock:
        channel.send(struct.pack("!H", port))
        msg, fds, _, _ = socket.recv_fds(channel, 1, 1)
    return socket.socket(fileno=fds[0]) if msg == b"+" and fds else None


def _cmd_netns(args: argparse.Namespace) -> int:
    """Listen on 127.0.0.1:PORT here, run argv in a new network namespace (where it binds the same port and
    whatever fixed ports it wants), relay connections; exit with argv's status. Each --forward PORT is the other
    way: argv's connections to 127.0.0.1:PORT in its namespace reach 127.0.0.1:PORT of the host, through a
    process forked before the namespace is made (it stays in the host's)."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    channel = None
    if args.forward:
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:  # no thread runs yet: forking is safe
            listener.close()
            channel.close()
            _connector(theirs)
        theirs.close()
    try:
        how = _unshare_net()
    except OSError as err:
        print(f"e2e.sigstore netns: no network namespace ({err}): running {argv[0]} directly", flush=True)
        listener.close()
        if channel is not None:
            channel.close()  # the connector exits
        os.execvp(argv[0], argv)
    forwarded = ""
    if channel is not None:
        lock = threading.Lock()
        for port in args.forward:
            inner = socket.socket()
            inner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            inner.bind(("127.0.0.1", port))  # in the new namespace
            inner.listen(64)
            threading.Thread(target=_serve, args=(inner, lambda p=port: _outward(channel, lock, p)),
                             daemon=True).start()
        forwarded = f"; its 127.0.0.1:{','.join(map(str, args.forward))} forwarded out"
    print(f"e2e.sigstore netns: {argv[0]} in a new {how}, relayed from 127.0.0.1:{args.port}{forwarded}",
          flush=True)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def reap() -> None:
        os._exit(child.wait())

    threading.Thread(target=reap, daemon=True).start()
    _serve(listener, lambda: socket.create_connection(("127.0.0.1", args.port), timeout=10))  # in the namespace
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.sigstore")
    sub = parser.add_subparsers(dest="command", required=True)
    netns = sub.add_parser("netns", help="run a server in a private network namespace, relaying one port")
    netns.add_argument("--port", type=int, required=True)
    netns.add_argument("--forward", type=int, action="append", default=[], metavar="PORT",
                       help="connections to 127.0.0.1:PORT inside reach 127.0.0.1:PORT outside (repeatable)")
    netns.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return {"netns": _cmd_netns}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
