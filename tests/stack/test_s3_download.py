"""s3_download.S3Download against the stack's real MinIO: ranged and whole GETs land each file whole, with the
object's time; an object changed or removed after the listing fails in one line naming it and leaves nothing; the
cap on in-flight bytes holds while a consumer takes the files."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import pytest

from modelsync import s3_download
from modelsync.clients import aws
from modelsync.errors import TransferError
from modelsync.files import disk_bytes
from modelsync.layer_push import Cancelled
from modelsync.s3_download import S3Download
from modelsync.sources.s3 import list_s3

from ..support.jobs import s3loc
from ..support.models import raw_weights

MIB = 1 << 20


class Taker:
    """A consumer as LayerPusher is one: takes (deletes) each file once it has landed whole, slowly if asked."""

    def __init__(self, files: dict[str, int], dest: Path, delay: float = 0.0, take: bool = True):
        self.files, self.dest, self.delay, self.take = files, dest, delay, take
        self.taken: set[str] = set()
        self.stopping = threading.Event()
        self.waiting = False
        self.sha: dict[str, str] = {}
        self.peak = 0

    def check(self) -> None:
        if self.stopping.is_set():
            raise Cancelled()

    def stuck(self) -> bool:
        return self.waiting

    def consume(self) -> None:
        for rel, size in self.files.items():
            path = self.dest / rel
            while not (path.exists() and path.stat().st_size == size):
                self.waiting = True
                self.peak = max(self.peak, disk_bytes(self.dest.parent))
                if self.stopping.is_set():
                    return
                time.sleep(0.01)
            self.waiting = False
            self.peak = max(self.peak, disk_bytes(self.dest.parent))
            self.sha[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            time.sleep(self.delay)
            if self.take:
                path.unlink()
            self.taken.add(rel)


def put(stack, prefix: str, objects: dict[str, bytes]) -> None:
    client = aws.client(s3loc(stack, prefix))
    for rel, data in objects.items():
        client.put_object(Bucket=stack.minio_bucket, Key=f"{prefix}/{rel}", Body=data)


def model(stack) -> tuple[str, dict[str, bytes]]:
    objects = {"big.bin": raw_weights(5 * MIB + 12345), "empty": b"", "sub/dir/config.json": b'{"a": 1}',
               "1": b"a file named as a partial file is", "big.bin.partial": raw_weights(3 * MIB)}
    prefix = f"dl-{uuid.uuid4().hex[:8]}"
    put(stack, prefix, objects)
    return prefix, objects


@pytest.mark.stack
def test_ranges_and_whole_objects_land_whole_with_the_objects_time(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(s3_download, "PART", MIB)  # big.bin in 6 ranges, 4 at a time
    prefix, objects = model(stack)
    loc = s3loc(stack, prefix)
    kind, files, origins = list_s3(loc)
    download = S3Download(loc, kind, files, tmp_path / "download", 1 << 30, origins)
    taker = Taker(files, download.dest, take=False)
    download.run(taker, list(files))
    for rel, data in objects.items():
        path = download.dest / rel
        assert path.read_bytes() == data, rel
        assert path.stat().st_mtime == int(origins[rel].modified), rel  # as `aws s3 cp` leaves it
    assert not list(download.partials.iterdir())


@pytest.mark.stack
def test_the_cap_holds_while_files_are_taken(stack, tmp_path, monkeypatch):
    """Six 3 MiB files under a 7 MiB cap: never more than the cap on disk (landed and partial), every file whole."""
    monkeypatch.setattr(s3_download, "PART", MIB)
    objects = {f"shard-{i}.bin": raw_weights(3 * MIB) for i in range(6)}
    prefix = f"dl-cap-{uuid.uuid4().hex[:8]}"
    put(stack, prefix, objects)
    loc = s3loc(stack, prefix)
    kind, files, origins = list_s3(loc)
    download = S3Download(loc, kind, files, tmp_path / "download", 7 * MIB, origins)
    taker = Taker(files, download.dest, delay=0.2)
    consumer = threading.Thread(target=taker.consume)
    consumer.start()
    download.run(taker, sorted(files))
    consumer.join(30)
    assert taker.sha == {rel: hashlib.sha256(data).hexdigest() for rel, data in objects.items()}
    assert 3 * MIB <= taker.peak <= 7 * MIB, f"{taker.peak / MIB:.1f} MiB"


@pytest.mark.stack
@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_an_object_changed_after_the_listing_fails_naming_it(stack, tmp_path, change):
    prefix, _ = model(stack)
    loc = s3loc(stack, prefix)
    kind, files, origins = list_s3(loc)
    client = aws.client(loc)
    if change == "replaced":
        client.put_object(Bucket=stack.minio_bucket, Key=f"{prefix}/big.bin", Body=raw_weights(5 * MIB + 12345))
    else:
        client.delete_object(Bucket=stack.minio_bucket, Key=f"{prefix}/big.bin")
    download = S3Download(loc, kind, files, tmp_path / "download", 1 << 30, origins)
    with pytest.raises(TransferError) as err:
        download.run(Taker(files, download.dest, take=False), ["big.bin", *sorted(set(files) - {"big.bin"})])
    message = str(err.value)
    assert f"s3://{stack.minio_bucket}/{prefix}/big.bin changed during the sync" in message and "\n" not in message
    assert not (download.dest / "big.bin").exists()
    deadline = time.monotonic() + 5  # the other GETs end on their own threads
    while list(download.partials.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(download.partials.iterdir())
