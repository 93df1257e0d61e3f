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

Here: the intents and their requests. registry_plan.py: the plain data in and out (settings, intent, plan, claim);
mr_values.py: metadata as the API's values; mr_api.py: the client, its API generation and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from mr_openapi.api.model_registry_service_api import ModelRegistryServiceApi
from mr_openapi.configuration import Configuration
from mr_openapi.models import (
    Artifact,
    ArtifactList,
    ArtifactState,
    MetadataValue,
    ModelArtifact,
    ModelArtifactUpdate,
    ModelVersion,
    ModelVersionCreate,
    ModelVersionState,
    ModelVersionUpdate,
    OrderByField,
    RegisteredModel,
    RegisteredModelCreate,
    RegisteredModelState,
    RegisteredModelUpdate,
    SortOrder,
)

from .clients.mr_api import Conflict, Connection, NotFound, RetryPolicy, check_client_prefix, detect
from .errors import RegistryError
from .locations import Published, split_registry_address
from .metadata import Metadata, PropertyValue
from .mr_values import (
    MARKER,
    RESUME,
    ArtifactFields,
    Entity,
    artifact_fields,
    created_id,
    files_digest,
    marker_of,
    metadata_value,
    model_fields,
    props,
    published_fact,
    resendable,
    resent,
    state_of,
    string_property,
)
from .registry_plan import Claim, Intent, Plan, RegistrySettings, Step, existing_id, job_fingerprint, new_name, planned
from .secret import mask

# what the job and the tests name as registry.X (the plain data lives in registry_plan.py)
__all__ = ["Claim", "Intent", "Plan", "Registry", "RegistrySettings", "Step", "base_url", "connect", "job_fingerprint"]

log = logging.getLogger("modelsync.registry")

ERROR_PROPERTY = "modelsync.error"
PROGRESS_TIMEOUT = 10.0  # seconds for each request recording a finished layer (record_progress)
MAX_ERROR_CHARS = 2000
INTENTS = ("update_artifact", "create_model", "create_version")

