"""Model Registry intents: validate everything first, then claim, then LIVE or ABANDONED.

The job calls, in order::

    registry = connect(settings)        # detects the API generation (v1, else v1alpha3), checks the token
    plan = registry.preflight(intent)   # reads only: ids exist, names free or resumable; raises RegistryError
    claim = registry.begin(plan)        # creates what is missing (model/version ARCHIVED); artifact PENDING
    ... transfer ...
    registry.complete(claim, published) # artifact LIVE, uri, modelsync.* digest properties; then the
                                        #   version and model it created LIVE
    registry.abandon(claim, error)      # or: artifact ABANDONED, never LIVE, modelsync.error = the masked error;
                                        #   the version and model it created ARCHIVED

Re-runs (Kubernetes restarts a failed Job; it may have died anywhere)
    Every entity this job creates carries the custom property ``modelsync.job`` = the job's *fingerprint*: a hash
    of what identifies the job: the intent, the parent model id, the entity names and ``Intent.job_key`` (a stable
    description of the source and destination given by the caller). A restarted Job has the same names and
    settings, so the same fingerprint; a re-run whose ConfigMap corrected a description or a property is the same
    job too, and its corrected metadata is written to the entities it resumes. Preflight looks each entity up by
    name under its parent (RegisteredModel by name, ModelVersion by name + model id, ModelArtifact by name +
    version id):

    - not found                          -> create it (in begin)
    - found, ``modelsync.job`` matches   -> an earlier attempt of this job: resume it, whatever its state
                                            (a crash after LIVE re-publishes and ends LIVE again), with the
                                            metadata as it is now
    - found, no or another marker        -> RegistryError "name taken"; nothing is written

    The marker is part of the create request itself, so an entity exists only with its marker; a create whose
    answer was lost (retried, 409) is found by name and adopted only if its marker matches. Names are unique per
    parent on the server, and the artifact always has a name (default: the RegisteredModel's name), so a re-run
    cannot make a second entity. ``update_artifact`` touches only the artifact it is given (PENDING, then LIVE),
    which is idempotent by itself.

Custom properties written: ``modelsync.job`` (marker), ``modelsync.digest`` (published digest),
``modelsync.files`` (count), ``modelsync.size_bytes`` (string: may exceed int32), ``modelsync.files_digest``
(sha256 over the sorted "path size sha256" lines), ``modelsync.error`` (masked, on ABANDONED). A PATCH of
customProperties replaces the whole map on the server, so each write merges into what the server holds; going LIVE
first drops every ``modelsync.*`` fact of an earlier publish, so the artifact never describes bytes it no longer
points at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mr_openapi.configuration import Configuration
from mr_openapi.models import (
    Artifact, ArtifactState, MetadataBoolValue, MetadataDoubleValue, MetadataIntValue, MetadataStringValue,
    MetadataStructValue, MetadataValue, ModelArtifact, ModelArtifactUpdate, ModelVersionCreate, ModelVersionState,
    ModelVersionUpdate, RegisteredModelCreate, RegisteredModelState, RegisteredModelUpdate,
)

from .errors import RegistryError
from .locations import Published, split_registry_address
from .metadata import EntityMetadata, Metadata, PropertyValue, Struct
from .mr_api import Conflict, Connection, NotFound, RetryPolicy, check_client_prefix, detect
from .secret import Secret, mask

log = logging.getLogger("modelsync.registry")

MARKER = "modelsync.job"
ERROR_PROPERTY = "modelsync.error"
MAX_ERROR_CHARS = 2000
INTENTS = ("update_artifact", "create_model", "create_version")


@dataclass(frozen=True)
class RegistrySettings:
    server_address: str           # "https://mr.example", "http://127.0.0.1" or a bare host; a scheme here decides
    port: int = 443               # used unless the address carries a port
    is_secure: bool = True        # used when the address has no scheme
    author: str | None = None
    user_token: Secret | None = None
    custom_ca: str | None = None  # PEM file
    log_level: str | None = None
    api_version: str = "auto"     # auto | v1 | v1alpha3


@dataclass(frozen=True)
class Intent:
    kind: str                     # update_artifact | create_model | create_version
    model_id: str | None = None
    version_id: str | None = None
    artifact_id: str | None = None
    metadata: Metadata | None = None
    job_key: str = ""             # stable across restarts of one Job, e.g. source + destination (no secrets)


@dataclass(frozen=True)
class Step:
    """What begin() will do with one entity."""

    entity: str                   # RegisteredModel | ModelVersion | ModelArtifact
    name: str | None
    id: str | None                # None: to be created
    action: str                   # create | resume (ours, earlier attempt) | use (given by id)
    state: str | None = None      # current artifact state, when it exists

    def describe(self) -> str:
        where = f"id {self.id}" if self.id else "new"
        state = f", now {self.state}" if self.state else ""
        return f"{self.entity} {self.name or ''} ({where}{state}): {self.action}".replace("  ", " ")


@dataclass(frozen=True)
class Plan:
    intent: Intent
    api_version: str
    fingerprint: str
    model: Step | None
    version: Step | None
    artifact: Step

    def describe(self) -> list[str]:
        lines = [f"Model Registry API {self.api_version}, intent {self.intent.kind}"]
        return lines + [s.describe() for s in (self.model, self.version, self.artifact) if s is not None]


@dataclass(frozen=True)
class Claim:
    plan: Plan
    model_id: str | None
    version_id: str | None
    artifact_id: str


def connect(settings: RegistrySettings, *, retry: RetryPolicy = RetryPolicy()) -> Registry:
    """Detect the server's API generation (before any client call) and return a Registry using it."""
    check_client_prefix()
    if settings.log_level:
        for name in ("modelsync.registry", "mr_openapi", "model_registry"):
            logging.getLogger(name).setLevel(settings.log_level.upper())
    address = base_url(settings)
    token = settings.user_token.reveal() if settings.user_token else None
    configuration = Configuration(host=address, access_token=token or None, ssl_ca_cert=settings.custom_ca)
    connection = Connection(configuration, address, token_sent=bool(token), retry=retry)
    api_version = detect(connection, settings.api_version)
    how = "forced" if settings.api_version != "auto" else "detected"
    log.info("Model Registry at %s: API %s (%s)", address, api_version, how)
    return Registry(connection, settings)


