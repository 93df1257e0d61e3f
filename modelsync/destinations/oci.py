"""Publish a model directory as a KServe modelcar image to an OCI registry, then prove the registry holds it.

Steps: pull the base image into an OCI layout (skipped for scratch) -> build the modelcar layout (modelcar.py) ->
check its layer count (base + model) against modelcar_layers.MAX_IMAGE_LAYERS ->
push it with skopeo, digests unchanged -> read the manifest back over HTTP and compare the digest and
every layer's digest and size. The result names the image by digest; the tag (target's, default `latest`)
is pushed too, for people. With oras no layout is built: modelcar_push.py feeds each layer from the files.
--destination-oci-format modelpack / hybrid (modelpack.py) go the oras way only; validation refuses skopeo.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import credentials, modelpack, oci_copy
from ..clients.distribution import RegistryClient
from ..errors import TransferError
from ..files import dir_bytes, require_free_space
from ..locations import Fetched, OciLocation, Origin, Published, qualify_reference, strip_scheme
from ..modelcar import build_modelcar
from ..modelcar_layers import check_layer_count
from ..modelcar_push import dir_to_modelcar
from ..oci_access import check_backend
from ..oci_copy import is_scratch, pull_base, push_layout, push_tag, repo_path, verify_pushed
from ..progress import watch
from ..secret import Secret
from ..setting import Given, Setting, explicit, problem
from ..stores import Filled
from ..stores import oci as oci_store

if TYPE_CHECKING:
    from ..workspace import Workspace

log = logging.getLogger("modelsync.destinations.oci")

_REF = "modelsync"


def publish_modelcar(model_dir: Path, target: OciLocation, base: OciLocation | None, work_dir: Path,
                     backend: str = "skopeo", source_annotation: str | None = None, *,
                     platform: str = "linux/amd64", created: dt.datetime | None = None,
                     origins: Mapping[str, Origin] | None = None, signature: Path | None = None,
                     hashes: Mapping[str, str] | None = None, oci_format: str = "modelcar") -> Published:
    """Build and push the modelcar of model_dir to target; return its digest URI and files. With oras each
    layer goes up straight from the files (modelcar_push.dir_to_modelcar); with skopeo the image is written as an
    OCI layout first (build_modelcar), then copied.

    base None / "scratch" / "" means no base layers (the image then has no shell: KServe cannot run it).
    signature: the model's model.sig, put at /models/model.sig in a layer of its own.
    hashes: the files' sha256 (relative path -> hex) when the fetch that wrote them hashed them (oras: each layer
    is then hashed without its files' own sha256 again).
    oci_format: modelcar, or (oras only) modelpack / hybrid: modelpack.py.
    """
    check_backend(backend)
    tag = push_tag(target)
    if backend == "oras":  # each layer fed to oras from the files: no layer tars written (modelcar_push.py)
        return dir_to_modelcar(model_dir, target, base, work_dir, source_annotation, platform=platform,
                               created=created, origins=origins, signature=signature, hashes=hashes,
                               oci_format=oci_format)
    if oci_format != "modelcar":
        raise TransferError(f"{FORMAT.label}: {oci_format} is pushed with oras only")
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
    facts: dict[str, object] = {"type": "oci", "repository": target.repository, "tag": push_tag(target),
                                "credentials": f"user {target.username}" if target.username else "anonymous"}
    if not is_scratch(base):
        assert base is not None
        ref = base.lookup
        try:
            manifest = RegistryClient(base).manifest(repo_path(base), ref)
        except TransferError as exc:
            raise TransferError(f"base image {base.reference} (--destination-oci-base-image): {exc}") from None
        facts["base image"] = f"{base.repository}@{manifest.digest}"
    return facts


# ---- the destination type (see destinations/__init__.py) ---------------------------------------------------------

WRITTEN_AS = ("oci",)
BASE_IMAGE = Setting("destination_oci_base_image", 'Base image of the modelcar ("scratch" for none; KServe needs a '
                     'shell)', default="public.ecr.aws/docker/library/busybox:latest", group="destination")
BASE_TLS_VERIFY = Setting("destination_oci_base_image_tls_verify", "Verify TLS of the base image's registry",
                          default="true", kind="bool", group="destination")
BASE_CREDENTIALS = Setting("destination_oci_base_image_credentials_path", "A .dockerconfigjson for the base image's "
                           "registry", kind="path", group="destination")
BASE_CA_BUNDLE = Setting("destination_oci_base_image_ca_bundle", "PEM file trusted for the base image's registry "
                         "only", kind="path", group="destination")
FORMAT = Setting("destination_oci_format", "What is pushed: a KServe modelcar image, a CNCF ModelPack artifact (raw "
                 "file layers), or hybrid (one index holding both over the same layers, as olot writes it); "
                 "modelpack and hybrid need the oras backend", default="modelcar", choices=modelpack.FORMATS,
                 group="destination")
SETTINGS = (*oci_store.settings("destination"), BASE_IMAGE, BASE_TLS_VERIFY, BASE_CREDENTIALS, BASE_CA_BUNDLE,
            oci_store.BACKEND, FORMAT)


@dataclass(frozen=True)
class OciDestination:
    image: OciLocation
    base: OciLocation | None  # None: scratch
    backend: str
    format: str = "modelcar"  # modelcar | modelpack | hybrid (modelpack.py)


def read_files(raw: Mapping[str, str]) -> Filled:
    return oci_store.read_files(raw, "destination")


def validate(given: Given) -> list[str]:
    problems = oci_store.validate(given, "destination")
    uri = oci_store.setting("destination", "oci_uri")
    ref = given.values.get(uri.name)
    if ref and OciLocation(strip_scheme(ref)).digest:  # the rule push_tag applies, said before anything moves
        problems.append(problem(uri, f"'{ref}' is pinned by digest; give a tag or just the repository (the job "
                                     f"computes the digest and records it)"))
    bad_base = oci_store.base_reference_problem(BASE_IMAGE, given.values.get(BASE_IMAGE.name))
    oci_format = given.values.get(FORMAT.name) or "modelcar"
    if oci_format != "modelcar" and given.values.get(oci_store.BACKEND.name) == "skopeo":
        problems.append(problem(FORMAT, f"{oci_format} is pushed with oras only (skopeo 1.9 cannot copy an "
                                        f"artifact); give {oci_store.BACKEND.arg} oras"))
    return problems + ([bad_base] if bad_base else [])


def spec(given: Given) -> OciDestination:
    target = oci_store.location(given, "destination")
    return OciDestination(target, base_image(given, target), given.values[oci_store.BACKEND.name],
                          given.values.get(FORMAT.name) or "modelcar")


def base_image(given: Given, dest: OciLocation) -> OciLocation | None:
    """The modelcar's base; None for 'scratch'. Short Docker Hub names are expanded as docker does. A base on the
    destination's own registry (a mirror there) is read with the destination's credentials, CA and TLS setting
    unless its own are given: they belong to a host, as in a .dockerconfigjson (upstream's integration suite
    forwards only the base image's name, for a base on its plain-HTTP registry)."""
    v = given.values
    ref = strip_scheme(v[BASE_IMAGE.name] or "scratch")
    if ref in oci_copy.SCRATCH:
        return None
    ref = qualify_reference(ref)
    user, password = None, None
    if v[BASE_CREDENTIALS.name]:
        found = credentials.read_docker_auth(str(v[BASE_CREDENTIALS.name]), ref.split("/", 1)[0],
                                             BASE_CREDENTIALS.label)
        user, password = found.get("username"), Secret(found["password"]) if found.get("password") else None
    ca = str(v[BASE_CA_BUNDLE.name]) if v[BASE_CA_BUNDLE.name] else None
    tls_verify = bool(v[BASE_TLS_VERIFY.name])
    if qualify_reference(dest.reference).split("/", 1)[0] == ref.split("/", 1)[0]:
        if user is None and not v[BASE_CREDENTIALS.name]:
            user, password = dest.username, dest.password
        ca = ca or dest.ca_bundle
        if not explicit(given, BASE_TLS_VERIFY):
            tls_verify = dest.tls_verify
    return OciLocation(reference=ref, username=user, password=password, tls_verify=tls_verify, ca_bundle=ca)


def storage_parts(dest: OciDestination) -> tuple[str, ...]:
    """Besides a download: with skopeo the modelcar's layers (an OCI layout, as big as the model); with oras
    nothing (each layer goes up from the files)."""
    return () if dest.backend == "oras" else ("modelcar layers",)


def preflight(dest: OciDestination, job: str, files: dict[str, int] | None,
              reads_from: Path | None) -> dict[str, object]:
    return preflight_oci(dest.image, None if dest.format == "modelpack" else dest.base)  # no base under ModelPack


def publish(dest: OciDestination, fetched: Fetched, ws: Workspace, job: str, source: str | None,
            signature: Path | None = None) -> Published:
    newest = fetched.newest()
    return publish_modelcar(fetched.model_dir, dest.image, dest.base, ws.work, dest.backend,
                            source_annotation=source, origins=fetched.origins or None, signature=signature,
                            created=dt.datetime.fromtimestamp(newest, dt.UTC) if newest is not None else None,
                            hashes=_own_hashes(fetched, ws), oci_format=dest.format)


def _own_hashes(fetched: Fetched, ws: Workspace) -> dict[str, str] | None:
    """The fetched files' sha256, when the fetch wrote them into the job's own workspace (the fetch hashed them,
    the URI source as it wrote them: the layers need not hash the files for them again); None for a model read in
    place (a volume), whose files are the user's and are hashed as they are pushed."""
    if fetched.model_dir != ws.model:
        return None
    return {f.path: f.sha256 for f in fetched.files}


def describe(dest: OciDestination) -> str:
    return f"oci://{dest.image.reference}"


def model_name(dest: OciDestination) -> str:
    return dest.image.repository.rsplit("/", 1)[-1]


def image(dest: OciDestination) -> OciLocation | None:
    return dest.image
