"""A minimal OCI distribution-spec client (stdlib only) to check what a registry really holds after a push.

It reads manifests and blob sizes, and opens blob ranges for blob_read.py (which reads an oci source's layers);
it writes only small documents (signatures and their referrers index): the model's bytes go up through
skopeo/oras. Auth follows the spec's challenge:
anonymous first, then on 401 either Basic with the location's credentials or the Bearer token dance
(`WWW-Authenticate: Bearer realm=..,service=..,scope=..` -> GET realm with Basic -> token); a write with a body
under a token asked for pulling first gets a token for pushing (a registry refuses it by closing the connection
mid-body, which reads as a TLS EOF, not as the 401 that would say so). A connection failure
or a transient status is tried again under retry.py's policy (retry.DEFAULT: 4 tries, Retry-After honoured).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import logging
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import secret
from ..errors import CredentialsRefused, TransferError
from ..locations import OciLocation
from ..oci_layout import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from ..retry import DEFAULT, Policy, Transient, http_status

ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
log = logging.getLogger("modelsync.distribution")

TIMEOUT = DEFAULT.timeout  # seconds per request; retries: retry.DEFAULT (4 tries, waits 1, 2, 4 s, Retry-After)
DOCKER_HUB_API = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
WRITES = ("PUT", "POST", "PATCH")


@dataclass(frozen=True)
class RemoteManifest:
    data: bytes
    media_type: str
    digest: str          # sha256 of data, computed here (the Docker-Content-Digest header is not trusted)

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.data)
        return doc


@functools.cache
def tls_context(verify: bool, ca_bundle: str | None = None) -> ssl.SSLContext:
    """One context per kind for the process: loading the system's CA certificates costs ~30 ms each time. With
    verify=False none are loaded (nothing is checked)."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)  # added to the system trust
    return context


@functools.cache
def speaks_https(registry: str, timeout: float = 10.0) -> bool:
    """Does host[:port] answer TLS at all (certificate not checked)? For tls_verify=False, like Docker's
    "insecure registry": HTTPS without verification when offered, else plain HTTP. Asked once per process (an
    unreachable registry's error is not kept)."""
    conn = http.client.HTTPSConnection(registry, timeout=timeout, context=tls_context(False))
    try:
        conn.request("GET", "/v2/")
        conn.getresponse().read()
        return True
    except (ssl.SSLError, http.client.HTTPException, ConnectionResetError):
        return False
    except OSError as err:
        raise TransferError(f"{registry}: cannot reach registry: {err}") from None
    finally:
        conn.close()


class _NotFound(Exception):
    """A 404 that a caller expects (a repository not created yet)."""


