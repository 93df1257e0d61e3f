"""Publish a model to S3 under bucket/key/ with `aws s3 cp --recursive`, then check every object's size.

The artifact's URI names the prefix, so the prefix must end holding exactly the model. Every object the job
uploads carries the user metadata `modelsync-job` = the job's fingerprint. Preflight lists the prefix (an
authenticated request: credentials, CA and bucket are proven before anything moves) and refuses objects that
another job or a person put there, unless --destination-replace-existing; after the upload, objects under the prefix
that are not part of the model are deleted when they are this job's own (an earlier attempt's) or when
replacing was allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .. import tools
from ..awscli_plugin.modelsync_no_expect import CONCURRENCY_ENV
from ..clients import aws
from ..errors import TransferError
from ..files import total_size
from ..locations import Fetched, FileEntry, OciLocation, Published, S3Location
from ..progress import Progress
from ..setting import Given
from ..signing.model import SIGNATURE_NAME
from ..stores import REPLACE_EXISTING, Filled
from ..stores import s3 as s3_store

if TYPE_CHECKING:
    from ..workspace import Workspace

log = logging.getLogger("modelsync.destinations.s3")

JOB_METADATA = "modelsync-job"   # x-amz-meta-modelsync-job
REPLACE = "MODEL_SYNC_DESTINATION_REPLACE_EXISTING=true"


def _base(loc: S3Location) -> str:
    prefix = loc.key.strip("/")
    return f"{prefix}/" if prefix else ""


def preflight_s3(loc: S3Location, job: str, replace: bool) -> dict[str, Any]:
    base = _base(loc)
    try:
        objects = aws.list_objects(loc, base)
        owners = _owners(loc, [o["Key"] for o in objects])
        foreign = [key for key, owner in owners.items() if owner != job]
    except (ClientError, BotoCoreError) as exc:
        raise aws.failure(exc, loc, "destination") from None
    where = f"s3://{loc.bucket}/{base}"
    if foreign and not replace:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise TransferError(f"destination {where} already holds {', '.join(foreign[:3])}{more}, not written by "
                            f"this job; choose another --destination-aws-key, or set {REPLACE} to replace them")
    if foreign:
        log.warning("%d object(s) under %s were not written by this job and will be replaced (%s)", len(foreign),
                    where, REPLACE)
    return {"type": "s3", "url": where, "objects already there": len(objects)}


def publish_s3(model_dir: Path, files: tuple[FileEntry, ...], loc: S3Location, job: str,
               replace: bool = False, signature: Path | None = None) -> Published:
    """The files under the prefix, verified; with signature, model.sig beside them (uploaded last, over any
    model.sig the source carried)."""
    progress = Progress("upload", total_size(files))
    try:
        upload_tree(model_dir, loc, job)
    finally:
        progress.done = total_size(files)  # aws reports no byte counts we can rely on; log the summary
        progress.close()
    return finish_s3(loc, files, job, replace, signature)


# How a child tool is run: tools.run, or a pipeline's tools.Group.run (stopped with the rest of the transfer).
Runner = Callable[..., object]


def upload_tree(model_dir: Path, loc: S3Location, job: str) -> None:
    """Every file under model_dir to the same relative key under the prefix, tagged with the job (one `aws s3 cp
    --recursive`: its content types, multipart sizes and metadata are the upload's, whoever calls)."""
    args, env = upload_command(model_dir, loc, job)
    tools.run("aws", args, env=env)


def upload_command(model_dir: Path, loc: S3Location, job: str, requests: int | None = None,
                   ) -> tuple[list[str], dict[str, str]]:
    """upload_tree's aws arguments and environment. The pipelines' uploader (s3_upload.py) starts each batch's aws
    with them, with fewer parallel requests since a download runs beside it (the parts, and so the objects and
    their ETags, are the same; one 128 MiB upload peaked at 69 MiB of RSS with 3 requests, 78 with 6)."""
    env = aws.cli_env(loc)
    if requests:
        env[CONCURRENCY_ENV] = str(requests)
    return ["s3", "cp", str(model_dir), f"s3://{loc.bucket}/{_base(loc)}", "--recursive", "--metadata",
            f"{JOB_METADATA}={job}", *aws.cli_flags(loc)], env


def finish_s3(loc: S3Location, files: tuple[FileEntry, ...], job: str, replace: bool = False,
              signature: Path | None = None, run: Runner = tools.run) -> Published:
    """Once every file is uploaded: model.sig (when signing) last, every object checked, what is not part of the
    model removed (see _remove_extras); the artifact's URI."""
    base = _base(loc)
    target = f"s3://{loc.bucket}/{base}"
    if signature is not None:
        run("aws", ["s3", "cp", str(signature), target + SIGNATURE_NAME, "--metadata", f"{JOB_METADATA}={job}",
                    *aws.cli_flags(loc)], env=aws.cli_env(loc))
    expected = files + ((FileEntry(SIGNATURE_NAME, signature.stat().st_size, ""),) if signature else ())
    remote = verify_s3(loc, base, expected)
    _remove_extras(loc, base, set(remote) - {f.path for f in expected}, job, replace)
    return Published(uri=target.rstrip("/"), digest=None, files=files)


def verify_s3(loc: S3Location, base: str, files: tuple[FileEntry, ...]) -> dict[str, int]:
    """Every file must be there with its size: a partial upload must never be registered as LIVE. Returns what
    the prefix holds (relative key -> size)."""
    try:
        remote = {o["Key"][len(base):]: o["Size"] for o in aws.list_objects(loc, base)}
    except (ClientError, BotoCoreError) as exc:
        raise TransferError(f"cannot verify upload: {aws.describe_error(exc, loc)}") from None
    bad = [f.path for f in files if remote.get(f.path) != f.size]
    if bad:
        raise TransferError(f"upload to s3://{loc.bucket}/{base} incomplete: {', '.join(bad[:5])} missing or of the "
                            f"wrong size")
    log.info("verified %d object(s) under s3://%s/%s", len(files), loc.bucket, base)
    return remote


def _remove_extras(loc: S3Location, base: str, extras: set[str], job: str, replace: bool) -> None:
    """Objects under the prefix that are not the model: this job's own leftovers always go; anyone else's only
    when replacing was allowed (preflight refused them otherwise; one that appeared since is left alone)."""
    keys = sorted(base + rel for rel in extras)
    try:
        doomed = keys if replace else [k for k, owner in _owners(loc, keys).items() if owner == job]
        client = aws.client(loc)
        for start in range(0, len(doomed), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in doomed[start:start + 1000]]
            answer = client.delete_objects(Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise TransferError(f"cannot delete s3://{loc.bucket}/{first.get('Key')}: {first.get('Code')}")
    except (ClientError, BotoCoreError) as exc:
        raise TransferError(f"cannot remove old objects: {aws.describe_error(exc, loc)}") from None
    if doomed:
        log.info("removed %d object(s) under s3://%s/%s that are not part of this model", len(doomed), loc.bucket,
                 base)
    if len(doomed) < len(keys):
        raise TransferError(f"s3://{loc.bucket}/{base} gained {len(keys) - len(doomed)} object(s) from elsewhere "
                            f"during the upload; the prefix would not be the model alone")


def _owners(loc: S3Location, keys: list[str]) -> dict[str, str | None]:
    """Each object's modelsync-job metadata (None: not written by modelsync), read in parallel."""
    if not keys:
        return {}
    client = aws.client(loc)

    def owner(key: str) -> str | None:
        found = client.head_object(Bucket=loc.bucket, Key=key).get("Metadata", {}).get(JOB_METADATA)
        return str(found) if found is not None else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(keys, pool.map(owner, keys), strict=True))


# ---- the destination type (see destinations/__init__.py) ---------------------------------------------------------

WRITTEN_AS = ("s3",)
SETTINGS = (*s3_store.settings("destination"), REPLACE_EXISTING)


@dataclass(frozen=True)
class S3Destination:
    location: S3Location
    replace: bool


def read_files(raw: Mapping[str, str]) -> Filled:
    return s3_store.read_files(raw, "destination")


def validate(given: Given) -> list[str]:
    return s3_store.validate(given, "destination")


def spec(given: Given) -> S3Destination:
    return S3Destination(s3_store.location(given, "destination"), bool(given.values[REPLACE_EXISTING.name]))


def storage_parts(dest: S3Destination) -> tuple[str, ...]:
    return ()


def preflight(dest: S3Destination, job: str, files: dict[str, int] | None,
              reads_from: Path | None) -> dict[str, Any]:
    credentials = aws.credentials_in_use(dest.location, "destination")  # first: no credentials is one line
    return {**preflight_s3(dest.location, job, dest.replace), "credentials": credentials}


def publish(dest: S3Destination, fetched: Fetched, ws: Workspace, job: str, source: str | None,
            signature: Path | None = None) -> Published:
    return publish_s3(fetched.model_dir, fetched.files, dest.location, job, dest.replace, signature)


def describe(dest: S3Destination) -> str:
    return dest.location.url + (f" at {dest.location.endpoint}" if dest.location.endpoint else "")


def model_name(dest: S3Destination) -> str:
    return PurePosixPath(dest.location.key.rstrip("/")).name or dest.location.bucket


def image(dest: S3Destination) -> OciLocation | None:
    return None
