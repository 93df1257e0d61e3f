"""Issue 20: the job never writes, renames or deletes through a link under a directory it does not own, and every
source's listing passes one name check before the claim. Each place where the job writes under such a directory
(a volume destination, its record file, the storage path, archive and layer extraction) is tried with a symlinked
parent, a symlinked file, and a link swapped in while the job runs; nothing may appear outside.

These run without the local stack (the files are real, on real file systems); test_hostile.py runs whole jobs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import pytest

from modelsync.beneath import Beneath, LinkRefused
from modelsync.destinations import local
from modelsync.destinations.local import RECORD, preflight_local, publish_local
from modelsync.errors import TransferError
from modelsync.files import check_listing, inventory
from modelsync.layer_extract import TreeWriter
from modelsync.locations import LocalLocation
from modelsync.sources.uri import unpack
from modelsync.workspace import claim

from ..support.models import TEST_JOB, make_model, raw_weights
from ..support.mounts import tmpfs

PLAIN = "application/vnd.oci.image.layer.v1.tar"


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under root (links not followed) with its bytes; a link as 'link -> target'."""
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in names + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            out[rel] = f"link -> {os.readlink(full)}".encode() if full.is_symlink() else full.read_bytes()
    return out


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory the job must never write into, with one file of someone else's."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim.txt").write_text("precious")
    return d


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    expected = make_model(root)
    return root, inventory(root), expected


# ---------------------------------------------------------------- the name check every listing passes

@pytest.mark.parametrize("name,says", [
    ("../x", "'..'"), ("a/../../x", "'..'"), ("/etc/passwd", "absolute"), ("a//b", "empty path component"),
    ("a/", "empty path component"), ("", "empty name"), ("a/./b", "'.' path component"), ("./a", "'.'"),
    ("a\x00b", "NUL"), ("a\nb", "control character"), ("a\\b", "backslash"),
])
def test_a_bad_name_is_refused_in_one_line_naming_it(name, says):
    with pytest.raises(TransferError, match=says) as err:
        check_listing(["ok.bin", name], "S3 key")
    message = str(err.value)
    assert "\n" not in message and "refusing S3 key" in message and "rename it at the source" in message


def test_two_names_of_one_file_are_refused():
    composed, decomposed = unicodedata.normalize("NFC", "café.bin"), unicodedata.normalize("NFD", "café.bin")
    assert composed != decomposed
    with pytest.raises(TransferError, match="the same file as"):
        check_listing([composed, decomposed], "Hub file")
    with pytest.raises(TransferError, match="'weights' is a file, so it cannot also be a directory"):
        check_listing(["weights", "weights/part-1.bin"], "archive member")
    check_listing(["weights/a.bin", "weights/b.bin", "weights.bin", "docs/read me ünïcødé ✓.md"], "file")


# ---------------------------------------------------------------- Beneath itself

def test_beneath_refuses_a_symlinked_parent_a_symlinked_file_and_a_link_swapped_in(tmp_path, outside):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "sub").symlink_to(outside)
    (root / "file.bin").symlink_to(outside / "victim.txt")
    with Beneath(root, "--destination-path / MODEL_SYNC_DESTINATION_PATH") as tree:
        with pytest.raises(LinkRefused, match=r"'.*/root/sub' is a symbolic link \(to '.*outside'\)") as err:
            tree.create("sub/new.bin")
        assert err.value.is_link and "MODEL_SYNC_DESTINATION_PATH" in str(err.value)
        with pytest.raises(LinkRefused, match="file.bin' is a symbolic link"):
            tree.create("file.bin")
        with pytest.raises(LinkRefused, match="symbolic link"):
            tree.unlink("file.bin")
        with pytest.raises(LinkRefused, match="symbolic link"):
            tree.open_read("sub/victim.txt")
        os.close(tree.create("real/deep/ok.bin"))  # parents made as real directories
        (root / "real").rename(root / "moved")  # swapped while the tree is open: real -> a link outside
        (root / "real").symlink_to(outside)
        with pytest.raises(LinkRefused, match="real' is a symbolic link"):
            tree.create("real/deep/again.bin")
        with pytest.raises(LinkRefused):
            tree.write_atomic("real/record.json", b"{}")
    assert tree_of(outside) == {"victim.txt": b"precious"}
    assert (root / "moved" / "deep" / "ok.bin").is_file()


def test_the_root_itself_may_be_a_link_named_by_the_user(tmp_path):
    (tmp_path / "volume").mkdir()
    (tmp_path / "mount").symlink_to(tmp_path / "volume")
    with Beneath(tmp_path / "mount", "x") as tree:
        os.close(tree.create("a/b.bin"))
    assert (tmp_path / "volume" / "a" / "b.bin").is_file()


# ---------------------------------------------------------------- a volume destination

