"""The services upstream's integration suite expects, deployed in the local Kubernetes (e2e/kubernetes.py) the way
upstream's own scripts deploy them on kind (../shared/upstream-async-upload/scripts/), from images made here.

    namespace              Service (port)                             from
    minio                  minio (9000 API, 9001 console)             MINIO_IMAGE: the static `minio` binary
    local-oci-registry-ns  distribution-registry-test-service (5001)  REGISTRY_IMAGE: the static `registry` binary
    kubeflow               model-registry-service (8080)              MR_IMAGE: the static `model-registry` v0.3.0
    kubeflow               model-registry-db (3306)                   MARIADB_IMAGE: Debian bookworm's mariadb-server

As upstream: MinIO's root user and password are minioadmin/minioadmin (Secret minio-secret) and the bucket `default`
exists (upstream creates it with a Job running `mc`, which is not built here: `create_bucket` creates it through a
port-forward with the aws CLI instead); the registry is plain HTTP and anonymous (distribution v3 instead of
upstream's `registry:2`, config from a ConfigMap, REGISTRY_HTTP_ADDR=0.0.0.0:5001 as upstream sets it). Differences,
each because of this cluster: storage is an emptyDir, not upstream's PersistentVolumeClaim (no storage provisioner);
MinIO's Service is ClusterIP, not NodePort (nothing reaches the node from outside here); every image is local, so
imagePullPolicy is Never. The Model Registry stores in MariaDB (v0.3.0 on PostgreSQL is broken, STACK.md), whose
`mr` password is random per deployment and reaches both pods only through Secrets (env and a config file; never
argv).

Images: the three Go servers are one-layer FROM-scratch images of the binaries e2e/install-tools.sh builds static
(kubernetes_containerd.import_scratch_image, as the pause and CoreDNS images), tagged with the pinned version and a
digest of the binary, so a rebuilt binary gives a new tag. MariaDB needs a whole distribution (perl scripts, shared
libraries, its share/ files): `mariadb_image` makes it once with mmdebstrap (Debian bookworm minbase plus
mariadb-server, ~40 s) and `podman import`s it; Cluster.import_image copies it in. It runs as root in its pod
(mariadbd --user=root), creates its datadir on first start and the `mr` database and user on every start
(--init-file, idempotent), listening on all addresses of its pod.

Standard library only (json manifests; kubectl reads JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e.component import StackError, find_tool
from e2e.kubernetes_containerd import ImageFile, import_scratch_image
from e2e.kubernetes_node import CACHE, Node, pins

if TYPE_CHECKING:
    from e2e.kubernetes import Cluster

MINIO_NS, REGISTRY_NS, MR_NS = "minio", "local-oci-registry-ns", "kubeflow"
MINIO_USER = MINIO_PASSWORD = "minioadmin"  # upstream's (scripts/manifests/minio/deployment.yaml)
BUCKET = "default"
REGISTRY_SERVICE, REGISTRY_PORT = "distribution-registry-test-service", 5001
MR_SERVICE, MR_PORT = "model-registry-service", 8080
MARIADB_IMAGE = "localhost/modelsync-mariadb:bookworm"
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")


def in_cluster(service: str, namespace: str, port: int) -> str:
    """HOST:PORT of a Service as pods reach it through cluster DNS."""
    return f"{service}.{namespace}.svc.cluster.local:{port}"


# ---- images -------------------------------------------------------------------------------------------------------

def _binary(name: str) -> Path:
    path = find_tool(name)
    if path is None:
        raise StackError(f"{name} is not installed: run e2e/install-tools.sh {name}")
    return Path(path)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:12]


def scratch_image(node: Node, name: str, version: str, entrypoint: list[str]) -> str:
    """A FROM-scratch image holding the static binary `name` as /NAME, an empty /tmp (HOME) and /data; its ref."""
    binary = _binary(name)
    ref = f"localhost/modelsync-{name}:{version}-{_digest(binary)}"
    files: list[ImageFile] = [(name, binary, 0o755, tarfile.REGTYPE, ""), ("tmp", None, 0o1777, tarfile.DIRTYPE, ""),
                              ("data", None, 0o755, tarfile.DIRTYPE, "")]
    import_scratch_image(node, ref, files, {"Entrypoint": entrypoint, "Env": ["HOME=/tmp", "TMPDIR=/tmp"]})
    return ref


def mariadb_image() -> str:
    """MARIADB_IMAGE in podman's storage, made with mmdebstrap unless it is there (tools: mmdebstrap, podman)."""
    podman = shutil.which("podman")
    mmdebstrap = shutil.which("mmdebstrap")
    if podman is None or mmdebstrap is None:
        raise StackError("podman and mmdebstrap are needed for the MariaDB image: e2e/install-tools.sh apt")
    if subprocess.run([*PODMAN, "image", "exists", MARIADB_IMAGE], check=False).returncode == 0:
        return MARIADB_IMAGE
    work = CACHE / "image"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tar = Path(tmp) / "mariadb.tar"
        run = subprocess.run([mmdebstrap, "--quiet", "--variant=minbase", "--include=mariadb-server",
                              "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                              "bookworm", str(tar)], check=False, capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(f"mmdebstrap (MariaDB image) failed: {run.stderr.strip()[-2000:]}")
        run = subprocess.run([*PODMAN, "import", str(tar), MARIADB_IMAGE], check=False, capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise StackError(f"podman import {MARIADB_IMAGE} failed: {run.stderr.strip()}")
    return MARIADB_IMAGE


def images(cluster: Cluster) -> dict[str, str]:
    """Every image the services run, in the cluster's containerd: {service: ref}."""
    versions = pins()
    refs = {
        "minio": scratch_image(cluster, "minio", versions["MINIO_VERSION"].split("-")[-1], ["/minio"]),
        "registry": scratch_image(cluster, "registry", versions["REGISTRY_VERSION"], ["/registry", "serve"]),
        "model-registry": scratch_image(cluster, "model-registry", versions["MODEL_REGISTRY_VERSION"],
                                        ["/model-registry"]),
        "mariadb": mariadb_image(),
    }
    cluster.import_image(refs["mariadb"])
    return refs


# ---- manifests ----------------------------------------------------------------------------------------------------

def _deployment(name: str, namespace: str, labels: dict[str, str], container: dict[str, Any],
                volumes: list[dict[str, Any]]) -> dict[str, Any]:
    container = {"imagePullPolicy": "Never", **container}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container], "volumes": volumes}}}}