def base_url(settings: RegistrySettings) -> str:
    """scheme://host:port[/prefix] from the address (its scheme and port win) and the port / is_secure settings."""
    address = settings.server_address.strip().rstrip("/")
    if not address:
        raise RegistryError("no Model Registry server address configured")
    try:
        scheme, hostname, port, path = split_registry_address(address)
    except ValueError:
        raise RegistryError(f"registry server address {address!r}: expected host, http://host or https://host") \
            from None
    scheme = scheme or ("https" if settings.is_secure else "http")
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{host}:{port or settings.port}{path}"


class Registry:
    def __init__(self, connection: Connection, settings: RegistrySettings):
        self._conn = connection
        self._settings = settings

    @property
    def api_version(self) -> str:
        return self._conn.api_version

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ preflight: reads only

    def preflight(self, intent: Intent) -> Plan:
        if intent.kind not in INTENTS:
            raise RegistryError(f"unknown upload intent {intent.kind!r} (one of {', '.join(INTENTS)})")
        fingerprint = job_fingerprint(intent)
        if intent.kind == "update_artifact":
            return self._plan_update(intent, fingerprint)
        meta = intent.metadata or Metadata()
        if intent.kind == "create_model":
            model = self._lookup("RegisteredModel", meta.registered_model.get("name"), None, fingerprint)
            model_name = model.name
        else:
            if not intent.model_id:
                raise RegistryError("intent create_version needs the RegisteredModel id (--model-id)")
            found = self._get_model(intent.model_id)
            model, model_name = Step("RegisteredModel", found.name, found.id, "use"), found.name
        version = self._lookup("ModelVersion", meta.model_version.get("name"), model.id, fingerprint)
        artifact_name = meta.model_artifact.get("name") or model_name
        artifact = self._lookup("ModelArtifact", artifact_name, version.id, fingerprint)
        return Plan(intent, self.api_version, fingerprint, model, version, artifact)

    def _plan_update(self, intent: Intent, fingerprint: str) -> Plan:
        if not intent.artifact_id:
            raise RegistryError("intent update_artifact needs the ModelArtifact id (--model-artifact-id)")
        model = version = None
        if intent.model_id:  # optional here, but if given it must be real
            found = self._get_model(intent.model_id)
            model = Step("RegisteredModel", found.name, found.id, "use")
        if intent.version_id:
            found = self._get_version(intent.version_id)
            version = Step("ModelVersion", found.name, found.id, "use")
        art = self._get_artifact(intent.artifact_id)
        return Plan(intent, self.api_version, fingerprint, model, version,
                    Step("ModelArtifact", art.name, art.id, "use", _state(art)))

    def _lookup(self, entity: str, name: str | None, parent_id: str | None, fingerprint: str) -> Step:
        """Find an entity by name under its parent: free (create), ours (resume) or taken (error)."""
        if not name:
            raise RegistryError(f"no {entity} name in the metadata")
        if entity != "RegisteredModel" and parent_id is None:
            return Step(entity, name, None, "create")  # its parent is new, so it cannot exist yet
        find = {"RegisteredModel": lambda api: api.find_registered_model(name=name, **self._t()),
                "ModelVersion": lambda api: api.find_model_version(name=name, parent_resource_id=parent_id,
                                                                   **self._t()),
                "ModelArtifact": lambda api: api.find_model_artifact(name=name, parent_resource_id=parent_id,
                                                                     **self._t())}[entity]
        try:
            found = self._conn.call(f"find {entity} {name!r}", find)
        except NotFound:
            return Step(entity, name, None, "create")
        if _marker(found) != fingerprint:
            raise RegistryError(_taken(entity, name, found.id, parent_id))
        return Step(entity, name, found.id, "resume", _state(found) if entity == "ModelArtifact" else None)

    # ------------------------------------------------------------ begin: create what is missing, PENDING

    def begin(self, plan: Plan) -> Claim:
        if plan.intent.kind == "update_artifact":
            self._patch_artifact(plan.artifact.id, ArtifactState.PENDING, drop=(ERROR_PROPERTY,))
            log.info("ModelArtifact %s is PENDING", plan.artifact.id)
            return Claim(plan, plan.model and plan.model.id, plan.version and plan.version.id, plan.artifact.id)
        model_id = self._ensure_model(plan)
        version_id = self._ensure_version(plan, model_id)
        artifact_id = self._ensure_artifact(plan, version_id)
        log.info("RegisteredModel %s, ModelVersion %s, ModelArtifact %s (PENDING)", model_id, version_id,
                 artifact_id)
        return Claim(plan, model_id, version_id, artifact_id)

    def _ensure_model(self, plan: Plan) -> str:
        meta = _meta(plan).registered_model
        if plan.model.action == "resume":  # ours: the metadata as it is now (a re-run may have corrected it)
            body = RegisteredModelUpdate(description=meta.get("description"), owner=meta.get("owner"),
                                         custom_properties=_props(meta, plan.fingerprint),
                                         state=RegisteredModelState.ARCHIVED, **_model_fields(meta))
            self._conn.call(f"update RegisteredModel {plan.model.id}",
                            lambda api: api.update_registered_model(plan.model.id, body, **self._t()))
        if plan.model.id:
            return plan.model.id
        # Born ARCHIVED: nothing shows as a live model until its artifact is LIVE (complete), even after a crash.
        body = RegisteredModelCreate(name=plan.model.name, description=meta.get("description"),
                                     owner=meta.get("owner"), custom_properties=_props(meta, plan.fingerprint),
                                     state=RegisteredModelState.ARCHIVED, **_model_fields(meta))
        return self._create("RegisteredModel", plan.model.name, None, plan.fingerprint,
                            lambda api: api.create_registered_model(body, **self._t()))

    def _ensure_version(self, plan: Plan, model_id: str) -> str:
        meta = _meta(plan).model_version
        if plan.version.action == "resume":
            body = ModelVersionUpdate(description=meta.get("description"),
                                      author=meta.get("author") or self._settings.author,
                                      custom_properties=_props(meta, plan.fingerprint), state=ModelVersionState.ARCHIVED)
            self._conn.call(f"update ModelVersion {plan.version.id}",
                            lambda api: api.update_model_version(plan.version.id, body, **self._t()))
        if plan.version.id:
            return plan.version.id
        body = ModelVersionCreate(name=plan.version.name, registered_model_id=model_id,
                                  description=meta.get("description"),
                                  author=meta.get("author") or self._settings.author,
                                  custom_properties=_props(meta, plan.fingerprint),
                                  state=ModelVersionState.ARCHIVED)  # LIVE once its artifact is
        return self._create("ModelVersion", plan.version.name, model_id, plan.fingerprint,
                            lambda api: api.create_model_version(body, **self._t()))

    def _ensure_artifact(self, plan: Plan, version_id: str) -> str:
        meta = _meta(plan).model_artifact
        if plan.artifact.id:  # ours from an earlier attempt: PENDING again for this one, with today's metadata
            self._patch_artifact(plan.artifact.id, ArtifactState.PENDING, replace=_props(meta, plan.fingerprint),
                                 fields=_artifact_fields(meta))
            return plan.artifact.id
        body = ModelArtifact(name=plan.artifact.name, state=ArtifactState.PENDING,
                             custom_properties=_props(meta, plan.fingerprint), **_artifact_fields(meta))
        return self._create("ModelArtifact", plan.artifact.name, version_id, plan.fingerprint,
                            lambda api: api.upsert_model_version_artifact(version_id, Artifact(body), **self._t()))

    def _create(self, entity: str, name: str, parent_id: str | None, fingerprint: str, make) -> str:
        """POST; on 409 (someone, or our own lost answer, created it meanwhile) adopt it only if it is ours."""
        try:
            created = self._conn.call(f"create {entity} {name!r}", make)
            return _instance(created).id
        except Conflict:
            step = self._lookup(entity, name, parent_id, fingerprint)  # raises "name taken" unless ours
            if step.id is None:
                raise RegistryError(f"create {entity} {name!r}: 409 conflict, yet not found by name") from None
            if entity == "ModelArtifact":
                self._patch_artifact(step.id, ArtifactState.PENDING, drop=(ERROR_PROPERTY,))
            return step.id

    # ------------------------------------------------------------ the end: LIVE or ABANDONED

    def complete(self, claim: Claim, published: Published) -> None:
        extra: dict[str, PropertyValue] = {"modelsync.files": len(published.files),
                                           "modelsync.size_bytes": str(sum(f.size for f in published.files)),
                                           "modelsync.files_digest": files_digest(published)}
        if published.digest:
            extra["modelsync.digest"] = published.digest
        extra.update(published.facts)  # e.g. modelsync.signature.*: who signed, what, the log entries
        meta = _meta(claim.plan).model_artifact if claim.plan.intent.kind == "update_artifact" else None
        if meta is not None:  # update_artifact: the metadata dir's artifact fields apply as it goes LIVE
            extra.update(meta.custom_properties)
        art = self._patch_artifact(claim.artifact_id, ArtifactState.LIVE, add=extra, drop=_published_facts,
                                   uri=published.uri, fields=_artifact_fields(meta) if meta else {})
        if _state(art) != "LIVE" or art.uri != published.uri:
            raise RegistryError(f"ModelArtifact {claim.artifact_id}: the server did not keep state LIVE and the uri")
        self._set_owned_parents(claim, live=True)  # artifact first, then version, then model: a crash between
        log.info("ModelArtifact %s is LIVE: %s", claim.artifact_id, published.uri)  # them is resumed by a re-run

    def abandon(self, claim: Claim, error: str) -> None:
        text = mask(error).strip() or "failed"
        self._patch_artifact(claim.artifact_id, ArtifactState.ABANDONED, add={ERROR_PROPERTY: text[:MAX_ERROR_CHARS]})
        self._set_owned_parents(claim, live=False)
        log.info("ModelArtifact %s is ABANDONED", claim.artifact_id)

    def _set_owned_parents(self, claim: Claim, live: bool) -> None:
        """LIVE or ARCHIVED for the version and model this job created (never for ones it was given by id)."""
        plan = claim.plan
        if _owned(plan.version) and claim.version_id:
            state = ModelVersionState.LIVE if live else ModelVersionState.ARCHIVED
            body = ModelVersionUpdate(state=state, custom_properties=_resent(self._get_version(claim.version_id)))
            self._conn.call(f"update ModelVersion {claim.version_id}", lambda api: api.update_model_version(
                claim.version_id, body, **self._t()))
        if _owned(plan.model) and claim.model_id:
            state = RegisteredModelState.LIVE if live else RegisteredModelState.ARCHIVED
            body = RegisteredModelUpdate(state=state, custom_properties=_resent(self._get_model(claim.model_id)))
            self._conn.call(f"update RegisteredModel {claim.model_id}", lambda api: api.update_registered_model(
                claim.model_id, body, **self._t()))

    # ------------------------------------------------------------ helpers

    def _patch_artifact(self, artifact_id: str, state: ArtifactState, add: dict | None = None,
                        drop: tuple[str, ...] | Callable[[str], bool] = (), uri: str | None = None,
                        fields: dict | None = None, replace: dict[str, MetadataValue] | None = None):
        """PATCH state (always sent: the update model's default state is UNKNOWN) and custom properties: the
        server's merged with add, minus drop (names, or a test on the name); or exactly `replace`."""
        if replace is not None:
            merged = dict(replace)
        else:
            current = self._get_artifact(artifact_id).custom_properties or {}
            dropped = drop if callable(drop) else (lambda key: key in drop)
            merged = {k: _resendable(v) for k, v in current.items() if not dropped(k)}
        merged.update({k: metadata_value(v) for k, v in (add or {}).items()})
        body = ModelArtifactUpdate(state=state, uri=uri, custom_properties=merged, **(fields or {}))
        return self._conn.call(f"update ModelArtifact {artifact_id}",
                               lambda api: api.update_model_artifact(artifact_id, body, **self._t()))

    def _get_artifact(self, artifact_id: str):
        return self._call_found(f"ModelArtifact id {artifact_id}",
                                lambda api: api.get_model_artifact(artifact_id, **self._t()))

    def _get_version(self, version_id: str):
        return self._call_found(f"ModelVersion id {version_id}",
                                lambda api: api.get_model_version(version_id, **self._t()))

    def _get_model(self, model_id: str):
        return self._call_found(f"RegisteredModel id {model_id}",
                                lambda api: api.get_registered_model(model_id, **self._t()))

    def _call_found(self, what: str, make):
        try:
            return self._conn.call(f"get {what}", make)
        except NotFound:
            raise RegistryError(f"{what} not found in the Model Registry at {self._conn.address}") from None

    def _t(self) -> dict:
        return {"_request_timeout": float(self._conn.retry.timeout)}


