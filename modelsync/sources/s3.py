"""Fetch a model from S3: a key prefix (a "directory") or one object, with `aws s3 cp`.

The listing comes first (boto3): it gives the total for progress and free-space checks, and every key is checked
so none can land outside the storage path. After the copy every file's size is checked against the listing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .. import tools
from ..clients import aws
from ..errors import TransferError
from ..files import check_listing, dir_bytes, inventory, model_path, require_free_space
from ..locations import Fetched, FileEntry, Origin, S3Location
from ..progress import watch
from ..setting import Given
from ..stores import Filled
from ..stores import s3 as s3_store

if TYPE_CHECKING:
    from ..metadata import Metadata
    from ..workspace import Workspace

log = logging.getLogger("modelsync.sources.s3")


def plan_s3(loc: S3Location) -> tuple[str, dict[str, int]]:
    """('object' | 'prefix', {relative path: size}); raises TransferError if nothing is there or a key is unsafe."""
    kind, files, _ = list_s3(loc)
    return kind, files


def list_s3(loc: S3Location) -> tuple[str, dict[str, int], dict[str, Origin]]:
    """plan_s3 plus each file's origin (object URL and ETag, as listed): what a modelcar layer records."""
    try:
        objects = aws.list_objects(loc, loc.key)
    except (ClientError, BotoCoreError) as exc:
        raise aws.failure(exc, loc, "cannot list source") from None
    exact = [o for o in objects if o["Key"] == loc.key and not loc.key.endswith("/")]
    if exact and not any(o["Key"].startswith(loc.key.rstrip("/") + "/") for o in objects):
        rel = model_path(PurePosixPath(loc.key).name, "S3 key")
        return "object", {rel: exact[0]["Size"]}, _origin(loc, exact[0], rel)
    prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
    files: dict[str, int] = {}
    origins: dict[str, Origin] = {}
    for obj in objects:
        if not obj["Key"].startswith(prefix) or obj["Key"].endswith("/"):
            continue  # a sibling such as "model-v2/..." for prefix "model", or a folder marker
        rel = model_path(obj["Key"][len(prefix):], "S3 key")
        files[rel] = obj["Size"]
        origins.update(_origin(loc, obj, rel))
    check_listing(files, "S3 key")
    if not files:
        raise TransferError(f"nothing found at source {loc.url}" + (f" ({loc.endpoint})" if loc.endpoint else ""))
    return "prefix", files, origins


def _origin(loc: S3Location, obj: Mapping[str, Any], rel: str) -> dict[str, Origin]:
    """A listed object's origin; none without an ETag (some stores omit it): such a file is always downloaded."""
    etag = str(obj.get("ETag") or "").strip('"')
    when = obj.get("LastModified")
    modified = when.timestamp() if isinstance(when, dt.datetime) else None
    return {rel: Origin(f"s3://{loc.bucket}/{obj['Key']}", etag, modified)} if etag else {}


def fetch_s3(loc: S3Location, dest: Path, origins: dict[str, Origin] | None = None) -> tuple[FileEntry, ...]:
    """Download into dest; with origins (a dict), fill it with each file's origin as listed before the download."""
    kind, expected, listed = list_s3(loc)
    if origins is not None:
        origins.update(listed)
    total = sum(expected.values())
    require_free_space(dest, total)
    log.info("fetching %d file(s), %d bytes from %s", len(expected), total, loc.url)
    if kind == "object":
        args = ["s3", "cp", loc.url, str(dest / next(iter(expected)))]
    else:
        prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
        args = ["s3", "cp", f"s3://{loc.bucket}/{prefix}", str(dest), "--recursive"]
    with watch("download", total, lambda: dir_bytes(dest)):
        aws.retry_download(f"download from {loc.url}",
                           lambda: tools.run("aws", [*args, *aws.cli_flags(loc)], env=aws.cli_env(loc)))
    entries = inventory(dest)
    got = {e.path: e.size for e in entries}
    if got != expected:
        missing = sorted(set(expected) - set(got)) or sorted(k for k in got if got[k] != expected.get(k))
        raise TransferError(f"download from {loc.url} is incomplete: {', '.join(missing[:5])} missing or of the "
                            f"wrong size")
    return entries


# ---- the source type (see sources/__init__.py) -------------------------------------------------------------------

WRITTEN_AS = ("s3",)
SETTINGS = s3_store.settings("source")


def claims(given: Given) -> bool:
    return True


def read_files(raw: Mapping[str, str]) -> Filled:
    return s3_store.read_files(raw, "source")


def validate(given: Given) -> list[str]:
    return s3_store.validate(given, "source")


def spec(given: Given) -> S3Location:
    return s3_store.location(given, "source")


def in_place(loc: S3Location) -> Path | None:
    return None


def listing(loc: S3Location) -> dict[str, int] | None:
    return plan_s3(loc)[1]


def facts(loc: S3Location) -> dict[str, object]:
    """Which credentials are used (fails in one line when there are none)."""
    return {"credentials": aws.credentials_in_use(loc, "source")}


def fetch(loc: S3Location, ws: Workspace) -> Fetched:
    ws.model.mkdir(parents=True, exist_ok=True)
    origins: dict[str, Origin] = {}
    return Fetched(ws.model, fetch_s3(loc, ws.model, origins), origins)


def describe(loc: S3Location) -> str:
    return loc.url


def public_source(loc: S3Location) -> str | None:
    return loc.url


def metadata(loc: S3Location, meta: Metadata, kind: str, scratch: Path) -> Metadata:
    return meta