def _service(name: str, namespace: str, labels: dict[str, str], ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"}
                                                   for n, p in ports]}}


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "stringData": data}


def _secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def minio_manifests(image: str) -> list[dict[str, Any]]:
    labels = {"app": "minio"}
    return [
        _namespace(MINIO_NS),
        _secret("minio-secret", MINIO_NS, {"ACCESS_KEY_ID": MINIO_USER, "SECRET_KEY": MINIO_PASSWORD}),
        _deployment("minio", MINIO_NS, labels, {
            "name": "minio", "image": image,
            "args": ["server", "/data", "--address", ":9000", "--console-address", ":9001"],
            "env": [_secret_env("MINIO_ROOT_USER", "minio-secret", "ACCESS_KEY_ID"),
                    _secret_env("MINIO_ROOT_PASSWORD", "minio-secret", "SECRET_KEY"),
                    {"name": "MINIO_UPDATE", "value": "off"}],
            "ports": [{"containerPort": 9000, "name": "minio"}, {"containerPort": 9001, "name": "console"}],
            "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 1},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            [{"name": "data", "emptyDir": {}}]),
        _service("minio", MINIO_NS, labels, [("api", 9000), ("console", 9001)]),
    ]


REGISTRY_CONFIG = """version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:5000
"""


def registry_manifests(image: str) -> list[dict[str, Any]]:
    labels = {"app": "distribution-registry-test"}
    return [
        _namespace(REGISTRY_NS),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "distribution-registry-config",
                                                               "namespace": REGISTRY_NS},
         "data": {"config.yml": REGISTRY_CONFIG}},
        _deployment("distribution-registry-test-deployment", REGISTRY_NS, labels, {
            "name": "distribution-registry-test", "image": image, "args": ["/etc/docker/registry/config.yml"],
            # as upstream: the address from the environment (over the config's), no tracing exporter here
            "env": [{"name": "REGISTRY_HTTP_ADDR", "value": f"0.0.0.0:{REGISTRY_PORT}"},
                    {"name": "OTEL_TRACES_EXPORTER", "value": "none"}],
            "ports": [{"containerPort": REGISTRY_PORT}],
            "readinessProbe": {"httpGet": {"path": "/v2/", "port": REGISTRY_PORT}, "periodSeconds": 1},
            "volumeMounts": [{"name": "distribution-registry-storage", "mountPath": "/var/lib/registry"},
                             {"name": "config", "mountPath": "/etc/docker/registry", "readOnly": True}]},
            [{"name": "distribution-registry-storage", "emptyDir": {}},
             {"name": "config", "configMap": {"name": "distribution-registry-config"}}]),
        _service(REGISTRY_SERVICE, REGISTRY_NS, labels, [("registry", REGISTRY_PORT)]),
    ]


# mariadbd as root in its pod: the datadir on first start, the database and user on every start (idempotent SQL
# in a file only this pod sees; the password comes from the Secret through the environment)
MARIADB_SCRIPT = r"""set -eu
mkdir -p /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  mariadb-install-db --no-defaults --datadir=/var/lib/mysql --user=root --auth-root-authentication-method=socket \
    --skip-test-db >/dev/null
fi
umask 077
printf "CREATE DATABASE IF NOT EXISTS mr CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'mr'@'%%' IDENTIFIED BY '%s';
ALTER USER 'mr'@'%%' IDENTIFIED BY '%s';
GRANT ALL PRIVILEGES ON mr.* TO 'mr'@'%%';
" "$MR_DB_PASSWORD" "$MR_DB_PASSWORD" > /run/mysqld/init.sql
exec mariadbd --no-defaults --datadir=/var/lib/mysql --user=root --port=3306 --bind-address=0.0.0.0 \
  --socket=/run/mysqld/mysqld.sock --init-file=/run/mysqld/init.sql --skip-name-resolve \
  --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci --innodb-buffer-pool-size=64M \
  --innodb-flush-log-at-trx-commit=2 --skip-innodb-doublewrite --log-warnings=1
"""


