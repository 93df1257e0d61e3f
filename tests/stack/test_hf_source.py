"""hf://org/model[@revision] sources (source type "uri", as upstream's async-upload job takes them).

No public Hugging Face Hub is reachable here, so the Hub is tests/hub_server.py: a loopback stand-in that answers
the routes the UNMODIFIED huggingface_hub client calls for model_info and snapshot_download. The client is the
installed package, untouched; the job finds the stand-in through HF_ENDPOINT, as it would find a mirror. One test
lowers the client's download chunk size (a module constant) so that a connection cut in a 3 MiB file is resumed
with a Range request, which the client otherwise does only after 10 MiB.

The job runs end to end on the real local stack (hf:// -> pvc, hf:// -> oci, registered LIVE, bytes compared by
sha256); revision pinning (@rev and :rev), include/exclude patterns, a private repo's token, and the refusals are
checked on the source itself where the registry adds nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest

from modelsync import config, job
from modelsync.errors import ConfigError, ModelSyncError, TransferError
from modelsync.sources import hf
from modelsync.workspace import claim

from ..support.hub_server import Hub, serve_hub
from ..support.jobs import base_env, destination_env, read_back, synced_twice
from ..support.model_registry import mr_get, the_artifact
from ..support.models import digests_of, make_model, write_big

TOKEN = "hf_" + uuid.uuid4().hex  # the private repo's token; must never show up anywhere
BIG = 3 * 1024 * 1024 + 17
V1_FILES = {"config.json": b'{"v": 1}\n', "weights/model.bin": b"v1 weights " * 1000}
# Paths the stand-in serves; anything else the client asked for (a Xet token route, say) fails the e2e test.
ROUTES = ("/api/models/", "/org/")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """org/model (main: the sample model + a 3 MiB LFS file; v1.0: two other files) and org/private (token)."""
    main = tmp_path / "hub" / "model-main"
    expected_main = make_model(main)
    expected_main["big/model.safetensors"] = write_big(main / "big/model.safetensors", BIG)
    v1 = tmp_path / "hub" / "model-v1"
    for rel, data in V1_FILES.items():
        (v1 / rel).parent.mkdir(parents=True, exist_ok=True)
        (v1 / rel).write_bytes(data)
    private = tmp_path / "hub" / "private"
    expected_private = make_model(private)
    stand_in = Hub(token=TOKEN)
    stand_in.add("org/model", {"main": main, "v1.0": v1})
    stand_in.add("org/private", {"main": private}, private=True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    with serve_hub(stand_in):
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        stand_in.expected = {"main": expected_main, "v1.0": {k: hashlib.sha256(v).hexdigest()
                                                             for k, v in V1_FILES.items()},
                             "private": expected_private}
        yield stand_in


def secret_dir(tmp_path: Path, token: str = TOKEN) -> Path:
    d = tmp_path / "uri-secret"
    d.mkdir(exist_ok=True)
    (d / "HF_TOKEN").write_text(token + "\n")
    return d


def load(tmp_path: Path, uri: str, **extra: str) -> config.Config:
    env = {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": uri, "MODEL_SYNC_DESTINATION_TYPE": "pvc",
           "MODEL_SYNC_DESTINATION_PATH": str(tmp_path / "out"), "MODEL_SYNC_MODEL_ARTIFACT_ID": "1",
           "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": "http://127.0.0.1:9", "MODEL_SYNC_STORAGE_PATH":
           str(tmp_path / "storage"), **{f"MODEL_SYNC_{k.upper()}": v for k, v in extra.items()}}
    return config.load([], env)


def fetched(tmp_path: Path, cfg: config.Config) -> dict[str, str]:
    """hf.fetch into a real workspace; the files' sha256 by path (the workspace is then released)."""
    with claim(tmp_path / "storage", ".modelsync-", "hftest", "storage") as ws:
        done = hf.fetch(cfg.source, ws)
        model, files = done.model_dir, done.files
        assert not (model / ".cache").exists()  # the client's bookkeeping is not part of the model
        got = digests_of(model)
        assert got == {f.path: f.sha256 for f in files}
    return got


# ---------------------------------------------------------------------------------------------- parsing, config

@pytest.mark.parametrize("uri,repo_id,revision", [
    ("hf://org/model", "org/model", None),
    ("hf://org/model@v1.0", "org/model", "v1.0"),
    ("hf://org/model:main", "org/model", "main"),
    ("hf://Org-1/my_model.v2@refs/pr/3", "Org-1/my_model.v2", "refs/pr/3"),
    ("  HF://org/model:" + "a" * 40, "org/model", "a" * 40),
])
def test_uri_forms(uri, repo_id, revision):
    ref = hf.parse(uri)
    assert (ref.repo_id, ref.revision, ref.extra) == (repo_id, revision, ())
    assert str(ref) == f"hf://{repo_id}{'@' + revision if revision else ''}"