def _owned(step: Step | None) -> bool:
    return step is not None and step.action in ("create", "resume")


def job_fingerprint(intent: Intent) -> str:
    """What identifies a job across its re-runs: intent, parent ids, entity names, source and destination. Not
    descriptions or properties, so a re-run that corrects them resumes its own entities."""
    meta = intent.metadata or Metadata()
    names = [e.get("name") or "" for e in (meta.registered_model, meta.model_version, meta.model_artifact)]
    doc = [intent.kind, intent.model_id or "", intent.artifact_id or "", names, intent.job_key]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:32]


def _published_facts(key: str) -> bool:
    """Properties a publish writes (and an earlier publish's error): replaced as a whole on every LIVE."""
    return key.startswith("modelsync.") and key != MARKER


def files_digest(published: Published) -> str:
    lines = "".join(f"{f.path} {f.size} {f.sha256}\n" for f in sorted(published.files, key=lambda f: f.path))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def metadata_value(value: PropertyValue) -> MetadataValue:
    """A typed value (from metadata.py or the job) as the API's MetadataValue."""
    if isinstance(value, bool):
        return MetadataValue(MetadataBoolValue(bool_value=value, metadataType="MetadataBoolValue"))
    if isinstance(value, int):
        return MetadataValue(MetadataIntValue(int_value=str(value), metadataType="MetadataIntValue"))
    if isinstance(value, float):
        return MetadataValue(MetadataDoubleValue(double_value=value, metadataType="MetadataDoubleValue"))
    if isinstance(value, Struct):  # the server takes base64 of the JSON in, and answers the JSON text
        encoded = base64.b64encode(value.json.encode()).decode()
        return MetadataValue(MetadataStructValue(struct_value=encoded, metadataType="MetadataStructValue"))
    return MetadataValue(MetadataStringValue(string_value=str(value), metadataType="MetadataStringValue"))


