"""Hand-made OCI layouts for the OCI tests: arbitrary (even malicious) layers, and a busybox base image.

docker.io is unreachable here, so the modelcar's base is built from Debian's busybox-static: one layer with
/bin/busybox and /bin/sh -> busybox.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

from modelsync.oci_layout import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Layout,
    canonical_json,
)

BUSYBOX = Path("/bin/busybox")


def entry(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, link: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if data is not None:
        info.size = len(data)
    return info, data


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_image(root: Path, layers: list[bytes], *, tag: str = "latest", docker: bool = False,
                arch: str = "amd64", cmd: list[str] | None = None,
                layer_type: str = OCI_LAYER_TAR) -> str:
    """An image layout with the given uncompressed layers; docker=True writes a Docker v2s2 manifest."""
    layout = Layout(root)
    layout.init()
    descs = [layout.add_bytes(data, "application/vnd.docker.image.rootfs.diff.tar" if docker else layer_type)
             for data in layers]
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": cmd or ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
              "history": [{"created_by": f"layer {i}"} for i in range(len(descs))]}
    config_desc = layout.add_bytes(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": config_desc, "layers": descs}
    desc = layout.add_bytes(json.dumps(manifest).encode(), manifest["mediaType"])
    desc["platform"] = {"os": "linux", "architecture": arch}
    layout.write_index(desc, tag)
    return desc["digest"]


def busybox_layer() -> bytes:
    data = BUSYBOX.read_bytes()
    return tar_bytes([entry("bin/", kind=tarfile.DIRTYPE, mode=0o755),
                      entry("bin/busybox", data, mode=0o755),
                      entry("bin/sh", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)])


def busybox_layout(root: Path, docker: bool = False) -> Path:
    if root.exists():
        shutil.rmtree(root)
    write_image(root, [busybox_layer()], tag="latest", docker=docker)
    return root




# tarfile's extraction filters arrived in Python 3.11.4; Debian 12's system Python is 3.11.2. Tests unpack only
# tars they made themselves, so without the filter they extract as before.
DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