def test_volume_destination_refuses_a_symlinked_parent_before_anything_moves(tmp_path, source, outside):
    model_dir, files, expected = source
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "weights").symlink_to(outside)  # the model has weights/...
    sizes = {f.path: f.size for f in files}
    for attempt in (lambda: preflight_local(LocalLocation(dest), TEST_JOB, sizes, True),
                    lambda: publish_local(model_dir, files, LocalLocation(dest), TEST_JOB, replace=True)):
        with pytest.raises(LinkRefused, match=r"pvc/weights' is a symbolic link \(to '.*outside'\)"):
            attempt()
    assert tree_of(outside) == {"victim.txt": b"precious"}
    assert sorted(os.listdir(dest)) == ["weights"]  # no staging, no record: nothing half-written


def test_volume_destination_refuses_a_symlinked_file_even_with_replace(tmp_path, source, outside):
    model_dir, files, _ = source
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / "config.json").symlink_to(outside / "victim.txt")
    with pytest.raises(LinkRefused, match="config.json' is a symbolic link"):
        publish_local(model_dir, files, LocalLocation(dest), TEST_JOB, replace=True)
    assert tree_of(outside) == {"victim.txt": b"precious"} and (dest / "config.json").is_symlink()


def test_volume_destination_refuses_a_symlinked_record(tmp_path, source, outside):
    model_dir, files, _ = source
    dest = tmp_path / "pvc"
    dest.mkdir()
    (dest / RECORD).symlink_to(outside / "victim.txt")
    with pytest.raises(LinkRefused, match=f"{RECORD}' is a symbolic link"):
        publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
    assert tree_of(outside) == {"victim.txt": b"precious"}


def test_volume_destination_refuses_a_link_swapped_in_while_it_copies(tmp_path, source, outside, monkeypatch):
    """The swap happens between the check and the renames into place: the renames open every directory again
    without following links, so the link is refused there and nothing lands outside."""
    model_dir, files, _ = source
    dest = tmp_path / "pvc"
    dest.mkdir()
    copy = local._copy_verified

    def copy_then_swap(*args):
        copy(*args)
        (dest / "weights").symlink_to(outside)  # the directory the model needs, made a link by someone else

    monkeypatch.setattr(local, "_copy_verified", copy_then_swap)
    with pytest.raises(LinkRefused, match="pvc/weights' is a symbolic link"):
        publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
    assert tree_of(outside) == {"victim.txt": b"precious"}
    assert not list(dest.glob(".modelsync-staging-*"))  # the staging copy is removed on the way out


def test_volume_destination_rerun_copies_only_what_changed(tmp_path, source, monkeypatch):
    model_dir, files, expected = source
    dest = tmp_path / "pvc"
    copied: list[list[str]] = []
    copy = local._copy_verified
    monkeypatch.setattr(local, "_copy_verified", lambda s, fs, staged: (copied.append([f.path for f in fs]),
                                                                       copy(s, fs, staged)))
    publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
    assert sorted(copied[-1]) == sorted(expected)
    inodes = {rel: (dest / rel).stat().st_ino for rel in expected}

    publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)  # unchanged: nothing copied, nothing renamed
    assert copied[-1] == [] and {rel: (dest / rel).stat().st_ino for rel in expected} == inodes

    (model_dir / "config.json").write_text('{"changed": true}\n')  # one file changed at the source
    publish_local(model_dir, inventory(model_dir), LocalLocation(dest), TEST_JOB)
    assert copied[-1] == ["config.json"] and (dest / "config.json").read_text() == '{"changed": true}\n'

    target = dest / "weights" / "part-00001.bin"  # someone changed the job's copy in place, same size
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    publish_local(model_dir, inventory(model_dir), LocalLocation(dest), TEST_JOB)
    assert copied[-1] == ["weights/part-00001.bin"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected["weights/part-00001.bin"]

    with pytest.raises(TransferError, match="not written by this job"):  # another job owns nothing here
        publish_local(model_dir, inventory(model_dir), LocalLocation(dest), "another-job")


def test_volume_destination_rerun_on_a_nearly_full_volume_and_the_space_error_names_it(tmp_path):
    model_dir = tmp_path / "src"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(raw_weights(5 << 20))
    files = inventory(model_dir)
    with tmpfs(tmp_path / "vol", size="8m") as vol:
        dest = vol / "model"
        publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
        sizes = {f.path: f.size for f in files}
        facts = preflight_local(LocalLocation(dest), TEST_JOB, sizes, False)  # 3 MiB free, 5 MiB unchanged
        assert facts["files unchanged since this job's last run"] == 1
        publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
        (model_dir / "weights.bin").write_bytes(raw_weights(5 << 20))  # changed: the copy needs 5 MiB again
        with pytest.raises(TransferError) as err:
            publish_local(model_dir, inventory(model_dir), LocalLocation(dest), TEST_JOB)
        message = str(err.value)
        assert message.startswith(f"destination path '{dest}' has ") and "needs 5.0 MiB" in message
        assert "MODEL_SYNC_DESTINATION_PATH" in message and "storage path" not in message


def test_volume_destination_preflight_refuses_an_absolute_name_in_one_line(tmp_path):
    """A listing handed to the destination is checked there too (it crashed with a ValueError once)."""
    with pytest.raises(TransferError, match="refusing model file '/etc/x': an absolute path"):
        preflight_local(LocalLocation(tmp_path / "pvc"), TEST_JOB, {"ok.bin": 1, "/etc/x": 1}, False)


# ---------------------------------------------------------------- the storage path

def test_storage_path_link_named_like_a_crashed_attempt_is_neither_followed_nor_removed(tmp_path, outside):
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / ".modelsync-key-dead").symlink_to(outside)  # what clear_stale would remove, were it a directory
    (outside / ".lock").write_text("")
    with claim(storage, ".modelsync-", "key", "--storage-path / MODEL_SYNC_STORAGE_PATH") as ws:
        assert ws.root.parent == storage.resolve() and not ws.root.is_symlink()
        assert oct(ws.root.stat().st_mode & 0o777) == "0o700"  # private to the job's user
    assert (storage / ".modelsync-key-dead").is_symlink()
    assert tree_of(outside) == {"victim.txt": b"precious", ".lock": b""}