def _resendable(value: MetadataValue) -> MetadataValue:
    """The server answers struct values as plain JSON text but accepts only base64 in: re-encode those."""
    inner = value.actual_instance
    if isinstance(inner, MetadataStructValue) and isinstance(inner.struct_value, str):
        try:
            base64.b64decode(inner.struct_value, validate=True)
        except (binascii.Error, ValueError):
            encoded = base64.b64encode(inner.struct_value.encode()).decode()
            return MetadataValue(MetadataStructValue(struct_value=encoded, metadataType="MetadataStructValue"))
    return value


def _resent(entity) -> dict[str, MetadataValue] | None:
    """An entity's custom properties as a PATCH must carry them: v0.3.0 re-reads the stored map on every update and
    refuses its own struct values (answered as JSON text) unless they come back base64, as they went in."""
    current = entity.custom_properties or {}
    return {k: _resendable(v) for k, v in current.items()} or None


def _props(meta: EntityMetadata, fingerprint: str) -> dict[str, MetadataValue]:
    props = {k: metadata_value(v) for k, v in meta.custom_properties.items()}
    props[MARKER] = metadata_value(fingerprint)
    return props


def _model_fields(meta: EntityMetadata) -> dict[str, object]:
    """The RegisteredModel's descriptive fields (a Hugging Face card's, or the metadata dir's); language and tasks
    are lists, given as JSON lists or comma-separated."""
    fields: dict[str, object] = {n: meta.get(n) for n in ("readme", "license", "license_link", "provider",
                                                          "library_name", "maturity") if meta.get(n)}
    for name in ("language", "tasks"):
        text = (meta.get(name) or "").strip()
        if text:
            try:
                value = json.loads(text) if text.startswith("[") else None
            except ValueError:
                value = None
            fields[name] = [str(x) for x in value] if isinstance(value, list) else \
                [x.strip() for x in text.split(",") if x.strip()]
    return fields


def _artifact_fields(meta: EntityMetadata | None) -> dict[str, str]:
    names = ("description", "model_format_name", "model_format_version", "storage_key", "storage_path",
             "service_account_name", "model_source_kind", "model_source_class", "model_source_group",
             "model_source_id", "model_source_name")
    return {n: meta.get(n) for n in names if meta is not None and meta.get(n)}


def _meta(plan: Plan) -> Metadata:
    return plan.intent.metadata or Metadata()


def _marker(entity) -> str | None:
    value = (entity.custom_properties or {}).get(MARKER)
    inner = value.actual_instance if value is not None else None
    return getattr(inner, "string_value", None)


def _state(entity) -> str | None:
    state = getattr(entity, "state", None)
    return getattr(state, "value", state)


def _instance(entity):
    """upsert_model_version_artifact answers an Artifact (oneOf); the others answer the entity itself."""
    return getattr(entity, "actual_instance", None) or entity


def _taken(entity: str, name: str, found_id: str | None, parent_id: str | None) -> str:
    under = f" under id {parent_id}" if parent_id else ""
    return (f"{entity} name {name!r} is taken{under} (id {found_id}, not created by this job: no or another "
            f"{MARKER} marker); choose another name")
