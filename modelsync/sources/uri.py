"""Download a model over HTTP(S); unpack .zip, .tar, .tar.gz/.tgz archives safely.

Safe means: no member lands outside the storage path (no '..', no absolute names), no link points outside it,
no device or fifo is created. A refused member stops the job and names the member.

Space: the download and the unpacked files are counted against the storage path's free space (less a small
reserve): an archive's declared sizes before anything is written, then the bytes as they are written (a zip member
may not write more than it declares). A file system that fills anyway (ENOSPC) gives the same one-line error. On
any failure what was partly downloaded or unpacked is removed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import ssl
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import credentials
from ..beneath import Beneath, LinkRefused
from ..errors import ConfigError, TransferError
from ..files import (
    SPACE_RESERVE,
    SpaceBudget,
    check_listing,
    inventory,
    is_no_space,
    require_free_space,
    safe_relative,
    shown,
)
from ..locations import Fetched, FileEntry, UriLocation
from ..progress import Progress
from ..secret import Secret, redact_url, register
from ..setting import Given, Setting, problem, require
from ..stores import Filled

if TYPE_CHECKING:
    from ..metadata import Metadata
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.uri")
_CHUNK = 1024 * 1024
_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


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
    name = PurePosixPath(urlsplit(loc.url).path).name or "model"
    download = work / f"download-{safe_relative(name, 'URL file name')}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        _download(loc, download, work)
    except BaseException:
        download.unlink(missing_ok=True)
        raise
    unpack(download, name, dest)
    return inventory(dest)


def _download(loc: UriLocation, download: Path, work: Path) -> None:
    request = urllib.request.Request(loc.url, headers={k: v.reveal() for k, v in loc.headers.items()})
    budget = SpaceBudget(work, "the download")
    try:
        with urllib.request.urlopen(request, context=_context(loc), timeout=60) as resp, open(download, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            if total:
                require_free_space(work, total, "the download", reserve=SPACE_RESERVE)
            progress = Progress("download", total)
            while chunk := resp.read(_CHUNK):
                budget.add(len(chunk))
                out.write(chunk)
                progress.advance(len(chunk))
            progress.close()
    except urllib.error.HTTPError as exc:
        hint = " (check the credentials in --source-uri-credentials-path)" if exc.code in (401, 403) else ""
        raise TransferError(f"download of {public_url(loc.url)} failed: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        if is_no_space(exc):
            raise budget.error(exc) from None
        reason = getattr(exc, "reason", exc)
        raise TransferError(f"download of {public_url(loc.url)} failed: {reason}") from None
    if total and download.stat().st_size != total:
        raise TransferError(f"download of {public_url(loc.url)} is truncated: {download.stat().st_size} of {total} "
                            f"bytes")


def unpack(download: Path, name: str, dest: Path) -> None:
    """Unpack (or move) the download into dest; on failure, whatever this added to dest is removed again."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    budget = SpaceBudget(dest, "the unpacked archive")
    lower = name.lower()
    try:
        if lower.endswith(".zip") or (not lower.endswith(_ARCHIVES) and zipfile.is_zipfile(download)):
            _unzip(download, dest, budget)
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            _untar(download, dest, budget)
        else:
            with Beneath(dest, "the download") as tree, Beneath(download.parent, "the download") as work:
                tree.replace_from(work, download.name, safe_relative(name, "URL file name"))
    except OSError as exc:
        _remove_new(dest, before)
        if is_no_space(exc):
            raise budget.error(exc) from None
        raise TransferError(f"unpacking the download into '{dest}' failed: {exc}") from None
    except BaseException:
        _remove_new(dest, before)
        raise
    download.unlink(missing_ok=True)  # unpacked: the archive's space is free for what follows


def _remove_new(dest: Path, before: set[str]) -> None:
    for name in set(os.listdir(dest)) - before:
        path = dest / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _tree(dest: Path) -> Beneath:
    return Beneath(dest, "the unpacked archive", hint="the archive is refused")


