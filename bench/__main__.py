"""`make bench`: whole-job throughput on the local stack, next to the floors of the raw tools on the same data.

    python -m bench [--size-mib 1024] [--pipeline-files 8 --pipeline-file-mib 128] [--only-pipeline]

Each scenario is one full `modelsync` job (config -> preflight -> claim -> transfer -> verify -> LIVE) on a model
of one big incompressible file plus a few small ones. Floors are the bare tools on the big file alone: the job
cannot beat them, and the ratio shows what the job adds (hashing, layer building, verification, registry calls).

The pipeline scenario (S3 -> OCI, issue 12) runs the real CLI as a child on a model of N equal files, once through
the pipeline and once through fetch-then-publish, each sampled every 50 ms for the bytes in the storage path and
the RSS of the job plus all its children together; its floors are the same files downloaded by one
`aws s3 cp --recursive` and pushed by `oras blob push repo@digest` one after the other (what the pipeline does).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from e2e.stack import DEFAULT_STATE_DIR, LocalStack
from modelsync import aws, config, job, tools
from modelsync.files import dir_bytes, inventory
from modelsync.locations import OciLocation, S3Location
from modelsync.oci_copy import push_layout
from modelsync.secret import Secret
from tests.models import make_model
from tests.oci_helpers import busybox_layout

MIB = 1024 * 1024


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


class Bench:
    def __init__(self, env: dict[str, str], work: Path, size: int):
        self.env, self.work, self.size = env, work, size
        self.model = work / "model"
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
                      "MODEL_SYNC_SOURCE_OCI_ENABLE_TLS_VERIFY": "false", "MODEL_SYNC_DESTINATION_OCI_BACKEND": backend},
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


class PipelineBench:
    """S3 -> OCI of `count` files of `size` bytes: floors, the pipeline and fetch-then-publish, with peaks."""

    def __init__(self, bench: Bench, count: int, size: int):
        self.b, self.count, self.size = bench, count, size
        self.model = bench.work / "pipeline-model"
        for i in range(count):
            _write_random(self.model / f"shard-{i:02d}.safetensors", size)
        self.total = count * size
        self.rows: list[tuple[str, float, int | None, int | None]] = []  # label, s, peak scratch, peak RSS

    def run(self, repeat: int = 1) -> None:
        from modelsync.destinations.s3 import publish_s3
        key = f"bench-pipe/{uuid.uuid4().hex[:8]}"
        publish_s3(self.model, inventory(self.model), self.b.s3(key), "b" * 32)
        self.floors(key)
        repo = f"{self.b.env['OCI_REGISTRY']}/bench/pipe-{uuid.uuid4().hex[:8]}"
        for n in range(repeat):
            # a new repository each time: nothing can be skipped as already there
            self.job(f"job: s3 -> oci, pipeline #{n + 1}", key, f"{repo}-p{n}:v1", pipeline=True)
            self.job(f"job: s3 -> oci, fetch then publish #{n + 1}", key, f"{repo}-o{n}:v1", pipeline=False)

    def floors(self, key: str) -> None:
        e, loc = self.b.env, self.b.s3(key)
        down = self.b.work / "pipe-floor"
        self.rows.append(("floor: aws s3 cp --recursive down", timed(lambda: tools.run(
            "aws", ["s3", "cp", f"s3://{e['MINIO_BUCKET']}/{key}/", str(down), "--recursive", *aws.cli_flags(loc)],
            env=aws.cli_env(loc))), None, None))
        files = sorted(down.iterdir())
        digests = {f: "sha256:" + _sha(f) for f in files}
        repo = f"{e['OCI_REGISTRY']}/bench/pipe-floor-{uuid.uuid4().hex[:8]}"

        def push() -> None:
            for f in files:
                tools.run("oras", ["blob", "push", "--no-tty", "--plain-http", f"{repo}@{digests[f]}", str(f)])
        self.rows.append(("floor: oras blob push repo@digest, one by one", timed(push), None, None))
        for f in files:
            f.unlink()

    def job(self, label: str, key: str, ref: str, pipeline: bool) -> None:
        e = self.b.env
        meta = self.b.work / f"meta-{uuid.uuid4().hex[:8]}"
        meta.mkdir()
        for k, v in {"RegisteredModel.name": f"bench-{uuid.uuid4().hex[:8]}", "ModelVersion.name": "1"}.items():
            (meta / k).write_text(v)
        storage = self.b.work / f"storage-{uuid.uuid4().hex[:6]}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODEL_SYNC_")},
               "MODEL_SYNC_MODEL_UPLOAD_INTENT": "create_model", "MODEL_SYNC_METADATA_CONFIGMAP_PATH": str(meta),
               "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": e["MR_URL"], "MODEL_SYNC_REGISTRY_IS_SECURE": "false",
               "MODEL_SYNC_STORAGE_PATH": str(storage), "MODEL_SYNC_LOG_LEVEL": "warning",
               **self.b.src_s3(key), **self.b.dst_oci(ref, "oras")}
        code = ("import sys; from modelsync import job, __main__\n"
                f"{'' if pipeline else 'job.PIPELINES.clear()'}\nsys.exit(__main__.main())")
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
        peaks = _sample(proc, storage)
        elapsed = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"{label}: the job failed (exit {proc.returncode})")
        self.rows.append((label, elapsed, peaks[0], peaks[1]))

    def print(self) -> None:
        print(f"\npipeline model: {self.count} x {self.size / MIB:.0f} MiB = {self.total / MIB:.0f} MiB; "
              f"{os.cpu_count()} cores; loopback\n")
        print(f"{'scenario':52} {'seconds':>8} {'MiB/s':>8} {'scratch MiB':>12} {'RSS MiB':>8}")
        for label, seconds, scratch, rss in self.rows:
            print(f"{label:52} {seconds:8.1f} {self.total / MIB / seconds:8.0f} "
                  f"{'' if scratch is None else f'{scratch / MIB:.0f}':>12} "
                  f"{'' if rss is None else f'{rss / MIB:.0f}':>8}")
        floor = max(s for label, s, _, _ in self.rows if label.startswith("floor"))
        print(f"\ntarget: pipeline <= 1.2 x max(floors) + 1 s = {1.2 * floor + 1:.1f} s; scratch <= "
              f"{(2 * self.size + 64 * MIB) / MIB:.0f} MiB; RSS (job + children) <= 300 MiB")


def _sample(proc: subprocess.Popen, storage: Path, every: float = 0.05) -> tuple[int, int]:
    """Run proc to its end; the peak bytes under storage and the peak summed RSS of proc and its descendants."""
    peak_scratch = peak_rss = 0
    while proc.poll() is None:
        try:
            peak_scratch = max(peak_scratch, dir_bytes(storage) if storage.exists() else 0)
        except OSError:
            pass
        peak_rss = max(peak_rss, sum(_rss(pid) for pid in _tree(proc.pid)))
        time.sleep(every)
    return peak_scratch, peak_rss


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big file (default 1024)")
    parser.add_argument("--pipeline-files", type=int, default=8, help="files of the pipeline model (default 8)")
    parser.add_argument("--pipeline-file-mib", type=int, default=128, help="size of each (default 128)")
    parser.add_argument("--repeat", type=int, default=1, help="pipeline scenario runs (default 1)")
    parser.add_argument("--only-pipeline", action="store_true", help="skip the other scenarios")
    args = parser.parse_args()
    stack = LocalStack(DEFAULT_STATE_DIR)
    stack.up()
    with tempfile.TemporaryDirectory(prefix="modelsync-bench-") as tmp:
        bench = Bench(stack.env(), Path(tmp), args.size_mib * MIB)
        if not args.only_pipeline:
            bench.run()
        piped = PipelineBench(bench, args.pipeline_files, args.pipeline_file_mib * MIB)
        piped.run(args.repeat)
        bench.print()
        piped.print()


if __name__ == "__main__":
    main()
