"""Model Registry intents against the real server (v0.3.0 on MariaDB, from the local stack), no mocks.

Every registry test runs twice (fixture ``backend``): directly against the server, which speaks only v1alpha3,
and through e2e.mrproxy in ``v1_only`` mode, which serves only /v1/ (404 to /v1alpha3/), so both API generations
are exercised end to end. The server's state is checked with plain HTTP (``Inspect``), independently of the
code under test. A crash is simulated by stopping after one of begin()'s writes (calling the same private step
begin() calls) and starting over with a new connection, as a restarted Job does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from e2e.mrproxy import start_proxy
from modelsync.clients.mr_api import RetryPolicy
from modelsync.errors import ConfigError, RegistryError
from modelsync.locations import FileEntry, Published
from modelsync.metadata import parse_metadata, parse_metadata_dir
from modelsync.registry import Intent, RegistrySettings, connect
from modelsync.secret import Secret

from ..support.configmap import write_configmap
from ..support.model_registry import Inspect
from ..support.registry_servers import Flaky, NotFoundEverywhere

FAST = RetryPolicy(attempts=2, first_delay=0.05, timeout=10.0)
PUBLISHED = Published("oci://127.0.0.1:5000/models/m@sha256:" + "a" * 64, "sha256:" + "a" * 64,
                      (FileEntry("model.onnx", 1234, "b" * 64), FileEntry("config.json", 10, "c" * 64)))


@pytest.fixture(scope="module")
def v1_only_url(stack) -> Iterator[str]:
    """One v1-only proxy for the module (stopping one takes half a second: once, not per test)."""
    proxy = start_proxy(stack.mr_url, v1_only=True)
    yield proxy.url
    proxy.stop()


@pytest.fixture(params=["v1alpha3", "v1"])
def backend(request, stack, v1_only_url) -> dict:
    """{'url': where modelsync connects, 'api': the generation it must pick, 'proxy': options for more proxies}."""
    if request.param == "v1alpha3":
        return {"url": stack.mr_url, "api": "v1alpha3", "proxy": {}}
    return {"url": v1_only_url, "api": "v1", "proxy": {"v1_only": True}}


@pytest.fixture
def inspect(stack) -> Inspect:
    return Inspect(stack.mr_url)


@pytest.fixture
def settings(backend) -> RegistrySettings:
    return RegistrySettings(server_address=backend["url"], port=443, is_secure=True, author="tester")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_model_intent(model: str, version: str = "1.0.0", **extra: str) -> Intent:
    values = {"RegisteredModel.name": model, "RegisteredModel.custom_properties": '{"team": "nlp"}',
              "ModelVersion.name": version,
              "ModelVersion.custom_properties": '{"accuracy": 0.95, "epochs": 12, "ok": true, "cfg": {"lr": 1}}',
              "ModelArtifact.model_format_name": "onnx", **extra}
    return Intent("create_model", None, None, None, parse_metadata(values, "create_model"), job_key="s3://b/k")


def run(settings: RegistrySettings, intent: Intent, published: Published = PUBLISHED, retry: RetryPolicy = FAST):
    with connect(settings, retry=retry) as registry:
        claim = registry.begin(registry.preflight(intent))
        registry.complete(claim, published)
        return claim


# ---------------------------------------------------------------- the three intents


def test_create_model(settings, backend, inspect) -> None:
    name = unique("m")
    with connect(settings, retry=FAST) as registry:
        assert registry.api_version == backend["api"]
        plan = registry.preflight(create_model_intent(name))
        assert [s.action for s in (plan.model, plan.version, plan.artifact)] == ["create"] * 3
        claim = registry.begin(plan)
        assert inspect.req("GET", f"/model_artifacts/{claim.artifact_id}")["state"] == "PENDING"
        registry.complete(claim, PUBLISHED)
    artifact = inspect.one_live_set(name, "1.0.0")
    assert artifact["uri"] == PUBLISHED.uri and artifact["name"] == name and artifact["modelFormatName"] == "onnx"
    props = artifact["customProperties"]
    assert props["modelsync.digest"]["string_value"] == PUBLISHED.digest
    assert props["modelsync.files"] == {"metadataType": "MetadataIntValue", "int_value": "2"}
    assert props["modelsync.size_bytes"]["string_value"] == "1244"
    version = inspect.req("GET", f"/model_versions/{claim.version_id}")
    assert version["author"] == "tester"
    vprops = version["customProperties"]
    assert vprops["accuracy"] == {"metadataType": "MetadataDoubleValue", "double_value": 0.95}
    assert vprops["epochs"] == {"metadataType": "MetadataIntValue", "int_value": "12"}
    assert vprops["ok"] == {"metadataType": "MetadataBoolValue", "bool_value": True}
    assert json.loads(vprops["cfg"]["string_value"]) == {"lr": 1}


def test_create_version(settings, inspect) -> None:
    model = inspect.req("POST", "/registered_models", {"name": unique("existing")})
    meta = parse_metadata({"ModelVersion.name": "2.0", "ModelArtifact.name": "weights"}, "create_version")
    run(settings, Intent("create_version", model["id"], None, None, meta))
    artifact = inspect.one_live_set(model["name"], "2.0")
    assert artifact["name"] == "weights"


def test_update_artifact_keeps_other_properties(settings, inspect) -> None:
    model = inspect.req("POST", "/registered_models", {"name": unique("upd")})
    version = inspect.req("POST", "/model_versions", {"name": "v1", "registeredModelId": model["id"]})
    artifact = inspect.req("POST", f"/model_versions/{version['id']}/artifacts", {
        "artifactType": "model-artifact", "name": "a", "uri": "s3://old/place", "customProperties": {
            "owner": {"metadataType": "MetadataStringValue", "string_value": "ds-team"},
            "cfg": {"metadataType": "MetadataStructValue", "struct_value": "eyJhIjogMX0="}}})
    meta = parse_metadata({"ModelArtifact.custom_properties": '{"run": 7}',
                           "ModelArtifact.model_format_name": "pytorch"}, "update_artifact")
    with connect(settings, retry=FAST) as registry:
        claim = registry.begin(registry.preflight(Intent("update_artifact", None, None, artifact["id"], meta)))
        assert inspect.req("GET", f"/model_artifacts/{artifact['id']}")["state"] == "PENDING"
        registry.complete(claim, PUBLISHED)
    after = inspect.req("GET", f"/model_artifacts/{artifact['id']}")
    assert after["state"] == "LIVE" and after["uri"] == PUBLISHED.uri and after["modelFormatName"] == "pytorch"
    props = after["customProperties"]
    assert props["owner"]["string_value"] == "ds-team" and "cfg" in props  # merged, not replaced
    assert props["run"]["int_value"] == "7" and "modelsync.digest" in props


# ---------------------------------------------------------------- failure marking


def test_failure_marks_abandoned_with_masked_error(settings, inspect, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    name, leaked = unique("fail"), Secret(unique("s3-secret-key"))
    with connect(settings, retry=FAST) as registry:
        claim = registry.begin(registry.preflight(create_model_intent(name)))
        registry.abandon(claim, f"upload failed: checksum mismatch (key {leaked.reveal()})")
    artifact = inspect.req("GET", f"/model_artifacts/{claim.artifact_id}")
    assert artifact["state"] == "ABANDONED" and "uri" not in artifact
    error = artifact["customProperties"]["modelsync.error"]["string_value"]
    assert "checksum mismatch" in error and leaked.reveal() not in error and "***" in error
    assert leaked.reveal() not in caplog.text


# ---------------------------------------------------------------- re-runs after a crash


CRASH_POINTS = ["after_preflight", "after_model", "after_version", "after_begin", "after_abandon",
                "after_complete", "lost_create_answer"]


@pytest.mark.parametrize("crash", CRASH_POINTS)
def test_rerun_after_crash_ends_with_one_live_set(settings, inspect, crash: str) -> None:
    name = unique(f"rerun-{crash.replace('_', '')}")
    intent = create_model_intent(name)
    with connect(settings, retry=FAST) as first:  # the attempt that dies
        plan = first.preflight(intent)
        if crash in ("after_model", "after_version", "lost_create_answer"):
            model_id = first._ensure_model(plan)
            if crash == "after_version":
                first._ensure_version(plan, model_id)
        elif crash != "after_preflight":
            claim = first.begin(plan)
            if crash == "after_abandon":
                first.abandon(claim, "killed")
            elif crash == "after_complete":
                first.complete(claim, PUBLISHED)
    if crash == "lost_create_answer":
        # the model was created but its answer never arrived: the retried create hits 409 and must adopt it
        with connect(settings, retry=FAST) as second:
            second.complete(second.begin(plan), PUBLISHED)
    else:
        run(settings, intent)
    artifact = inspect.one_live_set(name, "1.0.0")
    assert "modelsync.error" not in artifact["customProperties"]


def test_create_version_rerun_after_crash(settings, inspect) -> None:
    model = inspect.req("POST", "/registered_models", {"name": unique("cv-rerun")})
    intent = Intent("create_version", model["id"], None, None,
                    parse_metadata({"ModelVersion.name": "3"}, "create_version"))
    with connect(settings, retry=FAST) as first:
        first.begin(first.preflight(intent))
    run(settings, intent)
    inspect.one_live_set(model["name"], "3")


# ---------------------------------------------------------------- validation: fails before any write


def test_name_taken_by_someone_else(settings, inspect) -> None:
    name = unique("taken")
    inspect.req("POST", "/registered_models", {"name": name})  # not made by modelsync
    with connect(settings, retry=FAST) as registry, pytest.raises(RegistryError, match="name .* is taken"):
        registry.preflight(create_model_intent(name))


def test_name_taken_by_another_modelsync_job(settings, inspect) -> None:
    """Another job: same names, another source. Its entities stay refused."""
    name = unique("other-job")
    run(settings, create_model_intent(name))
    other = dataclasses.replace(create_model_intent(name), job_key="s3://another-bucket/k")
    with connect(settings, retry=FAST) as registry, pytest.raises(RegistryError, match="RegisteredModel name"):
        registry.preflight(other)
    inspect.one_live_set(name, "1.0.0")


def test_a_new_publish_drops_the_facts_of_the_previous_one(settings, inspect) -> None:
    """Issue 10.6: update_artifact to a volume after an OCI publish must not keep the image's digest."""
    name = unique("stale")
    run(settings, create_model_intent(name))
    art = inspect.one_live_set(name, "1.0.0")
    assert art["customProperties"]["modelsync.digest"]["string_value"] == PUBLISHED.digest
    inspect.req("PATCH", f"/model_artifacts/{art['id']}", {"customProperties": {
        **art["customProperties"], "modelsync.error": {"string_value": "old", "metadataType": "MetadataStringValue"},
        "team.note": {"string_value": "kept", "metadataType": "MetadataStringValue"}}})
    to_volume = Published("file:///mnt/models/m", None, (FileEntry("model.onnx", 1234, "b" * 64),))
    run(settings, Intent("update_artifact", None, None, art["id"], None, job_key="pvc -> file:///mnt"), to_volume)
    props = inspect.req("GET", f"/model_artifacts/{art['id']}")["customProperties"]
    assert "modelsync.digest" not in props and "modelsync.error" not in props
    assert props["modelsync.files"]["int_value"] == "1" and props["team.note"]["string_value"] == "kept"


