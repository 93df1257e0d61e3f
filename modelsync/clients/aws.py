"""What both S3 directions share: the aws CLI's environment and flags, boto3 clients for listing and checks, and
which credentials are in use.

Credentials, two ways:
- An access key configured (settings, or the S3 credentials Secret dir): it reaches the aws CLI through its
  environment only. AWS_CONFIG_FILE is modelsync's own (it loads the plugin in awscli_plugin/, see there why),
  AWS_SHARED_CREDENTIALS_FILE points nowhere and instance metadata is off, so an operator's ~/.aws profile cannot
  change what the job does; boto3 gets the same isolation (no profile, no config files).
- No key at all: the standard AWS credential chain, as a pod gets it: web identity (IRSA: AWS_ROLE_ARN +
  AWS_WEB_IDENTITY_TOKEN_FILE), container credentials, AWS_PROFILE with the user's config and credentials files,
  instance metadata. boto3 resolves it from the job's environment; the aws CLI child, whose environment is
  minimal (tools.py), gets exactly those variables passed through, so both resolve the same provider, and the
  child refreshes temporary credentials itself (they never appear in argv, nor in its environment). The child's
  AWS_CONFIG_FILE is then a private copy of the user's config (or none) with the plugin section put first.
  `credentials_in_use` resolves the chain in preflight, says which provider answered and fails in one line when
  none did.
The endpoint is always passed as --endpoint-url: some aws CLI builds ignore AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from .. import secret, tools
from ..awscli_plugin.modelsync_no_expect import drop_expect
from ..errors import ConfigError, CredentialsRefused, ToolError, TransferError
from ..locations import S3Location

T = TypeVar("T")

DEFAULT_REGION = "us-east-1"  # what MinIO and most S3-compatible stores accept when none is given
PLUGIN_DIR = Path(__file__).parent.parent / "awscli_plugin"
PLUGIN_CONFIG = PLUGIN_DIR / "config"

# The standard credential chain's variables, passed to the aws CLI only when no key is configured.
AMBIENT_ENV = (
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME",             # web identity (IRSA)
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",     # container (ECS, EKS Pod
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",      # Identity) credentials
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",                # profiles (config: below)
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",                  # the job's own env
    "AWS_ENDPOINT_URL_STS", "AWS_STS_REGIONAL_ENDPOINTS",                                # where STS is
    "AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT",                    # instance metadata
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "AWS_EC2_METADATA_V1_DISABLED",
    "AWS_METADATA_SERVICE_TIMEOUT", "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
# botocore session variables that make it ignore AWS_PROFILE and ~/.aws (keys configured)
_ISOLATED = {"profile": (None, None, None, None), "config_file": (None, None, os.devnull, None),
             "credentials_file": (None, None, os.devnull, None)}
FIX = ("set MODEL_SYNC_{SIDE}_AWS_ACCESS_KEY_ID and MODEL_SYNC_{SIDE}_AWS_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID "
       "and AWS_SECRET_ACCESS_KEY in the Secret dir of --{side}-s3-credentials-path), or run the pod with a "
       "service account that has an IAM role (IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE)")


def cli_env(loc: S3Location) -> dict[str, str]:
    env = {"PYTHONPATH": str(PLUGIN_DIR), "AWS_DEFAULT_REGION": loc.region or DEFAULT_REGION,
           "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "5"}
    if not loc.ambient:
        env.update({"AWS_CONFIG_FILE": str(PLUGIN_CONFIG), "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "AWS_EC2_METADATA_DISABLED": "true"})
        if loc.access_key_id and loc.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = loc.access_key_id.reveal()
            env["AWS_SECRET_ACCESS_KEY"] = loc.secret_access_key.reveal()
        return env
    env.update(ambient_env())
    env["AWS_CONFIG_FILE"] = str(_cli_config())
    return env


def ambient_env() -> dict[str, str]:
    """The credential chain's variables of this process (secret ones registered for masking)."""
    found = {name: os.environ[name] for name in AMBIENT_ENV if os.environ.get(name)}
    for name in _SECRET_ENV:
        secret.register(found.get(name, ""))
    return found


