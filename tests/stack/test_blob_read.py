"""blob_read.BlobReader against the stack's real registries (plain HTTP, and TLS with credentials), some reads
through tests/support/faults.failing_gateway: the bytes come back whole and in order from parallel ranges, never
more than AHEAD parts past the reader; a range cut mid-way is asked again from the byte it reached; a registry
that ignores Range is read as one stream; a registry cutting every read fails in one line in bounded time; a
blob whose size is not the manifest's is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from modelsync import blob_read
from modelsync.blob_read import BlobReader
from modelsync.clients.distribution import RegistryClient
from modelsync.errors import TransferError
from modelsync.locations import OciLocation
from modelsync.oci_copy import repo_path
from modelsync.retry import Transient
from modelsync.secret import Secret

from ..support.faults import Gate, failing_gateway
from ..support.jobs import spy_blob_opens

KIB = 1 << 10


@pytest.fixture
def small_parts(monkeypatch):
    """64 KiB parts, so a blob of a few hundred KiB is many ranges; retries without long waits."""
    monkeypatch.setattr(blob_read, "PART", 64 * KIB)
    monkeypatch.setattr(blob_read, "CHUNK", 16 * KIB)
    monkeypatch.setattr(blob_read, "RANGES", dataclasses.replace(blob_read.RANGES, first_delay=0.05))


def pushed(location: OciLocation, size: int) -> tuple[RegistryClient, str, str, bytes]:
    repo = repo_path(location)
    data = os.urandom(size)
    client = RegistryClient(location)
    digest = client.put_blob(repo, data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    return client, repo, digest, data


def pushed_plain(stack, size: int) -> tuple[RegistryClient, str, str, bytes]:
    """size random bytes as a blob of a new repository on the stack's plain-HTTP registry."""
    return pushed(OciLocation(f"{stack.oci_registry}/blob-read/{uuid.uuid4().hex[:8]}", tls_verify=False), size)


@contextmanager
def through_gateway(stack, repo: str) -> Iterator[tuple[Gate, RegistryClient]]:
    """A failing_gateway in front of the stack's plain registry, and a client for repo that goes through it."""
    with failing_gateway(int(stack.oci_registry.rsplit(":", 1)[1])) as gate:
        yield gate, RegistryClient(OciLocation(f"127.0.0.1:{gate.port}/{repo}", tls_verify=False))


def read_all(reader: BlobReader, piece: int = 10 * KIB) -> bytes:
    out = bytearray()
    while data := reader.read(piece):
        out += data
    return bytes(out)


def test_parallel_ranges_give_the_blob_whole_and_never_run_far_ahead(stack, small_parts, monkeypatch):
    client, repo, digest, data = pushed_plain(stack, 40 * 64 * KIB + 123)
    reader = BlobReader(client, repo, digest, len(data))
    opens = spy_blob_opens(monkeypatch, lambda: reader.position)
    with reader:
        got = bytearray()
        while chunk := reader.read(10 * KIB):
            got += chunk
            time.sleep(0.001)  # a reader slower than the GETs: they must wait for it
        assert reader.read(1) == b""
    assert bytes(got) == data
    assert sorted(start for start, _ in opens) == [i * 64 * KIB for i in range(41)]
    ahead = max(start - (seen // (64 * KIB)) * 64 * KIB for start, seen in opens)
    assert ahead <= (blob_read.AHEAD - 1) * 64 * KIB, ahead


def test_tls_registry_with_credentials_serves_ranges(stack, small_parts):
    location = OciLocation(f"{stack.oci_tls_registry}/blob-read/{uuid.uuid4().hex[:8]}",
                           username=stack.oci_tls_username, password=Secret(stack.oci_tls_password),
                           ca_bundle=stack.oci_tls_ca)
    client, repo, digest, data = pushed(location, 5 * 64 * KIB + 7)
    with BlobReader(RegistryClient(location), repo, digest, len(data)) as reader:
        assert read_all(reader) == data


def test_a_cut_range_resumes_from_the_byte_it_reached(stack, small_parts, caplog):
    client, repo, digest, data = pushed_plain(stack, 6 * 64 * KIB)
    with through_gateway(stack, repo) as (gate, via):
        gate.cuts, gate.cut_after = 2, 5000
        with BlobReader(via, repo, digest, len(data)) as reader:
            assert read_all(reader) == data
    ranges = [line.rsplit(" ", 1)[1] for line in gate.seen if "/blobs/" in line]
    resumed = [r for r in ranges if int(r.split("-")[0]) % (64 * KIB)]
    assert len(resumed) == 2 and all(int(r.split("-")[0]) % (64 * KIB) >= 5000 for r in resumed), ranges
    assert len(ranges) == 8, ranges
    assert "trying again" in caplog.text


def test_a_registry_ignoring_range_is_read_as_one_stream(stack, small_parts):
    client, repo, digest, data = pushed_plain(stack, 6 * 64 * KIB + 1)
    with through_gateway(stack, repo) as (gate, via):
        gate.strip_range = True
        with BlobReader(via, repo, digest, len(data)) as reader:
            assert read_all(reader) == data
            assert reader.read(1) == b""
    assert len([line for line in gate.seen if "/blobs/" in line]) == 1, gate.seen


def test_a_registry_ignoring_range_and_cut_raises_transient_for_the_layer(stack, small_parts):
    """The caller (sources/oci.stream_oci) reads the layer again from its start on Transient."""
    client, repo, digest, data = pushed_plain(stack, 6 * 64 * KIB)
    with through_gateway(stack, repo) as (gate, via):
        gate.strip_range, gate.cuts, gate.cut_after = True, 1, 100 * KIB
        with BlobReader(via, repo, digest, len(data)) as reader:
            with pytest.raises(Transient, match="read cut at byte"):
                read_all(reader)


def test_a_registry_cutting_every_read_fails_in_one_line_in_bounded_time(stack, small_parts):
    client, repo, digest, data = pushed_plain(stack, 3 * 64 * KIB)
    with through_gateway(stack, repo) as (gate, via):
        gate.cut_after = 1000
        start = time.monotonic()
        with BlobReader(via, repo, digest, len(data)) as reader:
            gate.cuts = 10**6  # the first answer (the probe) whole; every later one cut
            with pytest.raises(TransferError) as err:
                read_all(reader)
        elapsed = time.monotonic() - start
    message = str(err.value)
    assert "\n" not in message and digest[:19] in message and f"after {blob_read.RANGES.attempts} tries" in message
    assert elapsed < 10, elapsed


def test_a_blob_not_the_manifests_size_is_refused(stack, small_parts):
    client, repo, digest, data = pushed_plain(stack, 3 * 64 * KIB)
    with pytest.raises(TransferError, match=f"holds {len(data)} bytes, the manifest says {len(data) + 1}"):
        with BlobReader(client, repo, digest, len(data) + 1):
            pass


def test_an_empty_blob_needs_no_request(stack, monkeypatch):
    def refuse(*args):
        raise AssertionError("no GET for an empty blob")
    monkeypatch.setattr(RegistryClient, "open_blob", refuse)
    location = OciLocation(f"{stack.oci_registry}/blob-read/empty", tls_verify=False)
    with BlobReader(RegistryClient(location), "blob-read/empty", "sha256:" + hashlib.sha256(b"").hexdigest(),
                    0) as reader:
        assert reader.read() == b"" and reader.read(5) == b""
