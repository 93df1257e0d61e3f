"""The pickle check before LIVE, as whole jobs on the local stack: a malicious pickle (a PyTorch-style checkpoint
whose data.pkl would run a command when loaded) is refused with exit 1 and one line naming the file and the global,
the artifact ABANDONED and nothing published, both through the S3 -> OCI pipeline (each file checked as it lands,
before its layer is pushed) and fetch-then-publish (S3 -> S3); a good checkpoint and a scikit-learn joblib model
(with --scan-allow sklearn.) go LIVE with the scan's verdicts on the artifact."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest

from modelsync import config, job

from ..support.cli import run_cli
from ..support.jobs import base_env, destination_env, s3_env, s3loc, upload
from ..support.model_registry import the_artifact
from ..support.models import make_model
from ..support.pickles import Malicious, torch_checkpoint

pytestmark = pytest.mark.stack

DESTINATIONS = ("oci", "s3")


def _model(tmp_path, marker=None):
    root = tmp_path / "model-src"
    make_model(root)
    extra = {"x": Malicious(f"touch {marker}")} if marker is not None else None
    torch_checkpoint(root / "weights" / "pytorch_model.bin", {"layer.weight": (64, 64), "layer.bias": (64,)},
                     extra=extra)
    return root


def _props(art) -> dict[str, str]:
    return {k: v.get("string_value", v.get("int_value")) for k, v in art["customProperties"].items()}


def _nothing_published(stack, env: dict[str, str], dst: str) -> None:
    if dst == "oci":
        repo, tag = env["MODEL_SYNC_DESTINATION_OCI_URI"].split("/", 1)[1].rsplit(":", 1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(
                f"http://{stack.oci_registry}/v2/{repo}/manifests/{tag}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}), timeout=10)
        assert err.value.code == 404
    else:
        from modelsync.clients import aws
        loc = s3loc(stack, env["MODEL_SYNC_DESTINATION_AWS_KEY"])
        listed = aws.client(loc).list_objects_v2(Bucket=stack.minio_bucket, Prefix=loc.key)
        assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize("dst", DESTINATIONS, ids=["s3-to-oci-pipeline", "s3-to-s3-fetch-then-publish"])
def test_a_malicious_pickle_is_refused_and_nothing_goes_live(dst, stack, tmp_path, base_image, require_tool):
    require_tool("aws")
    marker = tmp_path / "pwned"
    prefix = upload(stack, _model(tmp_path, marker))
    name = f"scan-bad-{dst}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_env(stack, prefix), **destination_env(dst, stack, tmp_path,
                                                                                         base_image),
           "MODEL_SYNC_SCAN_ALLOW": "sklearn."}
    done = run_cli(env, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "posix.system" in line]
    assert lines, done.stderr[-3000:]
    assert "weights/pytorch_model.bin!archive/data.pkl: the pickle imports posix.system" in lines[0]
    art = the_artifact(stack, name)
    assert art["state"] == "ABANDONED"
    error = _props(art)["modelsync.error"]
    assert "weights/pytorch_model.bin!archive/data.pkl" in error and "posix.system" in error and "\n" not in error
    _nothing_published(stack, env, dst)
    assert not marker.exists()


@pytest.mark.parametrize("dst", DESTINATIONS, ids=["s3-to-oci-pipeline", "s3-to-s3-fetch-then-publish"])
def test_good_pickles_go_live_with_the_verdicts(dst, stack, tmp_path, base_image, require_tool, monkeypatch):
    require_tool("aws")
    joblib = pytest.importorskip("joblib")
    from sklearn.linear_model import LogisticRegression
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    root = _model(tmp_path)
    (root / "sklearn").mkdir()
    joblib.dump(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), root / "sklearn" / "m.joblib")
    prefix = upload(stack, root)
    name = f"scan-good-{dst}-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_env(stack, prefix), **destination_env(dst, stack, tmp_path,
                                                                                         base_image),
           "MODEL_SYNC_SCAN_ALLOW": "sklearn."}
    published = job.run(config.load([], env))
    art = the_artifact(stack, name)
    assert art["state"] == "LIVE" and art["uri"] == published.uri
    props = _props(art)
    assert props["modelsync.scan.scanner"].startswith("modelsync.scan ")
    assert (props["modelsync.scan.mode"], props["modelsync.scan.files_checked"], props["modelsync.scan.pickles"],
            props["modelsync.scan.findings"], props["modelsync.scan.allow"]) == ("refuse", "7", "2", "0", "sklearn.")


def test_warn_goes_live_and_records_the_finding(stack, tmp_path, base_image, require_tool, monkeypatch):
    require_tool("aws")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "none"))
    marker = tmp_path / "pwned"
    prefix = upload(stack, _model(tmp_path, marker))
    name = f"scan-warn-{uuid.uuid4().hex[:6]}"
    env = {**base_env(stack, tmp_path, name), **s3_env(stack, prefix), **destination_env("s3", stack, tmp_path,
                                                                                         base_image),
           "MODEL_SYNC_SCAN": "warn"}
    job.run(config.load([], env))
    props = _props(the_artifact(stack, name))
    assert props["modelsync.scan.findings"] == "1"
    assert props["modelsync.scan.findings_list"] == "weights/pytorch_model.bin!archive/data.pkl: posix.system"
    assert not marker.exists()
