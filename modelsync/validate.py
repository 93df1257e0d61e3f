"""The spec's "required when" rules (its ✅*, ✅+, ✅#, ✅% marks) and sanity checks on values.

Returns every problem at once; each line names the setting's arg, env var and, where a credentials file could
supply it, the file key. Each source and destination type checks its own settings (its module's validate());
what is left here is common to all. Settings given for a type that is not in use are warned about, not silently
ignored.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import destinations, sources
from .errors import ConfigError, TransferError
from .locations import split_registry_address
from .metadata import ids_in
from .modelcar import source_date_epoch
from .scan import parse_allow
from .secret import redact_url
from .setting import explicit, problem, require
from .settings import BY_NAME, OF_TYPES, SETTINGS, SIGSTORE_VARS
from .signing.trust import read_local

if TYPE_CHECKING:
    from .values import Config

log = logging.getLogger("modelsync.config")


def validate(cfg: Config) -> list[str]:
    problems: list[str] = []
    # A value that failed to convert is None here (its problem is already reported): checks that need it are
    # skipped rather than tripping over it.
    if cfg.values.get("source_type") in sources.NAMES:
        problems += sources.of(cfg).validate(cfg)
    if cfg.values.get("destination_type") in destinations.NAMES:
        problems += destinations.of(cfg).validate(cfg)
    if cfg.values.get("model_upload_intent") is not None:
        problems += _require_intent(cfg)
    problems += require(cfg, [BY_NAME["registry_server_address"]], "registering in the Model Registry")
    problems += _check_registry_values(cfg)
    problems += _check_files(cfg)
    problems += _check_signing(cfg)
    problems += _check_source_date_epoch()
    problems += _check_scan_allow(cfg)
    _warn_unused(cfg)
    return problems


def _check_scan_allow(cfg: Config) -> list[str]:
    try:
        parse_allow(cfg.values.get("scan_allow"))
    except ValueError as exc:
        return [problem(BY_NAME["scan_allow"], str(exc))]
    return []


def _check_source_date_epoch() -> list[str]:
    """SOURCE_DATE_EPOCH pins an image's `created` (modelcar.py); a bad value would otherwise fail only when the
    image is built, after the claim."""
    try:
        source_date_epoch()
    except TransferError as exc:
        return [str(exc)]
    return []


def _require_intent(cfg: Config) -> list[str]:
    intent = cfg.values["model_upload_intent"]
    why = f'the upload intent is "{intent}"'
    needs = {"update_artifact": ["model_artifact_id"], "create_model": ["metadata_configmap_path"],
             "create_version": ["model_id", "metadata_configmap_path"]}[intent]
    meta = cfg.values.get("metadata_configmap_path")
    from_dir = ids_in(meta)  # the Model Registry UI names the ids in its ConfigMap, not in env vars
    problems = require(cfg, [BY_NAME[n] for n in needs if not (n in from_dir and not cfg.values.get(n))], why)
    for name, (value, key) in sorted(from_dir.items()):
        given = cfg.values.get(name)
        if given and given.strip() != value:
            s = BY_NAME[name]
            problems.append(f"{s.arg} / {s.env} is '{given.strip()}' but the metadata ConfigMap's {key} is "
                            f"'{value}': they must name the same entity; remove one or make them agree")
        elif not value.isdigit():
            problems.append(f"metadata ConfigMap {key}: '{value}' is not a Model Registry id (a whole number)")
    if meta and "metadata_configmap_path" in needs and not Path(meta).is_dir():
        problems.append(f"--metadata-configmap-path / MODEL_SYNC_METADATA_CONFIGMAP_PATH: '{meta}' is not a "
                        f"directory; mount the metadata ConfigMap there")
    return problems


def _check_registry_values(cfg: Config) -> list[str]:
    """The address as registry.base_url reads it (locations.split_registry_address), and ids as the Model Registry
    makes them (whole numbers): an id goes into a REST path, so '../7' must not reach the server."""
    problems = []
    address = (cfg.values.get("registry_server_address") or "").strip().rstrip("/")
    if address:
        try:
            split_registry_address(address)
        except ValueError:
            problems.append(f"--registry-server-address / MODEL_SYNC_REGISTRY_SERVER_ADDRESS: "
                            f"'{redact_url(address)}' is not a Model Registry address; write host, http://host[:port] "
                            f"or https://host[:port][/route prefix]")
    for name in ("model_id", "model_version_id", "model_artifact_id"):
        value = cfg.values.get(name)
        if value and not value.strip().isdigit():
            s = BY_NAME[name]
            problems.append(f"{s.arg} / {s.env}: '{value}' is not a Model Registry id (a whole number)")
    return problems


def _check_files(cfg: Config) -> list[str]:
    """CA bundles and token files must exist now, not fail an hour into the transfer."""
    problems = []
    for s in SETTINGS:
        value = cfg.values.get(s.name)
        if value and s.kind == "path" and (s.name.endswith("ca_bundle") or s.name in (
                "registry_custom_ca", "signing_identity_token_path")) and not Path(value).is_file():
            if s.name == "registry_custom_ca" and optional_mount_absent(Path(value)):
                log.warning("%s / %s: '%s' is not there and its directory is empty: an optional CA ConfigMap that "
                            "does not exist (the Model Registry UI mounts one so); the system's CAs are trusted",
                            s.arg, s.env, value)
                continue
            problems.append(f"{s.arg} / {s.env}: '{value}' is not a readable file")
    storage = Path(cfg.values["storage_path"] or "/")  # None: its conversion failed, already reported
    if storage.exists() and not storage.is_dir():
        problems.append(f"--storage-path / MODEL_SYNC_STORAGE_PATH: '{storage}' exists and is not a directory")
    return problems


def optional_mount_absent(path: Path) -> bool:
    """A file whose directory exists and is empty: what the kubelet mounts for an optional ConfigMap that is not
    there. A path whose directory is missing, or holds other files, is a mistake and stays an error."""
    try:
        return path.parent.is_dir() and not any(path.parent.iterdir())
    except OSError:
        return False


def _check_signing(cfg: Config) -> list[str]:
    """When signing is on: where trust comes from, the service URLs, the root checksum's form. A local trust file
    (--sigstore-trust-config) stands in for SIGSTORE_TUF_URL, and a client trust config for the service URLs too."""
    if not signing_decision(cfg)[0]:
        return []
    problems = []
    needed = list(SIGSTORE_VARS)
    local = cfg.values.get("sigstore_trust_config")
    if local:
        try:
            _, services = read_local(Path(local))
            needed = [] if services else ["SIGSTORE_FULCIO_URL", "SIGSTORE_REKOR_URL"]
        except ConfigError as exc:
            problems += exc.problems
            needed = []
    missing = [k for k in needed if k not in cfg.sigstore_env]
    if missing:
        why = "--sign / MODEL_SYNC_SIGN is true" if not local else "the --sigstore-trust-config file is a trusted " \
                                                                     "root only (it names no services)"
        problems.append(f"{why} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; set "
                        f"{'them' if len(missing) > 1 else 'it'} or use --sign false")
    for key, url in cfg.sigstore_env.items():
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"{key}: '{redact_url(url)}' is not an http(s) URL")
    checksum = cfg.values.get("sigstore_root_checksum")
    if checksum and not re.fullmatch(r"[0-9a-fA-F]{64}", checksum.strip()):
        problems.append("--sigstore-root-checksum / MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM: not a sha256 (64 hex digits); "
                        "give the output of `sha256sum root.json`")
    return problems


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
    """A storage type's setting given while another type is in use is ignored: said, not silently."""
    if cfg.values.get("source_type") not in sources.NAMES or \
            cfg.values.get("destination_type") not in destinations.NAMES:
        return
    source, destination = sources.of(cfg), destinations.of(cfg)
    used = {s.name for s in (*source.SETTINGS, *destination.SETTINGS)}
    for s in SETTINGS:
        if s.name in OF_TYPES and s.name not in used and explicit(cfg, s):
            kind = (source if s.group == "source" else destination).__name__.rsplit(".", 1)[-1]
            written = cfg.values[f"{s.group}_type"]
            log.warning("%s is set but %s type is %s%s: it is ignored", s.env, s.group, written,
                        f" ({kind})" if kind != written and kind != "local" else "")
