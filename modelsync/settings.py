"""Every setting the job reads: its name, default, type and help. The single source for --help, the README table,
--dry-run and validation. Env var = MODEL_SYNC_<NAME>, arg = --<name with dashes>, as the spec names them.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_TYPES = ("s3", "oci", "uri", "pvc", "local")
DESTINATION_TYPES = ("oci", "s3", "pvc", "local")
INTENTS = ("update_artifact", "create_model", "create_version")
OCI_BACKENDS = ("skopeo", "oras")
API_VERSIONS = ("auto", "v1", "v1alpha3")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

SIGSTORE_VARS = ("SIGSTORE_TUF_URL", "SIGSTORE_FULCIO_URL", "SIGSTORE_REKOR_URL")
SIGSTORE_OPTIONAL = ("SIGSTORE_TSA_URL",)

# Keys of a mounted S3 Secret dir, per setting suffix; the first key present wins (upstream's order: the AWS_* names
# before the data-connection AWS_S3_* / AWS_DEFAULT_* ones).
S3_FILE_KEYS = {
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "aws_endpoint": ("AWS_ENDPOINT_URL", "AWS_S3_ENDPOINT"),
    "aws_bucket": ("AWS_BUCKET", "AWS_S3_BUCKET"),
}
OCI_FILE_KEYS = {"oci_username": "username", "oci_password": "password"}


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str | None = None
    kind: str = "str"            # str | bool | int | path | size (bytes, see parse_size)
    secret: bool = False
    choices: tuple[str, ...] = ()
    group: str = "general"

    @property
    def env(self) -> str:
        return "MODEL_SYNC_" + self.name.upper()

    @property
    def arg(self) -> str:
        return "--" + self.name.replace("_", "-")


def _s3(side: str) -> list[Setting]:
    when = f'when --{side}-type is "s3"'
    return [
        Setting(f"{side}_aws_bucket", f"Bucket ({when})", group=side),
        Setting(f"{side}_aws_key", f"Object key or key prefix ({when})", group=side),
        Setting(f"{side}_aws_region", f"Region ({when})", group=side),
        Setting(f"{side}_aws_access_key_id", f"Access key id ({when})", secret=True, group=side),
        Setting(f"{side}_aws_secret_access_key", f"Secret access key ({when})", secret=True, group=side),
        Setting(f"{side}_aws_endpoint", f"Endpoint URL for S3-compatible stores, e.g. MinIO ({when})", group=side),
        Setting(f"{side}_aws_ca_bundle", f"PEM file trusted for this S3 endpoint only ({when})", kind="path",
                group=side),
    ]


def _oci(side: str, verb: str) -> list[Setting]:
    when = f'when --{side}-type is "oci"'
    return [
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


SETTINGS: tuple[Setting, ...] = (
    # --- source -------------------------------------------------------------------------------------------
    Setting("source_type", "Where the model comes from", default="s3", choices=SOURCE_TYPES, group="source"),
    Setting("source_s3_credentials_path", "Mounted Secret dir with AWS_* keys for the source", kind="path",
            group="source"),
    Setting("source_oci_credentials_path", "A .dockerconfigjson (file or mounted Secret dir) for the source",
            kind="path", group="source"),
    Setting("source_uri_credentials_path", "Mounted Secret dir for the source URI (see README: TOKEN, "
            "USERNAME/PASSWORD, HEADERS, URI; HF_TOKEN for hf://)", kind="path", group="source"),
    Setting("source_uri", 'URL to download when --source-type is "uri" (archives .zip/.tar/.tar.gz unpacked), '
            'or a Hugging Face repo as hf://org/model[@revision]',
            group="source"),
    Setting("source_uri_ca_bundle", "PEM file trusted for the source URI only", kind="path", group="source"),
    Setting("source_hf_include", "Comma-separated glob patterns of the files to download, e.g. "
            "\"*.safetensors,config.json\" (hf:// source URIs only; default: every file)", group="source"),
    Setting("source_hf_exclude", "Comma-separated glob patterns of files not to download, e.g. \"*.bin,*.h5\" "
            "(hf:// source URIs only)", group="source"),
    *_s3("source"),
    *_oci("source", "pull"),
    Setting("source_path", 'Directory already mounted in the pod, when --source-type is "pvc"/"local"',
            kind="path", group="source"),
    # --- destination --------------------------------------------------------------------------------------
    Setting("destination_type", "Where the model goes", default="oci", choices=DESTINATION_TYPES,
            group="destination"),
    Setting("destination_s3_credentials_path", "Mounted Secret dir with AWS_* keys for the destination",
            kind="path", group="destination"),
    Setting("destination_oci_credentials_path", "A .dockerconfigjson (file or mounted Secret dir) for the "
            "destination", kind="path", group="destination"),
    *_s3("destination"),
    *_oci("destination", "push"),
    Setting("destination_oci_base_image", 'Base image of the modelcar ("scratch" for none; KServe needs a shell)',
            default="public.ecr.aws/docker/library/busybox:latest", group="destination"),
    Setting("destination_oci_base_image_tls_verify", "Verify TLS of the base image's registry", default="true",
            kind="bool", group="destination"),
    Setting("destination_oci_base_image_credentials_path", "A .dockerconfigjson for the base image's registry",
            kind="path", group="destination"),
    Setting("destination_oci_base_image_ca_bundle", "PEM file trusted for the base image's registry only",
            kind="path", group="destination"),
    Setting("destination_oci_backend", "Tool that moves OCI content (push, and pull for an oci source); oras "
            "measured faster both ways (make bench)", default="oras", choices=OCI_BACKENDS, group="destination"),
    Setting("destination_path", 'Directory to copy into, when --destination-type is "pvc"/"local"', kind="path",
            group="destination"),
    Setting("destination_replace_existing", "Let the job overwrite what it did not write: files at the model's "
            "paths in a pvc/local destination; objects under an s3 destination prefix, which then ends holding "
            "exactly the synced files. Default false: such a destination is refused before anything moves",
            default="false", kind="bool", group="destination"),
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
            group="registry"),
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
    Setting("storage_path", "Scratch space; must hold the whole model (S3 to OCI: only what is in flight, see "
            "--max-in-flight-bytes)", default="/tmp/model-sync", kind="path"),
    Setting("max_in_flight_bytes", "S3 to OCI: most bytes of downloaded files kept in the storage path at once "
            "(not yet pushed), e.g. 512Mi, 2Gi, 4G or a number of bytes; default two of the model's largest layer "
            "plus 64 MiB",
            kind="size"),
    Setting("log_format", "text (for people) or json (one object per line)", default="text", choices=LOG_FORMATS),
    Setting("log_level", "Log level of the job", default="info", choices=LOG_LEVELS),
    Setting("env_file", "A .env file read below real env vars (default ./.env if present)", kind="path"),
)

BY_NAME = {s.name: s for s in SETTINGS}
BY_ENV = {s.env: s for s in SETTINGS}


def markdown_table() -> str:
    """The README's configuration reference, generated so it cannot drift from the code (a test compares)."""
    rows = ["| Environment variable | Arg | Default | Description |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "(auto-detect)" if s.name == "sign" else (f"`{s.default}`" if s.default is not None else "")
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        secret = " Secret: never logged." if s.secret else ""
        rows.append(f"| `{s.env}` | `{s.arg}` | {default} | {s.help}.{choices}{secret} |")
    return "\n".join(rows)


_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512Mi`, `2Gi`, `4G`, `1.5Gi` (binary with i, decimal without, as Kubernetes
    quantities; a trailing B is allowed); ValueError for anything else or a size below 1."""
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not a size; use bytes or a suffix: 512Mi, 2Gi, 4G")
    value = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    if value < 1:
        raise ValueError(f"'{text}' is less than one byte")
    return value
