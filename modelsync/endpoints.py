"""Typed views of a Config: the plain location objects that sources, destinations and the registry take."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError
from .locations import LocalLocation, OciLocation, S3Location, UriLocation, qualify_reference, strip_scheme
from .secret import Secret
from . import credentials

if TYPE_CHECKING:
    from .config import Config


def s3(cfg: Config, side: str) -> S3Location:
    v = cfg.values
    return S3Location(bucket=v[f"{side}_aws_bucket"], key=(v[f"{side}_aws_key"] or "").lstrip("/"),
                      region=v[f"{side}_aws_region"], endpoint=v[f"{side}_aws_endpoint"],
                      access_key_id=v[f"{side}_aws_access_key_id"],
                      secret_access_key=v[f"{side}_aws_secret_access_key"], ca_bundle=_path(v[f"{side}_aws_ca_bundle"]))


CERTS_D = Path("/etc/containers/certs.d")  # containers-certs.d(5): <registry host[:port]>/ca.crt


def oci(cfg: Config, side: str) -> OciLocation:
    """The image and how to reach it. Without a CA bundle setting, a `ca.crt` under /etc/containers/certs.d/<registry>
    is trusted for that registry, as skopeo and podman trust it (the Model Registry UI mounts the OpenShift service
    CA there for the cluster's internal registry)."""
    v = cfg.values
    reference = strip_scheme(v[f"{side}_oci_uri"])
    ca = _path(v[f"{side}_oci_ca_bundle"])
    if ca is None:
        found = CERTS_D / reference.split("/", 1)[0] / "ca.crt"
        ca = str(found) if found.is_file() else None
    return OciLocation(reference=reference, username=v[f"{side}_oci_username"], password=v[f"{side}_oci_password"],
                       tls_verify=v[f"{side}_oci_enable_tls_verify"], ca_bundle=ca)


def base_image(cfg: Config) -> OciLocation | None:
    """The modelcar's base; None for 'scratch'. Short Docker Hub names are expanded as docker does. A base on the
    destination's own registry (a mirror there) is read with the destination's credentials and CA unless its own
    are given: registry credentials belong to a host, as in a .dockerconfigjson."""
    ref = strip_scheme(cfg.destination_oci_base_image or "scratch")
    if ref in ("scratch", ""):
        return None
    ref = qualify_reference(ref)
    user, password = None, None
    if cfg.destination_oci_base_image_credentials_path:
        found = credentials.read_docker_auth(str(cfg.destination_oci_base_image_credentials_path),
                                             ref.split("/", 1)[0], "--destination-oci-base-image-credentials-path"
                                             " / MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_CREDENTIALS_PATH")
        user, password = found.get("username"), Secret(found["password"]) if found.get("password") else None
    ca = _path(cfg.destination_oci_base_image_ca_bundle)
    if cfg.destination_type == "oci" and cfg.destination_oci_uri:
        dest = oci(cfg, "destination")
        if qualify_reference(dest.reference).split("/", 1)[0] == ref.split("/", 1)[0]:
            if user is None and not cfg.destination_oci_base_image_credentials_path:
                user, password = dest.username, dest.password
            ca = ca or dest.ca_bundle
    return OciLocation(reference=ref, username=user, password=password,
                       tls_verify=cfg.destination_oci_base_image_tls_verify, ca_bundle=ca)


def uri(cfg: Config) -> UriLocation:
    """User-info in the URL (https://user:password@host/...) becomes a Basic header, unless the credentials dir
    gives one: HTTP clients do not send it from the URL, and it must not travel further in the URL either."""
    url, creds = cfg.source_uri, dict(cfg.uri_credentials)
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        if not any(creds.get(k) for k in ("TOKEN", "USERNAME", "PASSWORD")):
            creds.update(USERNAME=unquote(parts.username or ""), PASSWORD=unquote(parts.password or ""))
    return UriLocation(url=url, headers=uri_headers(creds), ca_bundle=_path(cfg.source_uri_ca_bundle))


def uri_headers(found: dict[str, str]) -> dict[str, Secret]:
    """HTTP headers from the URI credentials dir: TOKEN (Bearer), USERNAME+PASSWORD (Basic), HEADERS (JSON)."""
    headers: dict[str, Secret] = {}
    if found.get("HEADERS"):
        try:
            extra = json.loads(found["HEADERS"])
        except json.JSONDecodeError:
            raise ConfigError("--source-uri-credentials-path: HEADERS is not a JSON object of header: value") \
                from None
        if not isinstance(extra, dict) or not all(isinstance(x, str) for x in extra.values()):
            raise ConfigError("--source-uri-credentials-path: HEADERS must be a JSON object of string values")
        headers.update({k: Secret(x) for k, x in extra.items()})
    if found.get("TOKEN"):
        headers["Authorization"] = Secret(f"Bearer {found['TOKEN']}")
    elif found.get("USERNAME") or found.get("PASSWORD"):
        pair = base64.b64encode(f"{found.get('USERNAME', '')}:{found.get('PASSWORD', '')}".encode()).decode()
        headers["Authorization"] = Secret(f"Basic {pair}")
    return headers


def local(cfg: Config, side: str) -> LocalLocation:
    return LocalLocation(path=Path(cfg.values[f"{side}_path"]))


def _path(value: str | None) -> str | None:
    return str(value) if value else None
