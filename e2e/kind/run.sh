#!/usr/bin/env bash
# The Kubernetes e2e on kind, for users' CI (it cannot run on the machine this project is built on: no container
# engine there). Same samples, same rendering (e2e/k8s_samples.py), same checks (e2e/k8s_checks.py) as
# `make e2e-local`; only the cluster and the stack differ: kind, and MinIO, a TLS+auth registry, MariaDB and the
# Model Registry deployed in it (stack.yaml), reached from here through port-forwards.
#   e2e/kind/run.sh            needs docker, kind, kubectl, openssl, python3 with `pip install -e '.[test]'`
# Not covered on kind (the local e2e covers them): the signing samples and the kitchen sink (no sigstore services in
# stack.yaml), uri-to-oci (its archive is served from the runner's host) and running the modelcar as a pod (kind's
# containerd would need the in-cluster registry as a mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${KIND_CLUSTER:-modelsync-e2e}
IMAGE=${MODELSYNC_IMAGE:-localhost/modelsync:dev}
NS=modelsync-stack
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"
            [ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 180s
docker build -t "$IMAGE" .
kind load docker-image --name "$CLUSTER" "$IMAGE"

# the registry's TLS certificate (for its in-cluster name) and its htpasswd user
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=registry.$NS.svc" \
  -addext "subjectAltName=DNS:registry.$NS.svc,DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
REGISTRY_PASSWORD=$(openssl rand -hex 12)
MINIO_SECRET_KEY=$(openssl rand -hex 16)
kubectl create namespace "$NS"
kubectl -n "$NS" create secret tls registry-tls --cert="$work/tls.crt" --key="$work/tls.key"
kubectl -n "$NS" create secret generic registry-htpasswd \
  --from-literal=htpasswd="modelsync:$(openssl passwd -apr1 "$REGISTRY_PASSWORD")"
kubectl -n "$NS" create secret generic minio --from-literal=MINIO_ROOT_USER=modelsync \
  --from-literal=MINIO_ROOT_PASSWORD="$MINIO_SECRET_KEY"
kubectl -n "$NS" apply -f e2e/kind/stack.yaml
kubectl -n "$NS" wait --for=condition=Available deployment --all --timeout=300s
kubectl -n "$NS" wait --for=condition=Complete job/make-bucket --timeout=120s

forward() {  # service port -> a local port, in the background
  kubectl -n "$NS" port-forward "svc/$1" "$2:$3" >/dev/null 2>&1 & pids+=($!)
}
forward minio 19000 9000; forward registry 15000 5000; forward model-registry 18080 8080
sleep 3

export E2E_KIND_CONTEXT="kind-$CLUSTER"
# what the checks reach (through the port-forwards) ...
export MINIO_ENDPOINT=http://127.0.0.1:19000 MINIO_ACCESS_KEY=modelsync MINIO_SECRET_KEY MINIO_BUCKET=models
export OCI_TLS_REGISTRY=127.0.0.1:15000 OCI_TLS_CA="$work/tls.crt" OCI_TLS_USERNAME=modelsync
export OCI_TLS_PASSWORD="$REGISTRY_PASSWORD" OCI_REGISTRY=127.0.0.1:15000 MR_URL=http://127.0.0.1:18080
export MR_TOKEN=unused
# ... and what the pods reach (the samples are rendered with these)
export E2E_POD_MINIO_ENDPOINT="http://minio.$NS.svc:9000" E2E_POD_OCI_TLS_REGISTRY="registry.$NS.svc:5000"
export E2E_POD_MR_URL="http://model-registry.$NS.svc:8080"
python3 -m e2e.k8s_e2e --kind "$E2E_KIND_CONTEXT" --image "$IMAGE"
