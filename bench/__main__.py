"""`make bench`: whole-job throughput on the local stack, next to the floors of the raw tools on the same data.

    python -m bench [--size-mib 1024]

Each scenario is one full `modelsync` job (config -> preflight -> claim -> transfer -> verify -> LIVE) on a model
of one big incompressible file plus a few small ones. Floors are the bare tools on the big file alone: the job
cannot beat them, and the ratio shows what the job adds (hashing, layer building, verification, registry calls).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path

from e2e.stack import DEFAULT_STATE_DIR, LocalStack
from modelsync import aws, config, job, tools
from modelsync.files import inventory
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
        print(f"\nmodel: {self.total / MIB:.0f} MiB ({self.size / MIB:.0f} MiB big file + small files); "
              f"{os.cpu_count()} cores; loopback\n")
        print(f"{'scenario':52} {'seconds':>8} {'MiB/s':>8}")
        for label, seconds, size in self.rows:
            print(f"{label:52} {seconds:8.1f} {size / MIB / seconds:8.0f}")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big file (default 1024)")
    args = parser.parse_args()
    stack = LocalStack(DEFAULT_STATE_DIR)
    stack.up()
    with tempfile.TemporaryDirectory(prefix="modelsync-bench-") as tmp:
        bench = Bench(stack.env(), Path(tmp), args.size_mib * MIB)
        bench.run()
        bench.print()


if __name__ == "__main__":
    main()