def _user_config() -> Path:
    return Path(os.path.expanduser(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"))


def _cli_config() -> Path:
    """The aws CLI's config with no key configured: the plugin section, then the user's config (its own [plugins]
    left out) so that profiles, source_profile chains and credential_process work as in the user's shell."""
    try:
        text = _user_config().read_text()
    except OSError:  # none (the usual case in a pod): the plugin's own file
        return PLUGIN_CONFIG
    kept, skipping = [], False
    for line in text.splitlines():
        header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            skipping = header.group(1) == "plugins"
        if not skipping:
            kept.append(line)
    merged = (f"{PLUGIN_CONFIG.read_text().rstrip()}\n\n# {_user_config()}, copied by modelsync\n"
              + "\n".join(kept) + "\n")
    path = _private_dir() / f"aws-config-{hashlib.sha256(merged.encode()).hexdigest()[:16]}"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(merged)
    return path


_private: list[Path] = []
_private_lock = threading.Lock()


def _private_dir() -> Path:
    """A 0700 directory of this process for generated config files, removed when it exits."""
    with _private_lock:
        if not _private:
            _private.append(Path(tempfile.mkdtemp(prefix="modelsync-aws-")))
            atexit.register(shutil.rmtree, _private[0], True)
        return _private[0]


def cli_flags(loc: S3Location) -> list[str]:
    flags = ["--only-show-errors"]
    if loc.endpoint:
        flags += ["--endpoint-url", loc.endpoint]
    if loc.ca_bundle:
        flags += ["--ca-bundle", loc.ca_bundle]
    if not loc.verify_tls:
        flags += ["--no-verify-ssl"]
    return flags


def session(loc: S3Location) -> boto3.Session:
    """A fresh session per use (a token file's new content is read; nothing is cached across jobs): configured
    keys and no profile or config files, or else the standard chain from this process's environment."""
    keys = {} if loc.ambient else {
        "aws_access_key_id": loc.access_key_id.reveal() if loc.access_key_id else None,
        "aws_secret_access_key": loc.secret_access_key.reveal() if loc.secret_access_key else None}
    return boto3.Session(**keys, botocore_session=_botocore_session(loc), region_name=loc.region or DEFAULT_REGION)


def _botocore_session(loc: S3Location) -> botocore.session.Session:
    return botocore.session.Session() if loc.ambient else botocore.session.Session(session_vars=_ISOLATED)


def client(loc: S3Location) -> BaseClient:
    """An S3 client for loc. With keys configured it is made once per endpoint, keys and TLS settings for the
    process (making one costs ~0.1 s: the service model is parsed again, CA certificates loaded); with the
    ambient chain it is made anew each time, so changed variables and token files are seen."""
    if loc.ambient:
        return _client(loc)
    return _client_for_keys(S3Location("", "", loc.region, loc.endpoint, loc.access_key_id, loc.secret_access_key,
                                       loc.ca_bundle, loc.verify_tls))


@functools.lru_cache(maxsize=16)
def _client_for_keys(loc: S3Location) -> BaseClient:
    return _client(loc)


def _client(loc: S3Location) -> BaseClient:
    verify: bool | str = loc.ca_bundle or loc.verify_tls
    s3 = session(loc).client(
        "s3", endpoint_url=loc.endpoint, verify=verify,
        config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                          s3={"addressing_style": "path"} if loc.endpoint else None))
    s3.meta.events.register("before-send.s3", drop_expect)
    return s3


def credentials_in_use(loc: S3Location, side: str) -> str:
    """Which credentials this side uses, for preflight facts and --dry-run, e.g. "web identity (AWS_ROLE_ARN …)".
    With no key configured the chain is resolved now (temporary credentials fetched), so a refused token, an
    unreachable STS or no credentials at all fail in preflight, in one line. Values are never shown."""
    if not loc.ambient:
        return "access key (configured)"
    _register_token_file()
    fix = FIX.format(SIDE=side.upper(), side=side)
    sess = _botocore_session(loc)
    sess.set_config_variable("region", loc.region or DEFAULT_REGION)
    try:
        creds = sess.get_credentials()
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"{side} {loc.url}: no access key is configured and the AWS credential chain failed: "
                          f"{_first_line(exc)}; {fix}") from None
    if creds is None:
        raise ConfigError(f"{side} {loc.url}: no S3 credentials: no access key is configured and the AWS credential "
                          f"chain found none (no web identity token, container or instance credentials, profile "
                          f"or AWS_ACCESS_KEY_ID); {fix}")
    what = describe_provider(creds.method, sess)
    try:
        with _quiet("botocore.credentials"):  # it warns with a traceback; the one line below says it all
            frozen = creds.get_frozen_credentials()  # web identity and roles: the STS call happens here
    except (BotoCoreError, ClientError) as exc:
        raise TransferError(f"{side} {loc.url}: credentials from {what} could not be obtained: {_first_line(exc)}"
                            + _hint(creds.method)) from None
    for value in (frozen.access_key, frozen.secret_key, frozen.token):
        secret.register(value or "")
    return what


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _register_token_file() -> None:
    """The web identity token is a credential: mask it (and its parts) wherever it could turn up."""
    path = os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if not path:
        return
    try:
        token = Path(path).read_text().strip()
    except OSError:
        return
    for value in (token, *token.split(".")):
        secret.register(value)


