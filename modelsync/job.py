"""The job, start to end, as one straight line:

    preflight (registry reachable, ids/names valid, source there)  -> claim in the registry (PENDING / created)
    -> fetch into the storage path -> publish to the destination (verified) -> LIVE with URI + digest

Any failure after the claim marks the artifact ABANDONED with the (masked) error, so the registry never shows a
LIVE artifact whose files are not there. The storage path's working directory is removed on every exit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import endpoints, registry
from .config import Config
from .errors import ConfigError, ModelSyncError
from .files import human, listing, require_free_space, total_size
from .locations import FileEntry, Published
from .secret import mask
from .validate import signing_decision

log = logging.getLogger("modelsync.job")
TERMINATION_LOG = Path("/dev/termination-log")  # Kubernetes shows it in `kubectl describe pod`


class Interrupted(ModelSyncError):
    """SIGTERM (pod deleted, Job deadline) or Ctrl-C."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def work(self) -> Path:
        return self.root / "work"


def workspace_for(cfg: Config) -> Workspace:
    """A directory of this job's own under the storage path: two jobs sharing a storage path do not collide,
    and a restart of the same job finds (and clears) its earlier attempt's files."""
    key = hashlib.sha256(job_key(cfg).encode()).hexdigest()[:16]
    return Workspace(Path(cfg.storage_path) / f".modelsync-{key}")


def registry_settings(cfg: Config) -> registry.RegistrySettings:
    return registry.RegistrySettings(
        server_address=cfg.registry_server_address, port=cfg.registry_port, is_secure=cfg.registry_is_secure,
        author=cfg.registry_author, user_token=cfg.registry_user_token, custom_ca=_custom_ca(cfg),
        log_level=cfg.registry_log_level, api_version=cfg.registry_api_version)


def _custom_ca(cfg: Config) -> str | None:
    """The Model Registry's CA file: --registry-custom-ca (or a path in the named env var), else the PEM text
    from the named env var, written to the storage path (a CA certificate is public)."""
    if cfg.registry_custom_ca:
        return str(cfg.registry_custom_ca)
    if not cfg.registry_ca_pem:
        return None
    path = Path(cfg.storage_path) / ".modelsync-registry-ca.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg.registry_ca_pem + "\n")
    return str(path)


def intent(cfg: Config) -> registry.Intent:
    meta = None
    if cfg.model_upload_intent != "update_artifact":
        from .metadata import parse_metadata_dir
        meta = parse_metadata_dir(Path(cfg.metadata_configmap_path), cfg.model_upload_intent)
    return registry.Intent(kind=cfg.model_upload_intent, model_id=cfg.model_id, version_id=cfg.model_version_id,
                           artifact_id=cfg.model_artifact_id, metadata=meta, job_key=job_key(cfg))


def job_key(cfg: Config) -> str:
    """Where from and where to, without secrets: with the metadata it identifies this Job across restarts."""
    return f"{_source_annotation(cfg) or cfg.source_path} -> {_destination(cfg)}"


def _destination(cfg: Config) -> str:
    kind = cfg.destination_type
    if kind == "oci":
        return f"oci://{endpoints.oci(cfg, 'destination').reference}"
    if kind == "s3":
        loc = endpoints.s3(cfg, "destination")
        return loc.url + (f" at {loc.endpoint}" if loc.endpoint else "")
    return f"file://{cfg.destination_path}"


def _check_signing(cfg: Config) -> None:
    enabled, warning = signing_decision(cfg)
    if warning:
        log.warning("%s", warning)
    if enabled:
        raise ConfigError("--sign / MODEL_SYNC_SIGN: signing is enabled (explicitly or by SIGSTORE_* vars) but this "
                          "build of modelsync cannot sign yet; set MODEL_SYNC_SIGN=false to sync without a signature")


def dry_run(cfg: Config) -> tuple[dict[str, Any], bool]:
    """The resolved configuration plus a preflight that writes nothing (registry, ids, names, source), and
    whether the preflight passed. A failed preflight is reported in the JSON, not raised, so the settings still
    show."""
    sign, warning = signing_decision(cfg)
    report: dict[str, Any] = {"settings": cfg.report(), "signing": {"enabled": sign, "warning": warning}}
    try:
        reg = registry.connect(registry_settings(cfg))
        report["preflight"] = {"registry": {"address": cfg.registry_server_address, "api_version": reg.api_version}}
        try:
            plan = reg.preflight(intent(cfg))
        finally:
            reg.close()
        report["preflight"].update(intent=cfg.model_upload_intent, plan=plan.describe(), source=describe_source(cfg))
    except ModelSyncError as exc:
        report.setdefault("preflight", {})["error"] = mask(str(exc))
        return report, False
    report["preflight"]["ok"] = True
    return report, True


def describe_source(cfg: Config) -> dict[str, Any]:
    """What the source holds, found without downloading (S3 listing, local walk); other types: reachability."""
    kind = cfg.source_type
    if kind == "s3":
        from .sources.s3 import plan_s3
        shape, files = plan_s3(endpoints.s3(cfg, "source"))
        return {"type": kind, "shape": shape, "files": len(files), "bytes": sum(files.values())}
    if kind in ("pvc", "local"):
        files = listing(endpoints.local(cfg, "source").path)  # sizes only: hashing waits for the transfer
        return {"type": kind, "files": len(files), "bytes": sum(files.values())}
    return {"type": kind}


