"""The metadata dir (a mounted ConfigMap): keys per intent, custom property types, every problem named.

Pure parsing, no server. The same failures against the real server (nothing written) are in test_registry.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsync.errors import ConfigError
from modelsync.metadata import parse_custom_properties, parse_metadata, parse_metadata_dir

from ..support.configmap import write_configmap

SPEC_EXAMPLE = {
    "RegisteredModel.name": "my-model",
    "RegisteredModel.description": "Model description",
    "RegisteredModel.owner": "data-science-team",
    "RegisteredModel.custom_properties": '{"project": "sentiment-analysis", "team": "nlp"}\n',
    "ModelVersion.name": "1.0.0",
    "ModelVersion.description": "Initial release",
    "ModelVersion.author": "Jane Doe",
    "ModelVersion.custom_properties": '{"accuracy": 0.95, "f1_score": 0.93}\n',
    "ModelArtifact.name": "sentiment-analyzer",
    "ModelArtifact.model_format_name": "tensorflow",
    "ModelArtifact.model_format_version": "2.8",
    "ModelArtifact.storage_key": "s3-connection",
    "ModelArtifact.custom_properties": '{"model_size_mb": 438, "inference_time_ms": 120}\n',
}


def test_spec_example_mounted_like_kubelet(tmp_path: Path) -> None:
    meta = parse_metadata_dir(write_configmap(tmp_path / "cm", SPEC_EXAMPLE), "create_model")
    assert meta.registered_model.get("name") == "my-model"
    assert dict(meta.registered_model.custom_properties) == {"project": "sentiment-analysis", "team": "nlp"}
    assert dict(meta.model_version.custom_properties) == {"accuracy": 0.95, "f1_score": 0.93}
    assert meta.model_artifact.get("model_format_version") == "2.8"
    assert dict(meta.model_artifact.custom_properties) == {"model_size_mb": 438, "inference_time_ms": 120}


def test_value_types() -> None:
    props, problems = parse_custom_properties(
        '{"s": "x", "i": -2147483648, "j": 2147483647, "f": 1.5, "b": true, "n": {"a": [1, 2]}, "l": [1]}', "k")
    assert problems == []
    assert props == {"s": "x", "i": -2147483648, "j": 2147483647, "f": 1.5, "b": True, "n": '{"a":[1,2]}',
                     "l": "[1]"}
    assert type(props["b"]) is bool and type(props["i"]) is int


@pytest.mark.parametrize("text,expected", [
    ('{"big": 2147483648}', "does not fit in int32"),
    ('{"small": -2147483649}', "does not fit in int32"),
    ('{"x": null}', "null is not a value"),
    ('{"x": NaN}', "not a finite number"),
    ('{"modelsync.job": "x"}', "reserved"),
    ('[1, 2]', "must be a JSON object"),
    ('{"a": 1,}', "not valid JSON"),
])
def test_bad_custom_properties(text: str, expected: str) -> None:
    _, problems = parse_custom_properties(text, "ModelVersion.custom_properties")
    assert len(problems) == 1 and expected in problems[0] and "ModelVersion.custom_properties" in problems[0]


def test_int_overflow_message_says_what_to_do() -> None:
    _, problems = parse_custom_properties('{"params": 7000000000}', "k")
    assert '"7000000000"' in problems[0] and "7000000000.0" in problems[0]


def test_unknown_keys_are_ignored_with_a_warning_naming_them(tmp_path: Path, caplog) -> None:
    """Upstream ignores keys it does not use, and ConfigMaps shared with it carry some: a warning, not an error."""
    values = {**SPEC_EXAMPLE, "ModelVersion.nmae": "typo", "Other.key": "x"}
    meta = parse_metadata_dir(write_configmap(tmp_path / "cm", values), "create_model")
    assert meta.model_version.get("name") == SPEC_EXAMPLE["ModelVersion.name"]
    assert "ModelVersion.nmae is not used" in caplog.text and "did you mean ModelVersion.name?" in caplog.text
    assert "Other.key is not used" in caplog.text


def test_keys_of_other_entities_are_ignored_for_the_intent(caplog) -> None:
    meta = parse_metadata({"RegisteredModel.name": "m", "ModelVersion.name": "v"}, "create_version")
    assert not meta.registered_model.fields
    assert "RegisteredModel.name is not used by intent create_version" in caplog.text
    meta = parse_metadata({"ModelArtifact.name": "a"}, "update_artifact")
    assert not meta.model_artifact.fields and "ModelArtifact.name is not used by intent update_artifact" in caplog.text


@pytest.mark.parametrize("kind,values,missing", [
    ("create_model", {"ModelVersion.name": "v"}, "RegisteredModel.name"),
    ("create_model", {"RegisteredModel.name": "m", "ModelVersion.name": "  \n"}, "ModelVersion.name"),
    ("create_version", {}, "ModelVersion.name"),
])
def test_missing_required_keys(kind: str, values: dict, missing: str) -> None:
    with pytest.raises(ConfigError, match=f"needs {missing}"):
        parse_metadata(values, kind)


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_metadata({"ModelVersion.custom_properties": "{", "ModelArtifact.custom_properties": '{"x": 9999999999}',
                        "Bogus": "1"}, "create_version")
    assert len(err.value.problems) == 3  # missing name, bad JSON, int overflow (an unknown key is only warned about)


def test_update_artifact_needs_no_metadata() -> None:
    meta = parse_metadata_dir(None, "update_artifact")
    assert not meta.model_artifact.fields and not meta.model_artifact.custom_properties


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        parse_metadata_dir(tmp_path / "absent", "create_model")
