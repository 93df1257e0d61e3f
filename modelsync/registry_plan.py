"""What the job asks of the Model Registry and what registry.py answers: plain frozen data, no requests.

:class:`RegistrySettings` (where the server is, how to reach it) and :class:`Intent` (what to register) go in;
``Registry.preflight`` answers a :class:`Plan` of one :class:`Step` per entity, ``Registry.begin`` a :class:`Claim`
with the ids it holds. :func:`job_fingerprint` is the ``modelsync.job`` marker a job puts on what it creates
(registry.py's docstring: re-runs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .errors import RegistryError
from .metadata import Metadata
from .secret import Secret


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
    resume: str | None = None     # the artifact's mr_values.RESUME: what an interrupted attempt finished

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


def job_fingerprint(intent: Intent) -> str:
    """What identifies a job across its re-runs: intent, parent ids, entity names, source and destination. Not
    descriptions or properties, so a re-run that corrects them resumes its own entities."""
    meta = intent.metadata or Metadata()
    names = [e.get("name") or "" for e in (meta.registered_model, meta.model_version, meta.model_artifact)]
    doc = [intent.kind, intent.model_id or "", intent.artifact_id or "", names, intent.job_key]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:32]


def planned(step: Step | None) -> Step:
    """The model's or version's step: preflight plans both for create_model and create_version."""
    if step is None:
        raise RegistryError("this intent's plan has no RegisteredModel and ModelVersion to create or resume")
    return step


def existing_id(step: Step) -> str:
    """The id of an entity the plan found (given by id, or ours to resume): preflight read it from the server."""
    if step.id is None:
        raise RegistryError(f"{step.entity} {step.name or ''}: the server's answer has no id")
    return step.id


def new_name(step: Step) -> str:
    """The name of an entity to create: Registry._lookup refuses a nameless one."""
    if not step.name:
        raise RegistryError(f"no {step.entity} name in the metadata")
    return step.name
