"""`make bench`: whole-job throughput on the local stack, next to the floors of the raw tools on the same data. MinIO
and the registry are the run's own (bench/servers.py: started from the stack's binaries, their data gone with the
run), the Model Registry the stack's.

    python -m bench [--files 8] [--size 512Mi] [--json bench/results.json] [--shaped 800mbit] [--only uri|s3]
    python -m bench --compare-backends [--size-mib 1024]

Default (JobsAgainstFloors): a model of --files x --size incompressible files plus a few small ones, in MinIO. One run
measures, each as one process tree sampled every 50 ms (wall time, MB/s, peak disk bytes in its scratch directory, peak
RSS summed over the tree, the tree's CPU seconds and MinIO's and the registry's during the run): D,
`aws s3 cp --recursive` of the model; P, `oras push` of the same files; a naive S3 -> OCI by hand (D then P in one
shell); the modelsync job S3 -> OCI, OCI -> S3 (that image back to a new prefix), an unchanged re-sync (S3 -> OCI to the
same tag again), a new tag of the unchanged model, the job SIGKILLed once 60 % of the bytes are pushed and its re-run
(the next pod: resume.py), a new tag after one shard changed, S3 -> S3, a URL source (the files as one tar archive
served by a thread of the bench, whose CPU is not counted) -> OCI and hf:// -> OCI from the stand-in Hub
(tests/support/hub_server.py). Then the ratios to the targets: S3->OCI / (1.2 x max(D,P) + 1 s), peak scratch
(S3 -> OCI, OCI -> S3, S3 -> S3) / (2 x largest file + 64 MiB), RSS / 300 MiB, re-sync / (0.15 x first + 1 s), new
tag / (0.1 x first + 2 s), one shard changed / (0.25 x first + 2 s), resumed / (0.5 x first + 2 s), on loopback
S3 -> OCI / (D + P), and whether v1, the new tag and the resumed run have one manifest digest. A table is printed
(Markdown) and the figures written as JSON.

--shaped RATE (e.g. 800mbit; root, iproute2): the same runs, but MinIO and the registry are reached through a link
limited to RATE each way (a veth pair into a network namespace made for the run, a `tc` `tbf` qdisc on each end; see
bench/shaped.py for the wiring), as a pod's NIC would limit them: D, P and the jobs all cross it. A raw TCP transfer
each way first measures the link. The S3 -> OCI target is then the issue's shaped one, J <= 1.1 x max(D, P) + 2 s,
printed with J / max(D, P); OCI -> S3, S3 -> S3 and hf:// -> OCI against J <= 1.2 x max(D, P) + 2 s. The figures
go to bench/results-shaped.json unless --json says otherwise.

--only uri: the URL rows alone (loopback): the by-hand floors on the same URL (D: `curl | tar x`, P: `oras push` of
the files), the job through the URL -> OCI pipeline (uri_pipeline.py) and the job with that pipeline taken out
(fetch-then-publish, as before it); then their ratios.

--only s3 (either regime): the pairs into S3 alone: D, P, S3 -> OCI (whose image OCI -> S3 reads), OCI -> S3 and
S3 -> S3, with the targets they have.

Each row's JSON also holds its peak RSS and CPU seconds per program (peak_rss_by_process, cpu_by_process: the
job's python, aws, oras; processes of one program at one sample summed) and the peak of the tree's summed PSS
(peak_pss_bytes), printed under the table for the modelsync rows.

--compare-backends: the earlier scenarios below (skopeo vs oras).

Each scenario is one full `modelsync` job (config -> preflight -> claim -> transfer -> verify -> LIVE) on a model
of one big incompressible file plus a few small ones. Floors are the bare tools on the big file alone: the job
cannot beat them, and the ratio shows what the job adds (hashing, layer building, verification, registry calls).

With --compare-backends, each scenario is one full job in this process, timed only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import OwnServers
from bench.shaped import ShapedLink, parse_rate
from e2e.stack import DEFAULT_STATE_DIR, LocalStack
from modelsync import config, job, tools
from modelsync.clients import aws
from modelsync.clients.distribution import RegistryClient
from modelsync.errors import TransferError
from modelsync.files import disk_bytes, inventory
from modelsync.locations import OciLocation, S3Location
from modelsync.oci_copy import push_layout
from modelsync.secret import Secret
from modelsync.settings import parse_size
from tests.support.hub_server import Hub, serve_hub
from tests.support.models import SMALL_FILES, make_model
from tests.support.oci_helpers import busybox_layout

MIB = 1024 * 1024


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


class Bench:
    def __init__(self, env: dict[str, str], work: Path, size: int):
        self.env, self.work, self.size = env, work, size
        self.model = work / "model"
        if size:  # the backend comparison's model (JobsAgainstFloors makes its own)
            make_model(self.model, big_bytes=size)
        self.total = sum(f.stat().st_size for f in self.model.rglob("*") if f.is_file())
        self.base = f"{env['OCI_REGISTRY']}/library/busybox:latest"
        push_layout(busybox_layout(work / "busybox"), "latest", OciLocation(self.base, tls_verify=False), "latest",
                    work / "bw", "skopeo")
        self.rows: list[tuple[str, float, int]] = []

    def s3(self, key: str) -> S3Location:
        e = self.env
        return S3Location(bucket=e["MINIO_BUCKET"], key=key, endpoint=e["MINIO_ENDPOINT"],
                          access_key_id=Secret(e["MINIO_ACCESS_KEY"]), secret_access_key=Secret(e["MINIO_SECRET_KEY"]))

    def floors(self) -> None:
        big = self.model / "big/model.safetensors"
        e = self.env
        key = f"bench-floor/{uuid.uuid4().hex[:8]}"
        aws_env = aws.cli_env(self.s3(key))  # the job's own aws environment (without the MinIO Expect stall)
        self.rows.append(("floor: sha256 of the big file (Python)", timed(lambda: _sha(big)), self.size))
        self.rows.append(("floor: aws s3 cp up (big file)", timed(lambda: tools.run(
            "aws", ["s3", "cp", str(big), f"s3://{e['MINIO_BUCKET']}/{key}", "--endpoint-url", e["MINIO_ENDPOINT"],
                    "--only-show-errors"], env=aws_env)), self.size))
        self.rows.append(("floor: aws s3 cp down (big file)", timed(lambda: tools.run(
            "aws", ["s3", "cp", f"s3://{e['MINIO_BUCKET']}/{key}", str(self.work / "floor.bin"), "--endpoint-url",
                    e["MINIO_ENDPOINT"], "--only-show-errors"], env=aws_env)), self.size))
        (self.work / "floor.bin").unlink()
        self.rows.append(("floor: oras push (big file)", timed(lambda: tools.run(
            "oras", ["push", "--plain-http", f"{e['OCI_REGISTRY']}/bench/floor:{uuid.uuid4().hex[:8]}",
                     "model.safetensors"], cwd=str(big.parent))), self.size))

    def job(self, label: str, src: dict[str, str], dst: dict[str, str]) -> None:
        e = self.env
        meta = self.work / f"meta-{uuid.uuid4().hex[:8]}"
        meta.mkdir()
        name = f"bench-{uuid.uuid4().hex[:8]}"
        for k, v in {"RegisteredModel.name": name, "ModelVersion.name": "1"}.items():
            (meta / k).write_text(v)
        env = {"MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
               "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": e["MR_URL"], "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
               "MODEL_SYNC_STORAGE_PATH": str(self.work / "storage"), **src, **dst}
        cfg = config.load([], env)
        self.rows.append((label, timed(lambda: job.run(cfg)), self.total))

    def src_s3(self, key: str) -> dict[str, str]:
        e = self.env
        return {"MODEL_SYNC_SOURCE_TYPE": "s3", "MODEL_SYNC_SOURCE_AWS_BUCKET": e["MINIO_BUCKET"],
                "MODEL_SYNC_SOURCE_AWS_KEY": key, "MODEL_SYNC_SOURCE_AWS_ENDPOINT": e["MINIO_ENDPOINT"],
                "MODEL_SYNC_SOURCE_AWS_ACCESS_KEY_ID": e["MINIO_ACCESS_KEY"],
                "MODEL_SYNC_SOURCE_AWS_SECRET_ACCESS_KEY": e["MINIO_SECRET_KEY"]}

    def dst_oci(self, ref: str, backend: str) -> dict[str, str]:
        return {"MODEL_SYNC_DESTINATION_TYPE": "oci", "MODEL_SYNC_DESTINATION_OCI_URI": ref,
                "MODEL_SYNC_DESTINATION_OCI_USERNAME": "bench", "MODEL_SYNC_DESTINATION_OCI_PASSWORD": "unused",
                "MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY": "false", "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend,
                "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE": self.base,
                "MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY": "false"}

    def fresh(self) -> None:
        """New bytes at the start of the big file: a new layer digest, so nothing can be reused by a registry."""
        with open(self.model / "big/model.safetensors", "r+b") as f:
            f.write(os.urandom(16))

    def upload(self) -> str:
        from modelsync.destinations.s3 import publish_s3
        key = f"bench-src/{uuid.uuid4().hex[:8]}"
        publish_s3(self.model, inventory(self.model), self.s3(key), "b" * 32)
        return key

    def run(self) -> None:
        self.floors()
        repo = f"{self.env['OCI_REGISTRY']}/bench/model-{uuid.uuid4().hex[:8]}"
        for backend in ("skopeo", "oras"):
            self.fresh()
            key = self.upload()
            self.job(f"job: s3 -> oci ({backend})", self.src_s3(key), self.dst_oci(f"{repo}-{backend}:v1", backend))
            self.job(f"job: s3 -> oci again, blobs reused ({backend})", self.src_s3(key),
                     self.dst_oci(f"{repo}-{backend}:v2", backend))
        self.fresh()
        self.job("job: pvc -> oci (oras, read in place)",
                 {"MODEL_SYNC_SOURCE_TYPE": "pvc", "MODEL_SYNC_SOURCE_PATH": str(self.model)},
                 self.dst_oci(f"{repo}-pvc:v1", "oras"))
        e = self.env
        for backend in ("skopeo", "oras"):
            self.job(f"job: oci -> s3 ({backend})",
                     {"MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": f"{repo}-{backend}:v1",
                      "MODEL_SYNC_SOURCE_OCI_USERNAME": "bench", "MODEL_SYNC_SOURCE_OCI_PASSWORD": "unused",
                      "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false",
                      "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend},
                     {"MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_AWS_BUCKET": e["MINIO_BUCKET"],
                      "MODEL_SYNC_DESTINATION_AWS_KEY": f"bench-dst/{uuid.uuid4().hex[:8]}",
                      "MODEL_SYNC_DESTINATION_AWS_ENDPOINT": e["MINIO_ENDPOINT"],
                      "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": e["MINIO_ACCESS_KEY"],
                      "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": e["MINIO_SECRET_KEY"]})

    def print(self) -> None:
        if self.rows:
            print(f"\nmodel: {self.total / MIB:.0f} MiB ({self.size / MIB:.0f} MiB big file + small files); "
                  f"{os.cpu_count()} cores; loopback\n")
            print(f"{'scenario':52} {'seconds':>8} {'MiB/s':>8}")
            for label, seconds, size in self.rows:
                print(f"{label:52} {seconds:8.1f} {size / MIB / seconds:8.0f}")


class JobsAgainstFloors:
    """The default run: floors D and P, D and P at once by hand (what the link and the tools give when both
    directions run together: the best any overlap can reach), a naive by-hand S3 -> OCI, modelsync S3 -> OCI,
    OCI -> S3 and an unchanged re-sync, each one process tree sampled every 50 ms (scratch bytes, summed RSS);
    then the ratios."""

    def __init__(self, bench: Bench, count: int, size: int, server_pids: Sequence[int] = (),
                 link: ShapedLink | None = None, repeat: int = 1):
        self.b, self.count, self.size, self.link, self.repeat = bench, count, size, link, repeat
        self.probe: dict[str, float] = {}
        self.server_pids = list(server_pids)  # MinIO and the registry: their CPU is counted per run too
        self.model = bench.work / "floors-model"
        for i in range(count):
            _write_random(self.model / f"shard-{i:02d}.safetensors", size)
        for rel, data in SMALL_FILES.items():
            (self.model / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.model / rel).write_bytes(data)
        self.files = sorted(p.relative_to(self.model).as_posix() for p in self.model.rglob("*") if p.is_file())
        self.total = sum((self.model / rel).stat().st_size for rel in self.files)
        self.rows: list[dict[str, Any]] = []
        self.digests: dict[str, str] = {}
        self.resume_killed_at = 0  # bytes the killed run had recorded as pushed when it was killed

    def run(self) -> None:
        key = self._source()
        archive = self.b.work / "www" / "model.tar"  # the URL source: the same files as one tar archive
        archive.parent.mkdir()
        with tarfile.open(archive, "w") as tar:
            for rel in self.files:
                tar.add(self.model / rel, rel)
        repo = self._floors(key)
        e, loc = self.b.env, self.b.s3(key)
        aws_env = {**os.environ, **aws.cli_env(loc)}
        both = self.b.work / "floors-both"  # the best any overlap can do with these tools on this link
        script = ('aws s3 cp "$1" "$2" --recursive "${@:5}" & down=$!; cd "$4" && '
                  'find . -type f -printf "%P\\0" | sort -z | xargs -0 oras push --plain-http "$3"; up=$?; '
                  'wait $down && exit $up')

        def at_once(i: int) -> None:
            self.measure("D||P: aws download and oras push at once", ["bash", "-c", script, "both",
                         f"s3://{e['MINIO_BUCKET']}/{key}/", str(both), f"{repo}-both{_nth(i)}:v1", str(self.model),
                         *aws.cli_flags(loc)], both, env=aws_env)
            shutil.rmtree(both)
        self.sampled(at_once)
        naive = self.b.work / "floors-naive"
        script = ('aws s3 cp "$1" "$2" --recursive "${@:4}" && cd "$2" && '
                  'find . -type f -printf "%P\\0" | sort -z | xargs -0 oras push --plain-http "$3"')

        def by_hand(i: int) -> None:
            self.measure("naive: aws s3 cp, then oras push",
                         ["bash", "-c", script, "naive", f"s3://{e['MINIO_BUCKET']}/{key}/", str(naive),
                          f"{repo}-naive{_nth(i)}:v1", *aws.cli_flags(loc)], naive, env=aws_env)
            shutil.rmtree(naive)
        self.sampled(by_hand)
        ref = f"{repo}-job:v1"  # the first sample's image: the source of OCI -> S3 and the re-syncs' destination
        self.sampled(lambda i: self.job("modelsync S3 -> OCI", self.b.src_s3(key),
                                        self.b.dst_oci(f"{repo}-job{_nth(i)}:v1", "oras")))
        if self.link is not None:  # what the pacing costs through the link: the same job, the cap at the whole model
            self.job("S3 -> OCI, in-flight cap = the model", self.b.src_s3(key),
                     {**self.b.dst_oci(f"{repo}-nocap:v1", "oras"), "MODEL_SYNC_MAX_IN_FLIGHT_BYTES": str(self.total)})
        self.sampled(lambda i: self.to_s3("modelsync OCI -> S3", self._oci(ref)))
        self.job("modelsync S3 -> OCI, unchanged re-sync", self.b.src_s3(key), self.b.dst_oci(ref, "oras"))
        self.new_versions(key, f"{repo}-job")
        self.sampled(lambda i: self.to_s3("modelsync S3 -> S3", self.b.src_s3(key)))
        if self.link is not None:  # the URL source behind the link too
            url = self.link.serve_directory(archive.parent) + "model.tar"
            self.sampled(lambda i: self.job("modelsync URI (tar) -> OCI",
                                            {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": url},
                                            self.b.dst_oci(f"{repo}-uri{_nth(i)}:v1", "oras")))
        else:
            self.uri_jobs(archive, repo)
        archive.unlink()
        self.hf_job(f"{repo}-hf")
        shutil.rmtree(self.model)

    def run_s3(self) -> None:
        """--only s3: D, P, S3 -> OCI (also the image OCI -> S3 reads), OCI -> S3 and S3 -> S3, each --repeat
        times; nothing else."""
        key = self._source()
        repo = self._floors(key)
        self.sampled(lambda i: self.job("modelsync S3 -> OCI", self.b.src_s3(key),
                                        self.b.dst_oci(f"{repo}-job{_nth(i)}:v1", "oras")))
        self.sampled(lambda i: self.to_s3("modelsync OCI -> S3", self._oci(f"{repo}-job:v1")))
        self.sampled(lambda i: self.to_s3("modelsync S3 -> S3", self.b.src_s3(key)))
        shutil.rmtree(self.model)

    @staticmethod
    def _oci(ref: str) -> dict[str, str]:
        return {"MODEL_SYNC_SOURCE_TYPE": "oci", "MODEL_SYNC_SOURCE_OCI_URI": ref,
                "MODEL_SYNC_SOURCE_OCI_USERNAME": "bench", "MODEL_SYNC_SOURCE_OCI_PASSWORD": "unused",
                "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false"}

    def _source(self) -> str:
        """The model in the bench bucket (published as the job publishes); its key."""
        from modelsync.destinations.s3 import publish_s3
        key = f"bench-floors/{uuid.uuid4().hex[:8]}"
        publish_s3(self.model, inventory(self.model), self.b.s3(key), "b" * 32)
        return key

    def _floors(self, key: str) -> str:
        """D and P, each --repeat times; the repository prefix of this run's images."""
        e, loc = self.b.env, self.b.s3(key)
        aws_env = {**os.environ, **aws.cli_env(loc)}
        down = self.b.work / "floors-down"

        def download(i: int) -> None:
            shutil.rmtree(down, ignore_errors=True)
            self.measure("D: aws s3 cp --recursive (download)",
                         ["aws", "s3", "cp", f"s3://{e['MINIO_BUCKET']}/{key}/", str(down), "--recursive",
                          *aws.cli_flags(loc)], down, env=aws_env)
        self.sampled(download)
        repo = f"{e['OCI_REGISTRY']}/bench/floors-{uuid.uuid4().hex[:8]}"
        self.sampled(lambda i: self.measure("P: oras push (the same files)",
                                            ["oras", "push", "--plain-http", f"{repo}-floor{_nth(i)}:v1",
                                             *self.files], None, cwd=down))
        shutil.rmtree(down)
        return repo

    def uri_jobs(self, archive: Path, repo: str, floors: bool = False) -> None:
        """URL (tar) -> OCI from a server in this process (its CPU is the bench's, not counted): the pipeline
        (uri_pipeline.py) and, for comparison, fetch-then-publish (the job with that pipeline taken out). With
        floors, first the by-hand sequence on the same URL: `curl | tar x`, then `oras push` of the files."""
        handler = functools.partial(_QuietFiles, directory=str(archive.parent))
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as www:
            threading.Thread(target=www.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{www.server_address[1]}/{archive.name}"
            src = {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": url}
            if floors:
                down = self.b.work / "uri-down"
                down.mkdir()
                self.measure("D: curl | tar x (download + unpack)",
                             ["bash", "-c", 'curl -sSf "$1" | tar x -C "$2"', "d", url, str(down)], down)
                self.measure("P: oras push (the same files)", ["oras", "push", "--plain-http", f"{repo}-floor:v1",
                                                                *self.files], None, cwd=down)
                shutil.rmtree(down)
            self.sampled(lambda i: self.job("modelsync URI (tar) -> OCI", src,
                                            self.b.dst_oci(f"{repo}-uri{_nth(i)}:v1", "oras")))
            self.job("URI (tar) -> OCI, fetch then publish", src,
                     self.b.dst_oci(f"{repo}-uri-ftp:v1", "oras"), argv=_WITHOUT_URI_PIPELINE)
            www.shutdown()

    def run_uri(self) -> None:
        """--only uri: the by-hand floors and the two URI jobs, nothing else."""
        archive = self.b.work / "www" / "model.tar"
        archive.parent.mkdir()
        with tarfile.open(archive, "w") as tar:
            for rel in self.files:
                tar.add(self.model / rel, rel)
        self.uri_jobs(archive, f"{self.b.env['OCI_REGISTRY']}/bench/floors-{uuid.uuid4().hex[:8]}", floors=True)
        archive.unlink()
        shutil.rmtree(self.model)

    def hf_job(self, repo: str) -> None:
        """hf:// -> OCI (into repo, a new one per sample) from the stand-in Hub (tests/support/hub_server.py)
        serving the model's files: in this process on loopback (its CPU is the bench's, not counted), in the
        namespace behind the link when shaped."""
        src = {"MODEL_SYNC_SOURCE_TYPE": "uri", "MODEL_SYNC_SOURCE_URI": "hf://bench/model"}
        if self.link is not None:
            url = self.link.serve_hub(self.model, "bench/model")
            self.sampled(lambda i: self.job("modelsync hf:// -> OCI", {**src, "HF_ENDPOINT": url},
                                            self.b.dst_oci(f"{repo}{_nth(i)}:v1", "oras")))
            return
        hub = Hub()
        hub.add("bench/model", {"main": self.model})
        with serve_hub(hub) as served:
            urllib.request.urlopen(f"{served.url}/api/models/bench/model", timeout=600).read()  # hashed once, here
            self.sampled(lambda i: self.job("modelsync hf:// -> OCI", {**src, "HF_ENDPOINT": served.url},
                                            self.b.dst_oci(f"{repo}{_nth(i)}:v1", "oras")))

    def sampled(self, once: Callable[[int], None]) -> None:
        """A timed row measured --repeat times (once(i), i = 0, 1 ...: each into a new image or prefix, so no run
        reuses another's layers) and kept as one row: the median run (for an even count, the slower of the two
        middle ones), with every run's seconds as its samples. One run through the shaped link moved by up to
        10 % here (the same S3 -> OCI job: 57.0 to 62.8 s), more than some targets' margins."""
        start = len(self.rows)
        for i in range(self.repeat):
            once(i)
        runs = self.rows[start:]
        if len(runs) > 1:
            del self.rows[start:]
            middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            self.rows.append({**middle, "samples": [r["seconds"] for r in runs]})

    def to_s3(self, label: str, src: dict[str, str]) -> None:
        """A job into a new prefix of the bench bucket, removed after the run: repeated 4 GiB copies stay off
        the disk."""
        dst = self.dst_s3()
        self.job(label, src, dst)
        _remove_prefix(self.b, dst["MODEL_SYNC_DESTINATION_AWS_KEY"] + "/")

    def new_versions(self, key: str, repo: str) -> None:
        """A new tag of the unchanged model; the Job SIGKILLed once its progress record (resume.py) lists 60 % of
        the model's bytes as pushed, and run again (same metadata: the same Job; a new storage path: the next
        pod's); then one shard changed and a new tag. The manifest digests of v1, the new tag and the resumed run
        are compared (same objects, same image)."""
        self.job("new version, nothing changed, new tag", self.b.src_s3(key), self.b.dst_oci(f"{repo}:v2", "oras"))
        meta = self._meta()
        watch = ResumeWatch(self.b.env["MR_URL"], (meta / "RegisteredModel.name").read_text(),
                            OciLocation(f"{repo}-resume:v1", tls_verify=False), 0.6 * self.total)
        self.job("(killed once 60 % of the bytes are pushed)", self.b.src_s3(key),
                 self.b.dst_oci(f"{repo}-resume:v1", "oras"), meta=meta, kill_when=watch.reached)
        self.resume_killed_at = watch.seen
        self.job("Job killed at 60 %, re-run", self.b.src_s3(key), self.b.dst_oci(f"{repo}-resume:v1", "oras"),
                 meta=meta)
        client = RegistryClient(OciLocation(f"{repo}:v1", tls_verify=False))
        path = repo.split("/", 1)[1]
        self.digests = {ref: client.manifest(path if ref != "resume" else f"{path}-resume", tag).digest
                        for ref, tag in (("v1", "v1"), ("v2", "v2"), ("resume", "v1"))}
        loc = self.b.s3(f"{key}/shard-00.safetensors")
        changed = self.b.work / "changed-shard"
        _write_random(changed, self.size)
        aws.client(loc).upload_file(str(changed), loc.bucket, loc.key)
        changed.unlink()
        self.job("new version, one file changed, new tag", self.b.src_s3(key), self.b.dst_oci(f"{repo}:v3", "oras"))

    def _meta(self) -> Path:
        meta = self.b.work / f"meta-{uuid.uuid4().hex[:8]}"
        meta.mkdir()
        for k, v in {"RegisteredModel.name": f"bench-{uuid.uuid4().hex[:8]}", "ModelVersion.name": "1"}.items():
            (meta / k).write_text(v)
        return meta

    def dst_s3(self) -> dict[str, str]:
        e = self.b.env
        return {"MODEL_SYNC_DESTINATION_TYPE": "s3", "MODEL_SYNC_DESTINATION_AWS_BUCKET": e["MINIO_BUCKET"],
                "MODEL_SYNC_DESTINATION_AWS_KEY": f"bench-floors-dst/{uuid.uuid4().hex[:8]}",
                "MODEL_SYNC_DESTINATION_AWS_ENDPOINT": e["MINIO_ENDPOINT"],
                "MODEL_SYNC_DESTINATION_AWS_ACCESS_KEY_ID": e["MINIO_ACCESS_KEY"],
                "MODEL_SYNC_DESTINATION_AWS_SECRET_ACCESS_KEY": e["MINIO_SECRET_KEY"]}

    def measure(self, label: str, argv: list[str], scratch: Path | None, env: dict[str, str] | None = None,
                cwd: Path | None = None, kill_when: Callable[[], bool] | None = None) -> None:
        os.sync()  # the writes of the run before (an upload, a push) are not this run's: measured here, the kernel's
        # writeback of them cost the first download after an upload 4.9 s of system CPU for 512 MiB (1.2 s without)
        servers = {pid: _cpu(pid) or 0.0 for pid in self.server_pids}
        start = time.monotonic()
        # its own process group: on Ctrl-C / SIGTERM of the bench the whole tree is killed, not left running
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, start_new_session=True)
        killer = None
        if kill_when is not None:  # SIGKILL, as when a node dies: no handler runs
            killer = threading.Thread(target=_kill_when, args=(proc, kill_when), daemon=True)
            killer.start()
        try:
            seen = _sample(proc, scratch)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if killer is not None:
                killer.join(5)
        elapsed = time.monotonic() - start
        server_cpu = sum((_cpu(pid) or 0.0) - before for pid, before in servers.items())
        if kill_when is not None and proc.returncode != -signal.SIGKILL:
            raise SystemExit(f"{label}: ended (exit {proc.returncode}) before it was killed")
        if proc.returncode != 0 and kill_when is None:
            raise SystemExit(f"{label}: failed (exit {proc.returncode})")
        self.rows.append({"name": label, "seconds": round(elapsed, 2),
                          "mb_per_s": round(self.total / 1e6 / elapsed, 1),
                          "peak_scratch_bytes": seen.scratch if scratch is not None else None,
                          "peak_rss_bytes": seen.rss, "peak_rss_by_process": seen.rss_by_name,
                          "peak_pss_bytes": seen.pss, "cpu_seconds": round(seen.cpu, 2),
                          "cpu_by_process": seen.cpu_by_name,
                          "server_cpu_seconds": round(server_cpu, 2)})

    def job(self, label: str, src: dict[str, str], dst: dict[str, str], meta: Path | None = None,
            kill_when: Callable[[], bool] | None = None, argv: Sequence[str] = ("-m", "modelsync")) -> None:
        e = self.b.env
        meta = meta or self._meta()
        storage = self.b.work / f"storage-{uuid.uuid4().hex[:6]}"
        storage.mkdir()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODEL_SYNC_")},
               "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
               "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": e["MR_URL"], "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
               "MODEL_SYNC_STORAGE_PATH": str(storage), "MODEL_SYNC_LOG_LEVEL": "warning", **src, **dst}
        self.measure(label, [sys.executable, *argv], storage, env=env, kill_when=kill_when)
        shutil.rmtree(storage, ignore_errors=True)

    def uri_targets(self) -> list[dict[str, Any]]:
        """The URL (tar) -> OCI rows against the same targets as S3 -> OCI, where they were measured."""
        row = {r["name"]: r for r in self.rows}
        uri = row.get("modelsync URI (tar) -> OCI")
        if uri is None:
            return []
        out = [("URI->OCI peak scratch / (2 x largest file + 64 MiB)", uri["peak_scratch_bytes"],
                2 * self.size + 64 * MIB)]
        before = row.get("URI (tar) -> OCI, fetch then publish")
        if before is not None:
            out.append(("URI->OCI time / fetch then publish", uri["seconds"], before["seconds"]))
        d, p = row.get("D: curl | tar x (download + unpack)"), row.get("P: oras push (the same files)")
        if d is not None and p is not None:
            out.append(("URI->OCI time / (1.2 x max(D,P) + 1 s)", uri["seconds"],
                        1.2 * max(d["seconds"], p["seconds"]) + 1))
            out.append(("URI->OCI time / (D + P), by hand", uri["seconds"], d["seconds"] + p["seconds"]))
        return [{"name": n, "value": v, "limit": round(lim, 2), "ratio": round(v / lim, 2), "met": v <= lim}
                for n, v, lim in out]

    def targets(self) -> list[dict[str, Any]]:
        row = {r["name"]: r for r in self.rows}
        if "modelsync S3 -> OCI" not in row:  # --only uri
            return self.uri_targets()
        d, p = row["D: aws s3 cp --recursive (download)"], row["P: oras push (the same files)"]
        first = row["modelsync S3 -> OCI"]
        jobs = [r for r in self.rows if not r["name"].startswith(("D:", "P:", "D||P:", "naive"))]
        largest = self.size
        floor = max(d["seconds"], p["seconds"])
        time_target = (("shaped S3->OCI time / (1.1 x max(D,P) + 2 s)", first["seconds"], 1.1 * floor + 2)
                       if self.link is not None else
                       ("S3->OCI time / (1.2 x max(D,P) + 1 s)", first["seconds"], 1.2 * floor + 1))
        out = [time_target,
               ("S3->OCI peak scratch / (2 x largest file + 64 MiB)", first["peak_scratch_bytes"],
                2 * largest + 64 * MIB),
               *[(f"{name} peak scratch / (2 x largest file + 64 MiB)", row[f"modelsync {name}"]["peak_scratch_bytes"],
                  2 * largest + 64 * MIB) for name in ("OCI -> S3", "S3 -> S3")],
               ("peak RSS, all processes, of any modelsync job / 300 MiB", max(r["peak_rss_bytes"] for r in jobs),
                300 * MIB),
               ("peak PSS, all processes, of any modelsync job / 300 MiB",
                max(r["peak_pss_bytes"] for r in jobs), 300 * MIB)]
        later = (("re-sync time / (0.15 x first + 1 s)", "modelsync S3 -> OCI, unchanged re-sync", 0.15, 1),
                 ("new version, nothing changed, new tag / (0.1 x first + 2 s)",
                  "new version, nothing changed, new tag", 0.1, 2),
                 ("new version, one file changed / (0.25 x first + 2 s)", "new version, one file changed, new tag",
                  0.25, 2),
                 ("killed at 60 %, re-run / (0.5 x first + 2 s)", "Job killed at 60 %, re-run", 0.5, 2))
        out += [(name, row[label]["seconds"], share * first["seconds"] + extra)
                for name, label, share, extra in later if label in row]  # --only s3 runs none of them
        if self.link:  # the shaped targets for the other overlapped pairs
            out += [(f"shaped {name} time / (1.2 x max(D,P) + 2 s)", row[f"modelsync {name}"]["seconds"],
                     1.2 * floor + 2) for name in ("OCI -> S3", "S3 -> S3", "hf:// -> OCI")
                    if f"modelsync {name}" in row]
        if not self.link and "naive: aws s3 cp, then oras push" in row:
            # the loopback target: never slower than by hand (the naive run: D then P in one shell, measured
            # in the same state; D alone, the first run after the model's upload, also pays the kernel's reclaim of
            # its page cache: 41 s once where D then P took 24 s)
            out.append(("loopback S3->OCI time / naive by hand (D then P)", first["seconds"],
                        row["naive: aws s3 cp, then oras push"]["seconds"]))
        result = [{"name": n, "value": v, "limit": round(lim, 2), "ratio": round(v / lim, 2), "met": v <= lim}
                  for n, v, lim in out] + self.uri_targets()
        if not self.digests:  # --only s3
            return result
        same = len(set(self.digests.values())) == 1
        result.append({"name": "same source twice: identical manifest digests (v1, new tag, resumed)",
                       "value": self.digests, "limit": None, "ratio": 1.0 if same else 0.0, "met": same})
        return result

    def shaped_summary(self) -> dict[str, Any] | None:
        """Through the link: J / max(D, P) for S3 -> OCI beside the issue's target J <= 1.1 x max(D, P) + 2 s."""
        row = {r["name"]: r for r in self.rows}
        if self.link is None or "D||P: aws download and oras push at once" not in row:  # loopback, --only s3
            return None
        d, p = row["D: aws s3 cp --recursive (download)"]["seconds"], row["P: oras push (the same files)"]["seconds"]
        j = row["modelsync S3 -> OCI"]["seconds"]
        both = row["D||P: aws download and oras push at once"]["seconds"]
        uncapped = row["S3 -> OCI, in-flight cap = the model"]["seconds"]
        limit = 1.1 * max(d, p) + 2
        return {**self.link.describe(), "probe": self.probe, "d_seconds": d, "p_seconds": p, "j_seconds": j,
                "d_and_p_at_once_seconds": both, "j_over_d_and_p_at_once": round(j / both, 2),
                "j_uncapped_seconds": uncapped,
                "j_over_max_dp": round(j / max(d, p), 2), "target": "J <= 1.1 x max(D, P) + 2 s",
                "target_seconds": round(limit, 2), "met": j <= limit}

    def report(self, json_path: Path | None) -> None:
        where = "loopback stack"
        if self.link is not None:
            where = (f"MinIO and registry behind a {self.link.rate} link each way (tbf, veth into netns "
                     f"{self.link.netns}; raw TCP measured {self.probe['down_mib_per_s']:.0f} MiB/s down, "
                     f"{self.probe['up_mib_per_s']:.0f} MiB/s up)")
        print(f"\nmodel: {self.count} x {self.size / MIB:.0f} MiB + {len(SMALL_FILES)} small files = "
              f"{self.total / MIB:.0f} MiB; {os.cpu_count()} cores; {where}\n")
        print(f"| {'run':40} | {'s':>6} | {'MB/s':>6} | {'peak scratch MiB':>16} | {'peak RSS MiB':>12} | "
              f"{'CPU-s':>5} | {'+ servers':>9} |")
        print(f"|{'-' * 42}|{'-' * 7}:|{'-' * 7}:|{'-' * 17}:|{'-' * 13}:|{'-' * 6}:|{'-' * 10}:|")
        for r in self.rows:
            scratch = "" if r["peak_scratch_bytes"] is None else f"{r['peak_scratch_bytes'] / MIB:.0f}"
            print(f"| {r['name']:40} | {r['seconds']:6.1f} | {r['mb_per_s']:6.0f} | {scratch:>16} | "
                  f"{r['peak_rss_bytes'] / MIB:12.0f} | {r['cpu_seconds']:5.1f} | {r['server_cpu_seconds']:9.1f} |")
        print(f"\nCPU-s: the run's processes; + servers: MinIO's and the registry's during it. On {os.cpu_count()} "
              f"cores a run takes at least (CPU-s + servers) / {os.cpu_count()}.")
        print("\npeak RSS MiB by program (each program's own peak; they need not peak at once), the peak of the "
              "tree's summed PSS (a page shared by n processes counted 1/n in each), CPU-s by program:")
        for r in self.rows:
            if r["name"].startswith("modelsync") and r.get("peak_rss_by_process"):
                parts = sorted(r["peak_rss_by_process"].items(), key=lambda kv: -kv[1])
                cpus = sorted(r.get("cpu_by_process", {}).items(), key=lambda kv: -kv[1])
                print(f"  {r['name']}: " + ", ".join(f"{name} {size / MIB:.0f}" for name, size in parts)
                      + f"; PSS {r['peak_pss_bytes'] / MIB:.0f}; CPU-s "
                      + ", ".join(f"{name} {sec:.1f}" for name, sec in cpus))
        if self.repeat > 1:
            print(f"\nmeasured {self.repeat} times, the median run shown (its s, MB/s, scratch, RSS and CPU):")
            for r in self.rows:
                if "samples" in r:
                    print(f"  {r['name']}: {', '.join(f'{s:.1f}' for s in r['samples'])} s")
        targets = self.targets()
        print(f"\n| {'target':56} | {'ratio':>5} | met |")
        print(f"|{'-' * 58}|{'-' * 6}:|-----|")
        for t in targets:
            print(f"| {t['name']:56} | {t['ratio']:5.2f} | {'yes' if t['met'] else 'NO ':3} |")
        if self.resume_killed_at:
            print(f"\nthe killed run had pushed {self.resume_killed_at / MIB:.0f} of {self.total / MIB:.0f} MiB (its "
                  f"progress record) when it was SIGKILLed")
        shaped = self.shaped_summary()
        if shaped is not None:
            print(f"\nS3 -> OCI through the link: J / max(D, P) = {shaped['j_seconds']:.1f} / "
                  f"{max(shaped['d_seconds'], shaped['p_seconds']):.1f} s = {shaped['j_over_max_dp']:.2f}; "
                  f"target J <= 1.1 x max(D, P) + 2 s = {shaped['target_seconds']:.1f} s: "
                  f"{'met' if shaped['met'] else 'NOT met'}; D and P at once by hand "
                  f"{shaped['d_and_p_at_once_seconds']:.1f} s "
                  f"(J / that = {shaped['j_over_d_and_p_at_once']:.2f}); the job with the in-flight cap at the whole "
                  f"model {shaped['j_uncapped_seconds']:.1f} s")
        if json_path is not None:
            figures = {"model": {"files": self.count, "file_bytes": self.size, "small_files": len(SMALL_FILES),
                                 "total_bytes": self.total},
                       "cores": os.cpu_count(), "repeat": self.repeat, "runs": self.rows, "targets": targets,
                       "resume_killed_at_bytes": self.resume_killed_at}
            if shaped is not None:
                figures["shaped"] = shaped
            json_path.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"\nwritten: {json_path}")


