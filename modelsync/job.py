"""The job, start to end, as one straight line:

    preflight (storage path writable, registry reachable, ids/names valid, source there, destination reachable
    with its credentials and holding nothing the job would destroy) -> claim in the registry (PENDING / created)
    -> fetch into the storage path -> publish to the destination (verified) -> LIVE with URI + digest

A (source, destination) pair listed in PIPELINES replaces fetch-then-publish with a pipeline of its own (download,
layer and push overlapped, the storage path holding only what is in flight): S3 -> OCI (pipeline.py), hf:// -> OCI
(hf_pipeline.py) and a URL's tar -> OCI (uri_pipeline.py), all with the oras backend; OCI (read with oras) -> S3
(oci_s3_pipeline.py) and S3 -> S3 (s3_s3_pipeline.py), each file uploaded while the next downloads.

Any failure after the claim marks the artifact ABANDONED with the (masked) error, so the registry never shows a
LIVE artifact whose files are not there. The job works in a locked directory of its own under the storage path
(workspace.py), removed on every exit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from . import (
    destinations,
    hf_pipeline,
    oci_s3_pipeline,
    pipeline,
    registry,
    s3_s3_pipeline,
    scan,
    signing,
    sources,
    termination,
    uri_pipeline,
    workspace,
)
from .clients import events
from .clients.mr_api import TokenRejected
from .errors import ConfigError, CredentialsRefused, ModelSyncError
from .files import human, require_free_space, total_size
from .locations import Published
from .metadata import ids_in, parse_metadata_dir
from .resume import Resume
from .secret import mask, redact_url
from .validate import signing_decision
from .values import Config

log = logging.getLogger("modelsync.job")


class Interrupted(ModelSyncError):
    """SIGTERM (pod deleted, Job deadline) or Ctrl-C."""


def registry_settings(cfg: Config, scratch: Path) -> registry.RegistrySettings:
    return registry.RegistrySettings(
        server_address=cfg.registry_server_address, port=cfg.registry_port, is_secure=cfg.registry_is_secure,
        author=cfg.registry_author, user_token=cfg.registry_user_token, custom_ca=_custom_ca(cfg, scratch),
        log_level=cfg.registry_log_level, api_version=cfg.registry_api_version)


def _custom_ca(cfg: Config, scratch: Path) -> str | None:
    """The Model Registry's CA file: --registry-custom-ca (or a path in the named env var), else the PEM text
    from the named env var, written into this job's own scratch directory (a CA certificate is public)."""
    if cfg.registry_custom_ca and Path(cfg.registry_custom_ca).is_file():  # else validation said why not
        return str(cfg.registry_custom_ca)
    if not cfg.registry_ca_pem:
        return None
    path = scratch / "registry-ca.pem"
    path.write_text(cfg.registry_ca_pem + "\n")
    return str(path)


def intent(cfg: Config) -> registry.Intent:
    """What to do in the Model Registry: the intent, its ids (from the settings, else from the metadata ConfigMap,
    where the Model Registry UI writes them; validation made sure the two agree) and the metadata dir's entries."""
    meta = None
    if cfg.model_upload_intent != "update_artifact" or cfg.metadata_configmap_path:
        meta = parse_metadata_dir(Path(cfg.metadata_configmap_path), cfg.model_upload_intent)
    ids = {name: value for name, (value, _) in ids_in(cfg.metadata_configmap_path).items()}
    model_id = cfg.model_id or (ids.get("model_id") if cfg.model_upload_intent != "create_model" else None)
    version_id = cfg.model_version_id or (ids.get("model_version_id")
                                          if cfg.model_upload_intent == "update_artifact" else None)
    artifact_id = cfg.model_artifact_id or (ids.get("model_artifact_id")
                                            if cfg.model_upload_intent == "update_artifact" else None)
    return registry.Intent(kind=cfg.model_upload_intent, model_id=model_id, version_id=version_id,
                           artifact_id=artifact_id, metadata=meta, job_key=job_key(cfg))


def job_key(cfg: Config) -> str:
    """Where from and where to, without secrets: with the intent and names it identifies this Job across restarts."""
    return f"{sources.of(cfg).describe(cfg.source)} -> {destinations.of(cfg).describe(cfg.destination)}"


def _signing_enabled(cfg: Config) -> bool:
    enabled, warning = signing_decision(cfg)
    if warning:
        log.warning("%s", warning)
    return enabled


def model_name(cfg: Config) -> str:
    """The name the model's signature gives it (informative, as model-signing's directory name): the last part
    of where it goes."""
    return destinations.of(cfg).model_name(cfg.destination) or "model"


