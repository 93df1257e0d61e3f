"""The metadata dir: a mounted ConfigMap with one file per key, parsed and validated before anything happens.

Keys are ``<Entity>.<field>`` as in the spec, e.g. ``RegisteredModel.name`` or ``ModelVersion.custom_properties``
(a JSON object; ``customProperties``, as the Model Registry UI writes it, is read the same way, and both may be
given as long as no property has two values). Kubernetes mounts a ConfigMap as symlinks into a ``..data``
directory; entries whose names start with ``..`` are that machinery and are ignored. Values are stripped of
surrounding whitespace (YAML block scalars end in a newline).

Which keys each intent takes:
    create_model       RegisteredModel.*, ModelVersion.*, ModelArtifact.*; needs RegisteredModel.name, ModelVersion.name
    create_version     ModelVersion.*, ModelArtifact.*;                     needs ModelVersion.name
    update_artifact    ModelArtifact.* except name (applied when the artifact goes LIVE); nothing needed
Any other key is ignored with a warning that names it (and the key it was probably meant to be), as
upstream ignores it. ``ModelArtifact.name`` defaults to the RegisteredModel's name (as the
upstream client does).

The ids the Model Registry UI writes into its Jobs' ConfigMaps (``RegisteredModel.id``, ``ModelVersion.id``,
``ModelArtifact.id``) stand for ``--model-id``, ``--model-version-id`` and ``--model-artifact-id`` (ids_in); an
id given both ways must be the same (validate.py).

A custom property's value may be the Model Registry's own typed form, as the UI writes it:
``{"metadataType": "MetadataStringValue", "string_value": "nlp"}`` (and ``MetadataIntValue`` / ``int_value``,
``MetadataDoubleValue`` / ``double_value``, ``MetadataBoolValue`` / ``bool_value``, ``MetadataStructValue`` /
``struct_value``): it is stored with exactly that type. Plain JSON values are typed by their JSON type:
    string -> string, true/false -> bool, float -> double, object/array -> string holding compact JSON,
    integer -> int, which the server stores as **int32**. An integer outside int32 is an error (not a silent
    double: that would change the property's type for filterQuery users and lose precision past 2**53); write it
    as a string ("3000000000") or a float (3000000000.0) to say which you mean.
    null and non-finite floats (NaN, Infinity) are errors. Keys starting with ``modelsync.`` are reserved for the
    job's own bookkeeping.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .errors import ConfigError

log = logging.getLogger("modelsync.config")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RESERVED_PREFIX = "modelsync."



@dataclass(frozen=True)
class Struct:
    """A MetadataStructValue: a JSON object, kept as compact JSON text."""
    json: str


PropertyValue = str | int | float | bool | Struct
ID_KEYS = {"RegisteredModel.id": "model_id", "ModelVersion.id": "model_version_id",
           "ModelArtifact.id": "model_artifact_id"}
CAMEL = "customProperties"  # the Model Registry UI's spelling of custom_properties

# the fields the spec names, plus the few other plain-string fields both API generations accept
ENTITY_FIELDS: dict[str, frozenset[str]] = {
    "RegisteredModel": frozenset({"name", "description", "owner", "custom_properties", "readme", "license",
                                  "license_link", "provider", "library_name", "language", "tasks", "maturity"}),
    "ModelVersion": frozenset({"name", "description", "author", "custom_properties"}),
    "ModelArtifact": frozenset({"name", "description", "model_format_name", "model_format_version", "storage_key",
                                "storage_path", "service_account_name", "model_source_kind", "model_source_class",
                                "model_source_group", "model_source_id", "model_source_name", "custom_properties"}),
}
INTENT_ENTITIES: dict[str, tuple[str, ...]] = {
    "create_model": ("RegisteredModel", "ModelVersion", "ModelArtifact"),
    "create_version": ("ModelVersion", "ModelArtifact"),
    "update_artifact": ("ModelArtifact",),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "create_model": ("RegisteredModel.name", "ModelVersion.name"),
    "create_version": ("ModelVersion.name",),
    "update_artifact": (),
}
NOT_ALLOWED: dict[str, tuple[str, ...]] = {"update_artifact": ("ModelArtifact.name",)}


@dataclass(frozen=True)
class EntityMetadata:
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # e.g. {"name": "my-model"}
    custom_properties: Mapping[str, PropertyValue] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


@dataclass(frozen=True)
class Metadata:
    registered_model: EntityMetadata = field(default_factory=EntityMetadata)
    model_version: EntityMetadata = field(default_factory=EntityMetadata)
    model_artifact: EntityMetadata = field(default_factory=EntityMetadata)



def parse_metadata_dir(path: str | Path | None, kind: str) -> Metadata:
    """Read and validate the metadata dir for an intent; raises ConfigError listing every problem found."""
    if kind not in INTENT_ENTITIES:
        raise ConfigError(f"unknown upload intent {kind!r} (one of {', '.join(INTENT_ENTITIES)})")
    if path is None:
        values: dict[str, str] = {}
    else:
        values = read_metadata_dir(Path(path))
    return parse_metadata(values, kind, source=str(path) if path else "metadata")


def ids_in(path: str | Path | None) -> dict[str, tuple[str, str]]:
    """The ids a metadata dir names: {setting name: (id, key)}, e.g. {"model_artifact_id": ("7", "ModelArtifact.id")};
    {} without a dir. Read apart from the intent's own keys so that validation can use them."""
    if path is None or not Path(path).is_dir():
        return {}
    found = {}
    for key, setting in ID_KEYS.items():
        try:
            value = (Path(path) / key).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            found[setting] = (value, key)
    return found