def check_space(cfg: Config, size: int | None) -> None:
    """Before the claim: the storage path must hold a downloaded copy (unless read in place) and, for an OCI
    destination, the modelcar's layers as well. Sizes unknown before download are checked again on the way."""
    if size is None:
        return
    parts = ([] if cfg.source_type in ("pvc", "local") else ["download"]) + \
        (["modelcar layers"] if cfg.destination_type == "oci" else [])
    if parts:
        require_free_space(Path(cfg.storage_path), size * len(parts), f"the model ({' + '.join(parts)})")


def run(cfg: Config) -> Published:
    _check_signing(cfg)
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    workspace = workspace_for(cfg)
    shutil.rmtree(workspace.root, ignore_errors=True)  # this job's crashed earlier attempt, never another job's
    reg = None
    try:
        reg = registry.connect(registry_settings(cfg))
        plan = reg.preflight(intent(cfg))
        source = describe_source(cfg)
        check_space(cfg, source.get("bytes"))
        log.info("preflight passed: %s; source %s", "; ".join(plan.describe()),
                 ", ".join(f"{k} {v}" for k, v in source.items()), extra={"fields": {"source": source}})
        claim = reg.begin(plan)
        try:
            published = transfer(cfg, workspace)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, ModelSyncError) else f"{type(exc).__name__}: {exc}"
            _abandon(reg, claim, reason)
            raise
        reg.complete(claim, published)
    finally:
        shutil.rmtree(workspace.root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        if reg is not None:
            reg.close()
    _report(published, time.monotonic() - started)
    return published


def transfer(cfg: Config, ws: Workspace) -> Published:
    model_dir, files = fetch(cfg, ws)
    log.info("fetched %d file(s), %s", len(files), human(total_size(files)))
    return publish(cfg, model_dir, files, ws)


def fetch(cfg: Config, ws: Workspace) -> tuple[Path, tuple[FileEntry, ...]]:
    kind = cfg.source_type
    if kind in ("pvc", "local"):  # read in place: nothing to copy
        from .sources.local import read_local
        return read_local(endpoints.local(cfg, "source"))
    ws.model.mkdir(parents=True, exist_ok=True)
    if kind == "s3":
        from .sources.s3 import fetch_s3
        return ws.model, fetch_s3(endpoints.s3(cfg, "source"), ws.model)
    if kind == "oci":
        from .sources.oci import fetch_oci
        return ws.model, tuple(fetch_oci(endpoints.oci(cfg, "source"), ws.model, ws.work,
                                         cfg.destination_oci_backend))
    from .sources.uri import fetch_uri
    return ws.model, fetch_uri(endpoints.uri(cfg), ws.model, ws.work)


def publish(cfg: Config, model_dir: Path, files: tuple[FileEntry, ...], ws: Workspace) -> Published:
    kind = cfg.destination_type
    if kind == "oci":
        from .destinations.oci import publish_modelcar
        return publish_modelcar(model_dir, endpoints.oci(cfg, "destination"), endpoints.base_image(cfg), ws.work,
                                cfg.destination_oci_backend, source_annotation=_source_annotation(cfg))
    if kind == "s3":
        from .destinations.s3 import publish_s3
        return publish_s3(model_dir, files, endpoints.s3(cfg, "destination"))
    from .destinations.local import publish_local
    return publish_local(model_dir, files, endpoints.local(cfg, "destination"))


def _source_annotation(cfg: Config) -> str | None:
    """org.opencontainers.image.source: where the model came from (URLs without user-info or query)."""
    kind = cfg.source_type
    if kind == "s3":
        return endpoints.s3(cfg, "source").url
    if kind == "oci":
        return f"oci://{endpoints.oci(cfg, 'source').reference}"
    if kind == "uri":
        from .sources.uri import public_url
        return public_url(cfg.source_uri)
    return None


def _abandon(reg: Any, claim: Any, reason: str) -> None:
    try:
        reg.abandon(claim, mask(reason))
    except Exception as exc:  # the transfer error matters more; say the marking failed too
        log.error("could not mark the artifact ABANDONED: %s", mask(str(exc)))


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted("stopped by SIGTERM (pod deleted or Job deadline reached); the artifact is not LIVE")


def _report(published: Published, elapsed: float) -> None:
    size = total_size(published.files)
    summary = {"uri": published.uri, "digest": published.digest, "files": len(published.files), "bytes": size}
    log.info("done: %s (%d files, %s) in %.1fs", published.uri, len(published.files), human(size), elapsed,
             extra={"fields": {**summary, "seconds": round(elapsed, 1)}})
    print(json.dumps(summary))
    try:
        if TERMINATION_LOG.is_file():  # kubelet mounts it; never create it on an operator's machine
            TERMINATION_LOG.write_text(json.dumps(summary))
    except OSError:
        pass