def dry_run(cfg: Config) -> tuple[dict[str, Any], bool]:
    """The resolved configuration plus a preflight that writes nothing, and whether it passed. Each part (the
    Model Registry with the ids and names, the source, the destination, signing) is checked on its own, so one
    run names every part that fails: `preflight.errors` {part: one line}, `preflight.error` the first of them. A
    failed preflight is reported in the JSON, not raised, so the settings still show."""
    sign, warning = signing_decision(cfg)
    signing_settings = signing.SigningSettings.from_config(cfg)
    report: dict[str, Any] = {"settings": cfg.report(), "signing": {"enabled": sign, "warning": warning}}
    pre: dict[str, Any] = {"intent": cfg.model_upload_intent}
    report["preflight"] = pre
    errors: dict[str, str] = {}
    try:
        job_intent = intent(cfg)
    except ModelSyncError as exc:
        pre.update(error=mask(str(exc)), errors={"metadata": mask(str(exc))})
        return report, False
    files: dict[str, int] | None = None
    storage = Path(cfg.storage_path)  # in a Job, the one writable place (the root file system is read-only)
    writable = storage.is_dir() and os.access(storage, os.W_OK)
    with tempfile.TemporaryDirectory(prefix=".modelsync-dry-run-", dir=storage if writable else None) as scratch:
        def part(name: str, check: Callable[[], None]) -> None:
            try:
                check()
            except ModelSyncError as exc:
                errors[name] = " ".join(mask(str(exc)).split())

        def check_registry() -> None:
            reg = registry.connect(registry_settings(cfg, Path(scratch)))
            pre["registry"] = {"address": redact_url(cfg.registry_server_address), "api_version": reg.api_version}
            try:
                pre["plan"] = reg.preflight(job_intent).describe()
            finally:
                reg.close()

        def check_source() -> None:
            nonlocal files
            pre["source"], files = preflight_source(cfg)

        saved_tmp = _temporary_files_in(Path(scratch) / "tmp")
        try:
            part("registry", check_registry)
            part("source", check_source)
            part("destination", lambda: pre.update(destination=preflight_destination(
                cfg, registry.job_fingerprint(job_intent), files)))
            if sign:
                part("signing", lambda: report["signing"].update(
                    signing.prepare(signing_settings, Path(scratch), model_name(cfg)).describe()))
        finally:
            _restore_temporary_files(saved_tmp)
    if errors:
        pre.update(errors=errors, error=next(iter(errors.values())))
        return report, False
    pre["ok"] = True
    return report, True


def preflight_source(cfg: Config) -> tuple[dict[str, Any], dict[str, int] | None]:
    """What preflight learns of the source (credentials first, then the listing), and its files where known."""
    source = sources.of(cfg)
    described: dict[str, Any] = {"type": cfg.source_type, **source.facts(cfg.source)}
    files = source.listing(cfg.source)
    if files is not None:
        described.update(files=len(files), bytes=sum(files.values()))
    return described, files


def preflight_destination(cfg: Config, job: str, files: dict[str, int] | None) -> dict[str, Any]:
    return destinations.of(cfg).preflight(cfg.destination, job, files, sources.of(cfg).in_place(cfg.source))


# Pipelines that move a (source, destination) pair themselves instead of fetch-then-publish. Such a module has
#     applies(source, destination) -> bool      whether it takes these two specs (else fetch-then-publish)
#     storage_needed(destination, files, max_in_flight) -> int
#                                               the least the storage path must hold (what is in flight at most)
#     LISTED_ON_THE_WAY (optional, True)        the source's files are known only as it is read (an OCI image):
#                                               transfer checks the room itself, the whole model is not asked for
#     transfer(source, destination, ws, job, public_source, max_in_flight, sign_model, resume, scan_file)
#                                   -> Published | None
#                                               None: these files cannot be pipelined after all (fetch-then-publish)
#                                               scan_file(rel, path): called on each file once it is on disk,
#                                               before anything of it is published (the pickle check)
PIPELINES: tuple[ModuleType, ...] = (pipeline, hf_pipeline, uri_pipeline, oci_s3_pipeline, s3_s3_pipeline)


def pipeline_of(cfg: Config) -> ModuleType | None:
    return next((p for p in PIPELINES if p.applies(cfg.source, cfg.destination)), None)


def check_space(cfg: Config, size: int | None, files: dict[str, int] | None = None) -> None:
    """Before the claim: the storage path must hold a downloaded copy (unless read in place) and, for an OCI
    destination pushed with skopeo, the modelcar's layers as well (oras pushes them from the files); a pipeline
    needs only its largest item in flight. Sizes unknown before download are checked again on the way."""
    if size is None:
        return
    fast = pipeline_of(cfg)
    if fast is not None and files is None and getattr(fast, "LISTED_ON_THE_WAY", False):
        return
    if fast is not None and files:
        need = fast.storage_needed(cfg.destination, files, cfg.max_in_flight_bytes)
        require_free_space(Path(cfg.storage_path), need, "the pipeline's largest layer in flight")
        return
    parts = ([] if sources.of(cfg).in_place(cfg.source) else ["download"]) + list(
        destinations.of(cfg).storage_parts(cfg.destination))
    if parts:
        require_free_space(Path(cfg.storage_path), size * len(parts), f"the model ({' + '.join(parts)})")


