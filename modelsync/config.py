"""Resolve every setting from its sources, in the spec's order of precedence, and check it.

    command-line args  >  environment  >  .env file  >  credentials files  >  defaults

Each value keeps its origin (arg, env, dotenv, file, derived, default) for --dry-run. Values are typed here
(bool, int, Secret) so nothing downstream parses strings. All problems are collected and raised together as one
ConfigError, one line each, naming the arg, the env var and, where one exists, the credentials-file key.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from . import destinations, sources
from .cli import parse_args
from .errors import ConfigError
from .secret import Secret, register, register_url
from .settings import BY_ENV, BY_NAME, SETTINGS, SIGSTORE_OPTIONAL, SIGSTORE_VARS, Setting, parse_size
from .stores import Filled
from .validate import validate
from .values import Config

__all__ = ["Config", "convert", "load", "resolve"]

log = logging.getLogger("modelsync.config")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# upstream accepts the one-letter forms too
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
_LOG_LEVEL_NUMBERS = {"10": "debug", "20": "info", "30": "warning", "40": "error", "50": "error"}  # logging's


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve and validate; raise ConfigError listing every problem found. The Config returned carries the source
    and destination types' specs, built here once."""
    cfg, problems = resolve(argv, environ)
    problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, source=sources.of(cfg).spec(cfg), destination=destinations.of(cfg).spec(cfg))


