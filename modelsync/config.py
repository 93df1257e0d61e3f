"""Resolve every setting from its sources, in the spec's order of precedence, and check it.

    command-line args  >  environment  >  .env file  >  credentials files  >  defaults

Each value keeps its origin (arg, env, dotenv, file, derived, default) for --dry-run. Values are typed here
(bool, int, Secret) so nothing downstream parses strings. All problems are collected and raised together as one
ConfigError, one line each, naming the arg, the env var and, where one exists, the credentials-file key.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from . import credentials
from .cli import parse_args
from .errors import ConfigError
from .secret import MASK, Secret, redact_url, register, register_url
from .locations import strip_scheme
from .settings import (BY_ENV, BY_NAME, OCI_FILE_KEYS, S3_FILE_KEYS, SETTINGS, SIGSTORE_OPTIONAL,  # noqa: F401
                       SIGSTORE_VARS, Setting, parse_size)
from .validate import validate

log = logging.getLogger("modelsync.config")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# upstream accepts the one-letter forms too
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
_LOG_LEVEL_NUMBERS = {"10": "debug", "20": "info", "30": "warning", "40": "error", "50": "error"}  # logging's
# Settings holding URLs: user-info and query values (a pre-signed URL's signature) are masked wherever shown.
URL_SETTINGS = ("source_uri", "registry_server_address", "source_aws_endpoint", "destination_aws_endpoint")


@dataclass(frozen=True)
class Config:
    values: Mapping[str, Any]
    origins: Mapping[str, str]
    dry_run: bool = False
    sigstore_env: Mapping[str, str] = field(default_factory=dict)
    uri_credentials: Mapping[str, str] = field(default_factory=dict)
    registry_ca_pem: str | None = None  # PEM text from the env var named by --registry-custom-ca-envvar

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def report(self) -> dict[str, dict[str, Any]]:
        """Every setting with its value (secrets as ***) and origin, for --dry-run."""
        out = {}
        for s in SETTINGS:
            value = self.values.get(s.name)
            if isinstance(value, Secret):
                value = MASK if value else ""
            elif s.name in URL_SETTINGS and value:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[s.name] = {"value": value, "origin": self.origins.get(s.name, "unset"), "env": s.env, "arg": s.arg}
        return out

    def to_json(self) -> str:
        return json.dumps(self.report(), indent=2)


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve and validate; raise ConfigError listing every problem found."""
    cfg, problems = resolve(argv, environ)
    problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


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

    uri_creds: dict[str, str] = {}
    try:
        _fill_from_files(raw, origins, env, dotenv, uri_creds)
    except ConfigError as exc:
        problems += exc.problems
    ca_pem = _custom_ca_from_envvar(raw, origins, env, dotenv, problems)
    for s in SETTINGS:
        if s.name not in raw and s.default is not None:
            raw[s.name], origins[s.name] = s.default, "default"

    values = _typed(raw, origins, problems)
    _default_schemes(values)
    sigstore_env = {k: env.get(k) or dotenv.get(k) for k in (*SIGSTORE_VARS, *SIGSTORE_OPTIONAL)
                    if env.get(k) or dotenv.get(k)}
    cfg = Config(values=values, origins=origins, dry_run=dry_run, sigstore_env=sigstore_env,
                 uri_credentials=uri_creds, registry_ca_pem=ca_pem)
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


def _fill_from_files(raw: dict[str, str], origins: dict[str, str], env: Mapping[str, str],
                     dotenv: Mapping[str, str], uri_creds: dict[str, str]) -> None:
    """Credentials files rank below args/env/dotenv: they only fill settings still unset."""
    problems: list[str] = []

    def offer(name: str, value: str | None) -> None:
        if value and name not in raw:
            raw[name], origins[name] = value, "file"

    for side in ("source", "destination"):
        s3_dir = raw.get(f"{side}_s3_credentials_path")
        if s3_dir:
            try:
                found = credentials.read_secret_dir(s3_dir, _label(f"{side}_s3_credentials_path"))
            except ConfigError as exc:
                problems += exc.problems
                found = {}
            for suffix, keys in S3_FILE_KEYS.items():
                offer(f"{side}_{suffix}", next((found[k] for k in keys if found.get(k)), None))
        oci_file = raw.get(f"{side}_oci_credentials_path")
        registry = raw.get(f"{side}_oci_registry") or _host_of(raw.get(f"{side}_oci_uri"))
        if oci_file and registry:
            try:
                found = credentials.read_docker_auth(oci_file, registry,
                                                     _label(f"{side}_oci_credentials_path"))
            except ConfigError as exc:
                problems += exc.problems
                found = {}
            for suffix, key in OCI_FILE_KEYS.items():
                offer(f"{side}_{suffix}", found.get(key))
        if registry and f"{side}_oci_registry" not in raw and raw.get(f"{side}_oci_uri"):
            raw[f"{side}_oci_registry"], origins[f"{side}_oci_registry"] = registry, "derived"

    uri_dir = raw.get("source_uri_credentials_path")
    if uri_dir:
        try:
            uri_creds.update(credentials.read_secret_dir(uri_dir, _label("source_uri_credentials_path")))
        except ConfigError as exc:
            problems += exc.problems
        uri_from_secret = uri_creds.pop("URI", None)
        if uri_from_secret:
            register(uri_from_secret.strip())  # read from a Secret: the whole URL is a secret, shown redacted
        offer("source_uri", uri_from_secret)
        for key in ("TOKEN", "PASSWORD", "HEADERS"):
            if uri_creds.get(key):
                register(uri_creds[key])

    if "registry_user_token" not in raw:
        _default_token(raw, origins, env, dotenv, problems)
    if problems:
        raise ConfigError(problems)


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


def _host_of(reference: str | None) -> str | None:
    if not reference:
        return None
    ref = strip_scheme(reference)
    return ref.split("/", 1)[0] if "/" in ref else None




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


def _default_schemes(values: dict[str, Any]) -> None:
    """An S3 endpoint without a scheme is https, as upstream reads it; said, since plain HTTP then fails."""
    for name in ("source_aws_endpoint", "destination_aws_endpoint"):
        value = values.get(name)
        if value and "://" not in value:
            values[name] = f"https://{value}"
            log.warning("%s '%s' has no scheme: using https://%s (write http://… for a plain-HTTP store)",
                        BY_NAME[name].env, value, value)


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
    if s.name in URL_SETTINGS:
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
    if s.name.endswith("log_level") and text in _LOG_LEVEL_NUMBERS:  # upstream takes Python's numeric levels
        return _LOG_LEVEL_NUMBERS[text]
    if s.choices:
        if text.lower() not in s.choices:
            raise ValueError(f"'{text}' is not one of {', '.join(s.choices)}")
        return text.lower()
    return text
