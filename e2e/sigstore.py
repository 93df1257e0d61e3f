"""The real sigstore servers in the local stack (the component group ``sigstore``), for signing tests.

    sigstore_ct       TesseraCT (posix): the CT log Fulcio puts its precertificates in   GET /ct/v1/get-roots = 200
    sigstore_fulcio   Fulcio, file CA, trusting the stack's OIDC issuer (audience sigstore) GET /api/v1/rootCert = 200
    sigstore_tsa      the timestamp authority (memory signer), in a network namespace of its own
                                                                                        GET …/certchain = 200
    sigstore_rekor    Rekor v2 (rekor-tiles, posix)                                    GET /healthz = 200
    sigstore_tuf      a TUF repository (python-tuf) serving trusted_root.json and signing_config.v0.2.json, as
                      static files (python -m http.server)                             GET /root.json = 200

A *group*: ``LocalStack.up(groups=("sigstore",))`` starts it beside (after) the base stack, and
``bin/modelsync-stack up`` starts it unless ``--no-sigstore``; the pytest ``stack`` fixture does not (it keeps the
base stack's start time), the ``sigstore_stack`` fixture does. Built by ``e2e/install-tools.sh sigstore`` at the
pins of e2e/versions.env (recipe: /work/shared/SIGSTORE.md).

Key material, made with openssl on first start and then kept (DIR/secrets): the Fulcio root (EC P-384,
self-signed CA, encrypted PKCS#8), the CT log key (EC P-256, SEC1: TesseraCT wants that form) and the Rekor v2 key
(Ed25519). The TSA's chain is new at every start (memory signer), so the trust files are written after it answers,
at every start of the group: a bundle made before a restart verifies only against the trust files of its time.

The TSA binds a fixed metrics port (:2112, all interfaces) and exits when it is taken, so two stacks (two pytest
sessions) could not both run one. It runs behind ``python -m e2e.sigstore netns``: that process listens on the
TSA's port in the host's network namespace, enters a new network namespace (its own loopback; as root, or else in
a user namespace), starts the TSA there and relays connections to it. Where no namespace can be made it runs the
TSA directly (then only one stack at a time can have it).

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

from e2e import oidc_issuer
from e2e.component import REPO_ROOT, Site, StackError, find_tool, http_status, write_private

COMPONENTS = ("sigstore_ct", "sigstore_fulcio", "sigstore_tsa", "sigstore_rekor", "sigstore_tuf")
EXTRA_PORTS = ("sigstore_fulcio_grpc", "sigstore_fulcio_metrics", "sigstore_rekor_grpc", "sigstore_rekor_metrics")
TOOLS: dict[str, tuple[str, ...]] = {
    "sigstore_ct": ("tesseract-posix", "openssl"),
    "sigstore_fulcio": ("fulcio", "openssl"),
    "sigstore_tsa": ("timestamp-server",),
    "sigstore_rekor": ("rekor-tiles-posix", "openssl"),
    "sigstore_tuf": (),
}
DIRS = ("sigstore", "sigstore/ct", "sigstore/rekor", "sigstore/tuf")

AUDIENCE = "sigstore"  # Fulcio's client id for the stack's issuer: the token's aud
NAMESPACE = "modelsync"
SERVICE_ACCOUNT = "modelsync-signer"
CT_ORIGIN = "127.0.0.1"  # TesseraCT's log origin (no ':'): the host Fulcio sends to, else it warns each request
REKOR_ORIGIN = "127.0.0.1"  # rekor-tiles' --hostname: its checkpoints' origin, part of its log id
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
    for name in ("sigstore_ct", "sigstore_fulcio", "sigstore_tsa", "sigstore_rekor"):
        site.wait_healthy(name)

    write_trust(site, ports)
    write_tuf_repo(site)
    site.spawn("sigstore_tuf", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                "--directory", str(pub / "tuf" / "repo"), str(ports["sigstore_tuf"])],
               match="http.server")
    site.wait_healthy("sigstore_tuf")


def healthy(site: Site, name: str, port: int) -> bool:
    path = {"sigstore_ct": "/ct/v1/get-roots", "sigstore_fulcio": "/api/v1/rootCert",
            "sigstore_tsa": "/api/v1/timestamp/certchain", "sigstore_rekor": "/healthz",
            "sigstore_tuf": "/root.json"}[name]
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
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_trust(site: Site, ports: Mapping[str, int]) -> dict:
    """trusted_root.json, signing_config.v0.2.json and trust_config.json in DIR/sigstore, from the servers' keys
    and the TSA's chain (fetched: it is new at every start)."""
    pub = _pub(site)
    start = _rfc3339(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1))
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
    subject = {"organization": "modelsync local stack", "commonName": "modelsync local stack"}

    trusted_root = {
        "mediaType": TRUSTED_ROOT_TYPE,
        "tlogs": [{"baseUrl": rekor, "hashAlgorithm": "SHA2_256",
                   "publicKey": {"rawBytes": base64.b64encode(rekor_spki).decode(), "keyDetails": "PKIX_ED25519",
                                 "validFor": valid},
                   "logId": {"keyId": base64.b64encode(rekor_log_id).decode()}}],
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
    trust_config = {"mediaType": TRUST_CONFIG_TYPE, "trustedRoot": trusted_root, "signingConfig": signing_config}
    for name, doc in (("trusted_root.json", trusted_root), ("signing_config.v0.2.json", signing_config),
                      ("trust_config.json", trust_config)):
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
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=365)
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


def _pipe(src: socket.socket, dst: socket.socket) -> None:
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


def _relay(client: socket.socket, port: int) -> None:
    try:
        inner = socket.create_connection(("127.0.0.1", port), timeout=10)  # made in the private namespace
        inner.settimeout(None)
    except OSError:
        client.close()
        return
    t = threading.Thread(target=_pipe, args=(inner, client), daemon=True)
    t.start()
    _pipe(client, inner)
    t.join()
    client.close()
    inner.close()


def _cmd_netns(args: argparse.Namespace) -> int:
    """Listen on 127.0.0.1:PORT here, run argv in a new network namespace (where it binds the same port and
    whatever fixed ports it wants), relay connections; exit with argv's status."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    try:
        how = _unshare_net()
    except OSError as err:
        print(f"e2e.sigstore netns: no network namespace ({err}): running {argv[0]} directly", flush=True)
        listener.close()
        os.execvp(argv[0], argv)
    print(f"e2e.sigstore netns: {argv[0]} in a new {how}, relayed from 127.0.0.1:{args.port}", flush=True)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def reap() -> None:
        os._exit(child.wait())

    threading.Thread(target=reap, daemon=True).start()
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, args.port), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.sigstore")
    sub = parser.add_subparsers(dest="command", required=True)
    netns = sub.add_parser("netns", help="run a server in a private network namespace, relaying one port")
    netns.add_argument("--port", type=int, required=True)
    netns.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return {"netns": _cmd_netns}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
