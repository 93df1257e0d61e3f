"""A model repository on the Hugging Face Hub: ``hf://org/model``, ``hf://org/model@revision`` (``:revision``, as
upstream's async-upload job spells it, works too). A type of its own, written as source type "uri" with an hf://
URI, like upstream.

- Endpoint: the ``HF_ENDPOINT`` env var (a mirror, an internal Hub), read when the job runs, else huggingface.co.
  Nothing else is contacted.
- Token: ``HF_TOKEN`` in the directory named by --source-uri-credentials-path, else the ``HF_TOKEN`` env var; a
  token stored on disk by ``hf auth login`` is never used. The token is masked wherever it could turn up.
- Files: ``MODEL_SYNC_SOURCE_HF_INCLUDE`` / ``MODEL_SYNC_SOURCE_HF_EXCLUDE`` (comma-separated globs, the Hub
  client's allow/ignore patterns).

Preflight asks the Hub for the revision's file list with sizes (``model_info(files_metadata=True)``): a missing
repo or revision, a refused token, nothing matching the patterns, or too little free space fail there, before the
Model Registry is written. The download is pinned to the commit preflight resolved (a branch that moves meanwhile
does not mix two commits), goes into the job's workspace with ``snapshot_download(local_dir=...)``, and what it
brought is checked against that file list.

Resume: within one download the Hub client resumes a file whose connection dropped with an HTTP Range request;
if the whole download fails on a transient error (network, HTTP 408/429/500/502/503/504: retry.py, 3 tries) it is
started again in the same directory, where files already complete (recorded under ``.cache/huggingface`` in it)
are kept and a partly written file is fetched again. The workspace is removed at the end of every attempt of the
Job, so a restarted Job starts from nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import TransferError
from ..files import SPACE_RESERVE, check_listing, date_files, dir_bytes, inventory, is_no_space, require_free_space
from ..files import listing as list_dir
from ..locations import Fetched, Origin
from ..metadata import Metadata
from ..progress import watch
from ..retry import RETRY_AFTER_STATUSES, TRANSIENT_STATUSES, Policy, Transient, retry_after
from ..secret import mask, register
from ..setting import Given, Setting, problem
from . import hf_card, uri

if TYPE_CHECKING:
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.hf")

PREFIX = "hf://"
TOKEN_KEY = "HF_TOKEN"
# retry.py's policy for whole snapshot downloads: 3 tries, waits 2, 4 s (a retry restarts the download; files
# already complete are kept between tries)
POLICY = Policy(attempts=3, first_delay=2.0)
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HfRef:
    org: str
    model: str
    revision: str | None
    extra: tuple[str, ...] = ()  # path parts after org/model (accepted by config, as upstream's; refused in preflight)

    @property
    def repo_id(self) -> str:
        return f"{self.org}/{self.model}"

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}{'/' + '/'.join(self.extra) if self.extra else ''}" \
               f"{'@' + self.revision if self.revision else ''}"


def is_hf(uri: str | None) -> bool:
    return bool(uri) and (uri or "").strip().lower().startswith(PREFIX)


def parse(uri: str) -> HfRef:
    """hf://org/model[@revision | :revision]; ValueError with a one-line reason (no URI in it) otherwise."""
    body = uri.strip()[len(PREFIX):]
    match = re.search(r"[@:]", body)  # neither is allowed in a repo name: the first one starts the revision
    path, sep, revision = (body[:match.start()], body[match.start()], body[match.end():]) if match else (body, "", "")
    parts = path.split("/")
    org, model, extra = parts[0], (parts[1] if len(parts) > 1 else ""), tuple(parts[2:])
    if not org:
        raise ValueError("no organisation (or user): write hf://org/model[@revision]")
    if not model:
        raise ValueError("no model name: write hf://org/model[@revision]")
    for what, name in (("organisation", org), ("model name", model)):
        if not _NAME.match(name) or ".." in name or "--" in name or len(name) > 96:
            raise ValueError(f"'{name}' is not a valid {what} on the Hub (letters, digits, '-', '_', '.')")
    if any(not p for p in extra):
        raise ValueError("empty path part: write hf://org/model[@revision]")
    if sep:
        if not revision:
            raise ValueError(f"nothing after '{sep}': give a revision (branch, tag or commit) or drop the '{sep}'")
        if not _REVISION.match(revision) or ".." in revision or "//" in revision or revision.endswith(
                ("/", ".", ".lock")):
            raise ValueError(f"'{revision}' is not a valid revision (a branch, tag or commit hash)")
    return HfRef(org, model, revision or None, extra)


def patterns(value: str | None) -> list[str] | None:
    found = [p.strip() for p in (value or "").split(",") if p.strip()]
    return found or None