def test_corrected_metadata_rerun_resumes_and_applies_the_fix(settings, inspect) -> None:
    """Issue 10.8: a create_model that failed, re-run with a description and a property corrected in the
    ConfigMap, resumes its own entities (no "name is taken") and the entities then carry the corrected values."""
    name = unique("fixed")
    first = create_model_intent(name, **{"ModelVersion.description": "typo: modle"})
    with connect(settings, retry=FAST) as registry:
        registry.abandon(registry.begin(registry.preflight(first)), "push failed")
    fixed = create_model_intent(name, **{"ModelVersion.description": "model",
                                         "RegisteredModel.custom_properties": '{"team": "vision"}'})
    with connect(settings, retry=FAST) as registry:
        plan = registry.preflight(fixed)
        assert [s.action for s in (plan.model, plan.version, plan.artifact)] == ["resume"] * 3
        registry.complete(registry.begin(plan), PUBLISHED)
    inspect.one_live_set(name, "1.0.0")
    model = inspect.req("GET", f"/registered_model?name={name}")
    version = inspect.req("GET", f"/model_version?name=1.0.0&parentResourceId={model['id']}")
    assert version["description"] == "model"
    assert model["customProperties"]["team"]["string_value"] == "vision"


def test_version_name_taken_under_model(settings, inspect) -> None:
    model = inspect.req("POST", "/registered_models", {"name": unique("vtaken")})
    inspect.req("POST", "/model_versions", {"name": "1", "registeredModelId": model["id"]})
    intent = Intent("create_version", model["id"], None, None, parse_metadata({"ModelVersion.name": "1"},
                                                                              "create_version"))
    with connect(settings, retry=FAST) as registry, pytest.raises(RegistryError, match="ModelVersion name '1'"):
        registry.preflight(intent)