@pytest.mark.parametrize("uri,says", [
    ("hf://", "no organisation"), ("hf:///model", "no organisation"), ("hf://org", "no model name"),
    ("hf://org/", "no model name"), ("hf://org/model@", "give a revision"), ("hf://org/model:", "give a revision"),
    ("hf://org/model@a..b", "not a valid revision"), ("hf://org/model@ main", "not a valid revision"),
    ("hf://org/model@main/", "not a valid revision"), ("hf://o rg/model", "not a valid organisation"),
    ("hf://org/model?x=1", "not a valid model name"),
])
def test_bad_uris_are_refused_at_config_time_in_one_line(uri, says, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, uri)
    (line,) = err.value.problems
    assert line.startswith("--source-uri / MODEL_SYNC_SOURCE_URI:") and says in line and "\n" not in line


def test_more_path_parts_than_org_model_pass_config_and_fail_preflight(hub, tmp_path):
    """Upstream's own config tests use hf://test/model/4242, which its config accepts and its download refuses."""
    cfg = load(tmp_path, "hf://org/model/extra")
    with pytest.raises(TransferError, match=r"a Hub repository is org/model.*hf://org/model@revision"):
        hf.listing(cfg.source)
    assert hub.requests == []


def test_hf_settings_with_an_http_source_are_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    load(tmp_path, "https://models.example/m.tar", source_hf_include="*.json")
    assert any("MODEL_SYNC_SOURCE_HF_INCLUDE" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


# ---------------------------------------------------------------------------------------- listing and download

def test_nothing_but_the_model_routes_is_asked_for(hub, tmp_path, monkeypatch):
    """huggingface_hub 2.x fetches an "agent harnesses" list from the Hub for its user-agent unless telemetry is
    off; the job turns it off. Reset the client's once-per-process cache of that list to see it not asked for."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent
    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "no-such-cache.json"))
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    assert fetched(tmp_path, load(tmp_path, "hf://org/model")) == hub.expected["main"]
    assert all(path.startswith(ROUTES) for _, path, _ in hub.requests), hub.requests
    assert not (tmp_path / "no-such-cache.json").exists()


def test_listing_gives_every_file_with_its_size(hub, tmp_path):
    listed = hf.listing((load(tmp_path, "hf://org/model")).source)
    main = hub.repos["org/model"].revisions["main"]
    assert listed == {p.relative_to(main).as_posix(): p.stat().st_size for p in main.rglob("*") if p.is_file()}
    assert listed["big/model.safetensors"] == BIG


@pytest.mark.parametrize("sep", ["@", ":"])
def test_revision_pinning(sep, hub, tmp_path):
    assert fetched(tmp_path, load(tmp_path, f"hf://org/model{sep}v1.0")) == hub.expected["v1.0"]
    commit = hub.repos["org/model"].commit("org/model", "v1.0")
    assert fetched(tmp_path, load(tmp_path, f"hf://org/model{sep}{commit}")) == hub.expected["v1.0"]
    # the download is pinned to the commit preflight resolved: every file request names the commit, not "v1.0"
    assert all(f"/resolve/{commit}/" in path for _, path, _ in hub.requests if "/resolve/" in path)


def test_default_revision_is_main_and_bytes_match(hub, tmp_path):
    assert fetched(tmp_path, load(tmp_path, "hf://org/model")) == hub.expected["main"]
    assert not list((tmp_path / "storage").glob(".modelsync-*"))


def test_include_and_exclude_patterns(hub, tmp_path):
    cfg = load(tmp_path, "hf://org/model", source_hf_include=" weights/*, *.json ,",
               source_hf_exclude="*/deeper/*")
    want = {p: d for p, d in hub.expected["main"].items()
            if any(fnmatch.fnmatch(p, g) for g in ("weights/*", "*.json")) and not fnmatch.fnmatch(p, "*/deeper/*")}
    assert set(want) == {"config.json", "weights/part-00001.bin"}
    assert hf.listing(cfg.source) == {p: len((hub.repos["org/model"].revisions["main"] / p).read_bytes()) for p in want}
    assert fetched(tmp_path, cfg) == want
    assert not any("/resolve/" in path and "deeper" in path for _, path, _ in hub.requests)


def test_patterns_matching_nothing_fail_in_preflight(hub, tmp_path):
    with pytest.raises(TransferError, match=r"nothing found at source.*none matching include \['\*\.gguf'\]"):
        hf.listing((load(tmp_path, "hf://org/model", source_hf_include="*.gguf")).source)


@pytest.mark.parametrize("name,says", [("../x", "'..' would lead outside"), ("/etc/x", "an absolute path"),
                                       ("a//b", "an empty path component")])
def test_a_hostile_file_name_in_the_listing_is_refused_in_preflight_naming_it(hub, tmp_path, name, says):
    """Before the claim, before huggingface_hub sees it, and before the volume destination's own preflight (which
    an absolute name once crashed with a ValueError): one line naming the file, and nothing downloaded."""
    hub.listed_only.append(name)
    cfg = load(tmp_path, "hf://org/model")
    with pytest.raises(TransferError, match=f"refusing file of hf://org/model '{name}': {says}"):
        hf.listing(cfg.source)
    report, ok = job.dry_run(cfg)
    assert not ok and "destination" not in report["preflight"]["errors"]  # the registry here is 127.0.0.1:9
    assert name in report["preflight"]["errors"]["source"] and "\n" not in report["preflight"]["errors"]["source"]
    assert not any("/resolve/" in path for _, path, _ in hub.requests)


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256 * 1024)  # see the module docstring
    hub.drop_once.add("big/model.safetensors")
    assert fetched(tmp_path, load(tmp_path, "hf://org/model")) == hub.expected["main"]
    big = [rng for method, path, rng in hub.requests
           if method == "GET" and path.endswith("/big/model.safetensors")]
    assert big[0] is None and len(big) == 2 and big[1].startswith("bytes=") and big[1] != "bytes=0-"
    assert not hub.drop_once


def test_a_failed_download_is_tried_again_keeping_the_files_already_complete(hub, tmp_path, caplog):
    hub.fail_once.add("config.json")
    assert fetched(tmp_path, load(tmp_path, "hf://org/model")) == hub.expected["main"]
    gets = [unquote(path.split("/", 5)[5]) for method, path, _ in hub.requests
            if method == "GET" and "/resolve/" in path]
    non_empty = [p for p in hub.expected["main"] if (hub.repos["org/model"].revisions["main"] / p).stat().st_size]
    assert sorted(gets) == sorted([*non_empty, "config.json"])  # only the failed file came twice
    assert any("trying again in" in r.getMessage() and "(try 2 of 3)" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


# ---------------------------------------------------------------------------------------------- private repos

def test_private_repo_with_the_token_from_the_uri_secret_dir(hub, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = load(tmp_path, "hf://org/private", source_uri_credentials_path=str(secret_dir(tmp_path)))
    assert fetched(tmp_path, cfg) == hub.expected["private"]
    assert TOKEN not in caplog.text and TOKEN not in cfg.to_json()


def test_private_repo_with_the_token_from_the_env(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert set(hf.listing((load(tmp_path, "hf://org/private")).source)) == set(hub.expected["private"])


@pytest.mark.parametrize("token,says", [(None, "no token was given"),
                                        ("hf_wrong_" + "x" * 20, "the token was refused")])
def test_private_repo_without_the_right_token_is_refused_in_one_line(token, says, hub, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    extra = {"source_uri_credentials_path": str(secret_dir(tmp_path, token))} if token else {}
    with pytest.raises(TransferError) as err:
        hf.listing((load(tmp_path, "hf://org/private", **extra)).source)
    text = str(err.value)
    assert "\n" not in text and text.startswith("listing hf://org/private failed: HTTP 401") and says in text
    assert "HF_TOKEN" in text and TOKEN not in text and (token is None or token not in text + caplog.text)


@pytest.mark.parametrize("uri,says", [
    ("hf://org/nope", "repository org/nope not found at http://127.0.0.1:"),
    ("hf://org/model@v9", "revision 'v9' not found in org/model"),
])
def test_missing_repo_or_revision_is_one_line(uri, says, hub, tmp_path):
    with pytest.raises(TransferError) as err:
        hf.listing((load(tmp_path, uri)).source)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_an_unreachable_hub_is_one_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(TransferError, match=r"cannot reach http://127\.0\.0\.1:9 .*check HF_ENDPOINT") as err:
        hf.listing((load(tmp_path, "hf://org/model")).source)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ the job, end to end

@pytest.mark.stack
@pytest.mark.parametrize("dst", ["pvc", "oci"])
def test_job_from_hf_registers_live(dst, hub, stack, tmp_path, base_image, caplog):
    caplog.set_level(logging.DEBUG)
    name = f"job-hf-{dst}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "uri",
           "MODEL_SYNC_SOURCE_URI": "hf://org/model", **destination_env(dst, stack, tmp_path, base_image)}
    published = job.run(config.load([], env))

    expected = hub.expected["main"]
    assert read_back(published, dst, stack, tmp_path) == expected
    assert {f.path: f.sha256 for f in published.files} == expected
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    assert not list((tmp_path / "storage").glob(".modelsync-*"))
    # plain HTTP on the stand-in's routes only: no Xet route was asked for, nothing else was contacted
    assert hub.requests and all(path.startswith(ROUTES) for _, path, _ in hub.requests)
    assert not any("xet" in path.lower() for _, path, _ in hub.requests)


@pytest.mark.stack
def test_the_same_revision_gives_the_same_image(hub, stack, tmp_path, base_image, monkeypatch):
    """SOURCE_DATE_EPOCH unset: two syncs of one revision to two repositories a second apart give one manifest
    digest, whose `created` is the revision's date (the Hub's lastModified)."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    digests, created = synced_twice(stack, tmp_path, base_image, "job-hf-same",
                                    {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": "hf://org/model@v1.0"})
    assert len(digests) == 1, digests
    revision = hub.repos["org/model"].revisions["v1.0"]
    newest = max(p.stat().st_mtime for p in revision.rglob("*") if p.is_file())  # what the stand-in says
    assert created == {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest))}, created


