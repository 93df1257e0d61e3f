#!/usr/bin/env bash
# Run the built job image the way a Kubernetes Job runs it, for real S3 (MinIO) -> OCI modelcar syncs on the local
# stack with intent create_model, and check each artifact went LIVE in the Model Registry. Exits non-zero on any failure.
#   e2e/image_smoke.sh [--state-dir DIR]      (the stack must be up: bin/modelsync-stack up; the image built: e2e/image.sh)
# Two runs:
#   1. uid 1001, --read-only --tmpfs /tmp, S3 credentials and metadata as read-only dirs (one file per key), registry
#      user/password in env, the default (oras) backend;
#   2. as a restricted pod: an arbitrary uid with gid 0 (OpenShift), no capabilities, no-new-privileges, nothing
#      writable but the emptyDir on /tmp/model-sync (podman's --read-only would add tmpfs on /tmp, /run: switched
#      off), registry credentials as a mounted .dockerconfigjson Secret, skopeo backend, /dev/termination-log.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(python3 -m e2e.stack env "$@")"
IMAGE=${MODELSYNC_IMAGE:-localhost/modelsync:dev}
P=(podman --runtime runc --cgroup-manager cgroupfs)
RUN=("${P[@]}" run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)
JOB=("${RUN[@]}" --user 1001:0 --read-only --tmpfs /tmp)
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

"${P[@]}" image exists "$IMAGE" || fail "no image $IMAGE: run e2e/image.sh"
help=$("${JOB[@]}" "$IMAGE" --help) && [[ $help == *--source-type* ]] || fail "--help"
version=$("${JOB[@]}" "$IMAGE" --version) && [[ $version == "modelsync "* ]] || fail "--version: $version"
ok "--help, --version ($version)"
for tool in "aws --version" "skopeo --version" "oras version"; do
  v=$("${JOB[@]}" --entrypoint sh "$IMAGE" -c "$tool" 2>&1) || fail "$tool inside the image: $v"
  ok "$tool: $(printf '%s' "$v" | head -1)"
