#!/usr/bin/env bash
# Build the job image (localhost/modelsync:dev) on a machine where no registry serves base images and there is no
# Docker engine: podman with runc, and bases made here (STACK.md). The Dockerfile itself keeps its public defaults;
# only the build args point at the local bases.
#   e2e/image.sh            build (reuses the local bases once made)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${MODELSYNC_CACHE:-$HOME/.cache/modelsync}/image"
mkdir -p "$cache"
P=(podman --runtime runc --cgroup-manager cgroupfs)
U=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# Package traffic here goes through a TLS proxy whose CA only the host trusts: lend the host's CA file and pip
# config to the build, read-only, so nothing of it ends up in an image layer.
MOUNTS=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
[ -f /etc/pip.conf ] && MOUNTS+=(-v /etc/pip.conf:/etc/pip.conf:ro)

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y podman buildah runc mmdebstrap" >&2; exit 1; }; }
need podman; need mmdebstrap

t0=$(date +%s)
if ! "${P[@]}" image exists localhost/modelsync-base:bookworm; then
  echo "making the Debian base (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$cache/base.tar"
  "${P[@]}" import "$cache/base.tar" localhost/modelsync-base:bookworm >/dev/null
fi
if ! "${P[@]}" image exists localhost/modelsync-go:local; then
  echo "making the Go build image from the host's toolchain"
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp -a "$(go env GOROOT)" "$ctx/go"
  printf 'FROM localhost/modelsync-base:bookworm\nCOPY go /usr/local/go\nENV PATH=/usr/local/go/bin:/go/bin:$PATH GOPATH=/go\n' \
    > "$ctx/Containerfile"
  "${P[@]}" build "${U[@]}" --pull=never -q -t localhost/modelsync-go:local "$ctx" >/dev/null
fi
echo "bases ready in $(( $(date +%s) - t0 ))s; building localhost/modelsync:dev"
"${P[@]}" build "${U[@]}" --pull=never --network host "${MOUNTS[@]}" \
  --build-arg BASE_IMAGE=localhost/modelsync-base:bookworm --build-arg GO_IMAGE=localhost/modelsync-go:local \
  --build-arg GOPROXY="$(go env GOPROXY)" \
  --build-arg VCS_REF="$(git rev-parse --short HEAD)" --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t localhost/modelsync:dev .
echo "built localhost/modelsync:dev in $(( $(date +%s) - t0 ))s ($("${P[@]}" image inspect localhost/modelsync:dev --format '{{.Size}}') bytes)"
