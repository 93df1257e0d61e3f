"""S3 -> OCI as one pipeline: a sync costs about the slower of download and push, not their sum, and the storage
path holds only what is in flight.

    S3 listing -> plan_layers -> re-sync: the layers the target tag, an interrupted attempt of this Job or an
    earlier image of the model has already (resync.py, resume.py) -> the other layers' files read by this process
    (boto3 GETs, ranged for large files, paced: s3_download.py) -> as each layer's files land: file and layer hashed
    in one read -> `oras blob push --size N repo@digest -` fed the layer tar, then the files are deleted and the
    layer recorded for a restart (layer_push.py, resume.py) -> every blob HEAD-verified -> config + manifest pushed
    last -> verify_pushed (modelcar_push.py). The image's `created` is the newest object's LastModified (or
    SOURCE_DATE_EPOCH): the same objects give the same manifest digest.

Contract: applies(cfg), storage_needed(cfg, files) and transfer(cfg, ws, job, source, sign_model=..., resume=...)
are the pair's entry points (job.PIPELINES); transfer returns what publish would for the same files. The image, config
and manifest are byte for byte those build_modelcar makes of the same files (same plan, modelcar_layers.
layer_parts), so the manifest digest is the one of the fetch-then-publish path.

This module only joins the parts: it lists the source, refuses a model.sig the job's signature replaces, and
answers push_modelcar's plan with the layers a re-sync reuses and a paced S3Download for the rest, after checking
that the storage path holds the largest layer still to download. The in-flight cap (--max-in-flight-bytes,
default two of the largest layer plus s3_download.WINDOW) bounds what that download keeps on disk.

Used by job.transfer for source s3 -> destination oci with the oras backend (skopeo cannot push single blobs);
every other pair keeps fetch-then-publish, and with oras its modelcar is pushed by the same code from the files
already there (modelcar_push.dir_to_modelcar: nothing downloaded, nothing reused, the files left as they are).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import modelpack, scan
from .clients.distribution import RegistryClient
from .destinations.oci import OciDestination
from .files import human, require_free_space
from .layer_push import Download
from .locations import FileEntry, OciLocation, Origin, Published, S3Location
from .modelcar import SIGNATURE_FILE, layer_annotations
from .modelcar_layers import MODEL_LAYER_BUDGET, ModelcarLayer, layer_tar_size, plan_layers
from .modelcar_push import Planned, push_modelcar
from .oci_copy import push_tag
from .oci_layout import OCI_LAYER_TAR, descriptor
from .resume import Progress, Resume
from .resync import reusable_layers
from .s3_download import S3Download, in_flight_cap
from .sources.s3 import list_s3

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("modelsync.pipeline")


# ---- the pair's entry points (job.PIPELINES) ----------------------------------------------------------------------


def applies(source: object, destination: object) -> bool:
    """S3 to an OCI registry. The pipeline pushes single blobs with oras; with the skopeo backend the job keeps
    fetch-then-publish."""
    return isinstance(source, S3Location) and isinstance(destination, OciDestination) and \
        destination.backend == "oras"


def storage_needed(destination: OciDestination, files: dict[str, int], max_in_flight: int | None) -> int:
    """The least the storage path must hold: the files of the largest layer (all on disk before it is pushed).
    The base image comes on top (a few MiB for busybox)."""
    return _largest_layer(files, plan_layers(sorted(files.items()), MODEL_LAYER_BUDGET))


def _largest_layer(files: Mapping[str, int], groups: Sequence[Sequence[str]]) -> int:
    return max((sum(files[rel] for rel in group) for group in groups), default=0)


def transfer(source: S3Location, destination: OciDestination, ws: Workspace, job: str, public_source: str | None,
             max_in_flight: int | None,
             sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
             resume: Resume | None = None,
             scan_file: Callable[[str, Path], None] | None = None) -> Published:
    return s3_to_modelcar(source, destination.image, destination.base, ws.work, max_in_flight,
                          source_annotation=public_source, sign_model=sign_model, resume=resume, scan_file=scan_file,
                          oci_format=destination.format)


# ---- the pipeline -------------------------------------------------------------------------------------------------


def s3_to_modelcar(loc: S3Location, target: OciLocation, base: OciLocation | None, work_dir: Path,
                   max_in_flight: int | None = None, source_annotation: str | None = None, *,
                   platform: str = "linux/amd64",
                   sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None = None,
                   resume: Resume | None = None,
                   scan_file: Callable[[str, Path], None] | None = None, oci_format: str = "modelcar") -> Published:
    """The modelcar of the S3 files at loc pushed to target (tag: target's, default latest) and verified; the
    same image, digest and result as fetch_s3 + publish_modelcar.

    resume: what an interrupted attempt of this Job finished and the model's earlier images (their layers are
    reused when unchanged), and where this run records each layer it finishes (resume.py).

    sign_model: called with every file's sha256 once all model layers are pushed (their bytes hashed on the way),
    it returns model.sig, which goes up in a layer of its own before the manifest (a model.sig at the source's
    root is left out: this signature replaces it). scan_file: see push_modelcar."""
    push_tag(target)  # refused before the source is listed
    kind, files, origins = list_s3(loc)
    if sign_model is not None and files.pop(SIGNATURE_FILE, None) is not None:
        log.warning("the source's %s is left out: this job's signature replaces it", SIGNATURE_FILE)
    times = [o.modified for o in origins.values() if o.modified is not None]  # as Fetched.newest() would say
    return push_through(target, base, work_dir, files, origins, max(times) if times else None, max_in_flight,
                        lambda dest, cap: S3Download(loc, kind, files, dest, cap, origins),
                        source_annotation=source_annotation, platform=platform, sign_model=sign_model, resume=resume,
                        scan_file=scan_file, oci_format=oci_format)


# One sync's paced download into dest, given the cap on in-flight bytes (s3_download.S3Download, hf_pipeline.py).
MakeDownload = Callable[[Path, int], Download]


def push_through(target: OciLocation, base: OciLocation | None, work_dir: Path, files: dict[str, int],
                 origins: Mapping[str, Origin], created: float | None, max_in_flight: int | None,
                 make_download: MakeDownload, *, source_annotation: str | None, platform: str,
                 sign_model: Callable[[tuple[FileEntry, ...]], bytes] | None, resume: Resume | None,
                 scan_file: Callable[[str, Path], None] | None = None, oci_format: str = "modelcar") -> Published:
    """Any listed source whose files a Download brings one by one: the layers earlier images or an interrupted
    attempt have (resync.py, resume.py) reused, the others downloaded paced and pushed as they land, each
    finished layer recorded for a restart; created: the source's newest modification (POSIX seconds).
    oci_format: modelcar, modelpack or hybrid (modelpack.py); a ModelPack layer is the file itself."""
    raw = oci_format == "modelpack"
    progress = Progress(resume or Resume(), RegistryClient(target), target)

    def fetch(plan: Planned) -> tuple[dict[str, ModelcarLayer], Download]:
        return _plan_download(plan, files, origins, target, max_in_flight, progress, make_download,
                              scan.needs_reading if scan_file is not None else None, raw)

    def pushed(layer: ModelcarLayer) -> None:
        progress.layer_done(modelpack.raw_descriptor(layer, "", origins) if raw else
                            descriptor(OCI_LAYER_TAR, layer.digest, layer.size, layer_annotations(layer, origins)))

    try:
        return push_modelcar(target, base, work_dir, files, origins, fetch=fetch, source_annotation=source_annotation,
                             platform=platform, sign_model=sign_model, on_pushed=pushed, scan_file=scan_file,
                             created=dt.datetime.fromtimestamp(created, dt.UTC) if created is not None else None,
                             oci_format=oci_format)
    finally:
        progress.close()  # every record written before the artifact goes LIVE or ABANDONED


def _plan_download(plan: Planned, files: dict[str, int], origins: Mapping[str, Origin], target: OciLocation,
                   max_in_flight: int | None, progress: Progress,
                   make_download: MakeDownload,
                   must_read: Callable[[str], bool] | None,
                   raw: bool = False) -> tuple[dict[str, ModelcarLayer], Download]:
    """The layers a re-sync reuses, and the paced download of the others' files into the push's directory, once
    the storage path is known to hold the largest of them."""
    reused = reusable_layers(plan.client, target, plan.tag, plan.layers, files, origins,
                             progress=progress.earlier, hints=progress.hints(), must_read=must_read,
                             layer_size=modelpack.raw_size if raw else layer_tar_size)
    todo = [group for title, group in plan.layers.items() if title not in reused]
    need = _largest_layer(files, todo)
    require_free_space(plan.job_dir, need, "the pipeline's largest layer in flight")
    cap = in_flight_cap(need, max_in_flight)  # one layer pushed while the next lands
    log.info("pipeline: %d file(s), %s, in %d layer(s) (%d to download) on %d base layer(s); at most %s in flight",
             len(files), human(sum(files.values())), len(plan.layers), len(todo), plan.base_layers, human(cap),
             extra={"fields": {"files": len(files), "layers": len(plan.layers), "max_in_flight_bytes": cap}})
    if need > cap:
        log.warning("the largest layer (%s) is over --max-in-flight-bytes (%s): it goes alone", human(need),
                    human(cap))
    return reused, make_download(plan.job_dir / "download", cap)