@pytest.mark.stack
def test_the_hf_pipeline_gives_the_fetched_image_and_a_new_tag_reuses_its_layers(hub, stack, tmp_path, base_image,
                                                                                  monkeypatch, caplog):
    """hf:// -> OCI (oras) goes through hf_pipeline (download and push overlapped): the same manifest as
    fetch-then-publish of the same revision; then a new tag of the same repository reuses the layers (their source
    records name the files' content ids): only the files the pickle check must read are asked of the Hub again."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = f"{stack.oci_registry}/hf-pipe/{uuid.uuid4().hex[:8]}"
    results = {}
    for label, tag, pipelines in (("fetched", "fetched", ()), ("piped", "v1", job.PIPELINES),
                                  ("again", "v2", job.PIPELINES)):
        run_dir = tmp_path / label
        run_dir.mkdir()
        env = {**base_env(stack, run_dir, f"job-hf-{label}-{uuid.uuid4().hex[:6]}"), "MODEL_SYNC_SOURCE_TYPE": "uri",
               "MODEL_SYNC_SOURCE_URI": "hf://org/model", **destination_env("oci", stack, run_dir, base_image),
               "MODEL_SYNC_DESTINATION_OCI_URI": f"{repo}{'-fetched' if label == 'fetched' else ''}:{tag}"}
        hub.requests.clear()
        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="modelsync.pipeline"):
            m.setattr(job, "PIPELINES", pipelines)
            results[label] = job.run(config.load([], env))
        results[label + "-gets"] = [p for method, p, _ in hub.requests if method == "GET" and "/resolve/" in p]
        results[label + "-piped"] = any(r.name == "modelsync.pipeline" and "to download" in r.getMessage()
                                        for r in caplog.records)
    assert not results["fetched-piped"] and results["piped-piped"]
    assert results["piped"].digest == results["fetched"].digest
    assert {f.path: f.sha256 for f in results["piped"].files} == hub.expected["main"]
    assert results["piped-gets"], "the first pipelined sync downloads"
    # only what the pickle check must read again (scan.needs_reading: the .bin files); the safetensors are reused
    assert results["again-gets"] and all(p.endswith(".bin") for p in results["again-gets"]), results["again-gets"]
    assert results["again"].digest == results["piped"].digest


@pytest.mark.stack
@pytest.mark.parametrize("oci_format", ["modelpack", "hybrid"])
def test_the_hf_pipeline_pushes_each_oci_format_as_fetch_then_publish_does(oci_format, hub, stack, tmp_path,
                                                                            base_image, monkeypatch, caplog):
    """--destination-oci-format through hf_pipeline: the same digest (a ModelPack manifest, or the hybrid's index)
    as fetch-then-publish of the same revision, the files read back byte for byte."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    results = {}
    for label, pipelines in (("fetched", ()), ("piped", job.PIPELINES)):
        run_dir = tmp_path / label
        run_dir.mkdir()
        env = {**base_env(stack, run_dir, f"job-hf-{oci_format}-{label}-{uuid.uuid4().hex[:6]}"),
               "MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": "hf://org/model",
               **destination_env("oci", stack, run_dir, base_image), "MODEL_SYNC_DESTINATION_OCI_FORMAT": oci_format}
        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="modelsync.pipeline"):
            m.setattr(job, "PIPELINES", pipelines)
            results[label] = job.run(config.load([], env))
        results[label + "-piped"] = any(r.name == "modelsync.pipeline" and "to download" in r.getMessage()
                                        for r in caplog.records)
    assert not results["fetched-piped"] and results["piped-piped"]
    assert results["piped"].digest == results["fetched"].digest
    assert read_back(results["piped"], "oci", stack, tmp_path) == hub.expected["main"]