done
# the aws CLI plugin (package data under modelsync/awscli_plugin) is installed and loaded the way modelsync.clients.aws loads it
plugin=$("${JOB[@]}" -e AWS_ACCESS_KEY_ID=x -e AWS_SECRET_ACCESS_KEY=y --entrypoint sh "$IMAGE" -c '
  D=$(python -c "from modelsync.clients.aws import PLUGIN_DIR; print(PLUGIN_DIR)")
  AWS_CONFIG_FILE=$D/config PYTHONPATH=$D aws --debug --cli-connect-timeout 1 --endpoint-url http://127.0.0.1:1 s3 ls 2>&1' || true)
[[ $plugin == *"before-send.s3.ListBuckets: calling handler <function drop_expect"* ]] || fail "the aws CLI plugin is not loaded"
ok "aws CLI plugin modelsync_no_expect loaded"
[ "$("${JOB[@]}" --entrypoint id "$IMAGE" -u)" = 1001 ] || fail "the image's user is not uid 1001"
[ "$("${RUN[@]}" --entrypoint id "$IMAGE" -u)" = 1001 ] || fail "the image does not default to uid 1001"
"${JOB[@]}" --entrypoint sh "$IMAGE" -c 'touch /opt/x' 2>/dev/null && fail "the root filesystem is writable"
"${RUN[@]}" --entrypoint sh "$IMAGE" -c '! grep -q sandboxing-egress /etc/ssl/certs/ca-certificates.crt && [ ! -s /etc/pip.conf ]' \
  || fail "the build host's proxy CA or pip config was baked into the image"
ok "uid 1001 by default, read-only root, no build-host CA"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/model/sub" "$work/s3" "$work/oci" "$work/scratch"
printf '{"x": 1}\n' > "$work/model/config.json"
{ printf '\377'; head -c 1048575 /dev/urandom; } > "$work/model/sub/weights.bin"  # 0xff first: no pickle opcode
prefix="image-smoke/$(date +%s)-$$"
python3 - "$work/model" "$prefix" <<'PY'
import os, sys
from pathlib import Path
from modelsync.files import inventory
from modelsync.destinations.s3 import publish_s3
from modelsync.locations import S3Location
from modelsync.secret import Secret
e = os.environ
loc = S3Location(bucket=e["MINIO_BUCKET"], key=sys.argv[2], endpoint=e["MINIO_ENDPOINT"],
                 access_key_id=Secret(e["MINIO_ACCESS_KEY"]), secret_access_key=Secret(e["MINIO_SECRET_KEY"]))
publish_s3(Path(sys.argv[1]), inventory(Path(sys.argv[1])), loc, "smoke-test-source")
PY
# A Secret mounted as Kubernetes does: one file per key (values with and without a trailing newline).
printf '%s' "$MINIO_ACCESS_KEY" > "$work/s3/AWS_ACCESS_KEY_ID"
printf '%s\n' "$MINIO_SECRET_KEY" > "$work/s3/AWS_SECRET_ACCESS_KEY"
printf '%s' "$MINIO_ENDPOINT" > "$work/s3/AWS_S3_ENDPOINT"
printf '{"auths": {"%s": {"auth": "%s"}}}' "$OCI_REGISTRY" "$(printf smoke:unused | base64)" > "$work/oci/.dockerconfigjson"
chmod -R a+rX "$work"; chmod a+rwx "$work/scratch"

# the modelcar's base image (docker.io is unreachable here)
python3 - "$OCI_REGISTRY" <<'PY'
import sys, tempfile
from pathlib import Path
from modelsync.locations import OciLocation
from modelsync.oci_copy import push_layout
from tests.support.oci_helpers import busybox_layout
ref = f"{sys.argv[1]}/library/busybox:latest"
with tempfile.TemporaryDirectory() as tmp:
    push_layout(busybox_layout(Path(tmp) / "l"), "latest", OciLocation(ref, tls_verify=False), "latest",
                Path(tmp) / "w", "oras")
PY

# sync LABEL RUNNER-ARGS…: a create_model sync from the S3 prefix to $OCI_REGISTRY/smoke/<name>, checked end to end.
sync() {
  local label=$1; shift
  local name="smoke-$label-$(date +%s)-$$" meta="$work/meta-$label"
  mkdir -p "$meta"
  printf '%s' "$name" > "$meta/RegisteredModel.name"
  printf '1.0.0' > "$meta/ModelVersion.name"
  chmod -R a+rX "$meta"
  local out rc=0
  out=$("$@" -v "$work/s3:/etc/modelsync/s3:ro" -v "$meta:/etc/model-metadata:ro" \
    -e MODEL_SYNC_LOG_FORMAT=json \
    -e MODEL_SYNC_SOURCE_TYPE=s3 -e MODEL_SYNC_SOURCE_AWS_BUCKET="$MINIO_BUCKET" \
    -e MODEL_SYNC_SOURCE_AWS_KEY="$prefix/" -e MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH=/etc/modelsync/s3 \
    -e MODEL_SYNC_DESTINATION_TYPE=oci -e MODEL_SYNC_DESTINATION_OCI_URI="$OCI_REGISTRY/smoke/$name:v1" \
    -e MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY=false \
    -e MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE="$OCI_REGISTRY/library/busybox:latest" \
    -e MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY=false \
    -e MODEL_SYNC_MODEL_UPLOAD_INTENT=create_model -e MODEL_SYNC_METADATA_CONFIGMAP_PATH=/etc/model-metadata \
    -e MODEL_SYNC_REGISTRY_SERVER_ADDRESS="$MR_URL" -e MODEL_SYNC_REGISTRY_IS_SECURE=false \
    "$IMAGE" 2>"$work/stderr-$label") || rc=$?
  [ "$rc" = 0 ] || { cat "$work/stderr-$label" >&2; fail "$label: the sync exited $rc"; }
  [[ $out == *"$MINIO_SECRET_KEY"* ]] && fail "$label: the secret key is in the output"
  grep -qF -- "$MINIO_SECRET_KEY" "$work/stderr-$label" && fail "$label: the secret key is in the log"
  python3 - "$label" "$name" "$(printf '%s\n' "$out" | tail -1)" "$OCI_REGISTRY" "$MR_URL" "$work/termination-log" <<'PY' || fail "$label: check failed"
import json, os, sys, urllib.request
label, name, last, registry, mr, termlog = sys.argv[1:]
summary = json.loads(last)
uri, digest = summary["uri"], summary["digest"]
assert uri == f"oci://{registry}/smoke/{name}@{digest}", f"summary uri {uri}"
assert summary["files"] == 2 and summary["bytes"] == 1048585, f"summary {summary}"
# the modelcar is in the registry under that digest, with the base's layers plus the model's (one per file for a small model)
req = urllib.request.Request(f"http://{registry}/v2/smoke/{name}/manifests/{digest}",
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
manifest = json.load(urllib.request.urlopen(req))
assert len(manifest["layers"]) >= 3, f"{len(manifest['layers'])} layers"
# the Model Registry: model, version and a LIVE artifact holding that digest-pinned URI
base = f"{mr}/api/model_registry/v1alpha3"
get = lambda p: json.load(urllib.request.urlopen(f"{base}/{p}"))
rm = get(f"registered_model?name={name}")
mv = get(f"model_version?name=1.0.0&parentResourceId={rm['id']}")
arts = get(f"model_versions/{mv['id']}/artifacts")["items"]
assert len(arts) == 1, f"{len(arts)} artifacts"
assert (arts[0]["state"], arts[0]["uri"]) == ("LIVE", uri), f"artifact {arts[0]['state']} {arts[0]['uri']}"
if label == "restricted":
    with open(termlog) as f:  # upstream's shape, plus where the model went
        message = json.load(f)
    assert message["ModelArtifact"] == {"id": arts[0]["id"]} and message["ModelVersion"] == {"id": mv["id"]} \
        and message["RegisteredModel"] == {"id": rm["id"]}, f"termination log {message}"
    assert (message["uri"], message["digest"]) == (uri, digest), f"termination log {message}"
print(f"ok: {label}: {uri} LIVE (RegisteredModel {rm['id']}, ModelVersion {mv['id']}, ModelArtifact {arts[0]['id']})")
PY
}

sync job "${JOB[@]}" -e MODEL_SYNC_DESTINATION_OCI_USERNAME=smoke -e MODEL_SYNC_DESTINATION_OCI_PASSWORD=unused

: > "$work/termination-log"; chmod a+rw "$work/termination-log"
sync restricted "${RUN[@]}" --user 1000650000:0 --cap-drop ALL --security-opt no-new-privileges \
  --read-only --read-only-tmpfs=false -v "$work/scratch:/tmp/model-sync" \
  -v "$work/oci:/etc/modelsync/oci:ro" -e MODEL_SYNC_DESTINATION_OCI_CREDENTIALS_PATH=/etc/modelsync/oci \
  -e MODEL_SYNC_DESTINATION_OCI_BACKEND=skopeo -v "$work/termination-log:/dev/termination-log"
[ -z "$(ls -A "$work/scratch")" ] || fail "restricted: the job left files in its scratch dir"

echo "image smoke test passed"