def model_registry_manifests(mr_image: str, db_image: str, password: str) -> list[dict[str, Any]]:
    db_labels, mr_labels = {"app": "model-registry-db"}, {"app": "model-registry"}
    dsn = (f"mr:{password}@tcp({in_cluster('model-registry-db', MR_NS, 3306)})/mr"
           "?charset=utf8mb4&parseTime=True")
    return [
        _namespace(MR_NS),
        _secret("model-registry-db", MR_NS, {"password": password}),
        # the DSN holds the password: a config file from a Secret, not the command line
        _secret("model-registry-config", MR_NS, {"config.yaml": f"embedmd-database-dsn: {json.dumps(dsn)}\n"}),
        _deployment("model-registry-db", MR_NS, db_labels, {
            "name": "mariadb", "image": db_image, "command": ["/bin/sh", "-c", MARIADB_SCRIPT],
            "env": [_secret_env("MR_DB_PASSWORD", "model-registry-db", "password")],
            "ports": [{"containerPort": 3306, "name": "mysql"}],
            "readinessProbe": {"tcpSocket": {"port": 3306}, "periodSeconds": 1},
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}, {"name": "run", "mountPath": "/run"}]},
            [{"name": "data", "emptyDir": {}}, {"name": "run", "emptyDir": {"medium": "Memory"}}]),
        _service("model-registry-db", MR_NS, db_labels, [("mysql", 3306)]),
        _deployment("model-registry-deployment", MR_NS, mr_labels, {
            "name": "rest-container", "image": mr_image,
            "args": ["proxy", "--config", "/etc/model-registry/config.yaml", "--hostname", "0.0.0.0",
                     "--port", str(MR_PORT), "--datastore-type", "embedmd", "--embedmd-database-type", "mysql"],
            "ports": [{"containerPort": MR_PORT, "name": "http-api"}],
            "readinessProbe": {"httpGet": {"path": "/readyz/health", "port": MR_PORT}, "periodSeconds": 1},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/model-registry", "readOnly": True}]},
            [{"name": "config", "secret": {"secretName": "model-registry-config"}}]),
        _service(MR_SERVICE, MR_NS, mr_labels, [("http-api", MR_PORT)]),
    ]


def manifests(refs: dict[str, str], db_password: str) -> list[dict[str, Any]]:
    return [*minio_manifests(refs["minio"]), *registry_manifests(refs["registry"]),
            *model_registry_manifests(refs["model-registry"], refs["mariadb"], db_password)]


# ---- deploy -------------------------------------------------------------------------------------------------------

DEPLOYMENTS = ((MINIO_NS, "minio"), (REGISTRY_NS, "distribution-registry-test-deployment"),
               (MR_NS, "model-registry-db"), (MR_NS, "model-registry-deployment"))


def deploy(cluster: Cluster, timeout: int = 240) -> dict[str, str]:
    """Images in, manifests applied, every Deployment available (the Model Registry after its migrations);
    returns the image refs. StackError, with the pods' state and logs, when one does not come up."""
    refs = images(cluster)
    listing = {"apiVersion": "v1", "kind": "List", "items": manifests(refs, secrets.token_hex(16))}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))
    for namespace, name in DEPLOYMENTS:
        wait = cluster.kubectl("wait", "--for=condition=Available", f"deployment/{name}", "-n", namespace,
                               f"--timeout={timeout}s", check=False, timeout=timeout + 30)
        if wait.returncode != 0:
            pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
            logs = cluster.kubectl("logs", f"deployment/{name}", "-n", namespace, "--tail=30", check=False)
            raise StackError(f"deployment {namespace}/{name} not available after {timeout}s: {wait.stderr.strip()}\n"
                             f"{pods}\n{logs.stdout}{logs.stderr}")
    return refs


def create_bucket(endpoint: str) -> None:
    """The bucket `default` (what upstream's minio-init Job does with mc), through `endpoint` (a port-forward)."""
    aws = find_tool("aws")
    if aws is None:
        raise StackError("the aws CLI is not installed (make install)")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": MINIO_USER, "AWS_SECRET_ACCESS_KEY": MINIO_PASSWORD,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    run = subprocess.run([aws, "s3api", "create-bucket", "--bucket", BUCKET, "--endpoint-url", endpoint], env=env,
                         capture_output=True, text=True, check=False)
    if run.returncode != 0 and "BucketAlreadyOwnedByYou" not in run.stderr:
        raise StackError(f"create bucket {BUCKET}: {run.stderr.strip()}")
