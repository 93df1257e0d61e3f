"""Credentials files as Kubernetes mounts them: Secret dirs and .dockerconfigjson."""

from __future__ import annotations

import base64
import json

import pytest

from modelsync import credentials
from modelsync.errors import ConfigError


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_secret_dir_strips_newlines_and_skips_kubernetes_dot_entries(tmp_path):
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("AKIA123\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("  s3cr3t/with+chars \r\n")
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("x")
    assert credentials.read_secret_dir(str(tmp_path), "--x") == {
        "AWS_ACCESS_KEY_ID": "AKIA123", "AWS_SECRET_ACCESS_KEY": "s3cr3t/with+chars"}


def test_missing_secret_dir_names_the_setting_and_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        credentials.read_secret_dir(str(tmp_path / "nope"), "--source-s3-credentials-path")
    assert str(err.value).startswith(f"--source-s3-credentials-path: '{tmp_path / 'nope'}' is not a directory")


def test_dockerconfig_base64_auth_with_colon_in_password(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"auths": {"https://reg.example:5000/v1/": {"auth": _auth("bob", "pa:ss:word")}}}))
    assert credentials.read_docker_auth(str(f), "reg.example:5000", "--x") == {
        "username": "bob", "password": "pa:ss:word"}


def test_dockerconfig_username_password_fields_and_dir_mount(tmp_path):
    (tmp_path / ".dockerconfigjson").write_text(json.dumps(
        {"auths": {"quay.io": {"username": "robot", "password": "tok"}}}))
    assert credentials.read_docker_auth(str(tmp_path), "quay.io", "--x") == {"username": "robot", "password": "tok"}


def test_dockerconfig_docker_hub_spellings_match(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": _auth("u", "p")}}}))
    assert credentials.read_docker_auth(str(f), "docker.io", "--x")["username"] == "u"


def test_dockerconfig_without_entry_for_registry_gives_nothing(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"auths": {"other.example": {"auth": _auth("u", "p")}}}))
    assert credentials.read_docker_auth(str(f), "reg.example", "--x") == {}


def test_malformed_dockerconfig_is_one_line_naming_the_file(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text('{"auths": {')
    with pytest.raises(ConfigError) as err:
        credentials.read_docker_auth(str(f), "reg.example", "--destination-oci-credentials-path")
    assert "\n" not in str(err.value) and str(f) in str(err.value) and "not valid JSON" in str(err.value)


def test_bad_base64_is_reported_without_echoing_it(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"auths": {"reg.example": {"auth": "not*base64*secretish"}}}))
    with pytest.raises(ConfigError) as err:
        credentials.read_docker_auth(str(f), "reg.example", "--x")
    assert "secretish" not in str(err.value) and "not base64" in str(err.value)


def test_missing_dockerconfig_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        credentials.read_docker_auth(str(tmp_path / "none.json"), "reg.example", "--x")