CARD = {"author": "org", "library_name": "transformers", "pipeline_tag": "text-classification",
        "tags": ["transformers", "license:apache-2.0", "en"],
        "cardData": {"language": ["en", "de"], "license": "apache-2.0",
                     "license_link": "https://www.apache.org/licenses/LICENSE-2.0"}}


@pytest.mark.stack
@pytest.mark.parametrize("given", [{}, {"RegisteredModel.license": "mit", "RegisteredModel.language": "fr"}])
def test_create_model_from_hf_fills_the_registered_model_from_its_card(given, hub, stack, tmp_path, base_image):
    """As the Model Registry's catalog maps a Hugging Face model; a value the ConfigMap gives wins. The version
    records the commit copied."""
    carded = tmp_path / "hub" / "carded"
    make_model(carded)
    (carded / "README.md").write_text("# Carded\n\nA model with a card.\n")
    hub.add("org/carded", {"main": carded}, info=CARD)
    name = f"job-hf-card-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "uri",
           "MODEL_SYNC_SOURCE_URI": "hf://org/carded", "MODEL_SYNC_SOURCE_HF_EXCLUDE": "README.md",
           **destination_env("pvc", stack, tmp_path, base_image)}
    for key, value in given.items():
        (tmp_path / "metadata" / key).write_text(value)
    job.run(config.load([], env))
    rm = mr_get(stack, f"registered_model?name={name}")
    assert rm["readme"] == "# Carded\n\nA model with a card.\n"  # read although the patterns leave it out
    assert rm["license"] == given.get("RegisteredModel.license", "apache-2.0")
    assert rm["language"] == (["fr"] if given else ["en", "de"])
    assert (rm["licenseLink"], rm["tasks"], rm["provider"], rm["libraryName"]) == \
        ("https://www.apache.org/licenses/LICENSE-2.0", ["text-classification"], "org", "transformers")
    mv = mr_get(stack, f"model_version?name=1.0.0&parentResourceId={rm['id']}")
    commit = hub.repos["org/carded"].commit("org/carded", "main")
    assert mv["customProperties"]["modelsync.source"]["string_value"] == f"hf://org/carded@{commit}"


