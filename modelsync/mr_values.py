"""modelsync's metadata and facts as the Model Registry API's values, and what registry.py reads back from entities.

Pure functions over the pinned client's models (``mr_openapi``); no request is made here. registry.py holds the
intents (preflight, begin, complete, abandon) and calls these to build the bodies it sends:

- :func:`metadata_value`: a typed custom property (str, int, float, bool, :class:`~modelsync.metadata.Struct`) as a
  ``MetadataValue``; ints are sent as strings (the API's int64 is a JSON string), structs as base64 of the JSON.
- :func:`resendable` / :func:`resent`: a property as a PATCH must carry it back. The server answers struct values as
  plain JSON text but accepts only base64 in, and a PATCH of customProperties replaces the whole map.
- :func:`model_fields` / :func:`artifact_fields`: the entities' descriptive fields from the metadata, only those
  given (an absent field is not sent, so it never clears what the server holds).
- :func:`marker_of`, :func:`state_of`, :func:`created_id`: what registry.py reads from an answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TypedDict, cast

from mr_openapi.models import (
    Artifact,
    MetadataBoolValue,
    MetadataDoubleValue,
    MetadataIntValue,
    MetadataStringValue,
    MetadataStructValue,
    MetadataValue,
    ModelArtifact,
    ModelVersion,
    RegisteredModel,
)

from .locations import Published
from .metadata import EntityMetadata, PropertyValue, Struct

MARKER = "modelsync.job"  # the job's fingerprint on every entity it creates (registry.py's docstring: re-runs)
RESUME = "modelsync.resume"  # on a PENDING artifact: what an interrupted attempt finished (resume.py)

Entity = RegisteredModel | ModelVersion | ModelArtifact


class ModelFields(TypedDict, total=False):
    """The RegisteredModel's descriptive fields modelsync writes (names as the client's models spell them)."""

    readme: str
    license: str
    license_link: str
    provider: str
    library_name: str
    maturity: str
    language: list[str]
    tasks: list[str]


class ArtifactFields(TypedDict, total=False):
    """The ModelArtifact's descriptive fields modelsync writes (all plain strings)."""

    description: str
    model_format_name: str
    model_format_version: str
    storage_key: str
    storage_path: str
    service_account_name: str
    model_source_kind: str
    model_source_class: str
    model_source_group: str
    model_source_id: str
    model_source_name: str


_MODEL_LISTS = ("language", "tasks")
_MODEL_STRINGS = tuple(n for n in ModelFields.__annotations__ if n not in _MODEL_LISTS)


def metadata_value(value: PropertyValue) -> MetadataValue:
    """A typed value (from metadata.py or the job) as the API's MetadataValue."""
    if isinstance(value, bool):
        return MetadataValue(MetadataBoolValue(bool_value=value, metadata_type="MetadataBoolValue"))
    if isinstance(value, int):
        return MetadataValue(MetadataIntValue(int_value=str(value), metadata_type="MetadataIntValue"))
    if isinstance(value, float):
        return MetadataValue(MetadataDoubleValue(double_value=value, metadata_type="MetadataDoubleValue"))
    if isinstance(value, Struct):  # the server takes base64 of the JSON in, and answers the JSON text
        encoded = base64.b64encode(value.json.encode()).decode()
        return MetadataValue(MetadataStructValue(struct_value=encoded, metadata_type="MetadataStructValue"))
    return MetadataValue(MetadataStringValue(string_value=str(value), metadata_type="MetadataStringValue"))


def resendable(value: MetadataValue) -> MetadataValue:
    """The server answers struct values as plain JSON text but accepts only base64 in: re-encode those."""
    inner = value.actual_instance
    if isinstance(inner, MetadataStructValue) and isinstance(inner.struct_value, str):
        try:
            base64.b64decode(inner.struct_value, validate=True)
        except (binascii.Error, ValueError):
            encoded = base64.b64encode(inner.struct_value.encode()).decode()
            return MetadataValue(MetadataStructValue(struct_value=encoded, metadata_type="MetadataStructValue"))
    return value


def resent(entity: Entity) -> dict[str, MetadataValue] | None:
    """An entity's custom properties as a PATCH must carry them: v0.3.0 re-reads the stored map on every update and
    refuses its own struct values (answered as JSON text) unless they come back base64, as they went in."""
    current = entity.custom_properties or {}
    return {k: resendable(v) for k, v in current.items()} or None


def props(meta: EntityMetadata, fingerprint: str) -> dict[str, MetadataValue]:
    """The metadata's custom properties plus the job's marker."""
    values = {k: metadata_value(v) for k, v in meta.custom_properties.items()}
    values[MARKER] = metadata_value(fingerprint)
    return values


def model_fields(meta: EntityMetadata) -> ModelFields:
    """The RegisteredModel's descriptive fields (a Hugging Face card's, or the metadata dir's); language and tasks
    are lists, given as JSON lists or comma-separated."""
    fields: dict[str, str | list[str]] = {n: v for n in _MODEL_STRINGS if (v := meta.get(n))}
    for name in _MODEL_LISTS:
        text = (meta.get(name) or "").strip()
        if text:
            try:
                value = json.loads(text) if text.startswith("[") else None
            except ValueError:
                value = None
            fields[name] = [str(x) for x in value] if isinstance(value, list) else \
                [x.strip() for x in text.split(",") if x.strip()]
    return cast(ModelFields, fields)  # built from ModelFields' own keys, each with its type


def artifact_fields(meta: EntityMetadata | None) -> ArtifactFields:
    """The ModelArtifact's descriptive fields the metadata gives (none without metadata)."""
    if meta is None:
        return {}
    return cast(ArtifactFields, {n: v for n in ArtifactFields.__annotations__ if (v := meta.get(n))})  # its keys


def files_digest(published: Published) -> str:
    """sha256 over the sorted "path size sha256" lines of the published files."""
    lines = "".join(f"{f.path} {f.size} {f.sha256}\n" for f in sorted(published.files, key=lambda f: f.path))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def published_fact(key: str) -> bool:
    """Properties a publish writes (and an earlier publish's error): replaced as a whole on every LIVE."""
    return key.startswith("modelsync.") and key != MARKER


def marker_of(entity: Entity) -> str | None:
    """The ``modelsync.job`` marker an entity carries, if any."""
    return string_property(entity, MARKER)


def string_property(entity: Entity, name: str) -> str | None:
    """A string custom property of an entity, if it has one."""
    value = (entity.custom_properties or {}).get(name)
    inner = value.actual_instance if value is not None else None
    return inner.string_value if isinstance(inner, MetadataStringValue) else None


def state_of(entity: Entity) -> str | None:
    """The entity's state as the API spells it (LIVE, PENDING, ...)."""
    return entity.state.value if entity.state is not None else None


def created_id(created: Entity | Artifact) -> str | None:
    """The id of what a create answered: upsert_model_version_artifact answers an Artifact (oneOf), the others the
    entity itself."""
    entity = created.actual_instance if isinstance(created, Artifact) else created
    return entity.id if entity is not None else None
