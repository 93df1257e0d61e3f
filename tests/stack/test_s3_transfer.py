"""S3 source and destination against the real MinIO of the local stack, with the real aws CLI."""

from __future__ import annotations

import uuid

import pytest

from modelsync import tools
from modelsync.clients import aws
from modelsync.destinations.s3 import publish_s3
from modelsync.errors import TransferError
from modelsync.files import inventory, safe_relative
from modelsync.locations import S3Location
from modelsync.secret import Secret
from modelsync.sources.s3 import fetch_s3

from ..support.models import TEST_JOB, digests_of, make_model

pytestmark = pytest.mark.stack


@pytest.fixture
def s3(stack, require_tool):
    require_tool("aws")
    return lambda key, **kw: S3Location(bucket=stack.minio_bucket, key=key, endpoint=stack.minio_endpoint,
                                        access_key_id=Secret(stack.minio_access_key),
                                        secret_access_key=Secret(kw.pop("secret", stack.minio_secret_key)), **kw)


@pytest.fixture
def raw(stack):
    return aws.client(S3Location(bucket=stack.minio_bucket, key="", endpoint=stack.minio_endpoint,
                                 access_key_id=Secret(stack.minio_access_key),
                                 secret_access_key=Secret(stack.minio_secret_key)))


@pytest.fixture
def argv_seen(monkeypatch):
    """Record every argv given to tools.run (the real run still happens), to prove no secret is in one."""
    seen: list[list[str]] = []
    real = tools.run

    def spy(binary, args, **kw):
        seen.append([binary, *map(str, args)])
        return real(binary, args, **kw)

    monkeypatch.setattr(tools, "run", spy)
    return seen


def test_prefix_round_trip_keeps_tree_and_bytes(tmp_path, s3, stack, argv_seen):
    src = tmp_path / "src"
    expected = make_model(src)
    prefix = f"rt-{uuid.uuid4().hex[:8]}/model"
    published = publish_s3(src, inventory(src), s3(prefix), TEST_JOB)
    assert published.uri == f"s3://{stack.minio_bucket}/{prefix}"
    out = tmp_path / "out"
    entries = fetch_s3(s3(prefix + "/"), out)
    assert digests_of(out) == expected == {e.path: e.sha256 for e in entries}
    flat = " ".join(" ".join(a) for a in argv_seen)
    assert argv_seen and stack.minio_secret_key not in flat and stack.minio_access_key not in flat


def test_prefix_does_not_take_sibling_prefixes(tmp_path, s3, raw, stack):
    base = f"sib-{uuid.uuid4().hex[:8]}"
    raw.put_object(Bucket=stack.minio_bucket, Key=f"{base}/model/a.bin", Body=b"a")
    raw.put_object(Bucket=stack.minio_bucket, Key=f"{base}/model-v2/b.bin", Body=b"b")
    fetch_s3(s3(f"{base}/model"), tmp_path / "out")
    assert digests_of(tmp_path / "out").keys() == {"a.bin"}


def test_single_object(tmp_path, s3, raw, stack):
    key = f"one-{uuid.uuid4().hex[:8]}/model.onnx"
    raw.put_object(Bucket=stack.minio_bucket, Key=key, Body=b"onnx-bytes")
    entries = fetch_s3(s3(key), tmp_path / "out")
    assert [(e.path, e.size) for e in entries] == [("model.onnx", 10)]


def test_key_with_backslash_is_refused_before_any_download(tmp_path, s3, raw, stack):
    base = f"evil-{uuid.uuid4().hex[:8]}"
    raw.put_object(Bucket=stack.minio_bucket, Key=f"{base}/ok.bin", Body=b"ok")
    raw.put_object(Bucket=stack.minio_bucket, Key=f"{base}/win\\path.bin", Body=b"x")
    with pytest.raises(TransferError, match="refusing S3 key"):
        fetch_s3(s3(base), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("key", ["../up", "a/../../up", "/abs/path", "a\\b"])
def test_unsafe_relative_names_are_refused(key):
    """AWS S3 stores such keys (MinIO refuses most of them), so the check cannot rely on the store."""
    with pytest.raises(TransferError):
        safe_relative(key, "S3 key")


def test_missing_prefix_is_a_clear_error(tmp_path, s3):
    with pytest.raises(TransferError, match=r"nothing found at source s3://models/does-not-exist"):
        fetch_s3(s3("does-not-exist/"), tmp_path / "out")


def test_wrong_secret_is_one_line_without_the_secret(tmp_path, s3):
    bad = "wrong-secret-value-123456"
    with pytest.raises(TransferError) as err:
        fetch_s3(s3("anything/", secret=bad), tmp_path / "out")
    assert "\n" not in str(err.value) and bad not in str(err.value)
    assert "secret access key is wrong" in str(err.value)


def test_upload_with_wrong_secret_fails_with_masked_tool_error(tmp_path, s3):
    src = tmp_path / "src"
    make_model(src)
    bad = "another-wrong-secret-987"
    with pytest.raises(Exception) as err:
        publish_s3(src, inventory(src), s3("never/written", secret=bad), TEST_JOB)
    assert bad not in str(err.value) and "aws s3 cp failed" in str(err.value)


@pytest.mark.slow
def test_one_gib_file_round_trip(tmp_path, s3):
    src = tmp_path / "src"
    expected = make_model(src, big_bytes=1 << 30)
    prefix = f"big-{uuid.uuid4().hex[:8]}"
    publish_s3(src, inventory(src), s3(prefix), TEST_JOB)
    fetch_s3(s3(prefix), tmp_path / "out")
    assert digests_of(tmp_path / "out") == expected
