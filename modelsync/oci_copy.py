"""Moving images between a registry and an OCI layout directory with skopeo or oras (through tools.run only), and
the rules every push of a built image shares: the tag it goes to (push_tag), the base image under it (pull_base)
and the check that the registry holds exactly what was built (verify_pushed).

skopeo keeps layers byte for byte only when told: pushing uncompressed layers with a plain `skopeo copy` to
`docker://` gzips them (new digests). `--preserve-digests` forbids any change to the manifest or its blobs,
so the pushed manifest digest is the one modelcar.py built (verified after the push anyway).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import tools
from .clients.distribution import RegistryClient
from .errors import ToolError, TransferError
from .files import dir_bytes
from .locations import OciLocation, qualify_reference
from .modelcar import ModelcarImage
from .oci_access import check_backend, registry_access
from .oci_layout import INDEX_TYPES, Layout, parse_platform
from .progress import watch

log = logging.getLogger("modelsync.oci")

SYSTEM_POLICY = Path("/etc/containers/policy.json")
PUSH_TIMEOUT = 6 * 3600.0
_LOGRUS = re.compile(r'time="[^"]*" level=\w+ msg="(.*)"')
SCRATCH = ("", "scratch")


def qualified(location: OciLocation) -> OciLocation:
    """The location with a registry host (see locations.qualify_reference)."""
    return replace(location, reference=qualify_reference(location.reference))


def repo_path(location: OciLocation) -> str:
    """The repository name inside its registry (`host/a/b:tag` -> `a/b`)."""
    return location.repository.split("/", 1)[1]


def is_scratch(base: OciLocation | None) -> bool:
    return base is None or base.reference.strip() in SCRATCH


def push_tag(target: OciLocation) -> str:
    """The tag an image built here is pushed under: target's, default `latest`. A target pinned by digest is
    refused: the digest is the built image's own, known only once it is built."""
    if target.digest:
        raise TransferError(f"destination {target.reference}: give a tag, not a digest (the digest is computed)")
    return target.tag or "latest"


def pull_base(base: OciLocation | None, job_dir: Path, work_dir: Path, backend: str, platform: str) -> Path | None:
    """The base image of a modelcar pulled (narrowed to platform) into the OCI layout job_dir/base under the ref
    `base`: that directory, or None for scratch (no base layers)."""
    if base is None or is_scratch(base):
        return None
    base_dir = job_dir / "base"
    pull_to_layout(base, base_dir, "base", work_dir, backend, platform)
    return base_dir


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
    # The total is not known before the manifest is read; the bytes landing in the layout are.
    with registry_access(src, work_dir) as access, watch(f"pull {src.reference}", 0, lambda: dir_bytes(layout_dir)):
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
    blobs = _blob_sizes(Layout(layout_dir))
    pushed = _PushedBytes(blobs, target)
    with registry_access(target, work_dir) as access, \
            watch(f"push {dest}", sum(blobs.values()), pushed.measure if backend == "skopeo" else pushed.total):
        if backend == "skopeo":
            _run("skopeo", [*_skopeo_global(), "copy", "--quiet", "--retry-times=3", "--preserve-digests",
                                 *access.skopeo_args("dest"), f"oci:{layout_dir}:{ref_name}", f"docker://{dest}"],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("skopeo"))
        else:
            _run("oras", ["cp", "--no-tty", *access.oras_args("to-"), "--from-oci-layout",
                               f"{layout_dir}:{ref_name}", dest],
                      timeout=PUSH_TIMEOUT, on_stderr=_log_line("oras"), on_stdout=pushed.oras_line)
        pushed.done.update(blobs)  # the tool succeeded: all are there (verify_pushed checks it next)
    log.info("pushed %s with %s in %.1fs", dest, backend, time.monotonic() - start)


def _blob_sizes(layout: Layout) -> dict[str, int]:
    _, manifest = layout.resolve_manifest()
    return {d["digest"]: d["size"] for d in (manifest["config"], *manifest["layers"])}