class ScaleRun:
    """--scale: does the time per GiB hold as the model grows? S3 -> OCI alone, on loopback, for FILES files of
    SIZE and then FILES of a quarter of SIZE (the issue's 4 x 4 GiB against 4 x 1 GiB), each model written,
    uploaded and deleted locally before its job, and its objects deleted after it, so the disk holds at most the
    objects, the image and the scratch (about 2.5 x the larger model). The target: the larger run's seconds per GiB
    within 15 % of the smaller's; scratch and RSS as in every regime."""

    def __init__(self, bench: Bench, count: int, size: int, server_pids: Sequence[int]):
        self.b, self.count, self.size = bench, count, size
        self.floors = JobsAgainstFloors.__new__(JobsAgainstFloors)  # only its measure() and job(): no model written
        self.floors.b, self.floors.server_pids, self.floors.rows = bench, list(server_pids), []
        self.floors.link = None

    def run(self) -> None:
        from modelsync.destinations.s3 import publish_s3
        for size in (self.size, self.size // 4):  # the larger first, while the registry holds nothing of the other
            model = self.b.work / "scale-model"
            for i in range(self.count):
                _write_random(model / f"shard-{i:02d}.safetensors", size)
            key = f"bench-floors/scale-{uuid.uuid4().hex[:8]}"
            publish_s3(model, inventory(model), self.b.s3(key), "b" * 32)
            shutil.rmtree(model)
            self.floors.total = self.count * size
            ref = f"{self.b.env['OCI_REGISTRY']}/bench/scale-{uuid.uuid4().hex[:8]}:v1"
            self.floors.job(f"S3 -> OCI, {self.count} x {size / MIB:.0f} MiB", self.b.src_s3(key),
                            self.b.dst_oci(ref, "oras"))
            self.floors.rows[-1]["file_bytes"] = size
            _remove_bench_objects(self.b)

    def report(self, json_path: Path) -> None:
        big, small = self.floors.rows
        per_gib = [r["seconds"] / (self.count * r["file_bytes"] / (1 << 30)) for r in (small, big)]
        targets = [("seconds per GiB, larger / smaller run (<= 1.15)", per_gib[1] / per_gib[0], 1.15),
                   ("larger run's peak scratch / (2 x its file + 64 MiB)", big["peak_scratch_bytes"],
                    2 * self.size + 64 * MIB),
                   ("peak RSS, all processes, either run / 300 MiB",
                    max(small["peak_rss_bytes"], big["peak_rss_bytes"]), 300 * MIB)]
        result = [{"name": n, "value": round(v, 3), "limit": lim, "ratio": round(v / lim, 2), "met": v <= lim}
                  for n, v, lim in targets]
        print(f"\n{os.cpu_count()} cores, loopback stack; S3 -> OCI only\n")
        print(f"| {'run':32} | {'s':>6} | {'s/GiB':>6} | {'peak scratch MiB':>16} | {'peak RSS MiB':>12} | "
              f"{'CPU-s':>5} | {'+ servers':>9} |")
        print(f"|{'-' * 34}|{'-' * 7}:|{'-' * 7}:|{'-' * 17}:|{'-' * 13}:|{'-' * 6}:|{'-' * 10}:|")
        for r, each in zip((small, big), per_gib, strict=True):
            print(f"| {r['name']:32} | {r['seconds']:6.1f} | {each:6.2f} | {r['peak_scratch_bytes'] / MIB:16.0f} | "
                  f"{r['peak_rss_bytes'] / MIB:12.0f} | {r['cpu_seconds']:5.1f} | {r['server_cpu_seconds']:9.1f} |")
        print()
        for t in result:
            print(f"{t['name']}: {t['ratio']:.2f} {'met' if t['met'] else 'NOT met'}")
        json_path.write_text(json.dumps({"cores": os.cpu_count(), "files": self.count, "runs": self.floors.rows,
                                         "seconds_per_gib": per_gib, "targets": result}, indent=2) + "\n")
        print(f"\nwritten: {json_path}")


# The job as `python -m modelsync`, but with the URL -> OCI pipeline taken out: fetch-then-publish, as before it.
_WITHOUT_URI_PIPELINE = ("-c", "import sys; from modelsync import job; job.PIPELINES = tuple(p for p in job.PIPELINES "
                         "if p.__name__ != 'modelsync.uri_pipeline'); from modelsync.__main__ import main; "
                         "sys.exit(main())")


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class _Sampled:
    """What _sample saw of a process tree: peaks (bytes) and CPU seconds, in all and per program."""
    scratch: int = 0
    rss: int = 0
    pss: int = 0
    cpu: float = 0.0
    rss_by_name: dict[str, int] = field(default_factory=dict)
    cpu_by_name: dict[str, float] = field(default_factory=dict)


def _sample(proc: subprocess.Popen[bytes], storage: Path | None, every: float = 0.05) -> _Sampled:
    """Run proc to its end; the peak disk bytes under storage (allocated blocks: a file aws fills by ranges is
    sparse until done), the peak summed RSS and the peak summed PSS of proc and its descendants, their CPU seconds
    (each process's last reading), and per program (_name) its peak RSS (summed over its processes at one sample:
    two aws processes at once count as one aws figure) and CPU seconds (a process named by its last sample with a
    command line: a forked child by what it ran). A fork of a process of the tree that has not yet exec'd its tool
    counts by its own pages (USS): the rest are its parent's, counted there (a 150 MiB Python and its fork measured
    163 + 159 MiB of RSS, 80 + 79 of PSS; a sample that met the job's fork doubled the job). PSS, because RSS
    counts any page shared by two processes twice."""
    seen = _Sampled()
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    while proc.poll() is None:
        try:
            seen.scratch = max(seen.scratch, disk_bytes(storage) if storage is not None and storage.exists() else 0)
        except OSError:
            pass
        tree = _tree(proc.pid)
        sizes = {pid: _uss(pid) if _unexeced_fork(pid, parent) else _rss(pid) for pid, parent in tree.items()}
        seen.rss = max(seen.rss, sum(sizes.values()))
        seen.pss = max(seen.pss, sum(_pss(pid) for pid in tree))
        now: dict[str, int] = {}
        for pid, size in sizes.items():
            if name := _name(pid):  # an ended process has no command line left: it keeps the name it had
                names[pid] = name
            now[names.get(pid, "?")] = now.get(names.get(pid, "?"), 0) + size
        for name, size in now.items():
            seen.rss_by_name[name] = max(seen.rss_by_name.get(name, 0), size)
        for pid in tree:
            if (seconds := _cpu(pid)) is not None:
                cpu[pid] = seconds
        time.sleep(every)
    seen.cpu = sum(cpu.values())
    for pid, seconds in cpu.items():
        name = names.get(pid, "?")
        seen.cpu_by_name[name] = round(seen.cpu_by_name.get(name, 0.0) + seconds, 2)
    return seen


def _name(pid: int) -> str:
    """A process's program: the script a Python runs (aws, or python for the job), else its command name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        first = os.path.basename(argv[0].decode(errors="replace"))
        if first.startswith("python") and len(argv) > 1 and argv[1] and not argv[1].startswith(b"-"):
            return os.path.basename(argv[1].decode(errors="replace"))
        return first
    except (OSError, IndexError):
        return "?"


def _cpu(pid: int) -> float | None:
    """utime + stime of a process, in seconds (not its reaped children's: they are sampled themselves)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _tree(root: int) -> dict[int, int]:
    """root and its descendants, each with its parent (root's own: 0)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {root: 0}, [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found[child] = pid
            todo.append(child)
    return found


def _unexeced_fork(pid: int, parent: int) -> bool:
    """pid is its parent's copy: forked, its program not yet exec'd (the same executable and command line)."""
    try:
        return (parent > 0 and os.readlink(f"/proc/{pid}/exe") == os.readlink(f"/proc/{parent}/exe")
                and Path(f"/proc/{pid}/cmdline").read_bytes() == Path(f"/proc/{parent}/cmdline").read_bytes())
    except OSError:
        return False


def _uss(pid: int) -> int:
    """Unique set size: the pages of this process alone."""
    return _kib_field(f"/proc/{pid}/smaps_rollup", "Private_Clean:", "Private_Dirty:")


def _pss(pid: int) -> int:
    """Proportional set size: each page shared by n processes counts 1/n in each."""
    return _kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def _rss(pid: int) -> int:
    return _kib_field(f"/proc/{pid}/status", "VmRSS:")


def _kib_field(path: str, *names: str) -> int:
    """The bytes of the "name: N kB" lines of these names, summed, from one read (0 once the process is gone)."""
    try:
        return sum(int(line.split()[1]) * 1024 for line in Path(path).read_text().splitlines()
                   if line.startswith(names))
    except OSError:
        return 0


def _kill_when(proc: subprocess.Popen[bytes], reached: Callable[[], bool]) -> None:
    while proc.poll() is None:
        if reached():
            os.killpg(proc.pid, signal.SIGKILL)
            return
        time.sleep(0.1)


class ResumeWatch:
    """Whether a job has pushed a fraction of the model: the finished layers its PENDING artifact's progress record
    lists (resume.py), read from the Model Registry and the registry every poll."""

    def __init__(self, mr_url: str, model: str, target: OciLocation, at_bytes: float):
        self.api = f"{mr_url}/api/model_registry/v1alpha3"
        self.model, self.target, self.at_bytes = model, target, at_bytes
        self.client = RegistryClient(target)
        self.seen = 0

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.api}/{path}", timeout=5) as resp:
            return json.load(resp)

    def reached(self) -> bool:
        try:
            rm = self._get(f"registered_model?name={self.model}")
            mv = self._get(f"model_version?name=1&parentResourceId={rm['id']}")
            (art,) = self._get(f"model_versions/{mv['id']}/artifacts")["items"]
            digest = art["customProperties"]["modelsync.resume"]["string_value"]
            doc = json.loads(self.client.blob(self.target.repository.split("/", 1)[1], digest))
        except (OSError, KeyError, ValueError, TransferError):
            return False  # not claimed or nothing recorded yet
        self.seen = sum(int(d["size"]) for d in doc["layers"])
        return self.seen >= self.at_bytes


def _write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(8 * MIB, left)))
            left -= min(8 * MIB, left)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--files", type=int, default=8, help="large files of the model (default 8)")
    parser.add_argument("--size", type=parse_size, default=parse_size("512Mi"),
                        help="bytes of each, e.g. 128Mi (default 512Mi)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the figures go (default bench/results.json, bench/results-shaped.json)")
    parser.add_argument("--shaped", metavar="RATE", default=None,
                        help="reach MinIO and the registry through a veth link limited to RATE each way (tc tbf, "
                             "e.g. 800mbit; root): bench/shaped.py")
    parser.add_argument("--scale", action="store_true",
                        help="instead: S3 -> OCI alone for --files x --size/4 and --files x --size (e.g. --files 4 "
                             "--size 4Gi: 4 and 16 GiB; about 2.5 x the larger model of free disk), time per GiB "
                             "compared; figures to bench/results-scale.json")
    parser.add_argument("--repeat", type=_positive, default=1,
                        help="measure each timed row (the floors and each pair's first sync) N times and report the "
                             "median run, every sample listed (default 1)")
    parser.add_argument("--only", choices=["uri", "s3"], default=None,
                        help="uri: only the URL (tar) -> OCI rows: curl | tar x, oras push, the pipeline and "
                             "fetch-then-publish (loopback); s3: only D, P, S3 -> OCI, OCI -> S3 and S3 -> S3")
    parser.add_argument("--compare-backends", action="store_true",
                        help="instead: the skopeo/oras comparison of earlier versions (--size-mib big file)")
    parser.add_argument("--size-mib", type=int, default=1024, help="--compare-backends: the big file's MiB")
    args = parser.parse_args()
    if args.json is None:
        args.json = Path(__file__).parent / ("results-scale.json" if args.scale else
                                             "results-shaped.json" if args.shaped else "results.json")
    if args.shaped:
        parse_rate(args.shaped)  # a wrong rate fails before the stack starts
    stack = LocalStack(DEFAULT_STATE_DIR)
    stack.up()
    with tempfile.TemporaryDirectory(prefix="modelsync-bench-") as tmp:
        if args.compare_backends:
            bench = Bench(stack.env(), Path(tmp), args.size_mib * MIB)
            bench.run()
            bench.print()
            return
        if args.shaped:
            _run_shaped(stack, Path(tmp), args)
            return
        with OwnServers(Path(tmp) / "servers", "127.0.0.1") as own:  # servers.py: why not the stack's
            bench = Bench({**stack.env(), **own.env()}, Path(tmp), 0)
            if args.scale:
                scale = ScaleRun(bench, args.files, args.size, own.server_pids())
                scale.run()
                scale.report(args.json)
                return
            run = JobsAgainstFloors(bench, args.files, args.size, own.server_pids(), repeat=args.repeat)
            {"uri": run.run_uri, "s3": run.run_s3}.get(args.only, run.run)()
        run.report(args.json)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return int(text)


def _run_shaped(stack: LocalStack, work: Path, args: argparse.Namespace) -> None:
    """The floors and jobs with MinIO and the registry behind the shaped link (bench/shaped.py); the Model Registry
    stays the stack's. The link, its servers and their data (the run's objects and images) go at the end, also on
    Ctrl-C, SIGTERM (made KeyboardInterrupt here) or a failure."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with ShapedLink(args.shaped, work) as link:
            print(f"shaped link: {link.rate} each way; netns {link.netns} ({link.ns_addr}: MinIO, registry) <-> "
                  f"host {link.host_veth} ({link.host_addr}); measuring it with raw TCP ...", flush=True)
            probe = link.probe()
            print(f"raw TCP through the link: {probe['down_mib_per_s']:.1f} MiB/s down (netns -> host), "
                  f"{probe['up_mib_per_s']:.1f} MiB/s up; set rate {link.bits_per_second / 8 / MIB:.1f} MiB/s",
                  flush=True)
            bench = Bench({**stack.env(), **link.env()}, work, 0)
            run = JobsAgainstFloors(bench, args.files, args.size, link.server_pids(), link, args.repeat)
            run.probe = probe
            run.run_s3() if args.only == "s3" else run.run()
        run.report(args.json)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_bench_objects(bench: Bench) -> None:
    """The scale run's objects go before its next model is written (its servers' data is on this disk too)."""
    for prefix in ("bench-floors/", "bench-floors-dst/"):
        _remove_prefix(bench, prefix)


def _remove_prefix(bench: Bench, prefix: str) -> None:
    client = aws.client(bench.s3(""))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bench.env["MINIO_BUCKET"], Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bench.env["MINIO_BUCKET"], Delete={"Objects": keys})


def _nth(i: int) -> str:
    """The name suffix of a row's sample i: none for the first (its image is the one later rows use)."""
    return "" if i == 0 else f"-{i + 1}"


if __name__ == "__main__":
    main()