@pytest.mark.parametrize("kind,model_id,artifact_id,expected", [
    ("create_version", "999999999", None, "RegisteredModel id 999999999 not found"),
    ("create_version", "not-a-number", None, "RegisteredModel id not-a-number not found"),
    ("update_artifact", None, "999999999", "ModelArtifact id 999999999 not found"),
])
def test_unknown_ids(settings, kind, model_id, artifact_id, expected) -> None:
    meta = parse_metadata({"ModelVersion.name": "1"} if kind == "create_version" else {}, kind)
    with connect(settings, retry=FAST) as registry, pytest.raises(RegistryError, match=expected):
        registry.preflight(Intent(kind, model_id, None, artifact_id, meta))


def test_artifact_id_of_a_non_model_artifact(settings, inspect) -> None:
    model = inspect.req("POST", "/registered_models", {"name": unique("doc")})
    version = inspect.req("POST", "/model_versions", {"name": "v", "registeredModelId": model["id"]})
    doc = inspect.req("POST", f"/model_versions/{version['id']}/artifacts", {"artifactType": "doc-artifact"})
    with connect(settings, retry=FAST) as registry, pytest.raises(RegistryError, match="not found"):
        registry.preflight(Intent("update_artifact", None, None, doc["id"], None))


@pytest.mark.parametrize("bad", [
    {"ModelVersion.custom_properties": "{not json"},
    {"ModelVersion.custom_properties": '{"n": 2147483648}'},
    {"ModelVersion.name": ""},
    {"ModelArtifact.custom_properties": '{"modelsync.job": "forged"}'},
])
def test_bad_metadata_writes_nothing(settings, inspect, tmp_path, bad) -> None:
    name = unique("badmeta")
    values = {"RegisteredModel.name": name, "ModelVersion.name": "1", **bad}
    with connect(settings, retry=FAST), pytest.raises(ConfigError):
        parse_metadata_dir(write_configmap(tmp_path / "cm", values), "create_model")
    with pytest.raises(urllib.error.HTTPError):
        inspect.model_by_name(name)


