"""Readers for credentials as Kubernetes mounts them: a Secret directory (one file per key) and .dockerconfigjson.

Each reader returns plain {key: value} strings; config.py decides which setting a key feeds and ranks it below
args and env. Errors name the path and what is wrong with it, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .secret import register

log = logging.getLogger("modelsync.config")

# Docker Hub is written several ways in config files; they all mean the same registry.
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def read_secret_dir(path: str, setting: str) -> dict[str, str]:
    """Every regular file in a mounted Secret directory, value stripped of surrounding whitespace.

    Kubernetes mounts a Secret as files plus '..data' symlinks and dot-directories; those are skipped.
    """
    root = Path(path)
    if not _is_dir(root, setting):
        raise ConfigError(f"{setting}: '{path}' is not a directory; point it at a mounted Secret "
                          f"(one file per key, e.g. AWS_ACCESS_KEY_ID)")
    values: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            values[entry.name] = entry.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{setting}: cannot read '{entry}': {exc.__class__.__name__}") from None
    return values


def _is_dir(path: Path, setting: str) -> bool:
    try:
        return path.is_dir()
    except OSError as exc:  # e.g. a name too long to look up
        raise ConfigError(f"{setting}: '{str(path)[:80]}' cannot be used as a path ({exc.strerror})") from None


def normalize_registry(name: str) -> str:
    """'https://quay.io/v1/' -> 'quay.io'; Docker Hub spellings -> 'docker.io'."""
    name = name.strip()
    host = urlsplit(name).netloc if "://" in name else name.split("/", 1)[0]
    host = host.lower()
    return "docker.io" if host in _DOCKER_HUB else host


def dockerconfig_file(path: str, setting: str = "the .dockerconfigjson path") -> Path:
    """A .dockerconfigjson Secret may be mounted as the file itself or as a directory holding it."""
    p = Path(path)
    if _is_dir(p, setting):
        for name in (".dockerconfigjson", "config.json", ".dockercfg"):
            if (p / name).is_file():
                return p / name
        raise ConfigError(f"{setting}: the directory '{path}' holds no .dockerconfigjson (nor config.json or "
                          f".dockercfg); mount the registry Secret (type kubernetes.io/dockerconfigjson) there")
    return p


def read_docker_auth(path: str, registry: str, setting: str) -> dict[str, str]:
    """Username and password for registry from a .dockerconfigjson ({"auths": {host: {...}}}).

    Returns {} when the file has no entry for that registry, or an entry without credentials: the registry is
    then used anonymously (the caller says so).
    """
    file = dockerconfig_file(path, setting)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{setting}: '{path}' does not exist; mount the registry Secret "
                          f"(type kubernetes.io/dockerconfigjson) there") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{setting}: '{file}' is not valid JSON ({exc.__class__.__name__}); expected "
                          f'{{"auths": {{"<registry>": {{"auth": "<base64 user:password>"}}}}}}') from None
    auths = doc.get("auths", doc) if isinstance(doc, dict) else None  # old .dockercfg has no "auths" level
    if not isinstance(auths, dict):
        raise ConfigError(f"{setting}: '{file}' has no \"auths\" object")
    wanted = normalize_registry(registry)
    for key, entry in auths.items():
        if normalize_registry(key) != wanted or not isinstance(entry, dict):
            continue
        return _entry_credentials(entry, key, file, setting)
    return {}


def _entry_credentials(entry: Mapping[str, Any], key: str, file: Path, setting: str) -> dict[str, str]:
    """username/password of one "auths" entry. An empty or missing "auth" (and no username/password) means an
    anonymous registry, as in upstream's samples; a plaintext "user:password" auth is read, with a warning."""
    user, password = entry.get("username"), entry.get("password")
    auth = entry.get("auth")
    if auth:
        register(str(auth))
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            decoded = None
        if decoded is None or ":" not in decoded:
            if not (isinstance(auth, str) and ":" in auth):
                raise ConfigError(f"{setting}: the \"auth\" of '{key}' in '{file}' is not base64 of "
                                  f"'user:password' (nor that text itself)")
            log.warning("%s: the \"auth\" of '%s' in '%s' is plaintext 'user:password'; that form is deprecated "
                        "(docker and Kubernetes write base64 of it): it is read, but encode it", setting, key, file)
            decoded = auth
        user, password = decoded.split(":", 1)  # the password itself may contain ':'
    out: dict[str, str] = {}
    if user:
        out["username"] = str(user)
    if password:
        register(str(password))
        out["password"] = str(password)
    return out


def auth_entry(registry: str, username: str, password: str) -> dict[str, dict[str, str]]:
    """The inverse, for writing a temporary auth file for skopeo/oras."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    register(token)
    return {normalize_registry(registry): {"auth": token}}
