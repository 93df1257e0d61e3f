"""Which sigstore instance to sign with: its trusted root and its services, as a sigstore ClientTrustConfig.

The SIGSTORE_* variables mean what they mean to the upstream Model Registry client's signer:

    SIGSTORE_TUF_URL      a TUF repository; its root.json (fetched from URL/root.json, else URL/1.root.json, and
                          checked against --sigstore-root-checksum when set) bootstraps a TUF client that fetches
                          trusted_root.json (and signing_config.v0.2.json when the repository has one)
    SIGSTORE_FULCIO_URL   the certificate authority
    SIGSTORE_REKOR_URL    the transparency log: Rekor v1 (api/v1, as Red Hat Trusted Artifact Signer runs) or Rekor
                          v2 (rekor-tiles); which one is taken from the TUF signing config's entry for that URL,
                          else asked of the server (v1 answers GET /api/v1/log)
    SIGSTORE_TSA_URL      the timestamp authority, a base URL (upstream appends /api/v1/timestamp; a URL already
                          ending so is kept). Rekor v2 needs one: without it, the TUF signing config's is used

--sigstore-trust-config replaces the TUF repository with a local file (air-gapped clusters): a trusted_root.json
(then the SIGSTORE_* URLs name the services) or a client trust config (its signing config names them; SIGSTORE_*
URLs given as well win). TUF metadata is cached under the job's scratch directory, never in $HOME (a Job's root
filesystem is read-only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelSyncError
from ..secret import redact_url

if TYPE_CHECKING:  # imported when trust material is read
    from sigstore.models import ClientTrustConfig

log = logging.getLogger("modelsync.signing")

TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
TSA_PATH = "/api/v1/timestamp"
TIMEOUT = 20.0
_ALWAYS = {"start": "2020-01-01T00:00:00Z"}


class SigningError(ModelSyncError):
    """Signing failed (trust, Fulcio, Rekor, the timestamp authority, the identity token, the registry)."""


@dataclass(frozen=True)
class Services:
    fulcio: str | None
    rekor: str | None
    tsa: str | None
    rekor_version: int | None = None  # 1 or 2 when known


def services_from_env(env: dict[str, str]) -> Services:
    tsa = env.get("SIGSTORE_TSA_URL")
    if tsa and not tsa.rstrip("/").endswith(TSA_PATH):
        tsa = tsa.rstrip("/") + TSA_PATH
    return Services(fulcio=_clean(env.get("SIGSTORE_FULCIO_URL")), rekor=_clean(env.get("SIGSTORE_REKOR_URL")),
                    tsa=_clean(tsa))


def _clean(url: str | None) -> str | None:
    return url.strip().rstrip("/") if url and url.strip() else None


def read_local(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trusted root, signing config or None) from a trusted_root.json or a client trust config file; ConfigError
    naming the setting when it is neither."""
    where = f"--sigstore-trust-config / MODEL_SYNC_SIGSTORE_TRUST_CONFIG: '{path}'"
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"{where} is not JSON; give a trusted_root.json or a sigstore client trust config") \
            from None
    kind = doc.get("mediaType") if isinstance(doc, dict) else None
    if kind == TRUSTED_ROOT_TYPE:
        return doc, None
    if kind == TRUST_CONFIG_TYPE and isinstance(doc.get("trustedRoot"), dict):
        return doc["trustedRoot"], doc.get("signingConfig")
    raise ConfigError(f"{where} has mediaType {kind!r}; expected {TRUSTED_ROOT_TYPE} or {TRUST_CONFIG_TYPE}")


def fetch_root(tuf_url: str, checksum: str | None) -> bytes:
    """The TUF repository's root.json (URL/root.json, else URL/1.root.json), checked against checksum."""
    base = tuf_url.rstrip("/")
    tried = []
    for url in (f"{base}/root.json", f"{base}/1.root.json"):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 (http(s) only, validated)
                data: bytes = resp.read()
            break
        except urllib.error.HTTPError as exc:
            tried.append(f"{redact_url(url)}: HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            raise SigningError(f"SIGSTORE_TUF_URL {redact_url(base)} cannot be reached: "
                               f"{getattr(exc, 'reason', exc)}") from None
    else:
        raise SigningError(f"SIGSTORE_TUF_URL {redact_url(base)} serves no root.json ({'; '.join(tried)})")
    if checksum:
        got = hashlib.sha256(data).hexdigest()
        if got != checksum.strip().lower():
            raise SigningError(f"the TUF root.json at {redact_url(base)} has sha256 {got}, not the "
                               f"--sigstore-root-checksum / MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM given; the repository "
                               f"is not the one expected")
    return data