class _PushedBytes:
    """Bytes of the blobs known to be in the registry, for push progress.

    oras prints a line as each blob completes ("Copied  <12 hex> <title>", "Exists  …" when already there).
    skopeo prints nothing per blob off a TTY, so for it the registry is asked which blobs it holds, at most every
    PROGRESS_POLL seconds and only for blobs not yet seen.
    """

    PROGRESS_POLL = 10.0
    _ORAS = re.compile(r"^(?:Copied|Exists|Skipped)\s+([0-9a-f]{12})\b")

    def __init__(self, blobs: dict[str, int], target: OciLocation):
        self.blobs, self.target = blobs, target
        self.done: set[str] = set()
        self._asked = 0.0

    def total(self) -> int:
        return sum(self.blobs[d] for d in self.done)

    def oras_line(self, line: str) -> None:
        m = self._ORAS.match(line)
        if m:
            self.done.update(d for d in self.blobs if d.split(":", 1)[1].startswith(m.group(1)))

    def measure(self) -> int:
        if time.monotonic() - self._asked >= self.PROGRESS_POLL:
            self._asked = time.monotonic()
            client, repo = RegistryClient(self.target), repo_path(self.target)
            for digest in set(self.blobs) - self.done:
                try:
                    client.blob_size(repo, digest)
                    self.done.add(digest)
                except TransferError:
                    pass  # not there yet
        return self.total()


# oras retries a request that failed before its body was sent, and 5xx answers, a few times within about a second;
# a blob upload cut mid-way, or a registry restarting for longer, fails the command. Such failures (these texts of
# Go's net/http and of the registry) are worth another run: pushes and pulls by digest are idempotent.
_ORAS_TRANSIENT = ("broken pipe", "connection reset by peer", "connection refused", "unexpected EOF", ": EOF",
                   "i/o timeout", "TLS handshake timeout", "502 Bad Gateway", "503 Service Unavailable",
                   "504 Gateway Timeout", "429 Too Many Requests", "made no progress for")


def oras_transient(err: ToolError) -> bool:
    return any(mark in str(err) for mark in _ORAS_TRANSIENT)


def _run(binary: str, args: list[str], **kw: Any) -> str:
    if binary == "oras":
        return tools.retry(f"oras {args[0]}", lambda: tools.run(binary, args, **kw), oras_transient)
    try:
        return tools.run(binary, args, **kw)
    except ToolError as err:
        # skopeo logs its error as `time="..." level=fatal msg="..."`: keep just the message for the log reader
        raise ToolError(_LOGRUS.sub(lambda m: m.group(1).replace('\\"', '"'), str(err))) from None


def is_index(src: OciLocation) -> bool:
    remote = RegistryClient(src).manifest(repo_path(src), src.lookup)
    return remote.media_type in INDEX_TYPES


def _log_line(binary: str) -> Callable[[str], None]:
    def emit(line: str) -> None:
        log.info("%s: %s", binary, line)
    return emit


def verify_pushed(image: ModelcarImage, target: OciLocation, tag: str) -> None:
    """Raise TransferError unless the registry holds exactly the manifest built (fetched by its digest, which the
    artifact's URI names), with every layer blob present. The tag is only checked for the log: another job may
    push the same tag at the same moment, and the last push wins it."""
    client = RegistryClient(target)
    repo = repo_path(target)
    try:
        remote = client.manifest(repo, image.manifest_digest)
    except TransferError as exc:
        raise TransferError(f"{target.repository}@{image.manifest_digest[:19]}… is not in the registry after the "
                            f"push (did the push tool rewrite the image, e.g. compress its layers?): {exc}") from None
    if remote.digest != image.manifest_digest:
        raise TransferError(f"{target.repository}: the manifest served as {image.manifest_digest} hashes to "
                            f"{remote.digest}")
    tagged = client.manifest(repo, tag).digest
    if tagged != image.manifest_digest:
        log.warning("%s:%s now points at %s, pushed by someone else meanwhile; this sync is recorded by its digest "
                    "%s", target.repository, tag, tagged, image.manifest_digest)
    for digest, manifest in image.manifests:  # a hybrid index: each of its manifests, fetched by digest
        if digest != image.manifest_digest:
            found = client.manifest(repo, digest)
            if found.digest != digest:
                raise TransferError(f"{target.repository}: the manifest served as {digest} hashes to {found.digest}")
        layers = (remote if digest == image.manifest_digest else found).json().get("layers") or []
        built = manifest["layers"]
        if [(x["digest"], x["size"]) for x in layers] != [(x["digest"], x["size"]) for x in built]:
            raise TransferError(f"{target.repository}:{tag}: the registry's layer list differs from the one built")
        for layer in built:
            size = client.blob_size(repo, layer["digest"])
            if size != layer["size"]:
                raise TransferError(f"{target.repository}: blob {layer['digest'][:19]} is {size} bytes, "
                                    f"expected {layer['size']}")