T = TypeVar("T")
Api = ModelRegistryServiceApi


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
            found_model = self._get_model(intent.model_id)
            model = Step("RegisteredModel", found_model.name, found_model.id, "use")
        if intent.version_id:
            found_version = self._get_version(intent.version_id)
            version = Step("ModelVersion", found_version.name, found_version.id, "use")
        art = self._get_artifact(intent.artifact_id)
        return Plan(intent, self.api_version, fingerprint, model, version,
                    Step("ModelArtifact", art.name, art.id, "use", state_of(art), string_property(art, RESUME)))

    def _lookup(self, entity: str, name: str | None, parent_id: str | None, fingerprint: str) -> Step:
        """Find an entity by name under its parent: free (create), ours (resume) or taken (error)."""
        if not name:
            raise RegistryError(f"no {entity} name in the metadata")
        if entity != "RegisteredModel" and parent_id is None:
            return Step(entity, name, None, "create")  # its parent is new, so it cannot exist yet
        finders: dict[str, Callable[[Api], Awaitable[Entity]]] = {
            "RegisteredModel": lambda api: api.find_registered_model(name=name, _request_timeout=self._timeout),
            "ModelVersion": lambda api: api.find_model_version(name=name, parent_resource_id=parent_id,
                                                               _request_timeout=self._timeout),
            "ModelArtifact": lambda api: api.find_model_artifact(name=name, parent_resource_id=parent_id,
                                                                 _request_timeout=self._timeout)}
        try:
            found = self._conn.call(f"find {entity} {name!r}", finders[entity])
        except NotFound:
            return Step(entity, name, None, "create")
        if marker_of(found) != fingerprint:
            raise RegistryError(_taken(entity, name, found.id, parent_id))
        if entity != "ModelArtifact":
            return Step(entity, name, found.id, "resume")
        return Step(entity, name, found.id, "resume", state_of(found), string_property(found, RESUME))

    # ------------------------------------------------------------ begin: create what is missing, PENDING

    def begin(self, plan: Plan) -> Claim:
        if plan.intent.kind == "update_artifact":
            artifact_id = existing_id(plan.artifact)
            self._patch_artifact(artifact_id, ArtifactState.PENDING, drop=(ERROR_PROPERTY,))
            log.info("ModelArtifact %s is PENDING", artifact_id)
            return Claim(plan, plan.model.id if plan.model else None, plan.version.id if plan.version else None,
                         artifact_id)
        model_id = self._ensure_model(plan)
        version_id = self._ensure_version(plan, model_id)
        artifact_id = self._ensure_artifact(plan, version_id)
        log.info("RegisteredModel %s, ModelVersion %s, ModelArtifact %s (PENDING)", model_id, version_id,
                 artifact_id)
        return Claim(plan, model_id, version_id, artifact_id)

    def _ensure_model(self, plan: Plan) -> str:
        meta, step = _meta(plan).registered_model, planned(plan.model)
        if step.action == "resume":  # ours: the metadata as it is now (a re-run may have corrected it)
            model_id = existing_id(step)
            update = RegisteredModelUpdate(description=meta.get("description"), owner=meta.get("owner"),
                                           custom_properties=props(meta, plan.fingerprint),
                                           state=RegisteredModelState.ARCHIVED, **model_fields(meta))
            self._conn.call(f"update RegisteredModel {model_id}",
                            lambda api: api.update_registered_model(model_id, update,
                                                                    _request_timeout=self._timeout))
        if step.id:
            return step.id
        # Born ARCHIVED: nothing shows as a live model until its artifact is LIVE (complete), even after a crash.
        name = new_name(step)
        create = RegisteredModelCreate(name=name, description=meta.get("description"),
                                       owner=meta.get("owner"), custom_properties=props(meta, plan.fingerprint),
                                       state=RegisteredModelState.ARCHIVED, **model_fields(meta))
        return self._create("RegisteredModel", name, None, plan.fingerprint,
                            lambda api: api.create_registered_model(create, _request_timeout=self._timeout))

    def _ensure_version(self, plan: Plan, model_id: str) -> str:
        meta, step = _meta(plan).model_version, planned(plan.version)
        if step.action == "resume":
            version_id = existing_id(step)
            update = ModelVersionUpdate(description=meta.get("description"),
                                        author=meta.get("author") or self._settings.author,
                                        custom_properties=props(meta, plan.fingerprint),
                                        state=ModelVersionState.ARCHIVED)
            self._conn.call(f"update ModelVersion {version_id}",
                            lambda api: api.update_model_version(version_id, update, _request_timeout=self._timeout))
        if step.id:
            return step.id
        name = new_name(step)
        create = ModelVersionCreate(name=name, registered_model_id=model_id,
                                    description=meta.get("description"),
                                    author=meta.get("author") or self._settings.author,
                                    custom_properties=props(meta, plan.fingerprint),
                                    state=ModelVersionState.ARCHIVED)  # LIVE once its artifact is
        return self._create("ModelVersion", name, model_id, plan.fingerprint,
                            lambda api: api.create_model_version(create, _request_timeout=self._timeout))

    def _ensure_artifact(self, plan: Plan, version_id: str) -> str:
        meta = _meta(plan).model_artifact
        if plan.artifact.id:  # ours from an earlier attempt: PENDING again for this one, with today's metadata
            kept = {RESUME: metadata_value(plan.artifact.resume)} if plan.artifact.resume else {}
            self._patch_artifact(plan.artifact.id, ArtifactState.PENDING,
                                 replace={**props(meta, plan.fingerprint), **kept}, fields=artifact_fields(meta))
            return plan.artifact.id
        name = new_name(plan.artifact)
        body = ModelArtifact(name=name, state=ArtifactState.PENDING,
                             custom_properties=props(meta, plan.fingerprint), **artifact_fields(meta))
        return self._create("ModelArtifact", name, version_id, plan.fingerprint,
                            lambda api: api.upsert_model_version_artifact(version_id, Artifact(body),
                                                                          _request_timeout=self._timeout))

    def _create(self, entity: str, name: str, parent_id: str | None, fingerprint: str,
                make: Callable[[Api], Awaitable[Entity | Artifact]]) -> str:
        """POST; on 409 (someone, or our own lost answer, created it meanwhile) adopt it only if it is ours."""
        try:
            created = created_id(self._conn.call(f"create {entity} {name!r}", make))
        except Conflict:
            step = self._lookup(entity, name, parent_id, fingerprint)  # raises "name taken" unless ours
            if step.id is None:
                raise RegistryError(f"create {entity} {name!r}: 409 conflict, yet not found by name") from None
            if entity == "ModelArtifact":
                self._patch_artifact(step.id, ArtifactState.PENDING, drop=(ERROR_PROPERTY,))
            return step.id
        if created is None:
            raise RegistryError(f"create {entity} {name!r}: the server's answer has no id")
        return created

    # ------------------------------------------------------------ during the transfer (resume.py)

    def record_progress(self, claim: Claim, value: str) -> None:
        """What this attempt has finished, on its PENDING artifact, for a restarted Job (resume.py). Best effort:
        one try of each request, at most PROGRESS_TIMEOUT seconds, so a Model Registry that stalls mid-transfer
        costs seconds, not the retries of a step that matters (the caller stops recording after a failure)."""
        self._patch_artifact(claim.artifact_id, ArtifactState.PENDING, add={RESUME: value}, best_effort=True)

    def earlier_images(self, plan: Plan, versions: int = 3) -> list[str]:
        """The URIs of the LIVE artifacts of the model's most recently updated versions (at most `versions`), newest
        first: images a new version can reuse layers of. Nothing for a new model; a failed lookup only costs the
        reuse (logged)."""
        model_id = plan.model.id if plan.model else None
        if not model_id:
            return []
        uris: list[str] = []
        try:
            found = self._conn.call(f"versions of RegisteredModel {model_id}", lambda api: api.
                                    get_registered_model_versions(model_id, page_size=str(versions),
                                                                  order_by=OrderByField.LAST_UPDATE_TIME,
                                                                  sort_order=SortOrder.DESC,
                                                                  _request_timeout=self._timeout))
            for version in found.items or []:
                if version.id is None or (plan.version is not None and version.id == plan.version.id):
                    continue
                arts = self._conn.call(f"artifacts of ModelVersion {version.id}", self._artifacts_of(version.id))
                for item in arts.items or []:
                    art = item.actual_instance
                    if isinstance(art, ModelArtifact) and state_of(art) == "LIVE" and art.uri:
                        uris.append(art.uri)
        except RegistryError as exc:
            log.warning("the model's earlier versions could not be read (%s): no layers reused from them", exc)
        return uris

    def _artifacts_of(self, version_id: str) -> Callable[[Api], Awaitable[ArtifactList]]:
        return lambda api: api.get_model_version_artifacts(version_id, _request_timeout=self._timeout)

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
        art = self._patch_artifact(claim.artifact_id, ArtifactState.LIVE, add=extra, drop=published_fact,
                                   uri=published.uri, fields=artifact_fields(meta))
        if state_of(art) != "LIVE" or art.uri != published.uri:
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
        version_id, model_id = claim.version_id, claim.model_id
        if _owned(plan.version) and version_id:
            version = ModelVersionUpdate(state=ModelVersionState.LIVE if live else ModelVersionState.ARCHIVED,
                                         custom_properties=resent(self._get_version(version_id)))
            self._conn.call(f"update ModelVersion {version_id}", lambda api: api.update_model_version(
                version_id, version, _request_timeout=self._timeout))
        if _owned(plan.model) and model_id:
            model = RegisteredModelUpdate(state=RegisteredModelState.LIVE if live else RegisteredModelState.ARCHIVED,
                                          custom_properties=resent(self._get_model(model_id)))
            self._conn.call(f"update RegisteredModel {model_id}", lambda api: api.update_registered_model(
                model_id, model, _request_timeout=self._timeout))

    # ------------------------------------------------------------ helpers

    def _patch_artifact(self, artifact_id: str, state: ArtifactState, add: Mapping[str, PropertyValue] | None = None,
                        drop: tuple[str, ...] | Callable[[str], bool] = (), uri: str | None = None,
                        fields: ArtifactFields | None = None,
                        replace: dict[str, MetadataValue] | None = None, best_effort: bool = False) -> ModelArtifact:
        """PATCH state (always sent: the update model's default state is UNKNOWN) and custom properties: the
        server's merged with add, minus drop (names, or a test on the name); or exactly `replace`. best_effort: each
        request tried once, at most PROGRESS_TIMEOUT seconds (record_progress)."""
        send = self._conn.call_once if best_effort else self._conn.call
        timeout = self._best_effort_timeout if best_effort else self._timeout
        if replace is not None:
            merged = dict(replace)
        else:
            current = self._get_artifact(artifact_id, best_effort).custom_properties or {}
            dropped = drop if callable(drop) else (lambda key: key in drop)
            merged = {k: resendable(v) for k, v in current.items() if not dropped(k)}
        merged.update({k: metadata_value(v) for k, v in (add or {}).items()})
        body = ModelArtifactUpdate(state=state, uri=uri, custom_properties=merged, **(fields or {}))
        return send(f"update ModelArtifact {artifact_id}",
                    lambda api: api.update_model_artifact(artifact_id, body, _request_timeout=timeout))

    def _get_artifact(self, artifact_id: str, best_effort: bool = False) -> ModelArtifact:
        if best_effort:
            return self._conn.call_once(f"get ModelArtifact id {artifact_id}", lambda api: api.get_model_artifact(
                artifact_id, _request_timeout=self._best_effort_timeout))
        return self._call_found(f"ModelArtifact id {artifact_id}",
                                lambda api: api.get_model_artifact(artifact_id, _request_timeout=self._timeout))

    def _get_version(self, version_id: str) -> ModelVersion:
        return self._call_found(f"ModelVersion id {version_id}",
                                lambda api: api.get_model_version(version_id, _request_timeout=self._timeout))

    def _get_model(self, model_id: str) -> RegisteredModel:
        return self._call_found(f"RegisteredModel id {model_id}",
                                lambda api: api.get_registered_model(model_id, _request_timeout=self._timeout))

    def _call_found(self, what: str, make: Callable[[Api], Awaitable[T]]) -> T:
        try:
            return self._conn.call(f"get {what}", make)
        except NotFound:
            raise RegistryError(f"{what} not found in the Model Registry at {self._conn.address}") from None

    @property
    def _best_effort_timeout(self) -> float:
        return min(self._timeout, PROGRESS_TIMEOUT)

    @property
    def _timeout(self) -> float:
        """Seconds per request, passed to every client call."""
        return float(self._conn.retry.timeout)


def _owned(step: Step | None) -> bool:
    return step is not None and step.action in ("create", "resume")


def _meta(plan: Plan) -> Metadata:
    return plan.intent.metadata or Metadata()


def _taken(entity: str, name: str, found_id: str | None, parent_id: str | None) -> str:
    under = f" under id {parent_id}" if parent_id else ""
    return (f"{entity} name {name!r} is taken{under} (id {found_id}, not created by this job: no or another "
            f"{MARKER} marker); choose another name")