def resolve(argv: Sequence[str] | None = None,
            environ: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """Every setting's value and origin, plus the problems met on the way (unparseable values, bad files)."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    env = {k: v for k, v in environ.items() if v != ""}  # an empty env var (common in templated manifests) is unset
    try:
        args, dry_run = parse_args(argv)
    except ConfigError as exc:  # report it with the environment's problems, not alone
        raise ConfigError(exc.problems + _unknown_keys(env, "environment")) from None
    dotenv = _read_dotenv(args, env, problems)
    problems += _unknown_keys(env, "environment") + _unknown_keys(dotenv, "the .env file")

    raw: dict[str, str] = {}
    origins: dict[str, str] = {}
    for s in SETTINGS:
        for origin, source, key in (("arg", args, s.name), ("env", env, s.env), ("dotenv", dotenv, s.env)):
            if key in source:
                raw[s.name], origins[s.name] = source[key], origin
                break
    _warn_secret_args(args)

    found: dict[str, Mapping[str, str]] = {}
    problems += _fill_from_files(raw, origins, found)
    if "registry_user_token" not in raw:
        _default_token(raw, origins, env, dotenv, problems)
    ca_pem = _custom_ca_from_envvar(raw, origins, env, dotenv, problems)
    for s in SETTINGS:
        if s.name not in raw and s.default is not None:
            raw[s.name], origins[s.name] = s.default, "default"

    values = _typed(raw, origins, problems)
    sigstore_env = {k: v for k in (*SIGSTORE_VARS, *SIGSTORE_OPTIONAL) if (v := env.get(k) or dotenv.get(k))}
    cfg = Config(values=values, origins=origins, dry_run=dry_run, sigstore_env=sigstore_env,
                 found=found, registry_ca_pem=ca_pem)
    return cfg, problems


def _read_dotenv(args: Mapping[str, str], env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    explicit = args.get("env_file") or env.get("MODEL_SYNC_ENV_FILE")
    path = Path(explicit) if explicit else Path(".env")
    if not path.is_file():
        if explicit:
            problems.append(f"--env-file / MODEL_SYNC_ENV_FILE: '{explicit}' does not exist; fix the path or unset it")
        return {}
    values = {k: v for k, v in dotenv_values(path).items() if v not in (None, "")}
    for k, v in values.items():
        if k in BY_ENV and BY_ENV[k].secret:
            register(v)
    return values


def _unknown_keys(source: Mapping[str, str], where: str) -> list[str]:
    """A misspelt MODEL_SYNC_* variable would otherwise be ignored silently."""
    problems = []
    for key in source:
        if key.startswith("MODEL_SYNC_") and key not in BY_ENV:
            close = difflib.get_close_matches(key, BY_ENV, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see modelsync --help for the known settings"
            problems.append(f"{key} in {where} is not a modelsync setting{hint}")
    return problems


def _warn_secret_args(args: Mapping[str, str]) -> None:
    for name in args:
        s = BY_NAME.get(name)
        if s and s.secret:
            register(args[name])
            log.warning("%s was given on the command line, where the process list shows it; prefer %s or a "
                        "credentials file", s.arg, s.env)


def _label(name: str) -> str:
    return f"{BY_NAME[name].arg} / {BY_NAME[name].env}"


def _types_named(raw: Mapping[str, str]) -> list[sources.SourceType | destinations.DestinationType]:
    """The storage types the (still raw) settings name: their credentials files are read, no others'."""
    def written(name: str) -> str:
        return (raw.get(name) or BY_NAME[name].default or "").strip().lower()
    return [*(t for t in sources.TYPES if written("source_type") in t.WRITTEN_AS),
            *(t for t in destinations.TYPES if written("destination_type") in t.WRITTEN_AS)]


def _fill_from_files(raw: dict[str, str], origins: dict[str, str], found: dict[str, Mapping[str, str]]) -> list[str]:
    """Credentials files rank below args/env/dotenv: they only fill settings still unset. Each type reads its own."""
    problems: list[str] = []
    readers = list(dict.fromkeys(t.read_files for t in _types_named(raw)))  # hf reads the uri type's dir
    for read in readers:
        try:
            filled: Filled = read(raw)
        except ConfigError as exc:
            problems += exc.problems
            continue
        for name, value in filled.values.items():
            if value and name not in raw:
                raw[name], origins[name] = value, "file"
        for name, value in filled.derived.items():
            if name not in raw:
                raw[name], origins[name] = value, "derived"
        found.update(filled.found)
        problems += filled.problems
    return problems


def _default_token(raw: dict[str, str], origins: dict[str, str], env: Mapping[str, str],
                   dotenv: Mapping[str, str], problems: list[str]) -> None:
    """Token: the value, else the env var named by --registry-user-token-envvar, else the pod's SA token."""
    var = raw.get("registry_user_token_envvar")
    if var:
        value = env.get(var) or dotenv.get(var)
        if value:
            raw["registry_user_token"], origins["registry_user_token"] = value.strip(), "env"
        else:
            problems.append(f"--registry-user-token-envvar / MODEL_SYNC_REGISTRY_USER_TOKEN_ENVVAR names {var}, "
                            f"which is not set; set {var} or give MODEL_SYNC_REGISTRY_USER_TOKEN")
        return
    sa = Path(SERVICE_ACCOUNT_TOKEN)
    if sa.is_file():
        raw["registry_user_token"], origins["registry_user_token"] = sa.read_text().strip(), "file"


def _custom_ca_from_envvar(raw: dict[str, str], origins: dict[str, str], env: Mapping[str, str],
                           dotenv: Mapping[str, str], problems: list[str]) -> str | None:
    """--registry-custom-ca-envvar names a variable holding the CA: a file path (becomes --registry-custom-ca)
    or the PEM text itself (returned, for the job to write to a file)."""
    var = raw.get("registry_custom_ca_envvar")
    if not var or "registry_custom_ca" in raw:
        return None
    value = (env.get(var) or dotenv.get(var) or "").strip()
    if not value:
        problems.append(f"--registry-custom-ca-envvar / MODEL_SYNC_REGISTRY_CUSTOM_CA_ENVVAR names {var}, which is "
                        f"not set; set it to a CA file path or PEM text")
        return None
    if "-----BEGIN" in value:
        return value
    raw["registry_custom_ca"], origins["registry_custom_ca"] = value, "env"
    return None


def _check_path(text: str) -> None:
    """A path the file system cannot even look up (a name too long, a NUL) is a setting problem, not a crash later
    in whatever first touches it. Not existing is fine here: each use says what it needs."""
    try:
        os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:
        shown = text if len(text) <= 80 else f"{text[:60]}…({len(text)} characters)"
        raise ValueError(f"'{shown}' cannot be used as a path ({getattr(exc, 'strerror', None) or exc})") from None


def _typed(raw: Mapping[str, str], origins: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {s.name: None for s in SETTINGS}
    for name, text in raw.items():
        s = BY_NAME[name]
        try:
            values[name] = convert(s, text)
        except ValueError as exc:
            problems.append(f"{s.arg} / {s.env} (from {origins[name]}): {exc}")
    return values


def convert(s: Setting, text: str) -> Any:
    text = text.strip() if not s.secret else text
    if s.secret:
        register(text)
        return Secret(text.strip())
    if s.url:
        register_url(text)
    if s.kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"'{text}' is not a boolean; use true/false, 1/0 or yes/no")
    if s.kind == "path":
        _check_path(text)
    if s.kind == "int":
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
        if s.name.endswith("port") and not 0 < number < 65536:
            raise ValueError(f"{number} is not a port number (1-65535)")
        return number
    if s.kind == "size":
        return parse_size(text)
    if s.kind == "endpoint" and "://" not in text:
        # as upstream reads it; said, since plain HTTP then fails
        log.warning("%s '%s' has no scheme: using https://%s (write http://… for a plain-HTTP store)", s.env, text,
                    text)
        return f"https://{text}"
    if s.name.endswith("log_level") and text in _LOG_LEVEL_NUMBERS:  # upstream takes Python's numeric levels
        return _LOG_LEVEL_NUMBERS[text]
    if s.choices:
        if text.lower() not in s.choices:
            raise ValueError(f"'{text}' is not one of {', '.join(s.choices)}")
        return text.lower()
    return text
