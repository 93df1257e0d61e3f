#!/usr/bin/env bash
# Run the built job image the way a Kubernetes Job runs it (uid 1001, read-only root, tmpfs /tmp, credentials and
# metadata mounted read-only as files) for a real S3 -> OCI modelcar sync on the local stack; check it went LIVE.
#   e2e/image_smoke.sh [--state-dir DIR]      (the stack must be up: bin/modelsync-stack up)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(python3 -m e2e.stack env "$@")"
P=(podman --runtime runc --cgroup-manager cgroupfs)
RUN=("${P[@]}" run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host --user 1001:0
     --read-only --tmpfs /tmp)
IMAGE=localhost/modelsync:dev
fail() { echo "FAIL: $*" >&2; exit 1; }

"${RUN[@]}" "$IMAGE" --version | grep -q '^modelsync ' || fail "--version"
for tool in "aws --version" "skopeo --version" "oras version"; do
  "${RUN[@]}" --entrypoint sh "$IMAGE" -c "$tool" >/dev/null 2>&1 || fail "$tool inside the image"
done
[ "$("${RUN[@]}" --entrypoint id "$IMAGE" -u)" = 1001 ] || fail "not running as uid 1001"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
name="smoke-$(date +%s)"
mkdir -p "$work/model/sub" "$work/s3" "$work/meta"
printf '{"x": 1}\n' > "$work/model/config.json"
head -c 1048576 /dev/urandom > "$work/model/sub/weights.bin"
python3 - "$work/model" <<'PY'
import os, sys
from pathlib import Path
from modelsync import aws
from modelsync.files import inventory
from modelsync.destinations.s3 import publish_s3
from modelsync.locations import S3Location
from modelsync.secret import Secret
e = os.environ
loc = S3Location(bucket=e["MINIO_BUCKET"], key="image-smoke/model", endpoint=e["MINIO_ENDPOINT"],
                 access_key_id=Secret(e["MINIO_ACCESS_KEY"]), secret_access_key=Secret(e["MINIO_SECRET_KEY"]))
publish_s3(Path(sys.argv[1]), inventory(Path(sys.argv[1])), loc)
PY
printf '%s' "$MINIO_ACCESS_KEY" > "$work/s3/AWS_ACCESS_KEY_ID"
printf '%s\n' "$MINIO_SECRET_KEY" > "$work/s3/AWS_SECRET_ACCESS_KEY"
printf '%s' "$MINIO_ENDPOINT" > "$work/s3/AWS_S3_ENDPOINT"
printf '%s' "$name" > "$work/meta/RegisteredModel.name"
printf '1.0.0' > "$work/meta/ModelVersion.name"
chmod -R a+rX "$work"

# the base image for the modelcar (docker.io is unreachable here)
python3 - "$OCI_REGISTRY" <<'PY'
import sys, tempfile
from pathlib import Path
from modelsync.locations import OciLocation
from modelsync.oci_copy import push_layout
from tests.oci_helpers import busybox_layout
ref = f"{sys.argv[1]}/library/busybox:latest"
with tempfile.TemporaryDirectory() as tmp:
    push_layout(busybox_layout(Path(tmp) / "l"), "latest", OciLocation(ref, tls_verify=False), "latest",
                Path(tmp) / "w", "oras")
PY

out=$("${RUN[@]}" -v "$work/s3:/etc/modelsync/s3:ro" -v "$work/meta:/etc/model-metadata:ro" \
  -e MODEL_SYNC_LOG_FORMAT=json \
  -e MODEL_SYNC_SOURCE_TYPE=s3 -e MODEL_SYNC_SOURCE_AWS_BUCKET="$MINIO_BUCKET" \
  -e MODEL_SYNC_SOURCE_AWS_KEY=image-smoke/model -e MODEL_SYNC_SOURCE_S3_CREDENTIALS_PATH=/etc/modelsync/s3 \
  -e MODEL_SYNC_DESTINATION_TYPE=oci -e MODEL_SYNC_DESTINATION_OCI_URI="$OCI_REGISTRY/smoke/$name:v1" \
  -e MODEL_SYNC_DESTINATION_OCI_USERNAME=smoke -e MODEL_SYNC_DESTINATION_OCI_PASSWORD=unused \
  -e MODEL_SYNC_DESTINATION_OCI_ENABLE_TLS_VERIFY=false \
  -e MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE="$OCI_REGISTRY/library/busybox:latest" \
  -e MODEL_SYNC_DESTINATION_OCI_BASE_IMAGE_TLS_VERIFY=false \
  -e MODEL_SYNC_MODEL_UPLOAD_INTENT=create_model -e MODEL_SYNC_METADATA_CONFIGMAP_PATH=/etc/model-metadata \
  -e MODEL_SYNC_REGISTRY_SERVER_ADDRESS="$MR_URL" -e MODEL_SYNC_REGISTRY_IS_SECURE=false \
  "$IMAGE" 2>"$work/stderr") || { cat "$work/stderr" >&2; fail "the sync exited non-zero"; }
grep -q "$MINIO_SECRET_KEY" "$work/stderr" && fail "the secret key appears in the job's log"
uri=$(printf '%s\n' "$out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["uri"])')
state=$(python3 - "$MR_URL" "$name" <<'PY'
import json, sys, urllib.request
base = f"{sys.argv[1]}/api/model_registry/v1alpha3"
get = lambda p: json.load(urllib.request.urlopen(f"{base}/{p}"))
rm = get(f"registered_model?name={sys.argv[2]}")
mv = get(f"model_version?name=1.0.0&parentResourceId={rm['id']}")
art = get(f"model_versions/{mv['id']}/artifacts")["items"][0]
print(art["state"], art["uri"])
PY
)
[ "$state" = "LIVE $uri" ] || fail "artifact is '$state', expected LIVE $uri"
echo "image smoke test passed: $uri LIVE"
