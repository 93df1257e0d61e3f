"""What both S3 directions share: the aws CLI's environment and flags, and a boto3 client for listing and checks.

Credentials reach the aws CLI through its environment only. AWS_CONFIG_FILE is modelsync's own (it loads the plugin
in awscli_plugin/, see there why) and AWS_SHARED_CREDENTIALS_FILE points nowhere, so an operator's ~/.aws profile
cannot change what the job does. The endpoint is always passed as
--endpoint-url: some aws CLI builds ignore AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

from .awscli_plugin.modelsync_no_expect import drop_expect
from .locations import S3Location

DEFAULT_REGION = "us-east-1"  # what MinIO and most S3-compatible stores accept when none is given
PLUGIN_DIR = Path(__file__).parent / "awscli_plugin"


def cli_env(loc: S3Location) -> dict[str, str]:
    env = {"AWS_CONFIG_FILE": str(PLUGIN_DIR / "config"), "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "PYTHONPATH": str(PLUGIN_DIR),
           "AWS_DEFAULT_REGION": loc.region or DEFAULT_REGION, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "5"}
    if loc.access_key_id and loc.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = loc.access_key_id.reveal()
        env["AWS_SECRET_ACCESS_KEY"] = loc.secret_access_key.reveal()
    return env


def cli_flags(loc: S3Location) -> list[str]:
    flags = ["--only-show-errors"]
    if loc.endpoint:
        flags += ["--endpoint-url", loc.endpoint]
    if loc.ca_bundle:
        flags += ["--ca-bundle", loc.ca_bundle]
    if not loc.verify_tls:
        flags += ["--no-verify-ssl"]
    return flags


def client(loc: S3Location):
    verify: bool | str = loc.ca_bundle or loc.verify_tls
    s3 = boto3.client(
        "s3", endpoint_url=loc.endpoint, region_name=loc.region or DEFAULT_REGION, verify=verify,
        aws_access_key_id=loc.access_key_id.reveal() if loc.access_key_id else None,
        aws_secret_access_key=loc.secret_access_key.reveal() if loc.secret_access_key else None,
        config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                          s3={"addressing_style": "path"} if loc.endpoint else None))
    s3.meta.events.register("before-send.s3", drop_expect)
    return s3


def list_objects(loc: S3Location, prefix: str) -> list[dict]:
    pages = client(loc).get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", [])]


def describe_error(exc: Exception, loc: S3Location) -> str:
    """botocore's errors in one line, naming the bucket and endpoint (its texts hold no credentials)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    where = f"{loc.url}" + (f" at {loc.endpoint}" if loc.endpoint else "")
    hints = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access denied: check the credentials",
             "InvalidAccessKeyId": "the access key id is not known to the store",
             "SignatureDoesNotMatch": "the secret access key is wrong", "403": "access denied: check the credentials",
             "404": "not found"}
    return f"{where}: {hints.get(code or '', str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"