def _untar(archive: Path, dest: Path, budget: SpaceBudget) -> None:
    """Member by member, by our own rules (tarfile's extraction filters are missing from Debian 12's Python
    3.11.2): only files, directories and links that stay inside dest, never written through a link (beneath.py);
    modes 0644/0755, no owners, no setuid; a hard link becomes a copy. A member's data is exactly member.size
    bytes, counted as it is written."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_tar_member(member)
            check_listing({safe_relative(m.name, "archive member") for m in members if m.isreg() or m.islnk()},
                          "archive member")
            budget.need(sum(m.size for m in members if m.isreg()))
            with _tree(dest) as tree:
                links: set[str] = set()
                for member in members:
                    try:
                        _extract_member(tar, member, tree, budget, links)
                    except LinkRefused as exc:
                        raise TransferError(f"refusing archive member '{shown(member.name)}': {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise TransferError(f"the downloaded archive is not a readable tar: {exc}") from None


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: Beneath, budget: SpaceBudget,
                    links: set[str]) -> None:
    if member.isdir() and member.name.strip("/.") == "":
        return
    rel = safe_relative(member.name, "archive member")
    if rel in links:  # a later member of the same name wins, as tar(1) does; only the archive's own link goes
        tree.remove_link(rel)
        links.discard(rel)
    if member.isdir():
        with tree.directory(rel, create=True) as fd:
            os.fchmod(fd, 0o755)
        return
    if member.issym():
        if tree.check_file(rel) is not None:
            tree.unlink(rel)
        tree.symlink(rel, member.linkname)
        links.add(rel)
        return
    if member.islnk():  # a copy: a later write to one must not change the other
        source = safe_relative(member.linkname, f"link target of archive member '{member.name}'")
        if source in links or tree.check_file(source) is None:
            raise TransferError(f"refusing archive member '{member.name}': hard link to no file")
        src_fd = tree.open_read(source)
        with os.fdopen(src_fd, "rb") as src, os.fdopen(tree.create(rel), "wb") as out:
            budget.add(os.fstat(src_fd).st_size)
            shutil.copyfileobj(src, out, _CHUNK)
        return
    data = tar.extractfile(member)
    if data is None:
        raise TransferError(f"refusing archive member '{member.name}': not a regular file, directory or link")
    with os.fdopen(tree.create(rel, 0o755 if member.mode & 0o100 else 0o644), "wb") as out:
        while chunk := data.read(_CHUNK):
            budget.add(len(chunk))
            out.write(chunk)


def _check_tar_member(member: tarfile.TarInfo) -> None:
    if member.isdir() and member.name.strip("/.") == "":
        return  # the archive's own root, "./"
    safe_relative(member.name, "archive member")
    if member.isdev() or member.isfifo():
        raise TransferError(f"refusing archive member '{member.name}': device or fifo")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.name).parent / member.linkname if member.issym() else PurePosixPath(
            member.linkname)
        if PurePosixPath(member.linkname).is_absolute():
            raise TransferError(f"refusing archive member '{member.name}': link to an absolute path")
        safe_relative(str(target), f"link target of archive member '{member.name}'")


def _zip_member_is_dir(info: zipfile.ZipInfo) -> bool:
    """Whether the member is a directory; refuses anything but regular files and directories.

    The file type sits in the Unix mode (external_attr >> 16). Members without one (zipfile's writestr(), many
    Windows zippers: permission bits only, or 0) are files, or directories when the name ends in '/'.
    """
    if info.flag_bits & 0x1:
        raise TransferError(f"refusing archive member '{info.filename}': encrypted")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFDIR:
        return True
    if kind in (0, stat.S_IFREG):
        return info.is_dir()
    raise TransferError(f"refusing archive member '{info.filename}': not a regular file or dir")


def _unzip(archive: Path, dest: Path, budget: SpaceBudget) -> None:
    try:
        with zipfile.ZipFile(archive) as zf, _tree(dest) as tree:
            members = []
            for info in zf.infolist():
                if info.is_dir() and info.filename.strip("/.") == "":
                    continue
                members.append((info, safe_relative(info.filename, "archive member"), _zip_member_is_dir(info)))
            check_listing({rel for _, rel, is_dir in members if not is_dir}, "archive member")
            budget.need(sum(info.file_size for info, _, is_dir in members if not is_dir))
            for info, rel, is_dir in members:
                try:
                    _unzip_member(zf, info, rel, is_dir, tree, budget)
                except LinkRefused as exc:
                    raise TransferError(f"refusing archive member '{shown(info.filename)}': {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise TransferError(f"the downloaded archive is not a readable zip: {exc}") from None


def _unzip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: str, is_dir: bool, tree: Beneath,
                  budget: SpaceBudget) -> None:
    if is_dir:
        with tree.directory(rel, create=True):
            return
    written = 0
    with zf.open(info) as src, os.fdopen(tree.create(rel), "wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise TransferError(f"refusing archive member '{info.filename}': it holds more than the "
                                    f"{info.file_size} bytes it declares")
            budget.add(len(chunk))
            out.write(chunk)


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
