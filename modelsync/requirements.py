"""The spec's "required when" rules as small helpers that the source and destination types use for their settings.

Each problem is one line naming the setting's arg and env var and, where a credentials file could supply it, the
file key. Nothing here knows which types exist: each type's module says what it needs.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from .locations import strip_scheme
from .settings import BY_NAME, S3_FILE_KEYS

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("modelsync.config")

_REFERENCE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]+)?/[a-z0-9]+([._\-/][a-z0-9]+)*(:[\w][\w.\-]{0,127})?"
                        r"(@sha256:[0-9a-f]{64})?$")


def missing(name: str, why: str, file_key: str | None = None, cred: str | None = None) -> str:
    s = BY_NAME[name]
    line = f"{s.env} is required when {why}: set {s.arg} or {s.env}"
    if file_key and cred:
        what = "file" if cred.endswith("oci_credentials_path") else "directory"
        line += f", or put {file_key} in the {what} named by {BY_NAME[cred].arg}"
    return line


def require(cfg: Config, names: list[str], why: str, file_key: str | None = None,
            cred: str | None = None) -> list[str]:
    return [missing(n, why, file_key, cred) for n in names if cfg.values.get(n) in (None, "")]


def problem(name: str, text: str) -> str:
    s = BY_NAME[name]
    return f"{s.arg} / {s.env}: {text}"


def require_s3(cfg: Config, side: str) -> list[str]:
    why = f'{side} type is "s3"'
    problems = []
    cred = f"{side}_s3_credentials_path"
    for suffix in ("aws_bucket", "aws_key"):
        name = f"{side}_{suffix}"
        if not cfg.values.get(name):
            keys = S3_FILE_KEYS.get(suffix)
            problems.append(missing(name, why, " or ".join(keys) if keys else None, cred))
    # Both halves of the key, or neither: then the pod's own AWS credential chain (IRSA web identity, container
    # or instance credentials, AWS_PROFILE), resolved and named in preflight (aws.credentials_in_use).
    key_id, secret_key = cfg.values.get(f"{side}_aws_access_key_id"), cfg.values.get(f"{side}_aws_secret_access_key")
    if bool(key_id) != bool(secret_key):
        absent = "aws_secret_access_key" if key_id else "aws_access_key_id"
        problems.append(missing(f"{side}_{absent}", f"{why} and the other half of the access key is given",
                                " or ".join(S3_FILE_KEYS[absent]), cred))
    elif not key_id and cfg.values.get(f"{side}_aws_bucket"):
        log.info("%s s3://%s: no access key configured, so the AWS credential chain is used (web identity, "
                 "container or instance credentials, AWS_PROFILE)", side, cfg.values.get(f"{side}_aws_bucket"))
    endpoint = cfg.values.get(f"{side}_aws_endpoint")
    if endpoint and not re.match(r"^https?://[^/]+", endpoint):
        problems.append(problem(f"{side}_aws_endpoint", f"'{endpoint}' is not a URL; write it as http(s)://host[:port]"))
    key = cfg.values.get(f"{side}_aws_key")
    if side == "destination" and key and not key.strip("/"):
        problems.append(problem(f"{side}_aws_key", f"'{key}' is the whole bucket; give a prefix for the model "
                                                   f"(the artifact points at it, so it must hold the model alone)"))
    return problems


def require_oci(cfg: Config, side: str) -> list[str]:
    why = f'{side} type is "oci"'
    cred = f"{side}_oci_credentials_path"
    # The registry defaults to the URI's host, so it is only worth a line of its own when the URI is there.
    problems = require(cfg, [f"{side}_oci_uri"], why)
    ref = cfg.values.get(f"{side}_oci_uri")
    if ref and _REFERENCE.match(strip_scheme(ref)):  # a bad URI is its own problem; its "host" would mislead
        problems += require(cfg, [f"{side}_oci_registry"], why)
    user, password = cfg.values.get(f"{side}_oci_username"), cfg.values.get(f"{side}_oci_password")
    if not user and not password and cfg.values.get(f"{side}_oci_uri"):
        log.info("%s registry %s: no credentials given, so it is used anonymously (%s)", side,
                 cfg.values.get(f"{side}_oci_registry") or cfg.values[f"{side}_oci_uri"],
                 "pull" if side == "source" else "push")
    if bool(user) != bool(password):  # neither: an anonymous registry (upstream's samples use one)
        absent = f"{side}_oci_password" if user else f"{side}_oci_username"
        problems.append(missing(absent, f"{why} and the other half of the credentials is given",
                                'an "auths" entry for the registry', cred))
    ref = cfg.values.get(f"{side}_oci_uri")
    if ref and not _REFERENCE.match(strip_scheme(ref)):
        problems.append(problem(f"{side}_oci_uri", f"'{ref}' is not an image reference; write host[:port]/repo[:tag]"))
    return problems


def reference_ok(ref: str) -> bool:
    return bool(_REFERENCE.match(ref))


def require_path(cfg: Config, side: str, kind: str) -> list[str]:
    return require(cfg, [f"{side}_path"], f'{side} type is "{kind}"')
