"""The spec's "required when" rules (its ✅*, ✅+, ✅#, ✅% marks) and sanity checks on values.

Returns every problem at once; each line names the setting's arg, env var and, where a credentials file could
supply it, the file key. Settings given for a type that is not in use are warned about, not silently ignored.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .config import S3_FILE_KEYS, SIGSTORE_VARS, Config, strip_scheme
from .secret import redact_url
from .settings import BY_NAME, SETTINGS

log = logging.getLogger("modelsync.config")

_REFERENCE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]+)?/[a-z0-9]+([._\-/][a-z0-9]+)*(:[\w][\w.\-]{0,127})?"
                        r"(@sha256:[0-9a-f]{64})?$")


def validate(cfg: Config) -> list[str]:
    problems: list[str] = []
    v = cfg.values
    for side, kind in (("source", v["source_type"]), ("destination", v["destination_type"])):
        if kind == "s3":
            problems += _require_s3(cfg, side)
        elif kind == "oci":
            problems += _require_oci(cfg, side)
        elif kind in ("pvc", "local"):
            problems += _require(cfg, [f"{side}_path"], f'{side} type is "{kind}"')
    if v["source_type"] == "uri":
        problems += _require(cfg, ["source_uri"], 'source type is "uri"', file_key="URI",
                             cred="source_uri_credentials_path")
        if v["source_uri"] and not re.match(r"^https?://[^/]+", v["source_uri"]):
            problems.append(f"--source-uri / MODEL_SYNC_SOURCE_URI: '{redact_url(v['source_uri'])}' is not an "
                            f"http(s):// URL")
    if v["source_type"] in ("pvc", "local") and v["source_path"] and not Path(v["source_path"]).exists():
        problems.append(f"--source-path / MODEL_SYNC_SOURCE_PATH: '{v['source_path']}' does not exist")
    problems += _require_intent(cfg)
    problems += _require(cfg, ["registry_server_address"], "registering in the Model Registry")
    problems += _check_files(cfg)
    problems += _check_signing(cfg)
    _warn_unused(cfg)
    return problems


def _missing(name: str, why: str, file_key: str | None = None, cred: str | None = None) -> str:
    s = BY_NAME[name]
    line = f"{s.env} is required when {why}: set {s.arg} or {s.env}"
    if file_key and cred:
        what = "file" if cred.endswith("oci_credentials_path") else "directory"
        line += f", or put {file_key} in the {what} named by {BY_NAME[cred].arg}"
    return line


def _require(cfg: Config, names: list[str], why: str, file_key: str | None = None,
             cred: str | None = None) -> list[str]:
    return [_missing(n, why, file_key, cred) for n in names if cfg.values.get(n) in (None, "")]


def _require_s3(cfg: Config, side: str) -> list[str]:
    why = f'{side} type is "s3"'
    problems = []
    for suffix in ("aws_bucket", "aws_key", "aws_access_key_id", "aws_secret_access_key"):
        name = f"{side}_{suffix}"
        if not cfg.values.get(name):
            keys = S3_FILE_KEYS.get(suffix)
            problems.append(_missing(name, why, " or ".join(keys) if keys else None,
                                     f"{side}_s3_credentials_path"))
    endpoint = cfg.values.get(f"{side}_aws_endpoint")
    if endpoint and not re.match(r"^https?://[^/]+", endpoint):
        s = BY_NAME[f"{side}_aws_endpoint"]
        problems.append(f"{s.arg} / {s.env}: '{endpoint}' is not a URL; write it as http(s)://host[:port]")
    return problems


def _require_oci(cfg: Config, side: str) -> list[str]:
    why = f'{side} type is "oci"'
    cred = f"{side}_oci_credentials_path"
    # The registry defaults to the URI's host, so it is only worth a line of its own when the URI is there.
    problems = _require(cfg, [f"{side}_oci_uri"], why)
    if cfg.values.get(f"{side}_oci_uri"):
        problems += _require(cfg, [f"{side}_oci_registry"], why)
    for suffix, key in (("oci_username", "username"), ("oci_password", "password")):
        if not cfg.values.get(f"{side}_{suffix}"):
            problems.append(_missing(f"{side}_{suffix}", why, 'an "auths" entry for the registry', cred))
    ref = cfg.values.get(f"{side}_oci_uri")
    if ref and not _REFERENCE.match(strip_scheme(ref)):
        s = BY_NAME[f"{side}_oci_uri"]
        problems.append(f"{s.arg} / {s.env}: '{ref}' is not an image reference; write host[:port]/repo[:tag]")
    elif ref and side == "destination" and "@" in ref:
        s = BY_NAME[f"{side}_oci_uri"]
        problems.append(f"{s.arg} / {s.env}: '{ref}' is pinned by digest; give a tag or just the repository "
                        f"(the job computes the digest and records it)")
    return problems


def _require_intent(cfg: Config) -> list[str]:
    intent = cfg.values["model_upload_intent"]
    why = f'the upload intent is "{intent}"'
    needs = {"update_artifact": ["model_artifact_id"], "create_model": ["metadata_configmap_path"],
             "create_version": ["model_id", "metadata_configmap_path"]}[intent]
    problems = _require(cfg, needs, why)
    meta = cfg.values.get("metadata_configmap_path")
    if meta and "metadata_configmap_path" in needs and not Path(meta).is_dir():
        problems.append(f"--metadata-configmap-path / MODEL_SYNC_METADATA_CONFIGMAP_PATH: '{meta}' is not a "
                        f"directory; mount the metadata ConfigMap there")
    return problems


def _check_files(cfg: Config) -> list[str]:
    """CA bundles and token files must exist now, not fail an hour into the transfer."""
    problems = []
    for s in SETTINGS:
        value = cfg.values.get(s.name)
        if value and s.kind == "path" and (s.name.endswith("ca_bundle") or s.name in (
                "registry_custom_ca", "signing_identity_token_path")) and not Path(value).is_file():
            problems.append(f"{s.arg} / {s.env}: '{value}' is not a readable file")
    storage = Path(cfg.values["storage_path"])
    if storage.exists() and not storage.is_dir():
        problems.append(f"--storage-path / MODEL_SYNC_STORAGE_PATH: '{storage}' exists and is not a directory")
    return problems


def _check_signing(cfg: Config) -> list[str]:
    if cfg.values.get("sign") is not True:
        return []
    missing = [k for k in SIGSTORE_VARS if k not in cfg.sigstore_env]
    if missing:
        return [f"--sign / MODEL_SYNC_SIGN is true but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set; set them or use --sign false"]
    return []


def signing_decision(cfg: Config) -> tuple[bool, str | None]:
    """The spec's table: explicit --sign wins; else all 3 SIGSTORE_* -> on, none -> off, some -> off + warning."""
    if cfg.values.get("sign") is not None:
        return bool(cfg.values["sign"]), None
    present = [k for k in SIGSTORE_VARS if k in cfg.sigstore_env]
    if len(present) == len(SIGSTORE_VARS):
        return True, None
    if not present:
        return False, None
    missing = [k for k in SIGSTORE_VARS if k not in present]
    return False, (f"signing skipped: {', '.join(present)} set but {', '.join(missing)} missing; set all three "
                   f"or MODEL_SYNC_SIGN=false")


def _warn_unused(cfg: Config) -> None:
    used = {f"source_{cfg.values['source_type']}", f"destination_{cfg.values['destination_type']}"}
    for s in SETTINGS:
        if cfg.origins.get(s.name) not in ("arg", "env", "dotenv") or s.group not in ("source", "destination"):
            continue
        family = {"aws": "s3", "s3": "s3", "oci": "oci", "uri": "uri", "path": "pvc"}.get(s.name.split("_")[1])
        if s.name.endswith("_type") or family is None:
            continue
        families = {family, "local"} if family == "pvc" else {family}
        if not any(f"{s.group}_{f}" in used for f in families):
            log.warning("%s is set but %s type is %s: it is ignored", s.env, s.group, cfg.values[f"{s.group}_type"])
