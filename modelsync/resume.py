"""A restarted Job resumes, and a new version of a model starts from the previous one (S3 -> OCI pipeline).

A Job's next pod starts with an empty scratch directory, so what a killed pod finished must be recorded where
the next one can read it: as each model layer is pushed (and its blob is in the target repository), the list of
finished layers' descriptors -- digest, size and the layer's source record (modelcar.SOURCE_RECORD: each file's
object URL, ETag, size, sha256) -- goes up as a small JSON blob into the target repository, and its digest onto the
PENDING ModelArtifact as the custom property ``modelsync.resume``. A restarted pod of the same Job (same fingerprint:
registry.py resumes its own entities) reads that property before claiming the artifact again, fetches the blob
(checked against its digest), and hands the descriptors to resync.reusable_layers, which trusts a record only for
files whose listing is unchanged and only when the repository still has the blob at its size (one HEAD). Going
LIVE drops the property with every other ``modelsync.*`` fact of a publish; ABANDONED keeps it, for the retry.

The Model Registry also names the model's earlier images (its latest LIVE versions' artifact URIs): `hints`, the
manifests in the same repository that resync reads after the target tag, so a new version reuses the layers of the
previous one whatever its tag.

Costs per finished layer: one small blob PUT (a few hundred bytes per file) and one PATCH of the artifact, made on
a thread of their own so the push never waits for them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .clients.distribution import RegistryClient
from .errors import ModelSyncError
from .locations import OciLocation
from .modelcar import SOURCE_RECORD
from .oci_copy import repo_path

log = logging.getLogger("modelsync.resume")

PROPERTY = "modelsync.resume"  # on the PENDING artifact: the digest of the progress blob in the target repository
_KIND = "modelsync.progress/1"


@dataclass(frozen=True)
class Resume:
    """What the job tells a pipeline of earlier work, and how the pipeline records its own."""
    job: str = ""                                  # the job's fingerprint: a progress blob of another job is ignored
    recorded: str | None = None                    # PROPERTY as an interrupted attempt left it
    hints: Sequence[str] = ()                      # the model's earlier images, per the Model Registry (oci:// URIs)
    save: Callable[[str], None] | None = field(default=None, compare=False)  # writes PROPERTY on the artifact


class Progress:
    """One pipeline run's view of Resume: the earlier attempt's finished layers, read back and checked, and the
    record of this run's, kept up to date as layers finish (called from the push thread)."""

    def __init__(self, resume: Resume, client: RegistryClient, target: OciLocation):
        self.resume, self.client, self.target = resume, client, target
        self.repo = repo_path(target)
        self.lock = threading.Lock()
        self.finished: list[dict[str, Any]] = []
        self.writer: ThreadPoolExecutor | None = None
        self.failed = False  # a record failed (the Model Registry or the registry is unwell): no more tries
        self.closed = False  # close() has begun: no new record is taken
        self.earlier = self._read(resume.recorded) if resume.recorded else []

    def hints(self) -> list[str]:
        """The digests of the hinted images that are in the target repository."""
        out = []
        for uri in self.resume.hints:
            image = OciLocation(uri.removeprefix("oci://"))
            if image.repository == self.target.repository and image.digest:
                out.append(image.digest)
        return out

    def layer_done(self, descriptor: Mapping[str, Any]) -> None:
        """A model layer is in the repository: record it (with the earlier attempt's, which stay valid) unless it has
        no source record (nothing a later run could match it by). On a thread of its own, so the push goes on
        meanwhile; close() waits for it. After a failed record none is tried again (logged, never raised): a
        restart then moves those layers again."""
        if self.closed or self.resume.save is None or not (descriptor.get("annotations") or {}).get(SOURCE_RECORD):
            return  # closed: a push thread that outlived a failed push must not write after the job marks it
        if self.writer is None:
            self.writer = ThreadPoolExecutor(1, thread_name_prefix="pipeline-progress")
        self.writer.submit(self._record, dict(descriptor))

    def close(self) -> None:
        """Wait for every record to be written: none may land after the artifact goes LIVE (a record sets
        PENDING)."""
        self.closed = True
        if self.writer is None:
            return
        try:
            self.writer.shutdown(wait=True)
        except BaseException:  # SIGTERM meanwhile: the job marks the artifact next; no record may follow that mark
            self.failed = True  # (one under way ends first: registry calls take turns on one connection)
            raise
        finally:
            self.writer = None

    def _record(self, descriptor: dict[str, Any]) -> None:
        with self.lock:
            self.finished.append(descriptor)
            if self.failed:
                return
            known = {d["digest"] for d in self.finished}
            layers = self.finished + [d for d in self.earlier if d.get("digest") not in known]
            doc = json.dumps({"kind": _KIND, "job": self.resume.job, "layers": layers}, sort_keys=True,
                             separators=(",", ":")).encode()
            save = self.resume.save
            try:
                digest = self.client.put_blob(self.repo, doc)
                if save is not None:
                    save(digest)
            except Exception as exc:  # noqa: BLE001 -- on the writer thread: logged, or it would vanish
                self.failed = True
                log.warning("could not record the finished layer %s for a restart (%s); no more are recorded: a "
                            "restart moves them again", str(descriptor.get("digest"))[:19], exc)

    def _read(self, digest: str) -> list[dict[str, Any]]:
        """The layers an earlier attempt of this job recorded; [] for anything unreadable or another job's."""
        try:
            doc = json.loads(self.client.blob(self.repo, digest, limit=4 << 20))
            if doc.get("kind") != _KIND or doc.get("job") != self.resume.job:
                raise ValueError("not this job's progress record")
            layers = [d for d in doc.get("layers") or [] if isinstance(d, dict)]
        except (ModelSyncError, ValueError, AttributeError) as exc:
            log.warning("the earlier attempt's progress (%s) is not used: %s", digest[:19], exc)
            return []
        log.info("resuming: an earlier attempt of this Job finished %d layer(s)", len(layers),
                 extra={"fields": {"recorded_layers": len(layers)}})
        return layers