def read_metadata_dir(path: Path) -> dict[str, str]:
    """{key: text} for each regular file (or symlink to one) in the dir, skipping Kubernetes' ``..`` entries."""
    if not path.is_dir():
        raise ConfigError(f"metadata dir {path}: not a directory")
    values = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".."):
            continue
        if not entry.is_file():
            raise ConfigError(f"metadata dir {path}: {entry.name} is not a file")
        try:
            values[entry.name] = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"metadata dir {path}: cannot read {entry.name}: {err}") from None
    return values


def parse_metadata(values: Mapping[str, str], kind: str, source: str = "metadata") -> Metadata:
    """Validate {key: text} for an intent: unknown keys, required keys, custom properties JSON."""
    allowed = {f"{entity}.{name}" for entity in INTENT_ENTITIES[kind] for name in ENTITY_FIELDS[entity]}
    allowed |= {f"{entity}.{CAMEL}" for entity in INTENT_ENTITIES[kind]}
    allowed -= set(NOT_ALLOWED.get(kind, ()))
    problems = []
    # upstream ignores keys it does not use; so do we, but say so (the ids are read by ids_in)
    for key in sorted(set(values) - allowed - set(ID_KEYS)):
        near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.8)
        hint = f"; did you mean {near[0]}?" if near else f" (this intent reads: {', '.join(sorted(allowed))})"
        log.warning("%s: %s is not used by intent %s and is ignored%s", source, key, kind, hint)
    stripped = {key: text.strip() for key, text in values.items() if key in allowed}
    missing = [key for key in REQUIRED[kind] if not stripped.get(key)]
    if missing:
        problems.append(f"{source}: intent {kind} needs {', '.join(missing)}")
    entities = {}
    for entity in ENTITY_FIELDS:
        entity_metadata, entity_problems = _parse_entity(entity, stripped, source)
        entities[entity] = entity_metadata
        problems.extend(entity_problems)
    if problems:
        raise ConfigError(problems)
    return Metadata(entities["RegisteredModel"], entities["ModelVersion"], entities["ModelArtifact"])