def endpoint() -> str | None:
    """HF_ENDPOINT as the job sees it now (the Hub client reads it only once, when imported)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def token(found: Mapping[str, str]) -> str | None:
    """HF_TOKEN from the URI credentials dir, else the env var; registered, so it is masked from now on."""
    value = (found.get(TOKEN_KEY) or os.environ.get(TOKEN_KEY) or "").strip()
    register(value)
    return value or None


def _client() -> Any:
    """The huggingface_hub module, told to send nothing but the requests the download needs: with telemetry on,
    its user-agent code fetches a list of "agent harnesses" from the Hub (its import-time endpoint, not
    HF_ENDPOINT) and caches it under HF_HOME."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # read when huggingface_hub is first imported
    import huggingface_hub
    from huggingface_hub import constants
    constants.HF_HUB_DISABLE_TELEMETRY = True  # and if it was imported before, where it is read on every request
    return huggingface_hub


def _where() -> str:
    return endpoint() or "https://huggingface.co"


# ---- errors ------------------------------------------------------------------------------------------------------

def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    if isinstance(exc, HfHubHTTPError):
        return (_status(exc) or 0) in TRANSIENT_STATUSES
    if isinstance(exc, LocalEntryNotFoundError):  # the client's wrapping of "Hub not reachable"
        return True
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):  # a file came short
        return True
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")