def run(cfg: Config) -> Published:
    sign = _signing_enabled(cfg)
    started = time.monotonic()
    job_intent = intent(cfg)  # a bad metadata dir fails here, before anything is written
    job = registry.job_fingerprint(job_intent)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    ws = reg = saved_tmp = plan = None
    try:
        try:
            # This job's own locked scratch directory; an earlier crashed attempt's is removed, a running job's never.
            ws = workspace.claim(Path(cfg.storage_path), ".modelsync-", job[:16],
                                 "--storage-path / MODEL_SYNC_STORAGE_PATH")
            saved_tmp = _temporary_files_in(ws.root / "tmp")
            reg = registry.connect(registry_settings(cfg, ws.root))
            plan = reg.preflight(job_intent)
            source, files = preflight_source(cfg)
            destination = preflight_destination(cfg, job, files)
            check_space(cfg, source.get("bytes"), files)
            signer = signing.prepare(signing.SigningSettings.from_config(cfg), ws.root,
                                         model_name(cfg)) if sign else None
            if job_intent.kind != "update_artifact" and plan.intent.metadata is not None:  # a Hub model card
                plan = dataclasses.replace(plan, intent=dataclasses.replace(plan.intent, metadata=sources.of(
                    cfg).metadata(cfg.source, plan.intent.metadata, job_intent.kind, ws.work)))
        except (CredentialsRefused, TokenRejected) as exc:  # nothing done yet, and a retry cannot help
            error = ConfigError(f"{exc}; fix the credentials")
            if plan is not None:  # not when the Model Registry itself refused the token
                _abandon_unclaimed(cfg, job_intent, reg, plan, str(error))
            raise error from None
        except BaseException as exc:
            if plan is not None or ws is None:  # not when the Model Registry itself failed: it would again
                _abandon_unclaimed(cfg, job_intent, reg, plan, _reason(exc))
            raise
        log.info("preflight passed: %s; source %s; destination %s", "; ".join(plan.describe()),
                 ", ".join(f"{k} {v}" for k, v in source.items()),
                 ", ".join(f"{k} {v}" for k, v in destination.items()),
                 extra={"fields": {"source": source, "destination": destination}})
        claim = reg.begin(plan)
        size = (f", {source['files']} file(s)" if "files" in source else "") + (
            f", {human(source['bytes'])}" if "bytes" in source else "")
        events.emit("TransferStarted", f"{job_key(cfg)}{size}; {cfg.model_upload_intent}, ModelArtifact "
                                       f"{claim.artifact_id}")
        try:
            published = transfer(cfg, ws, job, signer, _resume(cfg, reg, claim, job))
            if signer is not None:
                published = sign_published(cfg, signer, published)
        except BaseException as exc:
            _abandon(reg, claim, _reason(exc))
            raise
        reg.complete(claim, published)
        events.emit("TransferPublished", f"{published.uri} ({len(published.files)} file(s), "
                                         f"{human(total_size(published.files))}); ModelArtifact {claim.artifact_id} "
                                         f"is LIVE")
        termination.success(cfg.model_upload_intent, claim.model_id or job_intent.model_id,
                            claim.version_id or job_intent.version_id, claim.artifact_id, published.uri,
                            published.digest)
    finally:
        if saved_tmp is not None:
            _restore_temporary_files(saved_tmp)
        if ws is not None:
            ws.release()
        signal.signal(signal.SIGTERM, previous)
        if reg is not None:
            reg.close()
    _report(published, time.monotonic() - started)
    return published


def _resume(cfg: Config, reg: registry.Registry, claim: registry.Claim, job: str) -> Resume | None:
    """For a pipeline: what an interrupted attempt of this Job finished (on its artifact), the model's earlier
    images, and how to record this attempt's progress (resume.py)."""
    if pipeline_of(cfg) is None:
        return None
    plan = claim.plan
    return Resume(job=job, recorded=plan.artifact.resume, hints=tuple(reg.earlier_images(plan)),
                  save=lambda value: reg.record_progress(claim, value))