def _first_line(exc: Exception) -> str:
    return secret.mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _hint(method: str) -> str:
    if method == "assume-role-with-web-identity":
        return ("; check that the token in AWS_WEB_IDENTITY_TOKEN_FILE is current, its audience (aud) is the one "
                "the STS trusts, and AWS_ROLE_ARN is the role of that service account")
    return ""


def describe_provider(method: str, sess: botocore.session.Session) -> str:
    """botocore's provider name (Credentials.method) in words, with where it came from; never a value."""
    env = os.environ
    profile = sess.profile or "default"
    if method == "assume-role-with-web-identity":
        arn = env.get("AWS_ROLE_ARN") or sess.get_scoped_config().get("role_arn", "?")
        token = env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or sess.get_scoped_config().get("web_identity_token_file", "?")
        return f"web identity (AWS_ROLE_ARN {arn}, token file {token})"
    if method == "container-role":
        uri = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or \
            f"http://169.254.170.2{env.get('AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', '')}"
        return f"container credentials ({secret.redact_url(uri)})"
    if method == "iam-role":
        return "instance metadata (the instance profile's role)"
    if method == "env":
        return "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the job's environment"
    if method == "shared-credentials-file":
        return f"shared credentials file {sess.get_config_variable('credentials_file')} (profile {profile})"
    if method == "config-file":
        return f"config file {sess.get_config_variable('config_file')} (profile {profile})"
    if method == "assume-role":
        return f"assume role (profile {profile}: {sess.get_scoped_config().get('role_arn', '?')})"
    if method == "custom-process":
        return f"credential_process (profile {profile})"
    if method == "sso":
        return f"IAM Identity Center / SSO (profile {profile})"
    return f"{method} (profile {profile})" if sess.profile else method


def list_objects(loc: S3Location, prefix: str) -> list[dict[str, Any]]:
    pages = client(loc).get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", [])]


REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken")


def failure(exc: Exception, loc: S3Location, doing: str) -> TransferError:
    """The error to raise for a botocore failure: CredentialsRefused when the store refused the credentials."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    kind = CredentialsRefused if code in REFUSED else TransferError
    return kind(f"{doing} {describe_error(exc, loc)}")


def describe_error(exc: Exception, loc: S3Location) -> str:
    """botocore's errors in one line, naming the bucket and endpoint (its texts hold no credentials)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    where = f"{loc.url}" + (f" at {loc.endpoint}" if loc.endpoint else "")
    hints = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access denied: check the credentials",
             "InvalidAccessKeyId": "the access key id is not known to the store",
             "SignatureDoesNotMatch": "the secret access key is wrong", "403": "access denied: check the credentials",
             "404": "not found"}
    return f"{where}: {hints.get(code or '', str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"


# The aws CLI retries a failed request itself (AWS_MAX_ATTEMPTS), but an object download cut mid-way is retried by
# s3transfer at once, without waiting: a network blip of a second, or a store restarting, fails the whole copy.
# Such failures are tried again (tools.retry: a few times, with growing waits); any other failure is raised at once.
_TRANSIENT = ("Max Retries Exceeded", "Connection was closed", "Could not connect to the endpoint URL",
              "Read timeout on endpoint URL", "Connect timeout on endpoint URL", "Connection reset",
              "IncompleteRead", "ResponseStreamingError", "(ServiceUnavailable)", "(SlowDown)", "(InternalError)")


def transient(exc: ToolError) -> bool:
    """An aws CLI failure of the network or a busy store, worth another try (its stderr tail is in the message)."""
    return any(mark in str(exc) for mark in _TRANSIENT)


def retry_download(what: str, attempt: Callable[[], T], wait: Callable[[float], object] = time.sleep) -> T:
    """attempt() (an `aws s3 cp` download) again after a transient failure; see tools.retry."""
    return tools.retry(what, attempt, transient, wait)