def _error(ref: HfRef, exc: BaseException, has_token: bool, doing: str) -> TransferError:
    """One line naming the URI (never the token) and what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    status = _status(exc)
    where = _where()
    hint_token = (f"check {TOKEN_KEY} in the directory named by --source-uri-credentials-path (or the {TOKEN_KEY} "
                  f"env var)")
    if isinstance(exc, RevisionNotFoundError):
        text = f"revision '{ref.revision}' not found in {ref.repo_id} at {where}"
    elif isinstance(exc, GatedRepoError):
        text = f"{ref.repo_id} is gated and the token has no access to it: {hint_token}"
    elif isinstance(exc, RepositoryNotFoundError) or (isinstance(exc, HfHubHTTPError) and status in (401, 403)):
        if status in (401, 403):
            why = "the token was refused" if has_token else "no token was given"
            text = (f"HTTP {status} from {where} for {ref.repo_id}: {why} (a private repo, or one that does not "
                    f"exist); {hint_token}")
        else:
            text = f"repository {ref.repo_id} not found at {where}"
    elif isinstance(exc, EntryNotFoundError):
        text = f"a file listed for {ref.repo_id} is not there any more ({_first_line(exc)})"
    elif isinstance(exc, HfHubHTTPError):
        text = f"HTTP {status} from {where}: {_first_line(exc)}"
    elif is_no_space(exc):
        return TransferError(mask(f"{doing} {ref}: the storage path is full ({exc}); give MODEL_SYNC_STORAGE_PATH "
                                  f"(--storage-path) a larger volume"))
    else:
        text = f"cannot reach {where} ({type(exc).__name__}: {_first_line(exc)}); check HF_ENDPOINT and the network"
    return TransferError(mask(f"{doing} {ref} failed: {text}"))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ---- the Hub -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    commit: str | None
    files: dict[str, int | None]  # after the include/exclude patterns
    info: Any = None              # the Hub's ModelInfo (author, tags, card data: hf_card.py)
    siblings: tuple[str, ...] = ()  # every file of the revision, before the patterns


def snapshot(src: HfSource, doing: str = "listing") -> Snapshot:
    """The revision's commit and files (with sizes), asked of the Hub; TransferError in one line otherwise."""
    ref = src.ref
    if ref.extra:
        raise TransferError(f"{ref}: a Hub repository is org/model, this names {ref.repo_id}/{'/'.join(ref.extra)}; "
                            f"write the revision after '@' (hf://org/model@revision)")
    client = _client()
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]  # re-exported, not in __all__

    secret = src.token
    try:
        info = client.HfApi(endpoint=endpoint(), token=secret or False).model_info(
            ref.repo_id, revision=ref.revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 -- every client error becomes one line
        raise _error(ref, exc, bool(secret), doing) from None
    finally:
        client.close_session()  # see download_file: nothing left for the client's at-fork hook to close
    sizes: dict[str, int | None] = {}
    for sibling in info.siblings or []:
        sizes[sibling.rfilename] = sibling.lfs.size if sibling.lfs else sibling.size
    include, exclude = src.include, src.exclude
    chosen = {name: sizes[name] for name in filter_repo_objects(sizes, allow_patterns=include,
                                                                 ignore_patterns=exclude)}
    check_listing(chosen, f"file of {ref}")  # before huggingface_hub sees a name: it would fail later, less clearly
    if not chosen:
        shown = "; ".join(f"{k} {v}" for k, v in (("include", include), ("exclude", exclude)) if v)
        raise TransferError(f"{doing} {ref}: nothing found at source: the revision has "
                            f"{len(sizes)} file(s){f', none matching {shown}' if shown else ''}")
    return Snapshot(commit=info.sha, files=chosen, info=info, siblings=tuple(sizes))


# ---- the source type (see sources/__init__.py): written "uri" with an hf:// URI, as upstream writes it -------------

WRITTEN_AS = ("uri",)
INCLUDE = Setting("source_hf_include", "Comma-separated glob patterns of the files to download, e.g. "
                  "\"*.safetensors,config.json\" (hf:// source URIs only; default: every file)", group="source")
EXCLUDE = Setting("source_hf_exclude", "Comma-separated glob patterns of files not to download, e.g. \"*.bin,*.h5\" "
                  "(hf:// source URIs only)", group="source")
SETTINGS = (uri.CREDENTIALS, uri.URI, INCLUDE, EXCLUDE)


@dataclass(frozen=True)
class HfSource:
    ref: HfRef
    include: list[str] | None
    exclude: list[str] | None
    token: str | None = field(default=None, repr=False)


def claims(given: Given) -> bool:
    return is_hf(given.values.get(uri.URI.name))


read_files = uri.read_files  # the same Secret dir (HF_TOKEN, or URI), read once


def validate(given: Given) -> list[str]:
    token(given.found.get(uri.CREDENTIALS.name, {}))  # registered now, so it is masked from the first log line on
    value = given.values.get(uri.URI.name) or ""
    try:
        parse(value)
    except ValueError as exc:
        return [problem(uri.URI, f"'{value.strip()}' is not a Hugging Face URI: {exc}")]
    return []


def spec(given: Given) -> HfSource:
    v = given.values
    return HfSource(parse(v[uri.URI.name]), patterns(v[INCLUDE.name]), patterns(v[EXCLUDE.name]),
                    token(given.found.get(uri.CREDENTIALS.name, {})))


def in_place(src: HfSource) -> Path | None:
    return None


def listing(src: HfSource) -> dict[str, int] | None:
    files = snapshot(src).files
    if any(size is None for size in files.values()):
        return None  # the Hub did not say every size: the download's own checks count the bytes
    return {name: int(size) for name, size in files.items() if size is not None}


def facts(src: HfSource) -> dict[str, object]:
    return {"repository": str(src.ref)}


def fetch(src: HfSource, ws: Workspace) -> Fetched:
    ref = src.ref
    expected = snapshot(src, "download of")
    known = [s for s in expected.files.values() if s is not None]
    if known:
        require_free_space(ws.root, sum(known), f"the download of {ref}", reserve=SPACE_RESERVE)
    model = ws.model
    model.mkdir(parents=True, exist_ok=True)
    with watch(f"download {ref}", sum(known), lambda: dir_bytes(model)):
        _download(src, expected, model, ws.work / "hf-cache")
    shutil.rmtree(model / ".cache", ignore_errors=True)  # the Hub client's own bookkeeping, not the model
    got = list_dir(model)
    missing = sorted(set(expected.files) - set(got))
    wrong = sorted(n for n, size in expected.files.items() if n in got and size is not None and got[n] != size)
    extra = sorted(set(got) - set(expected.files))
    if missing or wrong or extra:
        detail = "; ".join(f"{what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                           for what, names in (("missing", missing), ("wrong size", wrong), ("unexpected", extra))
                           if names)
        raise TransferError(f"download of {ref} is incomplete ({detail})")
    date_files(model, expected.files, revision_time(expected))  # the revision's date: the same image
    return Fetched(model, inventory(model), origins_of(src, expected))


def revision_time(snap: Snapshot) -> float | None:
    """The revision's date (the Hub's lastModified), POSIX seconds; None if the Hub did not say."""
    when = getattr(snap.info, "last_modified", None)
    return when.timestamp() if isinstance(when, dt.datetime) else None


def origins_of(src: HfSource, snap: Snapshot) -> dict[str, Origin]:
    """Where each chosen file's bytes come from, as a modelcar layer records it (modelcar.SOURCE_RECORD): the file
    in the repository (no revision: an unchanged file of a new revision is the same bytes) and, as its ETag, what
    names its content on the Hub (the LFS sha256, else the git blob id). Files the Hub gives neither get none."""
    out: dict[str, Origin] = {}
    for sibling in getattr(snap.info, "siblings", None) or []:
        name = sibling.rfilename
        content = (sibling.lfs.sha256 if sibling.lfs else None) or getattr(sibling, "blob_id", None)
        if name in snap.files and content:
            out[name] = Origin(f"{PREFIX}{src.ref.repo_id}/{name}", str(content), revision_time(snap))
    return out


def download_file(src: HfSource, commit: str | None, name: str, dest: Path, size: int) -> None:
    """One file of the revision into dest/name, written aside and moved into place whole (hf_pipeline's download,
    file by file in layer order), tried again after a transient failure. A plain GET of the Hub's resolve route
    (the token only to the Hub itself, never to where it redirects), not the Hub client: that client closes its
    session in every forked child (os.register_at_fork), which deadlocks a child forked while another thread is
    inside it -- and the pipeline forks oras while the download runs."""
    ref = src.ref
    url = f"{_where()}/{ref.repo_id}/resolve/{quote(commit or ref.revision or 'main', safe='')}/{quote(name)}"
    final = dest / name
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)

    def once() -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "modelsync"})
        if src.token:
            request.add_unredirected_header("Authorization", f"Bearer {src.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except urllib.error.HTTPError as err:
            if err.code in TRANSIENT_STATUSES:
                raise Transient(f"HTTP {err.code} from {_where()}", retry_after(err.headers.get("Retry-After"))
                                if err.code in RETRY_AFTER_STATUSES else None) from None
            why = " (check the token)" if err.code in (401, 403) else ""
            raise TransferError(mask(f"download of {ref}: HTTP {err.code} for {name}{why}")) from None
        except OSError as err:  # urllib.error.URLError is one
            if is_no_space(err):
                raise TransferError(mask(f"download of {ref}: the storage path is full ({err}); give "
                                         f"MODEL_SYNC_STORAGE_PATH (--storage-path) a larger volume")) from None
            raise Transient(mask(f"download of {ref}/{name}: {err}")) from None
        got = part.stat().st_size
        if got != size:
            raise Transient(f"download of {ref}/{name}: {got} bytes, {size} listed")
        os.replace(part, final)

    try:
        POLICY.call(f"download of {ref}/{name}", once, logger=log)
    finally:
        part.unlink(missing_ok=True)


def metadata(src: HfSource, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    """The metadata with what the repository says of its model: for create_model the RegisteredModel fields of its
    card (hf_card.py; a value the ConfigMap gives wins), and on the new version `modelsync.source`, the repository at
    the commit the job copies. Asked of the Hub before the claim."""
    ref = src.ref
    snap = snapshot(src, "model card of")
    version = meta.model_version
    if snap.commit:
        props = {"modelsync.source": f"{PREFIX}{ref.repo_id}@{snap.commit}", **version.custom_properties}
        version = replace(version, custom_properties=MappingProxyType(props))
    if kind != "create_model":
        return replace(meta, model_version=version)
    readme = None
    name = hf_card.readme_name(list(snap.siblings))
    if name:
        try:
            path = _client().hf_hub_download(ref.repo_id, name, revision=snap.commit or ref.revision,
                                             local_dir=str(scratch / "hf-card"), token=src.token or False,
                                             endpoint=endpoint())
            readme = Path(path).read_text(encoding="utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001 -- the README is a courtesy; the model is what matters
            log.warning("%s of %s not read: %s", name, ref, mask(_first_line(exc)))
    found = {k: json.dumps(v) if isinstance(v, list) else v
             for k, v in hf_card.registered_model_fields(snap.info, readme).items()}
    if found:
        log.info("from the model card of %s: %s", ref, ", ".join(sorted(found)))
    model = meta.registered_model
    return replace(meta, registered_model=replace(model, fields=MappingProxyType({**found, **model.fields})),
                   model_version=version)


def _download(src: HfSource, expected: Snapshot, model: Path, cache: Path) -> None:
    snapshot_download = _client().snapshot_download
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # progress is the job's own (a line every 10 s in a pod), not tqdm's
    ref, secret = src.ref, src.token
    cache.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "revision": expected.commit or ref.revision, "local_dir": str(model), "cache_dir": str(cache),
        "allow_patterns": src.include, "ignore_patterns": src.exclude,
        "token": secret or False, "endpoint": endpoint()}

    try:
        POLICY.call(f"download of {ref}", lambda: snapshot_download(ref.repo_id, **kwargs),
                    transient=_download_transient, logger=log)
    except Exception as exc:  # noqa: BLE001 -- every client error becomes one line
        raise _error(ref, exc, bool(secret), "download of") from None
    finally:
        _client().close_session()  # see download_file


def _download_transient(exc: BaseException) -> Transient | None:
    if not _transient(exc):
        return None
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    after = retry_after(headers.get("Retry-After")) if _status(exc) in RETRY_AFTER_STATUSES else None
    return Transient(f"{_first_line(exc)} (the files already complete are kept)", after)


def describe(src: HfSource) -> str:
    return str(src.ref)


def public_source(src: HfSource) -> str | None:
    return str(src.ref)