# ---------------------------------------------------------------- archive and layer extraction

def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def test_archive_member_written_through_an_earlier_link_member_is_refused(tmp_path, outside):
    """The link stays inside the tree (sub), but writing through a link is refused all the same."""
    archive = tmp_path / "model.tar"
    archive.write_bytes(_tar([("sub/a.bin", b"a", None), ("d", None, "sub"), ("d/x.bin", b"x", None)]))
    says = r"refusing archive member 'd/x.bin': .*/out/d' is a symbolic link \(to 'sub'\)"
    with pytest.raises(TransferError, match=says):
        unpack(archive, "model.tar", tmp_path / "out")
    assert not (tmp_path / "out" / "sub" / "x.bin").exists() and tree_of(outside) == {"victim.txt": b"precious"}


@pytest.mark.parametrize("names,says", [
    (["a//b.bin"], "empty path component"),
    ([unicodedata.normalize("NFC", "é.bin"), unicodedata.normalize("NFD", "é.bin")], "the same file as"),
])
def test_archive_member_names_pass_the_same_check(tmp_path, names, says):
    for kind in ("tar", "zip"):
        archive = tmp_path / f"model.{kind}"
        if kind == "tar":
            archive.write_bytes(_tar([(n, b"x", None) for n in names]))
        else:
            with zipfile.ZipFile(archive, "w") as zf:
                for n in names:
                    zf.writestr(n, b"x")
        out = tmp_path / f"out-{kind}"
        with pytest.raises(TransferError, match=says):
            unpack(archive, archive.name, out)
        assert not out.exists() or not os.listdir(out)


def _layer(members: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    blob = _tar([(n, d, None) for n, d in members])
    return blob, "sha256:" + hashlib.sha256(blob).hexdigest()


def test_layer_written_through_a_link_swapped_in_between_layers_is_refused(tmp_path, outside):
    dest = tmp_path / "model"
    tree = TreeWriter(dest, "models")
    blob, digest = _layer([("models/sub/a.bin", b"a")])
    tree.apply(io.BytesIO(blob), PLAIN, digest)
    (dest / "sub").rename(dest / "sub-real")
    (dest / "sub").symlink_to(outside)  # not made by the job
    blob, digest = _layer([("models/sub/b.bin", b"b")])
    with pytest.raises(TransferError, match="would be written through a symlink"):
        tree.apply(io.BytesIO(blob), PLAIN, digest)
    assert tree_of(outside) == {"victim.txt": b"precious"}


def test_layer_entry_names_pass_the_same_check(tmp_path):
    blob, digest = _layer([("models/a/./b.bin", b"x")])
    with pytest.raises(TransferError, match="refusing layer entry 'models/a/./b.bin': a '.' path component"):
        TreeWriter(tmp_path / "m", "models").apply(io.BytesIO(blob), PLAIN, digest)
    blob, digest = _layer([("./models/", b""), ("./models/ok.bin", b"ok")])  # how tar writes names: accepted
    tree = TreeWriter(tmp_path / "n", "models")
    tree.apply(io.BytesIO(blob), PLAIN, digest)
    assert [e.path for e in tree.entries()] == ["ok.bin"]


def test_record_written_by_the_job_is_valid_json_with_stats(tmp_path, source):
    model_dir, files, expected = source
    dest = tmp_path / "pvc"
    publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
    record = json.loads((dest / RECORD).read_text())
    for rel in expected:
        st = (dest / rel).stat()
        assert record["stat"][rel] == [st.st_size, st.st_mtime_ns, st.st_ino]
    assert not [n for n in os.listdir(dest) if ".tmp" in n]
