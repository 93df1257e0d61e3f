"""Download a model over HTTP(S); unpack .zip, .tar, .tar.gz/.tgz archives safely (uri_archive.py).

A tar is unpacked as it arrives, read once from the response (never written whole to disk); a zip is downloaded
into the work directory first (it needs its central directory), any other file downloaded, then moved into place.
Each file's sha256 is taken as it is written, so listing the model reads nothing again. To an OCI registry with
oras, a tar goes through uri_pipeline.py instead (stream_tar: its files pushed while the rest downloads).

Space: the download and the unpacked files are counted against the storage path's free space (less a small
reserve): a download's Content-Length and an archive's declared sizes before they are written (uri_archive.py),
then the bytes as they are written. A file system that fills anyway (ENOSPC) gives the same one-line error. On
any failure what was partly downloaded or unpacked is removed.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import http.client
import json
import logging
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import credentials
from ..errors import ConfigError, TransferError
from ..files import SPACE_RESERVE, SpaceBudget, is_no_space, require_free_space, safe_relative, sha256_file
from ..files import listing as files_in
from ..locations import Fetched, FileEntry, UriLocation
from ..progress import Progress
from ..secret import Secret, redact_url, register
from ..setting import Given, Setting, problem, require
from ..stores import Filled
from .uri_archive import TARS, Landing, unpack, unpack_tar

if TYPE_CHECKING:
    from ..metadata import Metadata
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.uri")
_CHUNK = 1024 * 1024
T = TypeVar("T")


def _context(loc: UriLocation) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=loc.ca_bundle) if loc.ca_bundle else ssl.create_default_context()
    if not loc.verify_tls:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def public_url(url: str) -> str:
    """The URL without user-info or query (which may hold a signature/token), for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def fetch_uri(loc: UriLocation, dest: Path, work: Path) -> tuple[FileEntry, ...]:
    """The file at loc.url into dest (a tar unpacked as it arrives; a zip downloaded into work, then unpacked; any
    other file downloaded, then moved into dest under its name); the files with their sha256, taken as they were
    written."""
    name = PurePosixPath(urlsplit(loc.url).path).name or "model"
    rel = safe_relative(name, "URL file name")
    work.mkdir(parents=True, exist_ok=True)
    if name.lower().endswith(TARS):
        with _response(loc) as body:
            known = unpack_tar(body, dest, body.total, body.finish)
        return _entries(dest, known)
    download = work / f"download-{rel}"
    try:
        sha256 = _download(loc, download, work, hashed=not name.lower().endswith(".zip"))
    except BaseException:
        download.unlink(missing_ok=True)
        raise
    return _entries(dest, unpack(download, name, dest, sha256))


def is_tar(loc: UriLocation) -> bool:
    """Whether the URL names a tar (.tar, .tar.gz, .tgz): unpacked as it arrives."""
    return (PurePosixPath(urlsplit(loc.url).path).name or "model").lower().endswith(TARS)


def stream_tar(loc: UriLocation, dest: Path, landing: Landing) -> None:
    """The tar at loc.url unpacked into dest as it arrives, landing told of each member (uri_pipeline.py); a
    short or failed download is the same one-line TransferError as fetch_uri's."""
    with _response(loc) as body:
        unpack_tar(body, dest, body.total, body.finish, landing)


def _entries(dest: Path, known: Mapping[str, str]) -> tuple[FileEntry, ...]:
    """inventory(dest), each file's sha256 taken from known when it was hashed as it was written (a link, a hard
    link's copy: read again)."""
    return tuple(FileEntry(path=rel, size=size, sha256=known.get(rel) or sha256_file(dest / rel))
                 for rel, size in files_in(dest).items())


