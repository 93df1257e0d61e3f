"""Plain data passed down the line: where bytes come from and go to, and what was published.

config.py builds these from the resolved settings; sources/, destinations/ and registry.py take them. They hold
no behaviour beyond small derived properties, so every stage can be tested with hand-made values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .secret import Secret


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str                      # an object key or a prefix ("dir/" or "dir"); "" means the whole bucket
    region: str | None = None
    endpoint: str | None = None   # e.g. http://127.0.0.1:9000; None means AWS
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    ca_bundle: str | None = None  # PEM file trusted for this endpoint only
    verify_tls: bool = True

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def ambient(self) -> bool:
        """No access key configured: the standard AWS credential chain (web identity, container, instance,
        profile) is used instead, by boto3 and the aws CLI alike (see aws.py)."""
        return not self.access_key_id and not self.secret_access_key


def split_registry_address(address: str) -> tuple[str, str, int | None, str]:
    """A Model Registry address (`host`, `http://host:port`, `https://host/prefix`) as (scheme or "", host, port or
    None, path prefix or ""). The prefix is a gateway's route to the server (the Model Registry UI keeps one, e.g.
    `/model-registry/<name>`), put before `/api/model_registry/...`; a path holding `/api/` is cut there, as the UI
    does. ValueError when it is none of those (another scheme, a query, no host, a port that is not a number)."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    if parts.scheme not in ("", "http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(address)
    port = parts.port  # raises ValueError for a port that is not a number
    path = parts.path.split("/api/", 1)[0].rstrip("/") if parts.path != "/api" else ""
    return parts.scheme, parts.hostname, port, path


DOCKER_HUB = "docker.io"


def strip_scheme(reference: str) -> str:
    """An image reference without the oci:// or docker:// that users often write before it."""
    for prefix in ("oci://", "docker://"):
        if reference.startswith(prefix):
            return reference[len(prefix):]
    return reference


def qualify_reference(reference: str) -> str:
    """A reference with its registry host, as docker reads short names: `busybox:latest` ->
    `docker.io/library/busybox:latest`, `org/img` -> `docker.io/org/img`. Nothing is left to a tool's
    registries.conf, which may differ between the job's image and a laptop."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"{DOCKER_HUB}/{reference if '/' in reference else f'library/{reference}'}"


@dataclass(frozen=True)
class OciLocation:
    reference: str                # host[:port]/repo[:tag][@sha256:...], no scheme
    username: str | None = None
    password: Secret | None = None
    tls_verify: bool = True
    ca_bundle: str | None = None  # PEM file trusted for this registry only

    @property
    def registry(self) -> str:
        return self.reference.split("/", 1)[0]

    @property
    def repository(self) -> str:
        """host/repo without tag or digest."""
        ref = self.reference.split("@", 1)[0]
        host, _, path = ref.partition("/")
        if ":" in path:
            path = path.rsplit(":", 1)[0]
        return f"{host}/{path}"

    @property
    def tag(self) -> str | None:
        ref = self.reference.split("@", 1)[0]
        path = ref.partition("/")[2]
        return path.rsplit(":", 1)[1] if ":" in path else None

    @property
    def digest(self) -> str | None:
        return self.reference.split("@", 1)[1] if "@" in self.reference else None

    @property
    def lookup(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag, else `latest` (as docker reads it)."""
        return self.digest or self.tag or "latest"


@dataclass(frozen=True)
class UriLocation:
    url: str                      # http(s)://...
    headers: dict[str, Secret] = field(default_factory=dict)  # e.g. Authorization, from the credentials dir
    ca_bundle: str | None = None
    verify_tls: bool = True


@dataclass(frozen=True)
class LocalLocation:
    path: Path


@dataclass(frozen=True)
class FileEntry:
    path: str                     # relative, POSIX separators, never absolute or containing '..'
    size: int
    sha256: str                   # hex


@dataclass(frozen=True)
class Origin:
    """Where a file's bytes came from: the object's URL and the ETag the listing gave (size: the layer's), and
    when the object was last modified (POSIX seconds, as listed; None if the store does not say)."""
    url: str
    etag: str
    modified: float | None = None


@dataclass(frozen=True)
class Fetched:
    """What a source brought into the workspace (or reads in place): the model's directory, its files, and for
    each file it can name, where its bytes came from (object URL and ETag), which a destination
    records so a later run can tell an unchanged file without reading it."""
    model_dir: Path
    files: tuple[FileEntry, ...]
    origins: Mapping[str, Origin] = field(default_factory=dict)

    def newest(self) -> float | None:
        """When the source's content last changed, as far as it says: the newest modification time of its files
        (the listing's where there is one, else the file's on disk: `aws s3 cp` and tar extraction keep the
        source's), None for no files. An image built from the same content gets the same `created`."""
        times: list[float] = []
        for f in self.files:
            listed = self.origins[f.path].modified if f.path in self.origins else None
            times.append(listed if listed is not None else  # a link's own time, not its target's
                         (self.model_dir / f.path).lstat().st_mtime)
        return max(times, default=None)


@dataclass(frozen=True)
class Published:
    uri: str                      # what the Model Registry records, e.g. oci://host/repo@sha256:..., s3://b/k
    digest: str | None            # manifest digest for OCI, None where the back-end has no single digest
    files: tuple[FileEntry, ...]
    facts: Mapping[str, str] = field(default_factory=dict)  # more for the artifact's properties (signatures)
