"""Sample models for transfer tests: nested dirs, a 0-byte file, a name with spaces and unicode, optional big file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from modelsync.files import sha256_file


def raw_weights(size: int) -> bytes:
    """Random bytes for a raw weights file (.bin): the first is 0xff, no pickle opcode. Whole random files start like
    a pickle about 1 time in 7000 (PROTO's magic, or an extension code called), and the pickle check then refuses
    them: a test must not fail by chance."""
    return b"\xff" + os.urandom(size - 1)


SMALL_FILES = {
    "config.json": b'{"architectures": ["Tiny"], "hidden": 8}\n',
    "weights/part-00001.bin": raw_weights(300_000),
    "weights/nested/deeper/part-00002.bin": raw_weights(70_001),
    "tokenizer/empty.txt": b"",
    "docs/read me ünïcødé ✓.md": "Ünïcødé name with spaces\n".encode(),
}


def make_model(root: Path, big_bytes: int = 0) -> dict[str, str]:
    """Write the sample model under root; return {relative path: sha256}."""
    files = dict(SMALL_FILES)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    if big_bytes:
        digests["big/model.safetensors"] = write_big(root / "big/model.safetensors", big_bytes)
    return digests


def write_big(path: Path, size: int) -> str:
    """Incompressible data, written and hashed in 8 MiB blocks (one random block repeated with a counter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 * 1024 * 1024)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size:
            chunk = (i.to_bytes(8, "little") + block[8:])[: size - written]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            i += 1
    return digest.hexdigest()


def digests_of(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


# The job fingerprint that direct publish_* calls in tests pass (the job computes a hex hash like this one).
TEST_JOB = "5e1f0c1d2a3b4c5d6e7f8091a2b3c4d5"
