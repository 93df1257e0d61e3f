"""Publish a model directory as a KServe modelcar image to an OCI registry, then prove the registry holds it.

Steps: pull the base image into an OCI layout (skipped for scratch) -> build the modelcar layout (modelcar.py) ->
check its layer count (base + model) against modelcar_layers.MAX_IMAGE_LAYERS ->
push it with skopeo, digests unchanged -> read the manifest back over HTTP and compare the digest and
every layer's digest and size. The result names the image by digest; the tag (target's, default `latest`)
is pushed too, for people. With oras no layout is built: modelcar_push.py feeds each layer from the files.

A re-push of the same model uploads nothing: the layers are deterministic and both tools skip blobs the
registry already has.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import endpoints
from ..distribution import RegistryClient
from ..errors import TransferError
from ..files import dir_bytes, require_free_space
from ..locations import FileEntry, OciLocation, Published, qualify_reference, strip_scheme
from ..modelcar import Origin, build_modelcar
from ..modelcar_layers import check_layer_count
from ..modelcar_push import dir_to_modelcar
from ..oci_access import check_backend
from ..oci_copy import is_scratch, pull_base, push_layout, push_tag, repo_path, verify_pushed
from ..progress import watch
from ..requirements import problem, reference_ok, require_oci

if TYPE_CHECKING:
    from ..config import Config
    from ..workspace import Workspace

log = logging.getLogger("modelsync.destinations.oci")

_REF = "modelsync"


def publish_modelcar(model_dir: Path, target: OciLocation, base: OciLocation | None, work_dir: Path,
                     backend: str = "skopeo", source_annotation: str | None = None, *,
                     platform: str = "linux/amd64", created: dt.datetime | None = None,
                     origins: Mapping[str, Origin] | None = None, signature: Path | None = None) -> Published:
    """Build and push the modelcar of model_dir to target; return its digest URI and files. With oras each
    layer goes up straight from the files (modelcar_push.dir_to_modelcar); with skopeo the image is written as an
    OCI layout first (build_modelcar), then copied.

    base None / "scratch" / "" means no base layers (the image then has no shell: KServe cannot run it).
    signature: the model's model.sig, put at /models/model.sig in a layer of its own.
    """
    check_backend(backend)
    tag = push_tag(target)
    if backend == "oras":  # each layer fed to oras from the files: no layer tars written (modelcar_push.py)
        return dir_to_modelcar(model_dir, target, base, work_dir, source_annotation, platform=platform,
                               created=created, origins=origins, signature=signature)
    work_dir.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix="modelcar-", dir=work_dir))
    try:
        base_dir = pull_base(base, job_dir, work_dir, backend, platform)
        start = time.monotonic()
        require_free_space(job_dir, dir_bytes(model_dir), "the modelcar layers")
        with watch("build layers", dir_bytes(model_dir), lambda: dir_bytes(job_dir / "image")):
            image = build_modelcar(model_dir, job_dir / "image", base_dir, platform=platform, tag=_REF,
                                   created=created, source=source_annotation, origins=origins,
                                   signature=signature)
        total = sum(file.size for file in image.files)
        elapsed = time.monotonic() - start
        log.info("built modelcar %s: %d files in %d layers, %d bytes in %.1fs (%.0f MB/s)", image.manifest_digest,
                 len(image.files), len(image.layers), total, elapsed, total / 1e6 / max(elapsed, 1e-6))
        # the image as it will be pushed: runtimes refuse to mount too many layers, so nothing goes up then
        check_layer_count(len(image.manifest["layers"]) - len(image.layers), len(image.layers))
        push_layout(image.layout, _REF, target, tag, work_dir, backend)
        verify_pushed(image, target, tag)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return Published(uri=f"oci://{target.repository}@{image.manifest_digest}", digest=image.manifest_digest,
                     files=image.files)


def preflight_oci(target: OciLocation, base: OciLocation | None) -> dict[str, object]:
    """Before anything moves: the destination registry answers an authenticated request with the credentials
    and CA given, and the base image exists (pulling it is the build's first step). A digest-pinned target never
    gets here: validate() refuses it."""
    RegistryClient(target).check_access(repo_path(target))
    facts: dict[str, object] = {"type": "oci", "repository": target.repository, "tag": target.tag or "latest",
                                "credentials": f"user {target.username}" if target.username else "anonymous"}
    if not is_scratch(base):
        assert base is not None
        ref = base.digest or base.tag or "latest"
        try:
            manifest = RegistryClient(base).manifest(repo_path(base), ref)
        except TransferError as exc:
            raise TransferError(f"base image {base.reference} (--destination-oci-base-image): {exc}") from None
        facts["base image"] = f"{base.repository}@{manifest.digest}"
    return facts


# ---- the destination type (see destinations/__init__.py) ---------------------------------------------------------

def storage_parts(cfg: Config) -> tuple[str, ...]:
    """Besides a download: with skopeo the modelcar's layers (an OCI layout, as big as the model); with oras
    nothing (each layer goes up from the files)."""
    return () if cfg.destination_oci_backend == "oras" else ("modelcar layers",)


def validate(cfg: Config) -> list[str]:
    problems = require_oci(cfg, "destination")
    ref = cfg.values.get("destination_oci_uri")
    if ref and "@" in ref:
        problems.append(problem("destination_oci_uri", f"'{ref}' is pinned by digest; give a tag or just the "
                                                       f"repository (the job computes the digest and records it)"))
    base = strip_scheme(cfg.values.get("destination_oci_base_image") or "scratch")
    if base not in ("scratch", "") and not reference_ok(qualify_reference(base)):
        problems.append(problem("destination_oci_base_image", f"'{base}' is not an image reference; write "
                                                              f"[host[:port]/]repo[:tag][@sha256:digest] or scratch"))
    return problems


def preflight(cfg: Config, job: str, files: dict[str, int] | None) -> dict[str, object]:
    return preflight_oci(endpoints.oci(cfg, "destination"), endpoints.base_image(cfg))


def publish(cfg: Config, model_dir: Path, files: tuple[FileEntry, ...], ws: Workspace, job: str,
            source: str | None, signature: Path | None = None) -> Published:
    return publish_modelcar(model_dir, endpoints.oci(cfg, "destination"), endpoints.base_image(cfg), ws.work,
                            cfg.destination_oci_backend, source_annotation=source, origins=ws.origins or None,
                            signature=signature)


def describe(cfg: Config) -> str:
    return f"oci://{endpoints.oci(cfg, 'destination').reference}"
