#!/usr/bin/env bash
# Build the job image (localhost/modelsync:dev) on a machine where no registry serves base images and there is no
# Docker engine: podman with runc, and bases made here (STACK.md). The Dockerfile itself keeps its public defaults;
# only the build args point at the local bases. Idempotent: the bases are made once, then reused; an unchanged tree
# rebuilds from the layer cache in seconds.
#   e2e/image.sh                       build
#   MODELSYNC_IMAGE=… e2e/image.sh     another tag
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${MODELSYNC_IMAGE:-localhost/modelsync:dev}
BASE=localhost/modelsync-base:bookworm          # Debian bookworm + python3 + venv, from mmdebstrap
GO=localhost/modelsync-go:local                 # that base + the host's Go toolchain, for the oras stage
cache="${MODELSYNC_CACHE:-$HOME/.cache/modelsync}/image"
P=(podman --runtime runc --cgroup-manager cgroupfs)
U=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# Package traffic here goes through a TLS proxy whose CA only the host trusts: lend the host's CA file to every RUN,
# read-only, so it never ends up in a layer (Debian's apt, pip and Go all read this file).
CA=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y podman buildah runc mmdebstrap (and Go)" >&2; exit 1; }; }
need podman; need mmdebstrap; need runc; need go

t0=$(date +%s)
if ! "${P[@]}" image exists "$BASE"; then
  echo "making $BASE (mmdebstrap)"
  mkdir -p "$cache"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$cache/base.tar"
  "${P[@]}" import "$cache/base.tar" "$BASE" >/dev/null
  rm -f "$cache/base.tar"
fi
if ! "${P[@]}" image exists "$GO"; then
  echo "making $GO from the host's Go toolchain ($(go env GOVERSION))"
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp -a "$(go env GOROOT)" "$ctx/go"
  printf 'FROM %s\nCOPY go /usr/local/go\nENV PATH=/usr/local/go/bin:/go/bin:$PATH GOPATH=/go\n' "$BASE" > "$ctx/Containerfile"
  "${P[@]}" build "${U[@]}" --pull=never -q -t "$GO" "$ctx" >/dev/null
fi
echo "bases ready in $(( $(date +%s) - t0 ))s; building $IMAGE"
old=$("${P[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# BUILD_DATE is the commit's date, so that an unchanged tree gives the same image (and hits the cache throughout).
"${P[@]}" build "${U[@]}" --pull=never --network host "${CA[@]}" \
  --build-arg BASE_IMAGE="$BASE" --build-arg GO_IMAGE="$GO" \
  --build-arg GOPROXY="$(go env GOPROXY)" \
  --build-arg VCS_REF="$(git rev-parse --short HEAD)" \
  --build-arg BUILD_DATE="$(TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd)" \
  -t "$IMAGE" .
new=$("${P[@]}" image inspect --format '{{.Id}}' "$IMAGE")
# The image this one replaced, now untagged: drop it (fails harmlessly if a container or another tag still uses it).
[ -n "$old" ] && [ "$old" != "$new" ] && "${P[@]}" rmi "$old" >/dev/null 2>&1 || true
echo "built $IMAGE in $(( $(date +%s) - t0 ))s ($("${P[@]}" image inspect "$IMAGE" --format '{{.Size}}') bytes)"