def _parse_entity(entity: str, values: Mapping[str, str], source: str) -> tuple[EntityMetadata, list[str]]:
    fields = {}
    props: dict[str, PropertyValue] = {}
    problems: list[str] = []
    for name in ENTITY_FIELDS[entity]:
        key = f"{entity}.{name}"
        if key in values and name != "custom_properties":
            fields[name] = values[key]
    for key in (f"{entity}.custom_properties", f"{entity}.{CAMEL}"):
        if key not in values:
            continue
        more, found = parse_custom_properties(values[key], f"{source}: {key}")
        problems += found
        for name, value in more.items():
            if name in props and props[name] != value:
                problems.append(f"{source}: {entity}.custom_properties and {entity}.{CAMEL} give property "
                                f"{name!r} two values; keep one")
            props[name] = value
    return EntityMetadata(MappingProxyType(fields), MappingProxyType(props)), problems


def parse_custom_properties(text: str, where: str) -> tuple[dict[str, PropertyValue], list[str]]:
    """JSON object text -> ({name: typed value}, problems)."""
    if not text.strip():
        return {}, []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, [f"{where}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"]
    if not isinstance(doc, dict):
        return {}, [f"{where}: must be a JSON object of name: value, not {type(doc).__name__}"]
    props, problems = {}, []
    for name, value in doc.items():
        converted, problem = property_value(name, value)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            props[name] = converted
    return props, problems


def property_value(name: str, value: object) -> tuple[PropertyValue, str | None]:
    """One JSON value -> (typed value, None) or (_, problem)."""
    if not name:
        return "", "empty property name"
    if name.startswith(RESERVED_PREFIX):
        return "", f"property {name!r}: names starting with {RESERVED_PREFIX!r} are reserved for modelsync"
    if isinstance(value, dict) and "metadataType" in value:
        return typed_value(name, value)
    return plain_value(name, value)


def plain_value(name: str, value: object) -> tuple[PropertyValue, str | None]:
    """A plain JSON value, typed by its JSON type."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return value, None
    if isinstance(value, int):
        if not INT32_MIN <= value <= INT32_MAX:
            return "", (f"property {name!r}: integer {value} does not fit in int32, which the Model Registry "
                        f"stores; write it as a string (\"{value}\") or a float ({value}.0)")
        return value, None
    if isinstance(value, float):
        if not math.isfinite(value):
            return "", f"property {name!r}: {value} is not a finite number"
        return value, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True), None
    return "", f"property {name!r}: null is not a value (remove the key)"


_TYPED = {"MetadataStringValue": "string_value", "MetadataIntValue": "int_value", "MetadataDoubleValue": "double_value",
          "MetadataBoolValue": "bool_value", "MetadataStructValue": "struct_value"}


def typed_value(name: str, value: Mapping[str, object]) -> tuple[PropertyValue, str | None]:
    """The Model Registry's own typed form, stored with exactly its type."""
    kind = value.get("metadataType")
    field_name = _TYPED.get(kind) if isinstance(kind, str) else None
    if field_name is None:
        return "", (f"property {name!r}: metadataType {kind!r} is not one modelsync stores (one of "
                    f"{', '.join(_TYPED)})")
    if field_name not in value:
        return "", f"property {name!r}: a {kind} needs its {field_name!r}"
    raw = value[field_name]
    if kind == "MetadataStringValue" and isinstance(raw, str):
        return raw, None
    if kind == "MetadataBoolValue" and isinstance(raw, bool):
        return raw, None
    if kind == "MetadataIntValue" and not isinstance(raw, bool) and isinstance(raw, (int, str)):
        try:
            number = int(raw)
        except ValueError:
            number = None
        if number is not None:
            return plain_value(name, number)
    if kind == "MetadataDoubleValue" and not isinstance(raw, bool) and isinstance(raw, (int, float, str)):
        try:
            return plain_value(name, float(raw))
        except ValueError:
            pass
    if kind == "MetadataStructValue":
        doc = _struct_doc(raw)
        if isinstance(doc, dict):
            return Struct(json.dumps(doc, separators=(",", ":"), sort_keys=True)), None
    return "", f"property {name!r}: {field_name} {json.dumps(raw)[:60]} is not a valid {kind}"


def _struct_doc(raw: object) -> object:
    """A struct_value as a JSON object: given as one, as its JSON text, or as base64 of that text (the API's form)."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return None
    for text in (raw, _b64(raw)):
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            continue
    return None


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        return None