def test_unreachable_server(backend, mr_proxy_factory) -> None:
    proxy = mr_proxy_factory(**backend["proxy"])
    proxy.stop()  # nothing listens there any more
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"connection to the Model Registry at {proxy.url} failed"):
        connect(RegistrySettings(proxy.url), retry=FAST)
    assert time.monotonic() - started < 5


def test_token_checked_and_never_shown(stack, backend, mr_proxy_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = mr_proxy_factory(token=stack.mr_token, **backend["proxy"])
    wrong = Secret(unique("wrong-token"))
    for token in (wrong, None):
        with pytest.raises(RegistryError, match="rejected") as err:
            connect(RegistrySettings(proxy.url, user_token=token), retry=FAST)
        assert "401" in str(err.value) and wrong.reveal() not in str(err.value)
    good = Secret(stack.mr_token)
    with connect(RegistrySettings(proxy.url, user_token=good), retry=FAST) as registry:
        assert registry.api_version == backend["api"]
    assert stack.mr_token not in caplog.text and wrong.reveal() not in caplog.text


def test_transient_errors_are_retried(backend, inspect, caplog) -> None:
    handler = type("Flaky", (Flaky,), {"upstream": backend["url"]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.INFO, logger="modelsync.registry")
    name = unique("flaky")
    try:
        run(RegistrySettings(f"http://127.0.0.1:{server.server_address[1]}"), create_model_intent(name),
            retry=RetryPolicy(attempts=4, first_delay=0.05))
    finally:
        server.shutdown()
        server.server_close()
    inspect.one_live_set(name, "1.0.0")  # the lost create answer was adopted, not duplicated
    retries = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) == 3, retries
    assert "probe" in retries[0] and "503" in retries[1] and "create RegisteredModel" in retries[2]


# ---------------------------------------------------------------- API generations


def test_forced_api_version(stack, v1_only_url) -> None:
    v1_only = v1_only_url
    for url, forced, ok in [(stack.mr_url, "v1alpha3", True), (v1_only, "v1", True),
                            (stack.mr_url, "v1", False), (v1_only, "v1alpha3", False)]:
        settings = RegistrySettings(url, api_version=forced)
        if ok:
            with connect(settings, retry=FAST) as registry:
                assert registry.api_version == forced
                run(settings, create_model_intent(unique(f"forced-{forced}")))
        else:
            with pytest.raises(RegistryError, match=f"/api/model_registry/{forced}/registered_models answered 404"):
                connect(settings, retry=FAST)


def test_server_answering_neither() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFoundEverywhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(RegistryError) as err:
            connect(RegistrySettings(url), retry=FAST)
    finally:
        server.shutdown()
        server.server_close()
    message = str(err.value)
    assert url in message and "/api/model_registry/v1/" in message and "/api/model_registry/v1alpha3/" in message
    assert "\n" not in message


def test_deprecation_warned_once(mr_proxy_factory, caplog) -> None:
    sunset = "Sat, 01 Aug 2026 00:00:00 GMT"
    proxy = mr_proxy_factory(deprecation_sunset=sunset)
    caplog.set_level(logging.INFO, logger="modelsync.registry")
    run(RegistrySettings(proxy.url), create_model_intent(unique("deprecated")))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and sunset in warnings[0].getMessage()
