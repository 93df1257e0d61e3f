"""A URL's tar -> OCI through the pipeline (modelsync/uri_pipeline.py) on the real stack: the manifest digest of
fetch-then-publish for a .tar and a .tar.gz, large files pushed while the archive downloads, the storage path
bounded during a run (sampled), and a body cut short is one line with nothing LIVE and nothing left."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from modelsync import config, job
from modelsync.files import disk_bytes

from ..support.jobs import base_env, destination_env, sampled
from ..support.model_registry import the_artifact
from ..support.models import make_model, write_big
from ..support.servers import serve_cut

MIB = 1 << 20
NEWEST = 1717171717  # 2024-05-31T16:08:37Z


def _archive(src: Path, path: Path) -> None:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        tar.add(src, ".")


def _model(src: Path, shards: int, size: int) -> dict[str, str]:
    """The sample model plus shards of size bytes, dated (the newest NEWEST): the image's `created` is the tar's."""
    expected = make_model(src)
    expected.update({f"shards/s-{i}.bin": write_big(src / f"shards/s-{i}.bin", size) for i in range(shards)})
    for i, path in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        os.utime(path, (NEWEST - i, NEWEST - i))
    return expected


def _env(stack, tmp_path: Path, url: str, base_image: str, label: str) -> tuple[dict[str, str], str]:
    name = f"uripipe-{label}-{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / name
    run_dir.mkdir()
    return {**base_env(stack, run_dir, name), "MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": url,
            **destination_env("oci", stack, run_dir, base_image)}, name


@pytest.mark.stack
@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_the_pipeline_gives_the_manifest_of_fetch_then_publish(kind, stack, tmp_path, http_root, base_image,
                                                               monkeypatch, caplog):
    """SOURCE_DATE_EPOCH unset: `created` is the newest member's time in both. The shards go up while the archive
    downloads (a .tar.gz: on the guess, checked at the end); the digest is fetch-then-publish's (skopeo: none of the
    pipeline's code)."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root, url = http_root
    expected = _model(tmp_path / "model", 2, 66 * MIB)
    _archive(tmp_path / "model", root / f"model.{kind}")

    env, name = _env(stack, tmp_path, f"{url}/model.{kind}", base_image, "new")
    with caplog.at_level(logging.INFO, logger="modelsync.uri_pipeline"):
        streamed = job.run(config.load([], env))
    done = [r.getMessage() for r in caplog.records if r.name == "modelsync.uri_pipeline"]
    assert any("(2 pushed while the archive downloaded)" in m for m in done), done
    assert the_artifact(stack, name)["state"] == "LIVE"
    assert {f.path: f.sha256 for f in streamed.files} == expected

    monkeypatch.setattr(job, "PIPELINES", ())  # fetch-then-publish, as before the pipeline
    caplog.clear()
    env, _ = _env(stack, tmp_path, f"{url}/model.{kind}", base_image, "old")
    env["MODEL_SYNC_DESTINATION_OCI_BACKEND"] = "skopeo"
    with caplog.at_level(logging.INFO, logger="modelsync"):
        fetched = job.run(config.load([], env))
    assert not any(r.name == "modelsync.uri_pipeline" for r in caplog.records)
    assert fetched.digest == streamed.digest
    assert fetched.files == streamed.files


@pytest.mark.stack
def test_the_storage_path_stays_bounded_while_the_archive_streams(stack, tmp_path, http_root, base_image,
                                                                  monkeypatch, caplog):
    """Five 64 MiB shards (320 MiB) with --max-in-flight-bytes 150Mi: the download directory never holds more than
    the cap, the whole storage path (base image, config, small files) never more than 2 x largest + 64 MiB."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    root, url = http_root
    expected = _model(tmp_path / "model", 5, 64 * MIB)
    _archive(tmp_path / "model", root / "model.tar")
    env, name = _env(stack, tmp_path, f"{url}/model.tar", base_image, "cap")
    env["MODEL_SYNC_MAX_IN_FLIGHT_BYTES"] = "150Mi"
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    with sampled(lambda: disk_bytes(storage),
                 lambda: sum(disk_bytes(p) for p in storage.glob(".modelsync-*/work/pipeline-*/download"))) as peaks, \
            caplog.at_level(logging.INFO, logger="modelsync.uri_pipeline"):
        published = job.run(config.load([], env))
    peak, download_peak = peaks
    assert {f.path: f.sha256 for f in published.files} == expected
    assert any("(5 pushed while the archive downloaded)" in r.getMessage() for r in caplog.records)
    assert 64 * MIB <= download_peak <= 150 * MIB, f"download peak {download_peak / MIB:.1f} MiB"
    assert peak <= 2 * 64 * MIB + 64 * MIB, f"storage peak {peak / MIB:.1f} MiB"
    assert the_artifact(stack, name)["state"] == "LIVE"


@pytest.mark.stack
def test_a_body_cut_short_is_one_line_and_nothing_live(stack, tmp_path, base_image):
    """The server announces the whole tar and closes after two thirds (a shard pushed by then): the whole job, as
    users run it, fails with one line naming the truncation; the artifact is ABANDONED; the storage path is empty."""
    src = tmp_path / "model"
    _model(src, 3, 64 * MIB)
    _archive(src, tmp_path / "model.tar")
    whole = (tmp_path / "model.tar").read_bytes()

    with serve_cut(whole) as base:
        env, name = _env(stack, tmp_path, f"{base}/model.tar", base_image, "cut")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SYNC_", "SIGSTORE_"))}, **env}
        out = subprocess.run([sys.executable, "-m", "modelsync"], check=False, env=env, capture_output=True,
                             text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if "is truncated" in line]
    assert len(lines) == 1 and "/model.tar is truncated: " in lines[0], out.stderr
    assert the_artifact(stack, name)["state"] == "ABANDONED"
    storage = Path(env["MODEL_SYNC_STORAGE_PATH"])
    assert not list(storage.glob(".modelsync-*")), list(storage.rglob("*"))


@pytest.mark.stack
def test_a_link_in_the_archive_means_fetch_then_publish(stack, tmp_path, http_root, base_image, monkeypatch,
                                                        caplog):
    """A symlink's file is its target's bytes, which the pipeline may have pushed and deleted: the pipeline stops
    at the link, says why, and the job fetches, then publishes; the link is published as its target's file."""
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    root, url = http_root
    expected = make_model(tmp_path / "model")
    (tmp_path / "model" / "alias.json").symlink_to("config.json")
    expected["alias.json"] = expected["config.json"]
    _archive(tmp_path / "model", root / "model.tar")
    env, name = _env(stack, tmp_path, f"{url}/model.tar", base_image, "link")
    with caplog.at_level(logging.WARNING, logger="modelsync.uri_pipeline"):
        published = job.run(config.load([], env))
    said = [r.getMessage() for r in caplog.records if r.name == "modelsync.uri_pipeline"]
    assert len(said) == 1 and "'alias.json' is a link" in said[0] and "fetch, then publish" in said[0], said
    assert {f.path: f.sha256 for f in published.files} == expected
    assert the_artifact(stack, name)["state"] == "LIVE"
