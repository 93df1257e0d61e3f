"""The transfer Job exactly as the Model Registry UI's backend builds it, as data (for tests and the e2e).

The keys and values are facts read from kubeflow/hub `clients/ui/bff/internal/repositories/model_transfer_jobs.go`
(`buildK8sJob`, `buildModelMetadataConfigMap`, `buildSourceSecret`, `buildDestinationSecret`, `registryOriginOnly`,
`parseRegistryServerAddress`); this module is our own restatement of them. The UI offers two source types (s3, uri),
one destination type (oci) and the three intents; it mounts the destination Secret's `.dockerconfigjson` at
/opt/creds/destination, the S3 source Secret at /opt/creds/source and the metadata ConfigMap at /etc/model-metadata.
It sets no storage path, no base image (but for quay.io) and no TLS setting.

`UiJob.files()` gives what each mount holds and `UiJob.env(mounts)` the container's environment, with the mount
paths replaced by where a test wrote them (a pod sees the real paths).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SOURCE_MOUNT = "/opt/creds/source"
DESTINATION_MOUNT = "/opt/creds/destination"
METADATA_MOUNT = "/etc/model-metadata"
TRUSTED_CA_MOUNT = "/etc/pki/tls/custom"   # an https Model Registry: the optional ConfigMap odh-trusted-ca-bundle


def typed(kind: str, value: object) -> dict:
    """A custom property in the Model Registry's typed form, as the UI's forms send it."""
    field_name = {"MetadataStringValue": "string_value", "MetadataIntValue": "int_value",
                  "MetadataDoubleValue": "double_value", "MetadataBoolValue": "bool_value",
                  "MetadataStructValue": "struct_value"}[kind]
    return {"metadataType": kind, field_name: value}


@dataclass
class UiJob:
    intent: str                                   # create_model | create_version | update_artifact
    name: str                                     # the Job's name (model_source_name)
    namespace: str
    registry_address: str                         # the Model Registry's ServerAddress, e.g. http://host:8080
    destination_uri: str                          # host[:port]/repo:tag
    username: str = "robot-ui"
    password: str = "registry-Pw-7f3e"
    source_type: str = "s3"                       # s3 | uri
    bucket: str = ""
    key: str = ""
    endpoint: str = ""
    region: str = ""
    access_key: str = ""
    secret_key: str = ""
    uri: str = ""
    model_name: str = ""
    version_name: str = "v1"
    description: str = ""
    version_description: str = ""
    author: str = ""
    model_format: str = ""
    model_format_version: str = ""
    model_props: dict = field(default_factory=dict)
    version_props: dict = field(default_factory=dict)
    model_id: str = ""
    version_id: str = ""
    artifact_id: str = ""
    registry_ca: str | None = None                # the trusted-CA ConfigMap's ca-bundle.crt; None: it does not exist

    @property
    def destination_registry(self) -> str:
        return self.destination_uri.split("/", 1)[0]

    def configmap(self) -> dict[str, str]:
        data = {"ModelVersion.name": self.version_name, "ModelVersion.author": self.author,
                "ModelArtifact.name": self.version_name}
        if self.version_description:
            data["ModelVersion.description"] = data["ModelArtifact.description"] = self.version_description
        if self.model_format:
            data["ModelArtifact.model_format_name"] = self.model_format
        if self.model_format_version:
            data["ModelArtifact.model_format_version"] = self.model_format_version
        if self.model_props:
            data["RegisteredModel.customProperties"] = json.dumps(self.model_props)
        if self.version_props:
            data["ModelVersion.customProperties"] = data["ModelArtifact.customProperties"] = \
                json.dumps(self.version_props)
        if self.intent == "create_model":
            data.update({"RegisteredModel.name": self.model_name, "RegisteredModel.description": self.description,
                         "RegisteredModel.owner": self.author})
        elif self.intent == "create_version":
            data["RegisteredModel.id"] = self.model_id
        else:
            data.update({"RegisteredModel.id": self.model_id, "ModelVersion.id": self.version_id,
                         "ModelArtifact.id": self.artifact_id})
        data.update({"ModelArtifact.model_source_kind": "transfer_job", "ModelArtifact.model_source_class":
                     "async-upload", "ModelArtifact.model_source_group": self.namespace,
                     "ModelArtifact.model_source_name": self.name})
        return data

    def source_secret(self) -> dict[str, str]:
        data = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_S3_ENDPOINT": self.endpoint, "AWS_S3_BUCKET": self.bucket}
        if self.region:
            data["AWS_DEFAULT_REGION"] = self.region
        return data

    def destination_secret(self) -> dict[str, str]:
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {".dockerconfigjson": json.dumps({"auths": {self.destination_registry: {"auth": auth}}},
                                                separators=(",", ":"))}

    def files(self) -> dict[str, dict[str, str]]:
        """{mount path: {file: text}} as the pod sees them."""
        mounts = {DESTINATION_MOUNT: self.destination_secret(), METADATA_MOUNT: self.configmap()}
        if self.source_type == "s3":
            mounts[SOURCE_MOUNT] = self.source_secret()
        if self.registry_secure:  # an optional ConfigMap: an empty directory when it does not exist
            mounts[TRUSTED_CA_MOUNT] = {"ca-bundle.crt": self.registry_ca} if self.registry_ca is not None else {}
        return mounts

    @property
    def registry_secure(self) -> bool:
        return (urlsplit(self.registry_address).scheme or "http").lower() == "https"

    def env(self, mounts: dict[str, str] | None = None) -> dict[str, str]:
        """The container's env; mounts maps the pod's mount paths to where a test put them."""
        at = {p: (mounts or {}).get(p, p) for p in (SOURCE_MOUNT, DESTINATION_MOUNT, METADATA_MOUNT, TRUSTED_CA_MOUNT)}
        parts = urlsplit(self.registry_address)
        scheme = (parts.scheme or "http").lower()
        port = str(parts.port or (443 if scheme == "https" else 80))
        path = parts.path.split("/api/", 1)[0].rstrip("/")
        env = {"MODEL_SYNC_SOURCE_TYPE": self.source_type, "MODEL_SYNC_DESTINATION_TYPE": "oci",
               "MODEL_SYNC_DESTINATION_OCI_URI": self.destination_uri,
               "MODEL_SYNC_DESTINATION_OCI_REGISTRY": self.destination_registry,
               "MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH": f"{at[DESTINATION_MOUNT]}/.dockerconfigjson",
               "MODEL_SYNC_REGISTRY_SERVER_ADDRESS": f"{scheme}://{parts.hostname}:{port}{path}",
               "MODEL_SYNC_REGISTRY_PORT": port, "MODEL_SYNC_REGISTRY_IS_SECURE": str(scheme == "https").lower(),
               "MODEL_SYNC_METADATA_CONFIGMAP_PATH": at[METADATA_MOUNT],
               "MODEL_SYNC_MODEL_UPLOAD_INTENT": self.intent}
        if self.intent == "create_version" and self.model_id:
            env["MODEL_SYNC_MODEL_ID"] = self.model_id
        if self.registry_secure:
            env["MODEL_SYNC_REGISTRY_CUSTOM_CA"] = f"{at[TRUSTED_CA_MOUNT]}/ca-bundle.crt"
        if self.destination_registry == "quay.io":
            env["MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE"] = "quay.io/quay/busybox:latest"
        if self.source_type == "s3":
            env.update({"MODEL_SYNC_SOURCE_AWS_KEY": self.key, "MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH":
                        at[SOURCE_MOUNT]})
        else:
            env["MODEL_SYNC_SOURCE_URI"] = self.uri
        return env

    def write(self, root: Path) -> dict[str, str]:
        """Write the mounts under root (as Kubernetes mounts a Secret or ConfigMap: a file per key); the env
        pointing at them."""
        where = {}
        for mount, files in self.files().items():
            d = root / mount.strip("/").replace("/", "-")
            d.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (d / name).write_text(text)
            where[mount] = str(d)
        return self.env(where)

    def manifests(self, image: str) -> list[dict]:
        """The Secrets, the ConfigMap and the Job as the UI's backend creates them (it names the first three with
        generateName; fixed names here), ready for `kubectl apply`."""
        labels = {"modelregistry.kubeflow.org/job-type": "async-upload",
                  "modelregistry.kubeflow.org/job-id": f"{self.name}-id"}
        meta = lambda name: {"name": name, "namespace": self.namespace, "labels": dict(labels)}  # noqa: E731
        cm, src, dst = f"{self.name}-metadata-configmap", f"{self.name}-source-creds", f"{self.name}-dest-creds"
        docs: list[dict] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(cm), "data": self.configmap()},
            {"apiVersion": "v1", "kind": "Secret", "metadata": meta(dst), "type": "kubernetes.io/dockerconfigjson",
             "stringData": self.destination_secret()}]
        volumes = [{"name": "destination-credentials", "secret": {"secretName": dst, "items": [
                       {"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}},
                   {"name": "model-metadata", "configMap": {"name": cm}}]
        mounts = [{"name": "destination-credentials", "mountPath": DESTINATION_MOUNT, "readOnly": True},
                  {"name": "model-metadata", "mountPath": METADATA_MOUNT, "readOnly": True}]
        annotations = {f"modelregistry.kubeflow.org/{k}": v for k, v in {
            "display-name": self.name, "source-type": self.source_type, "dest-type": "oci",
            "dest-uri": self.destination_uri, "dest-registry": self.destination_registry,
            "upload-intent": self.intent, "model-name": self.model_name, "version-name": self.version_name,
            "artifact-name": self.version_name, "description": self.description, "author": self.author,
            "configmap-name": cm, "dest-secret": dst, "registered-model-id": self.model_id,
            "model-version-id": self.version_id, "model-artifact-id": self.artifact_id,
            "model-registry-name": "model-registry"}.items()}
        if self.source_type == "s3":
            docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": meta(src), "type": "Opaque",
                         "stringData": self.source_secret()})
            volumes.append({"name": "source-credentials", "secret": {"secretName": src}})
            mounts.append({"name": "source-credentials", "mountPath": SOURCE_MOUNT, "readOnly": True})
            annotations.update({"modelregistry.kubeflow.org/source-bucket": self.bucket,
                                "modelregistry.kubeflow.org/source-key": self.key,
                                "modelregistry.kubeflow.org/source-secret": src})
        else:
            annotations["modelregistry.kubeflow.org/source-uri"] = self.uri
        job_labels = {**labels, "modelregistry.kubeflow.org/model-registry-name": "model-registry"}
        docs.append({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": job_labels,
                         "annotations": annotations},
            "spec": {"backoffLimit": 3, "template": {
                "metadata": {"labels": {"modelregistry.kubeflow.org/job-type": "async-upload"}},
                "spec": {"restartPolicy": "Never", "securityContext": {"runAsNonRoot": True}, "volumes": volumes,
                         "containers": [{
                             "name": "async-upload", "image": image, "imagePullPolicy": "IfNotPresent",
                             "volumeMounts": mounts,
                             "env": [{"name": k, "value": v} for k, v in self.env().items()],
                             "securityContext": {"allowPrivilegeEscalation": False,
                                                 "capabilities": {"drop": ["ALL"]},
                                                 "seccompProfile": {"type": "RuntimeDefault"}}}]}}}})
        return docs
