"""S3 (and S3-compatible stores such as MinIO) on either side: settings, Secret-dir keys, location, checks."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from .. import credentials
from ..locations import S3Location
from ..setting import Given, Setting, missing, problem
from . import Filled

log = logging.getLogger("modelsync.config")

# Keys of a mounted S3 Secret dir, per setting suffix; the first key present wins (upstream's order: the AWS_* names
# before the data-connection AWS_S3_* / AWS_DEFAULT_* ones).
FILE_KEYS = {
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "aws_endpoint": ("AWS_ENDPOINT_URL", "AWS_S3_ENDPOINT"),
    "aws_bucket": ("AWS_BUCKET", "AWS_S3_BUCKET"),
}


def _settings(side: str) -> dict[str, Setting]:
    when = f'when --{side}-type is "s3"'
    found = [
        Setting(f"{side}_s3_credentials_path", f"Mounted Secret dir with AWS_* keys for the {side}", kind="path",
                group=side),
        Setting(f"{side}_aws_bucket", f"Bucket ({when})", group=side),
        Setting(f"{side}_aws_key", f"Object key or key prefix ({when})", group=side),
        Setting(f"{side}_aws_region", f"Region ({when})", group=side),
        Setting(f"{side}_aws_access_key_id", f"Access key id ({when})", secret=True, group=side),
        Setting(f"{side}_aws_secret_access_key", f"Secret access key ({when})", secret=True, group=side),
        Setting(f"{side}_aws_endpoint", f"Endpoint URL for S3-compatible stores, e.g. MinIO ({when})", group=side,
                kind="endpoint", url=True),
        Setting(f"{side}_aws_ca_bundle", f"PEM file trusted for this S3 endpoint only ({when})", kind="path",
                group=side),
    ]
    return {s.name.removeprefix(f"{side}_"): s for s in found}


_BY_SIDE = {side: _settings(side) for side in ("source", "destination")}


def settings(side: str) -> tuple[Setting, ...]:
    return tuple(_BY_SIDE[side].values())


def read_files(raw: Mapping[str, str], side: str) -> Filled:
    """The Secret dir's AWS_* keys for the settings still unset."""
    s = _BY_SIDE[side]
    path = raw.get(s["s3_credentials_path"].name)
    if not path:
        return Filled()
    found = credentials.read_secret_dir(path, s["s3_credentials_path"].label)
    values = {s[suffix].name: value for suffix, keys in FILE_KEYS.items()
              if (value := next((found[k] for k in keys if found.get(k)), None))}
    return Filled(values=values)


def location(given: Given, side: str) -> S3Location:
    v, s = given.values, _BY_SIDE[side]
    return S3Location(bucket=v[s["aws_bucket"].name], key=(v[s["aws_key"].name] or "").lstrip("/"),
                      region=v[s["aws_region"].name], endpoint=v[s["aws_endpoint"].name],
                      access_key_id=v[s["aws_access_key_id"].name],
                      secret_access_key=v[s["aws_secret_access_key"].name],
                      ca_bundle=str(v[s["aws_ca_bundle"].name]) if v[s["aws_ca_bundle"].name] else None)


def validate(given: Given, side: str) -> list[str]:
    why = f'{side} type is "s3"'
    s, v = _BY_SIDE[side], given.values
    cred = s["s3_credentials_path"]
    problems = [missing(s[suffix], why, " or ".join(FILE_KEYS[suffix]) if suffix in FILE_KEYS else None, cred)
                for suffix in ("aws_bucket", "aws_key") if not v.get(s[suffix].name)]
    # Both halves of the key, or neither: then the pod's own AWS credential chain (IRSA web identity, container
    # or instance credentials, AWS_PROFILE), resolved and named in preflight (aws.credentials_in_use).
    key_id, secret_key = v.get(s["aws_access_key_id"].name), v.get(s["aws_secret_access_key"].name)
    if bool(key_id) != bool(secret_key):
        absent = "aws_secret_access_key" if key_id else "aws_access_key_id"
        problems.append(missing(s[absent], f"{why} and the other half of the access key is given",
                                " or ".join(FILE_KEYS[absent]), cred))
    elif not key_id and v.get(s["aws_bucket"].name):
        log.info("%s s3://%s: no access key configured, so the AWS credential chain is used (web identity, "
                 "container or instance credentials, AWS_PROFILE)", side, v.get(s["aws_bucket"].name))
    endpoint = v.get(s["aws_endpoint"].name)
    if endpoint and not re.match(r"^https?://[^/]+", endpoint):
        problems.append(problem(s["aws_endpoint"], f"'{endpoint}' is not a URL; write it as http(s)://host[:port]"))
    key = v.get(s["aws_key"].name)
    if side == "destination" and key and not key.strip("/"):
        problems.append(problem(s["aws_key"], f"'{key}' is the whole bucket; give a prefix for the model "
                                              f"(the artifact points at it, so it must hold the model alone)"))
    return problems