class RegistryClient:
    def __init__(self, location: OciLocation, timeout: float = TIMEOUT, policy: Policy = DEFAULT):
        self.location = location
        self.timeout = timeout
        self.policy = policy
        self._context = None
        # Docker Hub's images are named docker.io/..., its registry API answers at registry-1.docker.io
        host = DOCKER_HUB_API if location.registry in ("docker.io", "index.docker.io") else location.registry
        https = location.tls_verify or speaks_https(host)
        self.base = f"{'https' if https else 'http'}://{host}"
        if location.tls_verify:
            self._context = tls_context(True, location.ca_bundle)
        elif https:
            self._context = tls_context(False)
        self._auth_header: str | None = None
        self._bearer: dict[str, str] | None = None  # the last Bearer challenge's realm and service, and the scope
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self._context))

    # ---- public ------------------------------------------------------------------------------------------------

    def manifest(self, repo: str, reference: str) -> RemoteManifest:
        data, headers = self._request("GET", f"/v2/{repo}/manifests/{reference}", repo, {"Accept": ACCEPT})
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(data).get("mediaType") or media_type
        except ValueError:
            raise TransferError(f"{self._where(repo)}: manifest {reference} is not JSON") from None
        return RemoteManifest(data, media_type, "sha256:" + hashlib.sha256(data).hexdigest())

    def find_manifest(self, repo: str, reference: str) -> RemoteManifest | None:
        """The manifest, or None when the registry has no such tag or repository (404)."""
        try:
            data, headers = self._request("GET", f"/v2/{repo}/manifests/{reference}", repo, {"Accept": ACCEPT},
                                          missing_ok=True)
        except _NotFound:
            return None
        try:
            media_type = json.loads(data).get("mediaType") or headers.get("Content-Type", "").split(";")[0].strip()
        except (ValueError, AttributeError):
            raise TransferError(f"{self._where(repo)}: manifest {reference} is not JSON") from None
        return RemoteManifest(data, media_type, "sha256:" + hashlib.sha256(data).hexdigest())

    def find_blob(self, repo: str, digest: str) -> int | None:
        """The blob's size, or None when the repository does not have it (404). One HEAD on a kept connection."""
        try:
            return self.blob_size(repo, digest, missing_ok=True)
        except _NotFound:
            return None

    def blob_size(self, repo: str, digest: str, *, missing_ok: bool = False) -> int:
        _, headers = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo, {}, missing_ok=missing_ok)
        try:
            return int(headers["Content-Length"])
        except (KeyError, ValueError):
            raise TransferError(f"{self._where(repo)}: blob {digest[:19]} has no size") from None

    def check_access(self, repo: str) -> None:
        """An authenticated read of the repository's tag list: proves reachability, TLS trust and credentials.
        A repository that does not exist yet (404) is fine: the push creates it."""
        try:
            self._request("GET", f"/v2/{repo}/tags/list?n=1", repo, {})
        except _NotFound:
            pass

    def tags(self, repo: str, limit: int = 1000) -> list[str]:
        """The repository's tags (at most limit, in the registry's order), [] when it does not exist yet."""
        try:
            data, _ = self._request("GET", f"/v2/{repo}/tags/list?n={limit}", repo, {}, missing_ok=True)
        except _NotFound:
            return []
        try:
            found = json.loads(data).get("tags") or []
        except (ValueError, AttributeError):
            raise TransferError(f"{self._where(repo)}: tag list is not JSON") from None
        return [str(t) for t in found][:limit]

    def blob(self, repo: str, digest: str, limit: int = 16 << 20) -> bytes:
        """A small blob's bytes (at most limit), checked against its digest."""
        data, _ = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, {})
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise TransferError(f"{self._where(repo)}: blob {digest[:19]} does not match its digest")
        return data

    def open_blob(self, repo: str, digest: str, start: int, end: int) -> http.client.HTTPResponse:
        """One GET of the blob's bytes start..end (inclusive), the response left open for the caller to read and
        close: 206 for the range, or 200 and the whole blob from a registry that ignores Range. Not retried (the
        caller, blob_read.py, resumes from the byte it reached); Transient for a failure another try may mend."""
        resp: http.client.HTTPResponse = self._open("GET", f"/v2/{repo}/blobs/{digest}", repo,
                                                    {"Range": f"bytes={start}-{end}"}, missing_ok=False)
        return resp

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests whose subject is digest: the OCI 1.1 referrers API, else the referrers
        tag schema (tag sha256-<hex>, an image index)."""
        try:
            data, headers = self._request("GET", f"/v2/{repo}/referrers/{digest}", repo, {"Accept": OCI_INDEX},
                                          missing_ok=True)
            if headers.get("Content-Type", "").split(";")[0].strip() == OCI_INDEX:
                return list(json.loads(data).get("manifests") or [])
        except (_NotFound, TransferError):
            pass
        found = self.find_manifest(repo, digest.replace(":", "-", 1))
        return list(found.json().get("manifests") or []) if found is not None else []

    # ---- writes (small documents only: signatures; the model's bytes go up through oras/skopeo) ------------------

    def put_blob(self, repo: str, data: bytes) -> str:
        """Upload data as a blob (one POST, one PUT), unless the registry has it; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.find_blob(repo, digest) == len(data):
            return digest
        _, headers = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo, {"Content-Length": "0"}, data=b"")
        location = headers.get("Location") or ""
        if not location:
            raise TransferError(f"{self._where(repo)}: blob upload started without a Location")
        location = location.removeprefix(self.base)
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        self._request("PUT", location, repo, {"Content-Type": "application/octet-stream"}, data=data)
        return digest

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> Any:
        """PUT a manifest or index under reference (a tag or its digest); the response headers."""
        _, headers = self._request("PUT", f"/v2/{repo}/manifests/{reference}", repo, {"Content-Type": media_type},
                                   data=data)
        return headers

    def has_referrers_api(self, repo: str, digest: str) -> bool:
        """Whether the registry serves the OCI 1.1 referrers API (an image index) for digest."""
        try:
            _, headers = self._request("GET", f"/v2/{repo}/referrers/{digest}", repo, {"Accept": OCI_INDEX},
                                       missing_ok=True)
        except (_NotFound, TransferError):
            return False
        return bool(headers.get("Content-Type", "").split(";")[0].strip() == OCI_INDEX)

    # ---- auth and transport ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, repo: str, headers: dict[str, str],
                 missing_ok: bool = False, data: bytes | None = None) -> tuple[bytes, Any]:
        """One request under the retry policy: a connection failure or a transient status (retry.py) is tried
        again; after the last try a TransferError says how many were made."""
        return self.policy.call(
            f"registry {method}",
            lambda: self._request_once(method, path, repo, headers, missing_ok, data), logger=log,
            give_up=lambda exc, tries: TransferError(f"{exc} (gave up after {tries} tries)"))

    def _request_once(self, method: str, path: str, repo: str, headers: dict[str, str],
                      missing_ok: bool, data: bytes | None = None) -> tuple[bytes, Any]:
        with self._open(method, path, repo, headers, missing_ok, data) as resp:
            try:
                return resp.read(), resp.headers
            except (OSError, http.client.HTTPException) as err:  # cut mid-body
                raise Transient(f"{self._where(repo)}: cannot reach registry: {secret.mask(str(err))}") from None

    def _open(self, method: str, path: str, repo: str, headers: dict[str, str],
              missing_ok: bool, data: bytes | None = None) -> Any:
        """One request (a 401 answered by authenticating and asking again), its response left for the caller to
        read and close; Transient for a failure another try may mend."""
        if data and method in WRITES and self._bearer is not None and ":push" not in self._bearer["scope"] \
                and ",push" not in self._bearer["scope"]:
            # a token for pulling only: get one for pushing first. The registry answers a write with a token it does
            # not cover by 401 at once and closes the connection, which a large body meets as a TLS EOF.
            self._fetch_token(self._bearer["realm"], {"service": self._bearer.get("service", ""),
                                                      "scope": f"repository:{repo}:pull,push"}, repo)
        for attempt in range(2):
            url = path if path.startswith(("http://", "https://")) else self.base + path
            req = urllib.request.Request(url, method=method, headers=headers, data=data)
            if self._auth_header:
                # unredirected: blob HEAD/GET may redirect to storage that must not see our credentials
                req.add_unredirected_header("Authorization", self._auth_header)
            try:
                return self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                if err.code == 401 and attempt == 0:
                    self._authenticate(err.headers.get("WWW-Authenticate", ""), repo)
                    continue
                if err.code == 404 and (missing_ok or path.endswith("/tags/list?n=1")):
                    raise _NotFound() from None
                error = self._http_error(err, method, path, repo)
                transient = http_status(err.code, str(error), err.headers.get("Retry-After"))
                raise (transient or error) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                detail = secret.mask(str(reason) or type(reason).__name__)
                message = f"{self._where(repo)}: cannot reach registry: {detail}"
                if isinstance(reason, ssl.SSLError):  # an untrusted certificate stays untrusted
                    raise TransferError(message) from None
                raise Transient(message) from None
        raise AssertionError("unreachable")

    def _authenticate(self, challenge: str, repo: str) -> None:
        scheme, _, params_text = challenge.partition(" ")
        basic = self._basic()
        if scheme.lower() == "basic":
            if not basic:
                raise CredentialsRefused(f"{self._where(repo)}: the registry requires credentials and none were "
                                         f"given")
            self._auth_header = basic
            return
        if scheme.lower() != "bearer":
            raise TransferError(f"{self._where(repo)}: unsupported auth challenge '{scheme or 'none'}'")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        if "realm" not in params:
            raise TransferError(f"{self._where(repo)}: Bearer challenge without realm")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{repo}:pull")
        self._fetch_token(params["realm"], query, repo)

    def _fetch_token(self, realm: str, query: dict[str, str], repo: str) -> None:
        """A Bearer token from realm for query's service and scope (with Basic credentials when there are any)."""
        basic = self._basic()
        query = {k: v for k, v in query.items() if v}
        self._bearer = {"realm": realm, "service": query.get("service", ""), "scope": query.get("scope", "")}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url)
        if basic:
            req.add_unredirected_header("Authorization", basic)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise CredentialsRefused(f"{self._where(repo)}: token request refused ({err.code}{self._who()})") \
                from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise TransferError(f"{self._where(repo)}: token request failed: {secret.mask(str(err))}") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise TransferError(f"{self._where(repo)}: token endpoint returned no token")
        secret.register(token)
        self._auth_header = f"Bearer {token}"

    def _basic(self) -> str | None:
        loc = self.location
        if not (loc.username and loc.password):
            return None
        token = base64.b64encode(f"{loc.username}:{loc.password.reveal()}".encode()).decode()
        secret.register(token)  # masked like the password it encodes
        return "Basic " + token

    def _who(self) -> str:
        return f" for user '{self.location.username}'" if self.location.username else ", anonymous"

    def _where(self, repo: str) -> str:
        return f"{self.location.registry}/{repo}"

    def _http_error(self, err: urllib.error.HTTPError, method: str, path: str, repo: str) -> TransferError:
        if err.code in (401, 403):
            return CredentialsRefused(f"{self._where(repo)}: authentication failed ({err.code}{self._who()})")
        detail = ""
        try:
            errors = json.loads(err.read()).get("errors") or []
            detail = ": " + "; ".join(f"{e.get('code')} {e.get('message')}" for e in errors)
        except (ValueError, AttributeError, OSError):
            pass
        what = path.rsplit("/", 2)
        return TransferError(secret.mask(f"{self._where(repo)}: {method} {what[-2]}/{what[-1]} failed "
                                         f"({err.code}){detail}"))
