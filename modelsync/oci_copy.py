"""Moving images between a registry and an OCI layout directory with skopeo or oras (through tools.run only).

skopeo keeps layers byte for byte only when told: pushing uncompressed layers with a plain `skopeo copy` to
`docker://` gzips them (new digests). `--preserve-digests` forbids any change to the manifest or its blobs,
so the pushed manifest digest is the one modelcar.py built (verified after the push anyway).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import tools
from .locations import OciLocation
from .oci_access import check_backend, registry_access
from .distribution import RegistryClient
from .errors import ToolError
from .oci_layout import INDEX_TYPES, parse_platform

log = logging.getLogger("modelsync.oci")

SYSTEM_POLICY = Path("/etc/containers/policy.json")
PUSH_TIMEOUT = 6 * 3600.0
_DOCKER_HUB = "docker.io"
_LOGRUS = re.compile(r'time="[^"]*" level=\w+ msg="(.*)"')


def qualified(location: OciLocation) -> OciLocation:
    """The location with a registry host: `busybox:latest` -> `docker.io/library/busybox:latest`.

    Short names are left to no tool's registries.conf (which may differ between the job's image and a laptop).
    """
    ref = location.reference
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return location
    path = ref if "/" in ref else f"library/{ref}"
    return replace(location, reference=f"{_DOCKER_HUB}/{path}")


def repo_path(location: OciLocation) -> str:
    """The repository name inside its registry (`host/a/b:tag` -> `a/b`)."""
    return location.repository.split("/", 1)[1]


def _skopeo_global() -> list[str]:
    # Without a system trust policy skopeo refuses to run; the job checks digests itself, so accept in that case.
    return [] if SYSTEM_POLICY.exists() else ["--insecure-policy"]


def _platform_args(platform: str) -> list[str]:
    os_name, arch, variant = parse_platform(platform)
    args = [f"--override-os={os_name}", f"--override-arch={arch}"]
    return args + [f"--override-variant={variant}"] if variant else args


def pull_to_layout(src: OciLocation, layout_dir: Path, ref_name: str, work_dir: Path, backend: str,
                   platform: str = "linux/amd64") -> None:
    """Copy the image src (an index narrowed to platform) into the OCI layout layout_dir under ref_name."""
    check_backend(backend)
    src = qualified(src)
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with registry_access(src, work_dir) as access:
        if backend == "skopeo":
            # accept-uncompressed: keep blobs as the registry has them instead of gzipping uncompressed layers
            _run("skopeo", [*_skopeo_global(), "copy", "--quiet", "--retry-times=3", *_platform_args(platform),
                                 *access.skopeo_args("src"), "--dest-oci-accept-uncompressed-layers",
                                 f"docker://{src.reference}", f"oci:{layout_dir}:{ref_name}"],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("skopeo"))
        else:
            # oras refuses --platform for a single manifest whose config is not an image config (an artifact)
            narrow = [f"--platform={platform}"] if is_index(src) else []
            _run("oras", ["cp", "--no-tty", *narrow, *access.oras_args("from-"),
                               src.reference, "--to-oci-layout", f"{layout_dir}:{ref_name}"],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("oras"))
    log.info("pulled %s with %s in %.1fs", src.reference, backend, time.monotonic() - start)


def push_layout(layout_dir: Path, ref_name: str, target: OciLocation, tag: str, work_dir: Path,
                backend: str) -> None:
    """Push the image ref_name of layout_dir to target's repository under tag, unchanged (digests kept)."""
    check_backend(backend)
    dest = f"{target.repository}:{tag}"
    start = time.monotonic()
    with registry_access(target, work_dir) as access:
        if backend == "skopeo":
            _run("skopeo", [*_skopeo_global(), "copy", "--quiet", "--retry-times=3", "--preserve-digests",
                                 *access.skopeo_args("dest"), f"oci:{layout_dir}:{ref_name}", f"docker://{dest}"],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("skopeo"))
        else:
            _run("oras", ["cp", "--no-tty", *access.oras_args("to-"), "--from-oci-layout",
                               f"{layout_dir}:{ref_name}", dest],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("oras"))
    log.info("pushed %s with %s in %.1fs", dest, backend, time.monotonic() - start)


def _run(binary: str, args: list[str], **kw: Any) -> str:
    try:
        return tools.run(binary, args, **kw)
    except ToolError as err:
        # skopeo logs its error as `time="..." level=fatal msg="..."`: keep just the message for the log reader
        raise ToolError(_LOGRUS.sub(lambda m: m.group(1).replace('\\"', '"'), str(err))) from None


def is_index(src: OciLocation) -> bool:
    remote = RegistryClient(src).manifest(repo_path(src), src.digest or src.tag or "latest")
    return remote.media_type in INDEX_TYPES


def _log_line(binary: str):
    def emit(line: str) -> None:
        log.info("%s: %s", binary, line)
    return emit