@pytest.mark.stack
def test_job_from_a_private_repo_never_shows_the_token(hub, stack, tmp_path, base_image, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    name = f"job-hf-private-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "uri",
           "MODEL_SYNC_SOURCE_URI": "hf://org/private@main",
           "MODEL_SYNC_SOURCE_URI_CREDENTIALS_PATH": str(secret_dir(tmp_path)),
           **destination_env("pvc", stack, tmp_path, base_image)}
    cfg = config.load([], env)
    report, ok = job.dry_run(cfg)
    assert ok and report["preflight"]["source"]["files"] == len(hub.expected["private"])
    published = job.run(cfg)
    assert read_back(published, "pvc", stack, tmp_path) == hub.expected["private"]
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err + str(report)


@pytest.mark.stack
@pytest.mark.parametrize("uri,says", [("hf://org/nope", "repository org/nope not found"),
                                      ("hf://org/private", "no token was given"),
                                      ("hf://org/model:v9", "revision 'v9' not found")])
def test_missing_repo_fails_in_preflight_before_any_registry_write(uri, says, hub, stack, tmp_path, base_image,
                                                                   caplog):
    import urllib.error
    caplog.set_level(logging.DEBUG)
    name = f"job-hf-missing-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), "MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": uri,
           **destination_env("pvc", stack, tmp_path, base_image)}
    with pytest.raises(ModelSyncError) as err:
        job.run(config.load([], env))
    assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(urllib.error.HTTPError) as missing:  # no RegisteredModel claims a model that is not there
        mr_get(stack, f"registered_model?name={name}")
    assert missing.value.code == 404
    assert not any("/resolve/" in path for _, path, _ in hub.requests)  # nothing was downloaded either
    assert TOKEN not in caplog.text
    shutil.rmtree(tmp_path / "storage", ignore_errors=True)
