"""HTTP source against a real HTTP server on loopback; safe archive unpacking; local (PVC) source/destination."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelsync.destinations.local import RECORD, publish_local
from modelsync.errors import TransferError
from modelsync.files import inventory
from modelsync.locations import LocalLocation, UriLocation
from modelsync.sources.local import read_local
from modelsync.sources.uri import fetch_uri, uri_headers

from ...support.models import TEST_JOB, digests_of, make_model
from ...support.servers import serve_cut, serve_directory

TOKEN = "uri-token-Ab12Cd34"


@pytest.fixture
def server(tmp_path):
    """Serves files from tmp_path/www; /private/* needs `Authorization: Bearer TOKEN`."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root, token=TOKEN) as url:
        yield root, url


def _tar_of(src: Path, dest: Path, mode: str = "w:gz") -> None:
    with tarfile.open(dest, mode) as tar:
        tar.add(src, arcname=".")


@pytest.mark.parametrize("name,mode", [("model.tar.gz", "w:gz"), ("model.tar", "w"), ("model.tgz", "w:gz")])
def test_tar_archives_unpack_to_the_same_tree(tmp_path, server, name, mode):
    root, url = server
    expected = make_model(tmp_path / "model")
    _tar_of(tmp_path / "model", root / name, mode)
    entries = fetch_uri(UriLocation(url=f"{url}/{name}"), tmp_path / "out", tmp_path / "work")
    assert digests_of(tmp_path / "out") == expected == {e.path: e.sha256 for e in entries}
    assert list((tmp_path / "work").iterdir()) == []  # unpacked as it came: the archive was never stored


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_a_tar_download_cut_short_is_one_line_and_leaves_nothing(tmp_path, mode):
    """The server announces the whole archive, sends part of it and closes: the files unpacked so far go."""
    make_model(tmp_path / "model")
    _tar_of(tmp_path / "model", tmp_path / "model.tar", mode)
    whole = (tmp_path / "model.tar").read_bytes()

    with serve_cut(whole) as base, pytest.raises(TransferError) as err:
        fetch_uri(UriLocation(url=f"{base}/m.tar"), tmp_path / "out", tmp_path / "work")
    msg = str(err.value)
    assert "\n" not in msg and "download of http://127.0.0.1:" in msg and "/m.tar is truncated: " in msg, msg
    assert list((tmp_path / "out").iterdir()) == [] and list((tmp_path / "work").iterdir()) == []


def test_zip_archive_unpacks(tmp_path, server):
    root, url = server
    expected = make_model(tmp_path / "model")
    with zipfile.ZipFile(root / "model.zip", "w") as zf:
        for rel in expected:
            zf.write(tmp_path / "model" / rel, rel)
    fetch_uri(UriLocation(url=f"{url}/model.zip"), tmp_path / "out", tmp_path / "work")
    assert digests_of(tmp_path / "out") == expected


def test_plain_file_lands_under_its_name(tmp_path, server):
    root, url = server
    (root / "model.onnx").write_bytes(b"onnx")
    entries = fetch_uri(UriLocation(url=f"{url}/model.onnx?sig=abc"), tmp_path / "out", tmp_path / "work")
    assert [(e.path, e.size) for e in entries] == [("model.onnx", 4)]


def test_bearer_token_from_credentials_dir(tmp_path, server):
    root, url = server
    (root / "private").mkdir()
    (root / "private/m.bin").write_bytes(b"secret model")
    headers = uri_headers({"TOKEN": TOKEN})
    fetch_uri(UriLocation(url=f"{url}/private/m.bin", headers=headers), tmp_path / "out", tmp_path / "work")
    assert (tmp_path / "out/m.bin").read_bytes() == b"secret model"


def test_rejected_token_is_one_line_without_the_token(tmp_path, server):
    root, url = server
    (root / "private").mkdir()
    (root / "private/m.bin").write_bytes(b"x")
    wrong = "wrong-token-Zz99Yy88"
    with pytest.raises(TransferError) as err:
        fetch_uri(UriLocation(url=f"{url}/private/m.bin", headers=uri_headers({"TOKEN": wrong})),
                  tmp_path / "out", tmp_path / "work")
    assert str(err.value) == (f"download of {url}/private/m.bin failed: HTTP 401 Unauthorized (check the credentials "
                              f"in --source-uri-credentials-path)")
    assert wrong not in str(err.value)


def test_basic_auth_and_extra_headers_from_credentials_dir():
    h = uri_headers({"USERNAME": "u", "PASSWORD": "p:w", "HEADERS": '{"X-Api-Key": "k"}'})
    assert h["Authorization"].reveal() == "Basic " + base64.b64encode(b"u:p:w").decode()
    assert h["X-Api-Key"].reveal() == "k" and str(h["X-Api-Key"]) == "***"


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(TransferError, match=r"^download of http://127.0.0.1:9/m.bin failed: "):
        fetch_uri(UriLocation(url="http://127.0.0.1:9/m.bin"), tmp_path / "out", tmp_path / "work")


def _malicious_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)


def _member(name, kind=tarfile.REGTYPE, link=""):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


@pytest.mark.parametrize("member,why", [
    (_member("../escape.txt"), "outside the model directory"),
    (_member("/etc/evil"), "outside the model directory"),
    (_member("a/../../escape"), "outside the model directory"),
    (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
    (_member("link", tarfile.SYMTYPE, "../../outside"), "outside the model directory"),
    (_member("hard", tarfile.LNKTYPE, "../outside"), "outside the model directory"),
    (_member("dev", tarfile.CHRTYPE), "device or fifo"),
    (_member("fifo", tarfile.FIFOTYPE), "device or fifo"),
])
def test_tar_traversal_and_special_files_are_refused(tmp_path, server, member, why):
    root, url = server
    _malicious_tar(root / "evil.tar", member, b"pwned" if member.isreg() else b"")
    with pytest.raises(TransferError, match=why):
        fetch_uri(UriLocation(url=f"{url}/evil.tar"), tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a/../../escape.txt"])
def test_zip_traversal_is_refused(tmp_path, server, name):
    root, url = server
    with zipfile.ZipFile(root / "evil.zip", "w") as zf:
        zf.writestr(name, b"pwned")
    with pytest.raises(TransferError, match="outside the model directory"):
        fetch_uri(UriLocation(url=f"{url}/evil.zip"), tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_is_refused(tmp_path, server):
    root, url = server
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(root / "evil.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(TransferError, match="not a regular file"):
        fetch_uri(UriLocation(url=f"{url}/evil.zip"), tmp_path / "out", tmp_path / "work")


# --- local / PVC -----------------------------------------------------------------------------------------------

def test_local_source_is_read_in_place_and_copied_into_a_volume_without_touching_its_files(tmp_path):
    expected = make_model(tmp_path / "pvc")
    model_dir, files = read_local(LocalLocation(tmp_path / "pvc"))
    assert model_dir == tmp_path / "pvc" and {f.path: f.sha256 for f in files} == expected
    dest = tmp_path / "dest" / "model"
    dest.mkdir(parents=True)
    (dest / "unrelated.bin").write_bytes(b"old")
    published = publish_local(model_dir, files, LocalLocation(dest), TEST_JOB)
    got = digests_of(dest)
    assert got.pop("unrelated.bin") == hashlib.sha256(b"old").hexdigest()  # not the job's: left alone
    assert got.pop(RECORD) and got == expected
    record = json.loads((dest / RECORD).read_text())
    assert record["job"] == TEST_JOB and record["files"] == expected and record["stat"].keys() == expected.keys()
    assert published.uri == dest.resolve().as_uri()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no staging left behind
    assert not list(dest.glob(".modelsync-staging-*"))


def test_local_destination_inside_source_is_refused(tmp_path):
    make_model(tmp_path / "pvc")
    model_dir, files = read_local(LocalLocation(tmp_path / "pvc"))
    with pytest.raises(TransferError, match="overlaps the source"):
        publish_local(model_dir, files, LocalLocation(tmp_path / "pvc" / "copy"), TEST_JOB)


def test_symlink_escaping_the_source_is_refused(tmp_path):
    make_model(tmp_path / "pvc")
    (tmp_path / "pvc" / "escape").symlink_to("/etc/hostname")
    with pytest.raises(TransferError, match="symlink pointing outside"):
        read_local(LocalLocation(tmp_path / "pvc"))


def test_empty_source_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferError, match="no files found"):
        inventory(tmp_path / "empty")
