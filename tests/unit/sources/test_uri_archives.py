"""HTTP-source archives against a real small file system (a tmpfs): bombs refused before anything is written,
a full disk while writing is one line naming the storage path setting, nothing half-unpacked is left behind;
zips written without file-type bits unpack; links and special files in zips are still refused."""

from __future__ import annotations

import http.server
import io
import stat
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from modelsync.errors import TransferError
from modelsync.locations import UriLocation
from modelsync.sources.uri import fetch_uri

from ...support.archives import BOMB, FS_SIZE, SETTING, MiB, regular_member, zeros_zip
from ...support.models import digests_of, make_model


def _fetch(url: str, storage: Path):
    return fetch_uri(UriLocation(url=url), storage / "model", storage / "work")


def _left_in(storage: Path) -> list[str]:
    """Files under the storage path's model dir (the download itself lives in work/)."""
    return sorted(p.relative_to(storage).as_posix() for p in (storage / "model").rglob("*"))


def _assert_space_error(err: pytest.ExceptionInfo, *, declared: str | None = None) -> None:
    msg = str(err.value)
    assert "\n" not in msg and SETTING in msg and " free but " in msg, msg
    if declared:  # refused from the declared sizes, before writing: the exact amount is named
        assert f"needs {declared} (plus 1.0 MiB kept free)" in msg, msg