def transfer(cfg: Config, ws: workspace.Workspace, job: str, signer: signing.Signing | None = None,
             resume: Resume | None = None) -> Published:
    """The model moved and verified; with signer, its model.sig made from the files' digests before they are
    published (a pipeline: once every model layer is up, before the manifest) and published with them. resume:
    for a pipeline, earlier work to start from and where to record its own (resume.py). Each file is checked by
    the pickle scan (scan.py) while it is on disk, before anything of it is published: a refused pickle fails the
    transfer, so the artifact ends ABANDONED. The scan's verdicts go onto the artifact."""
    source = sources.of(cfg)
    scanner = scan.Scanner(cfg.values.get("scan") or "refuse", scan.parse_allow(cfg.values.get("scan_allow")))
    fast = pipeline_of(cfg)
    if fast is not None:
        piped: Published | None = fast.transfer(cfg.source, cfg.destination, ws, job,
                                                source.public_source(cfg.source), cfg.max_in_flight_bytes,
                                                sign_model=signer.sign_model if signer is not None else None,
                                                resume=resume, scan_file=scanner if scanner.enabled else None)
        if piped is not None:
            return _scanned(piped, scanner)
    fetched = source.fetch(cfg.source, ws)
    files = fetched.files
    log.info("fetched %d file(s), %s", len(files), human(total_size(files)))
    scanner.check_all(fetched.model_dir, (f.path for f in files))
    signature = None
    if signer is not None:
        if any(f.path == signing.SIGNATURE_NAME for f in files):
            log.warning("the source's %s is left out: this job's signature replaces it", signing.SIGNATURE_NAME)
            fetched = dataclasses.replace(fetched, files=tuple(f for f in files if f.path != signing.SIGNATURE_NAME))
        signature = ws.work / "signature" / signing.SIGNATURE_NAME
        signature.parent.mkdir(parents=True, exist_ok=True)
        signature.write_bytes(signer.sign_model(fetched.files))
    return _scanned(destinations.of(cfg).publish(cfg.destination, fetched, ws, job,
                                                 source.public_source(cfg.source), signature=signature), scanner)


def _scanned(published: Published, scanner: scan.Scanner) -> Published:
    """The scan's verdicts onto the artifact's properties."""
    model = sum(1 for f in published.files if f.path != signing.SIGNATURE_NAME)
    if scanner.enabled:
        log.info("scan: %d file(s) read, %d pickle-based, %d finding(s)", scanner.checked, scanner.pickles,
                 len(scanner.findings), extra={"fields": {"scan_files": scanner.checked, "scan_pickles":
                                                          scanner.pickles, "scan_findings": len(scanner.findings)}})
    return dataclasses.replace(published, facts={**published.facts, **scanner.facts(model)})


def sign_published(cfg: Config, signer: signing.Signing, published: Published) -> Published:
    """An image is signed once pushed (its manifest digest); the signature facts go onto the artifact."""
    image = destinations.of(cfg).image(cfg.destination)
    if image is not None and published.digest:
        signer.sign_image(image, published.digest)
    return dataclasses.replace(published, facts={**published.facts, **signer.facts})


def _temporary_files_in(path: Path) -> tuple[str | None, str | None]:
    """Temporary files of libraries (the TUF client's downloads) and of child tools go into the job's own scratch
    directory: in a Job the root file system is read-only and /tmp is only writable where a volume is mounted."""
    path.mkdir(parents=True, exist_ok=True)
    saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir = os.environ["TMPDIR"] = str(path)
    return saved


def _restore_temporary_files(saved: tuple[str | None, str | None]) -> None:
    tempfile.tempdir = saved[0]
    if saved[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[1]


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ModelSyncError) else f"{type(exc).__name__}: {exc}"


def _abandon_unclaimed(cfg: Config, job_intent: registry.Intent, reg: Any, plan: Any, reason: str) -> None:
    """A failure before the claim. An artifact that exists already (update_artifact's, or one an earlier attempt
    of this job claimed) and is not LIVE would otherwise stay PENDING, claiming an upload that is not happening: it
    ends ABANDONED with the reason, as after a failed transfer, whenever the Model Registry can be reached. A LIVE
    artifact keeps pointing at the files it has. A retry of the Job claims it again."""
    if plan is None and job_intent.kind != "update_artifact":
        return  # nothing can exist yet that this job claimed
    opened = None
    try:
        with tempfile.TemporaryDirectory(prefix=".modelsync-abandon-") as scratch:
            if reg is None:
                reg = opened = registry.connect(registry_settings(cfg, Path(scratch)))
            if plan is None:
                plan = reg.preflight(job_intent)
            step = plan.artifact
            if step.id is None or step.action == "create" or step.state == "LIVE":
                return
            reg.abandon(registry.Claim(plan, plan.model and plan.model.id, plan.version and plan.version.id,
                                       step.id), mask(reason))
    except Exception as exc:  # the failure itself matters more; say why the artifact could not be marked
        log.warning("ModelArtifact %s left as it is: %s", job_intent.artifact_id or "", mask(str(exc)))
    finally:
        if opened is not None:
            opened.close()


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
