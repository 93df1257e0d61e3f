"""The termination message (modelsync/termination.py) of a whole job on the stack: upstream's JSON shape with the
ids on success (the rest: tests/unit/test_termination.py)."""

from __future__ import annotations

import json

import pytest

from ..support.cli import run_cli
from ..support.jobs import pvc_job
from ..support.model_registry import the_artifact


@pytest.mark.stack
def test_success_message_has_upstreams_shape_and_the_ids(stack, tmp_path, model):
    model_dir, _ = model
    env = pvc_job(stack, tmp_path, model_dir, tmp_path / "out")
    message = tmp_path / "termination-log"
    result = run_cli({**env, "TERMINATION_MESSAGE_PATH": str(message)}, tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(message.read_text())
    art = the_artifact(stack, (tmp_path / "metadata" / "RegisteredModel.name").read_text())
    assert doc["intent"] == "create_model" and doc["ModelArtifact"] == {"id": art["id"]}
    assert doc["RegisteredModel"]["id"].isdigit() and doc["ModelVersion"]["id"].isdigit()
    assert doc["uri"] == art["uri"] and "digest" not in doc  # a volume has no single digest