class _Body:
    """The response's bytes, counted and shown as progress; a failed or short read is the download's one-line
    error (TransferError), never an OSError the unpacking would take for its own."""

    def __init__(self, resp: http.client.HTTPResponse, url: str):
        self._resp, self.url, self.headers = resp, url, resp.headers
        self.total = int(resp.headers.get("Content-Length") or 0)
        self.count = 0
        self._progress = Progress("download", self.total)

    def read(self, n: int = -1, /) -> bytes:
        data: bytes = self._guard(lambda: self._resp.read(n))
        self._advance(len(data), n != 0)
        return data

    def readinto(self, view: memoryview, /) -> int:
        n: int = self._guard(lambda: self._resp.readinto(view)) or 0
        self._advance(n, len(view) > 0)
        return n

    def _advance(self, n: int, asked: bool) -> None:
        """n more bytes came; none when some were asked for is the end, short of Content-Length or not."""
        if not n and asked and self.count < self.total:
            raise self._truncated()
        self.count += n
        self._progress.advance(n)

    def _guard(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except http.client.IncompleteRead:
            raise self._truncated() from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(f"download of {self.url} failed: {getattr(exc, 'reason', exc)}") from None

    def _truncated(self) -> TransferError:
        return TransferError(f"download of {self.url} is truncated: {self.count} of {self.total} bytes")

    def finish(self) -> None:
        """The rest read (what follows a tar's end blocks); TransferError unless all Content-Length bytes came."""
        while self.read(_CHUNK):
            pass
        self._progress.close()
        if self.total and self.count != self.total:
            raise self._truncated()


@contextlib.contextmanager
def _response(loc: UriLocation) -> Iterator[_Body]:
    """The GET of loc.url; an HTTP error status, an unreachable server or a TLS failure is one line."""
    request = urllib.request.Request(loc.url, headers={k: v.reveal() for k, v in loc.headers.items()})
    try:
        resp = urllib.request.urlopen(request, context=_context(loc), timeout=60)
    except urllib.error.HTTPError as exc:
        hint = " (check the credentials in --source-uri-credentials-path)" if exc.code in (401, 403) else ""
        raise TransferError(f"download of {public_url(loc.url)} failed: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise TransferError(f"download of {public_url(loc.url)} failed: {getattr(exc, 'reason', exc)}") from None
    with resp:
        yield _Body(resp, public_url(loc.url))


def _download(loc: UriLocation, download: Path, work: Path, hashed: bool) -> str | None:
    """The file at loc.url into download; with hashed, its sha256 (taken as it comes)."""
    budget = SpaceBudget(work, "the download")
    sha = hashlib.sha256()
    with _response(loc) as body:
        if body.total:
            require_free_space(work, body.total, "the download", reserve=SPACE_RESERVE)
        try:
            with open(download, "wb") as out:
                while chunk := body.read(_CHUNK):
                    budget.add(len(chunk))
                    out.write(chunk)
                    if hashed:
                        sha.update(chunk)
        except OSError as exc:
            if is_no_space(exc):
                raise budget.error(exc) from None
            raise TransferError(f"download of {body.url} failed: {exc}") from None
        body.finish()
        when = _last_modified(body.headers.get("Last-Modified"))
    if when is not None:  # the server's date of the file: the same file gives the same image (Fetched.newest)
        os.utime(download, (when, when))
    return sha.hexdigest() if hashed else None


def _last_modified(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


# ---- the source type (see sources/__init__.py) -------------------------------------------------------------------

WRITTEN_AS = ("uri",)
CREDENTIALS = Setting("source_uri_credentials_path", "Mounted Secret dir for the source URI (see README: TOKEN, "
                      "USERNAME/PASSWORD, HEADERS, URI; HF_TOKEN for hf://)", kind="path", group="source")
URI = Setting("source_uri", 'URL to download when --source-type is "uri" (archives .zip/.tar/.tar.gz unpacked), or a '
              'Hugging Face repo as hf://org/model[@revision]', group="source", url=True)
CA_BUNDLE = Setting("source_uri_ca_bundle", "PEM file trusted for the source URI only", kind="path", group="source")
SETTINGS = (CREDENTIALS, URI, CA_BUNDLE)


def claims(given: Given) -> bool:
    return True  # after the types written "uri" that claim some URIs (hf://)


def read_files(raw: Mapping[str, str]) -> Filled:
    """The credentials dir: URI (a whole URL, then a secret) fills --source-uri; TOKEN, USERNAME/PASSWORD, HEADERS
    and HF_TOKEN are kept for the request headers (and the Hub's token)."""
    path = raw.get(CREDENTIALS.name)
    if not path:
        return Filled()
    found = credentials.read_secret_dir(path, CREDENTIALS.label)
    url = found.pop("URI", None)
    if url:
        register(url.strip())  # read from a Secret: the whole URL is a secret, shown redacted
    for key in ("TOKEN", "PASSWORD", "HEADERS"):
        if found.get(key):
            register(found[key])
    return Filled(values={URI.name: url} if url else {}, found={CREDENTIALS.name: found})


def validate(given: Given) -> list[str]:
    problems = require(given, [URI], 'source type is "uri"', file_key="URI", cred=CREDENTIALS)
    url = given.values.get(URI.name)
    if url and not re.match(r"^https?://[^/]+", url):
        problems.append(problem(URI, f"'{redact_url(url)}' is not an http(s):// URL"))
    return problems


def spec(given: Given) -> UriLocation:
    """User-info in the URL (https://user:password@host/...) becomes a Basic header, unless the credentials dir
    gives one: HTTP clients do not send it from the URL, and it must not travel further in the URL either."""
    url, creds = given.values[URI.name], dict(given.found.get(CREDENTIALS.name, {}))
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        if not any(creds.get(k) for k in ("TOKEN", "USERNAME", "PASSWORD")):
            creds.update(USERNAME=unquote(parts.username or ""), PASSWORD=unquote(parts.password or ""))
    ca = given.values.get(CA_BUNDLE.name)
    return UriLocation(url=url, headers=uri_headers(creds), ca_bundle=str(ca) if ca else None)


def uri_headers(found: Mapping[str, str]) -> dict[str, Secret]:
    """HTTP headers from the URI credentials dir: TOKEN (Bearer), USERNAME+PASSWORD (Basic), HEADERS (JSON)."""
    headers: dict[str, Secret] = {}
    if found.get("HEADERS"):
        try:
            extra = json.loads(found["HEADERS"])
        except json.JSONDecodeError:
            raise ConfigError(f"{CREDENTIALS.arg}: HEADERS is not a JSON object of header: value") from None
        if not isinstance(extra, dict) or not all(isinstance(x, str) for x in extra.values()):
            raise ConfigError(f"{CREDENTIALS.arg}: HEADERS must be a JSON object of string values")
        headers.update({k: Secret(x) for k, x in extra.items()})
    if found.get("TOKEN"):
        headers["Authorization"] = Secret(f"Bearer {found['TOKEN']}")
    elif found.get("USERNAME") or found.get("PASSWORD"):
        pair = base64.b64encode(f"{found.get('USERNAME', '')}:{found.get('PASSWORD', '')}".encode()).decode()
        headers["Authorization"] = Secret(f"Basic {pair}")
    return headers


def in_place(loc: UriLocation) -> Path | None:
    return None


def listing(loc: UriLocation) -> dict[str, int] | None:
    return None  # known once downloaded (and unpacked)


def facts(loc: UriLocation) -> dict[str, object]:
    return {"url": redact_url(loc.url), "headers sent": ", ".join(sorted(loc.headers)) or "none"}


def fetch(loc: UriLocation, ws: Workspace) -> Fetched:
    ws.model.mkdir(parents=True, exist_ok=True)
    return Fetched(ws.model, fetch_uri(loc, ws.model, ws.work))


def describe(loc: UriLocation) -> str:
    return public_url(loc.url)


def public_source(loc: UriLocation) -> str | None:
    return public_url(loc.url)


def metadata(loc: UriLocation, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    return meta
