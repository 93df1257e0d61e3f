"""Every setting the job reads: its name, default, type and help. The single source for --help, the README table,
--dry-run and validation. The storage types declare their own settings (sources/, destinations/); this module
gathers them with the settings every job has (the Model Registry, signing, the job itself).
Env var = MODEL_SYNC_<NAME>, arg = --<name with dashes>, as the spec names them.
"""

from __future__ import annotations

from . import destinations, sources
from .setting import Setting, parse_size

SOURCE_TYPES = sources.NAMES
DESTINATION_TYPES = destinations.NAMES
INTENTS = ("update_artifact", "create_model", "create_version")
API_VERSIONS = ("auto", "v1", "v1alpha3")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
SCAN_MODES = ("refuse", "warn", "off")  # modelsync.scan.MODES

SIGSTORE_VARS = ("SIGSTORE_TUF_URL", "SIGSTORE_FULCIO_URL", "SIGSTORE_REKOR_URL")
SIGSTORE_OPTIONAL = ("SIGSTORE_TSA_URL",)


def _of_types() -> tuple[Setting, ...]:
    """Each type's settings, once (types share some: pvc and local, uri and hf), sources' before destinations'."""
    every = [*(s for t in sources.TYPES for s in t.SETTINGS), *(s for t in destinations.TYPES for s in t.SETTINGS)]
    found = {s.name: s for s in every}
    return tuple(sorted(found.values(), key=lambda s: s.group != "source"))


_TYPES = _of_types()

SETTINGS: tuple[Setting, ...] = (
    Setting("source_type", "Where the model comes from", default="s3", choices=SOURCE_TYPES, group="source"),
    *(s for s in _TYPES if s.group == "source"),
    Setting("destination_type", "Where the model goes", default="oci", choices=DESTINATION_TYPES,
            group="destination"),
    *(s for s in _TYPES if s.group == "destination"),
    # --- model registry -----------------------------------------------------------------------------------
    Setting("model_upload_intent", "What to do in the Model Registry", default="update_artifact", choices=INTENTS,
            group="registry"),
    Setting("model_id", "RegisteredModel.id (create_version); else the metadata ConfigMap's RegisteredModel.id",
            group="registry"),
    Setting("model_version_id", "ModelVersion.id; else the metadata ConfigMap's ModelVersion.id (update_artifact)",
            group="registry"),
    Setting("model_artifact_id", "ModelArtifact.id (update_artifact); else the metadata ConfigMap's "
            "ModelArtifact.id, as the Model Registry UI writes it", group="registry"),
    Setting("metadata_configmap_path", "Mounted ConfigMap dir with model metadata (create_model, create_version; "
            "update_artifact: its ids and ModelArtifact fields)", kind="path", group="registry"),
    Setting("registry_server_address", "Model Registry address, e.g. https://model-registry.kubeflow.svc",
            group="registry", url=True),
    Setting("registry_port", "Model Registry port", default="443", kind="int", group="registry"),
    Setting("registry_is_secure", "Use TLS to reach the Model Registry", default="true", kind="bool",
            group="registry"),
    Setting("registry_author", "Author recorded on created versions", group="registry"),
    Setting("registry_user_token", "Bearer token for the Model Registry (default: the pod's service-account "
            "token, if mounted)", secret=True, group="registry"),
    Setting("registry_user_token_envvar", "Name of an env var holding the token", group="registry"),
    Setting("registry_custom_ca", "PEM file trusted for the Model Registry", kind="path", group="registry"),
    Setting("registry_custom_ca_envvar", "Name of an env var holding the CA (a path or PEM text)",
            group="registry"),
    Setting("registry_log_level", "Log level of the model-registry client", choices=LOG_LEVELS, group="registry"),
    Setting("registry_api_version", "Model Registry REST generation; auto probes v1 then v1alpha3",
            default="auto", choices=API_VERSIONS, group="registry"),
    # --- signing ------------------------------------------------------------------------------------------
    Setting("sign", "Sign with sigstore: true/false; unset = auto-detect from SIGSTORE_* vars", kind="bool",
            group="signing"),
    Setting("signing_identity_token_path", "Identity token file for signing (default: the pod's service-account "
            "token)", kind="path", group="signing"),
    Setting("sigstore_root_checksum", "sha256 (hex) the TUF root.json fetched from SIGSTORE_TUF_URL must have; "
            "unset = trust the first root.json fetched", group="signing"),
    Setting("sigstore_trust_config", "A local sigstore trust file (trusted_root.json or a client trust config) "
            "used instead of SIGSTORE_TUF_URL, e.g. for air-gapped clusters; SIGSTORE_* URLs still override its "
            "service URLs", kind="path", group="signing"),
    # --- job ----------------------------------------------------------------------------------------------
    Setting("storage_path", "Scratch space; must hold the whole model (the pipelines -- S3, hf:// or a URL's tar to "
            "OCI, OCI or S3 to S3 -- only what is in flight, see --max-in-flight-bytes)", default="/tmp/model-sync",
            kind="path"),
    Setting("max_in_flight_bytes", "The pipelines: most bytes of downloaded files kept in the storage path at once "
            "(not yet uploaded), e.g. 512Mi, 2Gi, 4G or a number of bytes; default two of the model's largest layer "
            "plus 64 MiB",
            kind="size"),
    Setting("scan", "Check every pickle-based file (.bin .pt .pth .pkl .joblib ..., by content, PyTorch zip "
            "checkpoints too) before the model goes LIVE: refuse fails the job (exit 1, ABANDONED) when a pickle "
            "imports a global off the allow-list (PyTorch tensors and storages, numpy arrays, collections."
            "OrderedDict, ...); warn logs it and goes on", default="refuse", choices=SCAN_MODES),
    Setting("scan_allow", "Comma-separated prefixes of module.name a pickle may import beyond the default "
            "allow-list, e.g. sklearn. for a scikit-learn joblib model (os, subprocess, builtins.eval and the like "
            "are never allowed)"),
    Setting("log_format", "text (for people) or json (one object per line)", default="text", choices=LOG_FORMATS),
    Setting("log_level", "Log level of the job", default="info", choices=LOG_LEVELS),
    Setting("env_file", "A .env file read below real env vars (default ./.env if present)", kind="path"),
)

BY_NAME = {s.name: s for s in SETTINGS}
BY_ENV = {s.env: s for s in SETTINGS}
# Settings of the types not in use are ignored (and said to be); these are every type's.
OF_TYPES = frozenset(s.name for s in _TYPES)

__all__ = ["API_VERSIONS", "BY_ENV", "BY_NAME", "DESTINATION_TYPES", "INTENTS", "LOG_FORMATS", "LOG_LEVELS",
           "OF_TYPES", "SCAN_MODES", "SETTINGS", "SIGSTORE_OPTIONAL", "SIGSTORE_VARS", "SOURCE_TYPES", "Setting",
           "markdown_table", "parse_size"]


def markdown_table() -> str:
    """The README's configuration reference, generated so it cannot drift from the code (a test compares)."""
    rows = ["| Environment variable | Arg | Default | Description |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "(auto-detect)" if s.name == "sign" else (f"`{s.default}`" if s.default is not None else "")
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        secret = " Secret: never logged." if s.secret else ""
        rows.append(f"| `{s.env}` | `{s.arg}` | {default} | {s.help}.{choices}{secret} |")
    return "\n".join(rows)
