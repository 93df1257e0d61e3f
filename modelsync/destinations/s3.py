"""Publish a model to S3 under bucket/key with `aws s3 cp --recursive`, then check every object's size."""

from __future__ import annotations

import logging
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from .. import aws, tools
from ..errors import TransferError
from ..files import total_size
from ..locations import FileEntry, Published, S3Location
from ..progress import Progress

log = logging.getLogger("modelsync.destinations.s3")


def publish_s3(model_dir: Path, files: tuple[FileEntry, ...], loc: S3Location) -> Published:
    prefix = loc.key.strip("/")
    target = f"s3://{loc.bucket}/{prefix}/" if prefix else f"s3://{loc.bucket}/"
    progress = Progress("upload", total_size(files))
    try:
        tools.run("aws", ["s3", "cp", str(model_dir), target, "--recursive", *aws.cli_flags(loc)],
                  env=aws.cli_env(loc))
    finally:
        progress.done = total_size(files)  # aws reports no byte counts we can rely on; log the summary
        progress.close()
    verify_s3(loc, prefix, files)
    return Published(uri=target.rstrip("/"), digest=None, files=files)


def verify_s3(loc: S3Location, prefix: str, files: tuple[FileEntry, ...]) -> None:
    """Every file must be there with its size: a partial upload must never be registered as LIVE."""
    base = f"{prefix}/" if prefix else ""
    try:
        remote = {o["Key"][len(base):]: o["Size"] for o in aws.list_objects(loc, base)}
    except (ClientError, BotoCoreError) as exc:
        raise TransferError(f"cannot verify upload: {aws.describe_error(exc, loc)}") from None
    bad = [f.path for f in files if remote.get(f.path) != f.size]
    if bad:
        raise TransferError(f"upload to s3://{loc.bucket}/{base} incomplete: {', '.join(bad[:5])} missing or of the "
                            f"wrong size")
    log.info("verified %d object(s) under s3://%s/%s", len(files), loc.bucket, base)
