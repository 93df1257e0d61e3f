"""The termination message (modelsync/termination.py): upstream's JSON shape with the ids on success, one line on
failure, at $TERMINATION_MESSAGE_PATH, never over the kubelet's 4096 bytes."""

from __future__ import annotations

import json

from modelsync import termination

from ..support.cli import run_cli


def test_failure_message_is_one_masked_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    from modelsync.secret import Secret
    Secret("hunter2-very-secret")
    text = termination.failure(1, "cannot reach\nregistry with hunter2-very-secret")
    assert (tmp_path / "msg").read_text() == text
    assert text == "modelsync failed (exit 1): cannot reach registry with ***"


def test_messages_never_pass_4096_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    termination.failure(1, "é" * 5000)
    assert len((tmp_path / "msg").read_bytes()) <= 4096
    termination.success("update_artifact", None, None, "7", "s3://b/" + "k" * 5000, None)
    assert json.loads((tmp_path / "msg").read_text()) == {"intent": "update_artifact", "ModelArtifact": {"id": "7"}}


def test_a_config_error_writes_its_reason(tmp_path):
    result = run_cli({"TERMINATION_MESSAGE_PATH": str(tmp_path / "msg"), "MODEL_SYNC_SOURCE_TYPE": "ftp"}, tmp_path)
    assert result.returncode == 2
    text = (tmp_path / "msg").read_text()
    assert text.startswith("modelsync failed (exit 2): ") and "MODEL_SYNC_SOURCE_TYPE" in text and "\n" not in text


def test_nothing_is_written_outside_kubernetes(tmp_path, monkeypatch):
    monkeypatch.delenv("TERMINATION_MESSAGE_PATH", raising=False)
    monkeypatch.setattr(termination, "DEFAULT", tmp_path / "dev-termination-log")
    termination.failure(1, "x")
    assert not (tmp_path / "dev-termination-log").exists()
