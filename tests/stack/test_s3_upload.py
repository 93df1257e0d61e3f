"""The S3 uploader's aws processes (modelsync/s3_upload.py) against the stack's MinIO: a batch's `aws s3 cp` is
started before the batch is taken and waits, imported, for go (awscli_plugin GO_ENV); the files added meanwhile
are what it uploads; one whose batch never comes sends nothing and ends; none is left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from modelsync.clients import aws
from modelsync.s3_upload import S3Uploader

from ..support.faults import wait_for
from ..support.jobs import children_of, s3loc

MIB = 1 << 20


def _aws_batches() -> list[str]:
    """The batch directories named by this process's aws children (upload-1, ...)."""
    out = []
    for pid in children_of(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if len(argv) > 1 and os.path.basename(argv[1]) == "aws":
            out += [Path(a).name for a in argv if Path(a).name.startswith("upload-")]
    return sorted(out)


def _keys(loc) -> list[str]:
    return sorted(o["Key"][len(loc.key) + 1:] for o in aws.list_objects(loc, loc.key + "/"))


def test_the_aws_plugin_waits_for_go_on_stdin():
    """In a fresh interpreter, as the aws child loads it: with GO_ENV set, "go" lets the CLI go on; end of file or
    any other line ends the process with status 0 before anything else runs."""
    from modelsync.awscli_plugin.modelsync_no_expect import GO_ENV
    from modelsync.clients.aws import PLUGIN_DIR
    code = ("import modelsync_no_expect as p\n"
            "class Cli:\n    def register(self, *a): pass\n"
            "p.awscli_initialize(Cli())\n"
            "print('the command runs')")
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), GO_ENV: "1"}
    for given, printed in ((b"go\n", "the command runs\n"), (b"", ""), (b"stop\n", ""), (b"go", "")):
        done = subprocess.run([sys.executable, "-c", code], env=env, input=given, capture_output=True, timeout=60)
        assert (done.returncode, done.stdout.decode()) == (0, printed), given
    without = {k: v for k, v in env.items() if k != GO_ENV}  # not set: stdin is never read
    done = subprocess.run([sys.executable, "-c", code], env=without, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=60, check=True)
    assert done.stdout == b"the command runs\n"


def test_each_batch_aws_starts_ahead_and_waits_and_an_unused_one_sends_nothing(stack, tmp_path):
    loc = s3loc(stack, f"upload-ahead/{uuid.uuid4().hex[:8]}")
    before = set(children_of(os.getpid()))
    uploader = S3Uploader(loc, "job-ahead", tmp_path / "outbox", 64 * MIB).start()
    try:
        wait_for(_aws_batches, 20, "the first batch's aws started")
        assert _aws_batches() == ["upload-1"]
        time.sleep(2)  # imported by now (about 0.3 CPU-s): it waits, nothing listed, nothing sent
        assert _keys(loc) == [] and _aws_batches() == ["upload-1"]
        for rel, size in (("a.bin", 3 * MIB), ("sub/b.json", 10)):  # added after its aws started: still uploaded
            (tmp_path / "f").write_bytes(b"\xff" * size)
            uploader.add(rel, tmp_path / "f")
        uploader.drain()
        assert _keys(loc) == ["a.bin", "sub/b.json"]
        assert uploader.batches in (1, 2)  # the second file may land while the first goes up
        wait_for(lambda: _aws_batches() == [f"upload-{uploader.batches + 1}"], 20, "the next batch's aws started ahead")
        uploader.finish()
    finally:
        uploader.stop()
    assert _aws_batches() == [] and set(children_of(os.getpid())) <= before, "an aws is left running"
    assert _keys(loc) == ["a.bin", "sub/b.json"], "the unused aws sent something"


def test_a_path_added_again_while_going_up_ends_as_its_last_version(stack, tmp_path):
    """Two batches go up at once (at_once=2, as OCI -> S3 has it), but a batch holding a path that one going up
    holds waits for it: the big first version, still going up, cannot land after the small second one and leave
    the prefix holding the old bytes."""
    loc = s3loc(stack, f"upload-order/{uuid.uuid4().hex[:8]}")
    uploader = S3Uploader(loc, "job-order", tmp_path / "outbox", 256 * MIB, at_once=2).start()
    try:
        (tmp_path / "v1").write_bytes(b"\xff" * (64 * MIB))
        uploader.add("w.bin", tmp_path / "v1")
        wait_for(lambda: uploader.uploading, 20, "the first version going up")
        (tmp_path / "v2").write_bytes(b"second version")
        uploader.add("w.bin", tmp_path / "v2")
        (tmp_path / "other").write_bytes(b"x")
        uploader.add("other.json", tmp_path / "other")
        uploader.finish()
    finally:
        uploader.stop()
    body = aws.client(loc).get_object(Bucket=loc.bucket, Key=f"{loc.key}/w.bin")["Body"].read()
    assert body == b"second version"
    assert _keys(loc) == ["other.json", "w.bin"]
    assert uploader.batches == 2, "the second version's batch did not wait: other.json joined it meanwhile"