@contextmanager
def _tuf_home(cache: Path) -> Iterator[None]:
    """sigstore-python's TUF client keeps metadata under the XDG data and cache dirs: point them into the job's
    scratch directory for the call."""
    saved = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_DATA_HOME"], os.environ["XDG_CACHE_HOME"] = str(cache / "data"), str(cache / "cache")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def from_tuf(tuf_url: str, checksum: str | None, cache: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trusted root, signing config or None) from the TUF repository, bootstrapped with its checked root.json."""
    from sigstore._internal.tuf import TrustUpdater  # sigstore-python's TUF client (what upstream uses too)

    root = fetch_root(tuf_url, checksum)
    cache.mkdir(parents=True, exist_ok=True)
    bootstrap = cache / "root.json"
    bootstrap.write_bytes(root)
    base = tuf_url.rstrip("/")
    try:
        with _tuf_home(cache):
            updater = TrustUpdater(base, False, bootstrap)
            trusted_root = json.loads(Path(updater.get_trusted_root_path()).read_text())
            try:
                signing_config = json.loads(Path(updater.get_signing_config_path()).read_text())
            except Exception:  # a repository without a signing config (e.g. older RHTAS): the URLs are given
                signing_config = None
    except SigningError:
        raise
    except Exception as exc:
        causes: list[str] = []
        link: BaseException | None = exc
        while link is not None and len(causes) < 4:  # the TUF client wraps the reason (a network error, …)
            causes.append(str(link) or type(link).__name__)
            link = link.__cause__ or link.__context__
        raise SigningError(f"SIGSTORE_TUF_URL {redact_url(base)}: TUF update failed: {': '.join(causes)}") from None
    return _logid_names(trusted_root), signing_config


def _logid_names(obj: Any) -> Any:
    """Older trusted roots name a log's id checkpointKeyId; sigstore-python reads logId."""
    if isinstance(obj, dict):
        return {("logId" if k == "checkpointKeyId" else k): _logid_names(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_logid_names(v) for v in obj]
    return obj


def rekor_version(url: str, signing_config: dict[str, Any] | None) -> int:
    """Rekor's API generation: from the signing config's entry for this URL, else from the server (Rekor v1
    answers GET /api/v1/log with its tree; rekor-tiles does not)."""
    for entry in (signing_config or {}).get("rekorTlogUrls") or []:
        if _clean(entry.get("url")) == url and entry.get("majorApiVersion") in (1, 2):
            return int(entry["majorApiVersion"])
    try:
        with urllib.request.urlopen(f"{url}/api/v1/log", timeout=TIMEOUT) as resp:  # noqa: S310
            doc = json.loads(resp.read())
        if isinstance(doc, dict) and "treeSize" in doc:
            return 1
    except urllib.error.HTTPError:
        return 2
    except (urllib.error.URLError, OSError) as exc:
        raise SigningError(f"SIGSTORE_REKOR_URL {redact_url(url)} cannot be reached: "
                           f"{getattr(exc, 'reason', exc)}") from None
    except ValueError:
        pass
    return 2


def _service(url: str, version: int) -> dict[str, Any]:
    return {"url": url, "majorApiVersion": version, "validFor": _ALWAYS, "operator": "modelsync"}


def signing_config(given: Services, from_trust: dict[str, Any] | None) -> tuple[dict[str, Any], Services]:
    """The signing config to sign with: the SIGSTORE_* URLs where given, else the trust source's services; and
    the services chosen (for the log)."""
    base = from_trust or {}

    def first(key: str) -> str | None:
        entries = base.get(key) or []
        return _clean(entries[0].get("url")) if entries else None

    fulcio = given.fulcio or first("caUrls")
    rekor = given.rekor or None
    tsa = given.tsa or first("tsaUrls")
    if not fulcio:
        raise SigningError("no Fulcio URL: set SIGSTORE_FULCIO_URL (the trust source names none)")
    if rekor:
        version = rekor_version(rekor, from_trust)
        tlogs = [_service(rekor, version)]
    else:
        tlogs = base.get("rekorTlogUrls") or []
        if not tlogs:
            raise SigningError("no Rekor URL: set SIGSTORE_REKOR_URL (the trust source names none)")
        version = max(int(t.get("majorApiVersion", 1)) for t in tlogs)
        rekor = _clean(tlogs[0].get("url"))
    if version == 2 and not tsa:
        raise SigningError(f"Rekor at {redact_url(rekor or '')} is a v2 log, which needs a timestamp authority: set "
                           f"SIGSTORE_TSA_URL")
    config = {
        "mediaType": SIGNING_CONFIG_TYPE,
        "caUrls": [_service(fulcio, 1)],
        "oidcUrls": base.get("oidcUrls") or [],
        "rekorTlogUrls": tlogs,
        "tsaUrls": [_service(tsa, 1)] if tsa else [],
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaConfig": {"selector": "ANY"},
    }
    return config, Services(fulcio=fulcio, rekor=rekor, tsa=tsa, rekor_version=version)


def client_trust_config(env: dict[str, str], local: Path | None, checksum: str | None,
                        cache: Path) -> tuple[ClientTrustConfig, Services]:
    """The sigstore ClientTrustConfig to sign and verify with, and the services it names."""
    from sigstore.models import ClientTrustConfig

    if local is not None:
        trusted_root, from_trust = read_local(local)
    elif env.get("SIGSTORE_TUF_URL"):
        trusted_root, from_trust = from_tuf(env["SIGSTORE_TUF_URL"], checksum, cache)
    else:
        raise ConfigError("signing needs a root of trust: set SIGSTORE_TUF_URL or --sigstore-trust-config / "
                          "MODEL_SYNC_SIGSTORE_TRUST_CONFIG")
    config, services = signing_config(services_from_env(env), from_trust)
    doc = {"mediaType": TRUST_CONFIG_TYPE, "trustedRoot": trusted_root, "signingConfig": config}
    try:
        return ClientTrustConfig.from_json(json.dumps(doc)), services
    except Exception as exc:
        raise SigningError(f"the sigstore trust material is not usable: {exc}") from None
