#!/usr/bin/env bash
# Proves the README's Quick start on a fresh Debian 12: a minbase root filesystem with only the README's
# prerequisites (make git ca-certificates python3: no python3-venv, no Go, so make's bootstraps run), imported into
# podman, runs `make demo` (or the targets given) on a copy of the current work tree, uncommitted changes included.
#
#   e2e/fresh-debian.sh                     make demo, cold: nothing cached
#   e2e/fresh-debian.sh demo test PYTEST_ARGS='-m "not podman"'     other make arguments
#   FRESH_GO_CACHE=DIR e2e/fresh-debian.sh  keep Go's module and build caches in DIR across runs (faster reruns;
#                                           the binaries are still built and installed)
#   FRESH_REBUILD=1 e2e/fresh-debian.sh     remake the root filesystem image
#
# Needs podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap). Containers run as STACK.md says:
# runc, cgroupfs, lowered ulimits, host network (the stack listens on 127.0.0.1), and the host's CA file lent
# read-only (package traffic here goes through a TLS proxy whose CA only the host trusts).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=localhost/modelsync-fresh:bookworm
PKGS=make,git,ca-certificates,python3
P=(podman --runtime runc --cgroup-manager cgroupfs)
for t in podman runc mmdebstrap; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y podman runc mmdebstrap" >&2; exit 1; }
done
[ $# -gt 0 ] || set -- demo

t0=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${FRESH_REBUILD:-}" ] || ! "${P[@]}" image exists "$IMAGE"; then
  echo "fresh-debian: making $IMAGE (mmdebstrap minbase + $PKGS)"
  mmdebstrap --quiet --variant=minbase --include="$PKGS" bookworm "$work/rootfs.tar"
  "${P[@]}" import --quiet "$work/rootfs.tar" "$IMAGE" >/dev/null
  rm -f "$work/rootfs.tar"
fi

# The work tree as it is: tracked and untracked files, ignored ones (.venv, caches) left out.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf "$work/src.tar"

cache=()
if [ -n "${FRESH_GO_CACHE:-}" ]; then
  mkdir -p "$FRESH_GO_CACHE"
  cache=(-v "$(cd "$FRESH_GO_CACHE" && pwd):/gocache" -e GOMODCACHE=/gocache/mod -e GOCACHE=/gocache/build)
fi

args=$(printf ' %q' "$@")
echo "fresh-debian: image ready in $(($(date +%s) - t0))s; running make$args in it"
status=0
"${P[@]}" run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -v "$work/src.tar:/tmp/src.tar:ro" "${cache[@]}" "$IMAGE" \
  bash -c "set -e; mkdir /root/modelsync; cd /root/modelsync; tar -xf /tmp/src.tar
           echo \"fresh-debian: \$(. /etc/os-release; echo \$PRETTY_NAME), \$(python3 --version), go: \$(command -v go || echo none)\"
           start=\$(date +%s); make$args; echo \"fresh-debian: make$args passed in \$((\$(date +%s) - start))s\"" ||
  status=$?
echo "fresh-debian: done in $(($(date +%s) - t0))s, exit $status"
exit "$status"