def _declare_size(path: Path, name: str, size: int) -> None:
    """Patch the member's uncompressed size in its local header and its central directory entry."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
        central = zf.start_dir
    assert data[local:local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, size)
    while data[central + 46:central + 46 + struct.unpack_from("<H", data, central + 28)[0]] != name.encode():
        central += 46 + sum(struct.unpack_from("<HHH", data, central + 28))
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


# ---- size limits ------------------------------------------------------------------------------------------------

def test_zip_bomb_is_refused_before_anything_is_written(tmp_path, http_root, small_fs):
    root, url = http_root
    zeros_zip(root / "bomb.zip")
    with pytest.raises(TransferError) as err:
        _fetch(f"{url}/bomb.zip", small_fs)
    _assert_space_error(err, declared="64.0 MiB")
    assert _left_in(small_fs) == []


def test_tar_gz_bomb_is_refused_before_anything_is_written(tmp_path, http_root, small_fs):
    root, url = http_root
    with tarfile.open(root / "bomb.tar.gz", "w:gz", compresslevel=1) as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        bomb = tarfile.TarInfo("weights/bomb.bin")
        bomb.size = BOMB
        tar.addfile(bomb, io.BytesIO(bytes(BOMB)))
    assert (root / "bomb.tar.gz").stat().st_size < MiB
    with pytest.raises(TransferError) as err:
        _fetch(f"{url}/bomb.tar.gz", small_fs)
    _assert_space_error(err, declared="64.0 MiB")
    assert _left_in(small_fs) == []


def test_zip_member_larger_than_it_declares_leaves_nothing_behind(tmp_path, http_root, small_fs):
    """The central directory (and local header) say 1000 bytes; the deflated data is 64 MiB of zeros."""
    root, url = http_root
    zeros_zip(root / "liar.zip", "liar.bin")
    _declare_size(root / "liar.zip", "liar.bin", 1000)
    with zipfile.ZipFile(root / "liar.zip") as zf:
        assert zf.getinfo("liar.bin").file_size == 1000
    with pytest.raises(TransferError) as err:
        _fetch(f"{url}/liar.zip", small_fs)
    msg = str(err.value)
    # zipfile stops at the declared size and fails the CRC; were it not to, the byte count would stop the member
    assert "\n" not in msg and ("Bad CRC-32 for file 'liar.bin'" in msg or "'liar.bin': it holds more" in msg), msg
    assert _left_in(small_fs) == []  # not even ok.txt, written before the liar


def test_disk_full_while_unpacking_is_one_line_and_leaves_nothing(tmp_path, http_root, small_fs):
    """3000 one-byte files declare 3000 bytes but take a 4 KiB page each on tmpfs: ENOSPC part way through."""
    root, url = http_root
    with zipfile.ZipFile(root / "many.zip", "w") as zf:
        for i in range(3000):
            zf.writestr(regular_member(f"shards/{i:05d}.txt"), b"x")
    with pytest.raises(TransferError) as err:
        _fetch(f"{url}/many.zip", small_fs)
    msg = str(err.value)
    assert "\n" not in msg and SETTING in msg and "is full" in msg, msg
    assert _left_in(small_fs) == []


def test_download_without_length_stopped_when_the_disk_is_full(tmp_path, small_fs):
    """No Content-Length to check up front: the bytes are counted as they arrive; no partial download is left."""

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                for _ in range(2 * FS_SIZE // MiB):
                    self.wfile.write(bytes(MiB))
            except OSError:
                pass

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        with pytest.raises(TransferError) as err:
            _fetch(f"http://127.0.0.1:{httpd.server_address[1]}/model.bin", small_fs)
    finally:
        httpd.shutdown()
        httpd.server_close()
    _assert_space_error(err)
    assert "the download needs more than" in str(err.value)
    assert list((small_fs / "work").iterdir()) == [] and _left_in(small_fs) == []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_that_fits_unpacks(tmp_path, http_root, small_fs, kind):
    root, url = http_root
    expected = make_model(tmp_path / "m")
    if kind == "zip":
        with zipfile.ZipFile(root / "m.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in expected:
                zf.write(tmp_path / "m" / rel, rel)
    else:
        with tarfile.open(root / "m.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "m", arcname=".")
    entries = _fetch(f"{url}/m.{kind}", small_fs)
    assert digests_of(small_fs / "model") == expected == {e.path: e.sha256 for e in entries}
    assert list((small_fs / "work").iterdir()) == []  # the archive is removed once unpacked


# ---- zip member types -------------------------------------------------------------------------------------------

def test_zip_members_without_type_bits_unpack(tmp_path, http_root):
    """writestr(name, data) stores mode 0o600 without S_IFREG; some Windows zippers store 0."""
    root, url = http_root
    with zipfile.ZipFile(root / "plain.zip", "w") as zf:
        zf.writestr("config.json", b"{}")
        bare = zipfile.ZipInfo("weights/w.bin")
        bare.external_attr = 0
        zf.writestr(bare, b"weights")
        folder = zipfile.ZipInfo("empty-dir/")
        folder.external_attr = 0o755 << 16  # a directory by its name only
        zf.writestr(folder, b"")
    with zipfile.ZipFile(root / "plain.zip") as zf:
        assert [stat.S_IFMT(i.external_attr >> 16) for i in zf.infolist()] == [0, 0, 0]
    entries = _fetch(f"{url}/plain.zip", tmp_path / "storage")
    assert {e.path: e.size for e in entries} == {"config.json": 2, "weights/w.bin": 7}
    assert (tmp_path / "storage/model/empty-dir").is_dir()


@pytest.mark.parametrize("mode", [stat.S_IFLNK | 0o777, stat.S_IFIFO | 0o644, stat.S_IFCHR | 0o644,
                                  stat.S_IFBLK | 0o644, stat.S_IFSOCK | 0o644])
def test_zip_links_and_special_files_are_still_refused(tmp_path, http_root, mode):
    root, url = http_root
    info = zipfile.ZipInfo("odd")
    info.external_attr = mode << 16
    with zipfile.ZipFile(root / "odd.zip", "w") as zf:
        zf.writestr(regular_member("ok.txt"), b"ok")
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(TransferError, match="refusing archive member 'odd': not a regular file or dir"):
        _fetch(f"{url}/odd.zip", tmp_path / "storage")
    assert _left_in(tmp_path / "storage") == []


# ---- OCI image layers (layer_extract) -----------------------------------------------------------------------------

def test_image_layer_larger_than_the_storage_path_is_one_line(tmp_path, small_fs):
    from modelsync.layer_extract import TreeWriter
    from modelsync.oci_layout import OCI_LAYER_TAR

    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        big = tarfile.TarInfo("models/big.bin")
        big.size = 2 * FS_SIZE
        tar.addfile(big, io.BytesIO(bytes(big.size)))
    tree = TreeWriter(small_fs / "model", "models")
    with pytest.raises(TransferError) as err:
        tree.apply(layer, OCI_LAYER_TAR, "sha256:" + "0" * 64)
    _assert_space_error(err)
    assert "unpacking the layers needs more than" in str(err.value)
    assert list((small_fs / "model").iterdir()) == []  # no half-written file
