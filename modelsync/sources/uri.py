"""Download a model over HTTP(S); unpack .zip, .tar, .tar.gz/.tgz archives safely.

Safe means: no member lands outside the storage path (no '..', no absolute names), no link points outside it,
no device or fifo is created. A refused member stops the job and names the member.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ..errors import TransferError
from ..files import inventory, require_free_space, safe_relative
from ..locations import FileEntry, UriLocation
from ..progress import Progress

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
    request = urllib.request.Request(loc.url, headers={k: v.reveal() for k, v in loc.headers.items()})
    try:
        with urllib.request.urlopen(request, context=_context(loc), timeout=60) as resp, open(download, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            if total:
                require_free_space(work, total)
            progress = Progress("download", total)
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                progress.advance(len(chunk))
            progress.close()
    except urllib.error.HTTPError as exc:
        hint = " (check the credentials in --source-uri-credentials-path)" if exc.code in (401, 403) else ""
        raise TransferError(f"download of {public_url(loc.url)} failed: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransferError(f"download of {public_url(loc.url)} failed: {reason}") from None
    if total and download.stat().st_size != total:
        raise TransferError(f"download of {public_url(loc.url)} is truncated: {download.stat().st_size} of {total} bytes")
    unpack(download, name, dest)
    return inventory(dest)


def unpack(download: Path, name: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    lower = name.lower()
    if lower.endswith(".zip") or (not lower.endswith(_ARCHIVES) and zipfile.is_zipfile(download)):
        _unzip(download, dest)
    elif lower.endswith((".tar", ".tar.gz", ".tgz")):
        _untar(download, dest)
    else:
        shutil.move(download, dest / safe_relative(name, "URL file name"))


def _untar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                _check_tar_member(member)
            # The 'data' filter repeats these checks and also drops setuid bits and odd modes.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise TransferError(f"refusing archive member: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise TransferError(f"the downloaded archive is not a readable tar: {exc}") from None


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


def _unzip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() and info.filename.strip("/.") == "":
                    continue
                rel = safe_relative(info.filename, "archive member")
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode) or (mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                    raise TransferError(f"refusing archive member '{info.filename}': not a regular file or dir")
                if info.is_dir():
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest / rel, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise TransferError(f"the downloaded archive is not a readable zip: {exc}") from None
