"""layer_extract's direct reader of uncompressed tar streams (no tarfile buffering) against tarfile's own stream
mode, on tars written by tarfile in the GNU and the pax formats: the same tree, the same entries, the same
refusals. No stack needed."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from modelsync.errors import TransferError
from modelsync.layer_extract import TreeWriter

PLAIN, GZIP = "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"


def member(tar: tarfile.TarFile, name: str, data: bytes | None = None, **kw) -> None:
    info = tarfile.TarInfo(name)
    for key, value in kw.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def layer(fmt: int, build) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        build(tar)
    return out.getvalue() + b"\0" * 700  # trailing bytes past the end blocks belong to the blob too


def apply(tmp: Path, blob: bytes, media_type: str) -> tuple[dict[str, str], list]:
    data = gzip.compress(blob) if media_type == GZIP else blob
    tree = TreeWriter(tmp, "models")
    tree.apply(io.BytesIO(data), media_type, "sha256:" + hashlib.sha256(data).hexdigest())
    found = {}
    for path in sorted(tmp.rglob("*")):
        rel = path.relative_to(tmp).as_posix()
        found[rel] = ("link:" + os.readlink(path)) if path.is_symlink() else \
            ("dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
    return found, tree.entries()


def model_layer(tar: tarfile.TarFile) -> None:
    big = os.urandom(9 * 1024 * 1024 + 77)  # over the reader's buffer, not a whole block
    member(tar, "models", type=tarfile.DIRTYPE, mode=0o755)
    member(tar, "models/" + "d" * 120 + "/w ü.bin", big)                       # a long name
    member(tar, "models/empty", b"")
    member(tar, "models/small.json", b'{"a": 1}')
    member(tar, "etc/passwd", b"root:x:0:0")                                    # outside the subtree: skipped
    member(tar, "models/link", type=tarfile.SYMTYPE, linkname="small.json")
    member(tar, "models/" + "l" * 110, type=tarfile.SYMTYPE, linkname="./small.json")
    member(tar, "models/hard", type=tarfile.LNKTYPE, linkname="models/small.json")
    member(tar, "models/sub/.wh..wh..opq", b"")


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_direct_reading_gives_what_tarfile_gives(tmp_path, fmt):
    blob = layer(fmt, model_layer)
    direct = apply(tmp_path / "direct", blob, PLAIN)
    through_tarfile = apply(tmp_path / "tarfile", blob, GZIP)  # compressed layers still go through tarfile
    assert direct == through_tarfile
    assert len(direct[1]) == 6 and "models" not in direct[0]


def test_pax_size_and_path_records_are_applied(tmp_path):
    def build(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("models/x")
        info.size = 5
        info.pax_headers = {"path": "models/from-pax.bin", "comment": "é"}
        tar.addfile(info, io.BytesIO(b"hello"))
    found, entries = apply(tmp_path / "d", layer(tarfile.PAX_FORMAT, build), PLAIN)
    assert found == {"from-pax.bin": hashlib.sha256(b"hello").hexdigest()}


def test_refusals_are_the_same(tmp_path):
    for bad, says in ((lambda t: member(t, "models/../../x", b"x"), "'..' would lead outside"),
                      (lambda t: member(t, "models/fifo", type=tarfile.FIFOTYPE), "special files"),
                      (lambda t: member(t, "models/l", type=tarfile.SYMTYPE, linkname="../../etc"), "outside")):
        blob = layer(tarfile.GNU_FORMAT, bad)
        for kind in (PLAIN, GZIP):
            with pytest.raises(TransferError, match=says):
                apply(tmp_path / f"r{hash((says, kind))}", blob, kind)


def test_a_cut_or_altered_stream_is_refused(tmp_path):
    blob = layer(tarfile.GNU_FORMAT, model_layer)
    tree = TreeWriter(tmp_path / "cut", "models")
    with pytest.raises(TransferError, match="not a readable tar|does not match"):
        tree.apply(io.BytesIO(blob[:5 * 1024 * 1024]), PLAIN, "sha256:" + hashlib.sha256(blob).hexdigest())
    flipped = bytearray(blob)
    flipped[3 * 1024 * 1024] ^= 1  # inside the big file's data: only the digest can tell
    with pytest.raises(TransferError, match="does not match its digest"):
        TreeWriter(tmp_path / "flip", "models").apply(io.BytesIO(bytes(flipped)), PLAIN,
                                                      "sha256:" + hashlib.sha256(blob).hexdigest())
