"""modelsync/files.py: what touches the model's files on disk."""

from __future__ import annotations

import os

from modelsync.files import date_files
from modelsync.locations import Fetched, FileEntry


def test_date_files_sets_a_links_own_time_never_its_targets(tmp_path):
    """A model's link may point outside the job's directory: dating the model's files must not touch that target,
    and the model's newest time is the link's own."""
    outside = tmp_path / "outside"
    outside.write_text("not the job's")
    os.utime(outside, (5000.0, 5000.0))
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w")
    (model / "link").symlink_to(outside)
    date_files(model, ["weights.bin", "link"], 1000.0)
    assert outside.stat().st_mtime == 5000.0
    assert os.lstat(model / "link").st_mtime == 1000.0 and (model / "weights.bin").stat().st_mtime == 1000.0
    assert Fetched(model, (FileEntry("weights.bin", 1, ""), FileEntry("link", 1, ""))).newest() == 1000.0


def test_date_files_without_a_date_leaves_the_files_as_they_are(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    os.utime(tmp_path / "f", (7.0, 7.0))
    date_files(tmp_path, ["f"], None)
    assert (tmp_path / "f").stat().st_mtime == 7.0
