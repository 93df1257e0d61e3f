"""An OCI registry on either side: settings, .dockerconfigjson keys, location (with the registry's CA), checks.
The destination's modelcar base image has settings of its own (destinations/oci.py) and reads them here too."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from .. import credentials
from ..errors import ConfigError
from ..locations import OciLocation, qualify_reference, strip_scheme
from ..setting import Given, Setting, missing, problem, require
from . import Filled

log = logging.getLogger("modelsync.config")

CERTS_D = Path("/etc/containers/certs.d")  # containers-certs.d(5): <registry host[:port]>/ca.crt
_REFERENCE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]+)?/[a-z0-9]+([._\-/][a-z0-9]+)*(:[\w][\w.\-]{0,127})?"
                        r"(@sha256:[0-9a-f]{64})?$")


def _settings(side: str) -> dict[str, Setting]:
    when = f'when --{side}-type is "oci"'
    verb = "pull" if side == "source" else "push"
    found = [
        Setting(f"{side}_oci_credentials_path", f"A .dockerconfigjson (file or mounted Secret dir) for the {side}",
                kind="path", group=side),
        Setting(f"{side}_oci_uri", f"Image reference to {verb}, host[:port]/repo[:tag] ({when})", group=side),
        Setting(f"{side}_oci_registry", f"Registry the credentials belong to; defaults to the host of "
                f"--{side}-oci-uri ({when})", group=side),
        Setting(f"{side}_oci_username", f"Registry user ({when})", group=side),
        Setting(f"{side}_oci_password", f"Registry password or token ({when})", secret=True, group=side),
        Setting(f"{side}_oci_enable_tls_verify", f"Verify the registry's TLS certificate; false also allows "
                f"plain HTTP ({when})", default="true", kind="bool", group=side),
        Setting(f"{side}_oci_ca_bundle", f"PEM file trusted for this registry only ({when}); default: "
                f"/etc/containers/certs.d/<registry>/ca.crt if there", kind="path", group=side),
    ]
    return {s.name.removeprefix(f"{side}_"): s for s in found}


_BY_SIDE = {side: _settings(side) for side in ("source", "destination")}


def settings(side: str) -> tuple[Setting, ...]:
    return tuple(_BY_SIDE[side].values())


def setting(side: str, suffix: str) -> Setting:
    """One of them by its name without the side, e.g. setting("destination", "oci_uri")."""
    return _BY_SIDE[side][suffix]


def host_of(reference: str | None) -> str | None:
    if not reference:
        return None
    ref = strip_scheme(reference)
    return ref.split("/", 1)[0] if "/" in ref else None


def read_files(raw: Mapping[str, str], side: str) -> Filled:
    """The .dockerconfigjson entry of the registry for the user and password still unset; the registry itself
    derived from the image reference's host."""
    s = _BY_SIDE[side]
    registry = raw.get(s["oci_registry"].name) or host_of(raw.get(s["oci_uri"].name))
    path = raw.get(s["oci_credentials_path"].name)
    values: dict[str, str] = {}
    problems: list[str] = []
    if path and registry:
        try:
            found = credentials.read_docker_auth(path, registry, s["oci_credentials_path"].label)
            values = {s[f"oci_{key}"].name: found[key] for key in ("username", "password") if found.get(key)}
        except ConfigError as exc:
            problems += exc.problems
    derived = {s["oci_registry"].name: registry} if registry and s["oci_registry"].name not in raw \
        and raw.get(s["oci_uri"].name) else {}
    return Filled(values=values, derived=derived, problems=tuple(problems))


def trusted_ca(setting: str | None, reference: str) -> str | None:
    """The CA bundle setting, else a `ca.crt` under /etc/containers/certs.d/<registry>, trusted for that registry
    as skopeo and podman trust it (the Model Registry UI mounts the OpenShift service CA there for the cluster's
    internal registry)."""
    if setting:
        return str(setting)
    found = CERTS_D / reference.split("/", 1)[0] / "ca.crt"
    return str(found) if found.is_file() else None


def location(given: Given, side: str) -> OciLocation:
    v, s = given.values, _BY_SIDE[side]
    reference = strip_scheme(v[s["oci_uri"].name])
    return OciLocation(reference=reference, username=v[s["oci_username"].name], password=v[s["oci_password"].name],
                       tls_verify=v[s["oci_enable_tls_verify"].name],
                       ca_bundle=trusted_ca(v[s["oci_ca_bundle"].name], reference))


def reference_ok(ref: str) -> bool:
    return bool(_REFERENCE.match(ref))


def base_reference_problem(setting: Setting, value: str | None) -> str | None:
    """A base image written as neither `scratch` nor an image reference (short Docker Hub names allowed)."""
    base = strip_scheme(value or "scratch")
    if base in ("scratch", "") or reference_ok(qualify_reference(base)):
        return None
    return problem(setting, f"'{base}' is not an image reference; write [host[:port]/]repo[:tag][@sha256:digest] "
                            f"or scratch")


def validate(given: Given, side: str) -> list[str]:
    why = f'{side} type is "oci"'
    s, v = _BY_SIDE[side], given.values
    cred = s["oci_credentials_path"]
    # The registry defaults to the URI's host, so it is only worth a line of its own when the URI is there.
    problems = require(given, [s["oci_uri"]], why)
    ref = v.get(s["oci_uri"].name)
    if ref and reference_ok(strip_scheme(ref)):  # a bad URI is its own problem; its "host" would mislead
        problems += require(given, [s["oci_registry"]], why)
    user, password = v.get(s["oci_username"].name), v.get(s["oci_password"].name)
    if not user and not password and ref:
        log.info("%s registry %s: no credentials given, so it is used anonymously (%s)", side,
                 v.get(s["oci_registry"].name) or ref, "pull" if side == "source" else "push")
    if bool(user) != bool(password):  # neither: an anonymous registry (upstream's samples use one)
        absent = s["oci_password"] if user else s["oci_username"]
        problems.append(missing(absent, f"{why} and the other half of the credentials is given",
                                'an "auths" entry for the registry', cred))
    if ref and not reference_ok(strip_scheme(ref)):
        problems.append(problem(s["oci_uri"], f"'{ref}' is not an image reference; write host[:port]/repo[:tag]"))
    return problems


BACKEND = Setting("destination_oci_backend", "Tool that pushes OCI content, and how an oci source is read: oras "
                  "(its layers streamed by the job's own ranged GETs, no copy) or skopeo (copied through an OCI "
                  "layout); oras measured faster both ways (make bench)", default="oras", choices=("skopeo", "oras"),
                  group="destination")
