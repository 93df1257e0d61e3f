"""How skopeo and oras reach one registry: credentials in a private auth file, a CA trusted for that registry only.

Secrets never go on a command line (tools.run refuses them there): a temporary 0600 auth file in the work dir, in
the Docker config format both tools read (`{"auths": {host: {"auth": base64(user:pass)}}}`), deleted on exit.
A CA bundle becomes a per-registry cert dir holding `ca.crt` for skopeo (`--*-cert-dir`) and `--*-ca-file` for oras.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .clients.distribution import speaks_https
from .credentials import auth_entry
from .errors import TransferError
from .locations import OciLocation

BACKENDS = ("skopeo", "oras")


@dataclass(frozen=True)
class RegistryAccess:
    location: OciLocation
    auth_file: Path | None     # None: anonymous
    cert_dir: Path | None      # skopeo: a dir with ca.crt; None: system trust only
    plain_http: bool = False   # tls_verify=False and the registry does not speak TLS at all
    # oras has no --no-creds: without --registry-config it reads ~/.docker/config.json (and its credsStore) of
    # whoever runs the job, so an anonymous access gets an auth file with no entries instead
    no_creds_file: Path | None = None

    def skopeo_args(self, side: str) -> list[str]:
        """Options for one side of `skopeo copy`: side is 'src' or 'dest'."""
        args = [f"--{side}-tls-verify={'true' if self.location.tls_verify else 'false'}"]
        if self.auth_file:
            args.append(f"--{side}-authfile={self.auth_file}")
        else:
            args.append(f"--{side}-no-creds")  # never fall back to the operator's ${XDG_RUNTIME_DIR} auth.json
        if self.cert_dir:
            args.append(f"--{side}-cert-dir={self.cert_dir}")
        return args

    def oras_args(self, prefix: str = "") -> list[str]:
        """Options for oras: prefix '' (pull, push), 'from-' or 'to-' (cp)."""
        args = []
        if not self.location.tls_verify:
            # skopeo's tls-verify=false covers both cases; oras needs to be told which one it is
            args.append(f"--{prefix}plain-http" if self.plain_http else f"--{prefix}insecure")
        if self.location.ca_bundle:
            args.append(f"--{prefix}ca-file={self.location.ca_bundle}")
        if self.auth_file or self.no_creds_file:
            args.append(f"--{prefix}registry-config={self.auth_file or self.no_creds_file}")
        return args


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise TransferError(f"unknown OCI backend '{backend}': use one of {', '.join(BACKENDS)}")
    return backend


@contextlib.contextmanager
def registry_access(location: OciLocation, work_dir: Path) -> Iterator[RegistryAccess]:
    """Temporary auth file and cert dir for location, removed however the block ends."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="oci-access-", dir=work_dir))
    os.chmod(tmp, 0o700)
    try:
        auth_file = None
        if location.username or location.password:
            if not (location.username and location.password):
                raise TransferError(f"registry {location.registry}: username and password must be given together")
            auth_file = tmp / "auth.json"
            # auth_entry also registers the base64 token for masking, should a tool ever echo it
            entry = auth_entry(location.registry, location.username, location.password.reveal())
            _write_private(auth_file, json.dumps({"auths": entry}))
        cert_dir = None
        if location.ca_bundle:
            if not Path(location.ca_bundle).is_file():
                raise TransferError(f"registry {location.registry}: CA bundle {location.ca_bundle} is not a file")
            cert_dir = tmp / "certs"
            cert_dir.mkdir()
            shutil.copyfile(location.ca_bundle, cert_dir / "ca.crt")
        no_creds_file = None
        if auth_file is None:
            no_creds_file = tmp / "anonymous.json"
            _write_private(no_creds_file, json.dumps({"auths": {}}))
        plain_http = not location.tls_verify and not speaks_https(location.registry)
        yield RegistryAccess(location, auth_file, cert_dir, plain_http, no_creds_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
