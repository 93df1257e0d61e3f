#!/usr/bin/env bash
# Install the tools the local test stack (e2e/stack.py) runs, at the versions pinned in e2e/versions.env.
#
#   e2e/install-tools.sh [COMPONENT...]     components: apt oras registry minio model-registry awscli toxiproxy
#                                           fulcio tesseract timestamp-server rekor-tiles cosign (default: all;
#                                           `sigstore` = the last five: the signing servers of e2e/sigstore.py)
#
# Idempotent and fast when everything is present: Go binaries are checked with `go version -m`, which reads the
# module version embedded in the binary, so a binary built by hand or by an older run is recognised without any
# side file, and a binary at another version is rebuilt.
# Go: the first Go >= 1.24 of PATH, /usr/local/go/bin and $MODELSYNC_CACHE/go-$GO_VERSION builds them; when there is
# none, Go $GO_VERSION is bootstrapped from the Go module proxy (module golang.org/toolchain, downloaded by any older
# go, apt-get installing Debian's golang-go for that if needed) into $MODELSYNC_CACHE/go-$GO_VERSION.
# Environment: GOBIN (default ~/go/bin), MODELSYNC_CACHE (default ~/.cache/modelsync), PYTHON (default python3; the
# Makefile passes its virtual environment's, so the aws CLI lands there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

GOBIN="${GOBIN:-$HOME/go/bin}"
export GOBIN
CACHE="${MODELSYNC_CACHE:-$HOME/.cache/modelsync}"
PYTHON="${PYTHON:-python3}"

now() { date +%s%3N; } # milliseconds
report() { # component, state, start time in ms
  local ms=$(($(now) - $3))
  printf '%-15s %4d.%01ds  %s\n' "$1" $((ms / 1000)) $((ms % 1000 / 100)) "$2"
}
die() { echo "install-tools: $*" >&2; exit 1; }

# Version of module $2 embedded in binary $1 (empty when the binary is missing or was not built by `go install`).
embedded_version() {
  [ -x "$1" ] || return 0
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 } $1 == "dep" && $2 == m { print $3 }' | head -n1
}

# true when $1 is a go binary of version 1.24 or newer
go_ok() {
  local v
  v=$("$1" version 2>/dev/null | awk '{ print $3 }') || return 1 # go1.26.8
  [[ $v =~ ^go1\.([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge 24 ]
}

go_ready=""
need_go() {
  local cand
  [ -z "$go_ready" ] || return 0
  for cand in "$(command -v go || true)" /usr/local/go/bin/go "$CACHE/go-$GO_VERSION/bin/go"; do
    if [ -n "$cand" ] && go_ok "$cand"; then
      export PATH="$(dirname "$cand"):$PATH"; go_ready=1; return 0
    fi
  done
  bootstrap_go
  export PATH="$CACHE/go-$GO_VERSION/bin:$PATH"
  go_ok "$CACHE/go-$GO_VERSION/bin/go" || die "bootstrapped Go $GO_VERSION does not run ($CACHE/go-$GO_VERSION/bin/go)"
  go_ready=1
}

# Go $GO_VERSION from the Go module proxy: the toolchain is the module golang.org/toolchain@v0.0.1-goVERSION.OS-ARCH,
# which any go (even Debian 12's 1.19) downloads and checks against the checksum database. The module cache keeps
# files read-only and without exec bits, so the tree is copied out and its binaries made executable.
bootstrap_go() {
  local t boot os arch mod tmp dest="$CACHE/go-$GO_VERSION"
  t=$(now)
  boot=$(command -v go || true)
  [ -n "$boot" ] || [ ! -x /usr/local/go/bin/go ] || boot=/usr/local/go/bin/go
  if [ -z "$boot" ]; then
    command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] ||
      die "no Go >= 1.24: install Go $GO_VERSION (or any go, e.g. apt-get install golang-go, to bootstrap it) and run again"
    echo "install-tools: no go found: installing Debian's golang-go to bootstrap Go $GO_VERSION"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null
    boot=$(command -v go) || die "apt-get install golang-go gave no go on PATH"
  fi
  os=$("$boot" env GOOS)
  arch=$("$boot" env GOARCH)
  [ "$arch" != arm ] || arch=armv6l
  mod="golang.org/toolchain@v0.0.1-go$GO_VERSION.$os-$arch"
  tmp=$(mktemp -d)
  # outside any module; GOTOOLCHAIN=local keeps a go >= 1.21 from switching toolchains itself
  (cd "$tmp" && GOMODCACHE="$tmp/mod" GOTOOLCHAIN=local "$boot" mod download -json "$mod" >"$tmp/dl.json") ||
    { cat "$tmp/dl.json" >&2 2>/dev/null; chmod -R u+w "$tmp"; rm -rf "$tmp"; die "could not download $mod with $boot"; }
  rm -rf "$dest.tmp"
  mkdir -p "$CACHE"
  cp -r "$tmp/mod/$mod" "$dest.tmp"
  chmod -R u+w "$dest.tmp"
  chmod +x "$dest.tmp"/bin/* "$dest.tmp"/pkg/tool/*/*
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  chmod -R u+w "$tmp"
  rm -rf "$tmp"
  report go "bootstrapped go$GO_VERSION ($os/$arch) into $dest" "$t"
}

install_apt() {
  local t missing=() pkg
  t=$(now)
  # busybox-static: the modelcar base image for tests and the demo is built from it (docker.io is unreachable)
  # podman, buildah, runc, mmdebstrap: the job image is built and smoke-tested here (e2e/image.sh)
  for pkg in skopeo mariadb-server openssl apache2-utils ca-certificates busybox-static podman buildah runc mmdebstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    report apt "already present" "$t"; return
  fi
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root to apt-get install them"
  # update only when something is missing: keeps the warm path free of network traffic
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  report apt "installed ${missing[*]}" "$t"
}

# go_tool NAME MODULE PACKAGE VERSION: static build (CGO off) so the binaries can also be copied into images.
# A package whose last element is not NAME (toxiproxy's cmd/server) is built into a scratch GOBIN and renamed.
go_tool() {
  local name=$1 module=$2 pkg=$3 version=$4 t tmp
  t=$(now)
  need_go
  if [ "$(embedded_version "$GOBIN/$name" "$module")" = "$version" ]; then
    report "$name" "already present" "$t"; return
  fi
  if [ "${pkg##*/}" = "$name" ]; then
    CGO_ENABLED=0 go install -ldflags='-s -w' "$pkg@$version"
  else
    tmp=$(mktemp -d)
    GOBIN="$tmp" CGO_ENABLED=0 go install -ldflags='-s -w' "$pkg@$version" ||
      { rm -rf "$tmp"; die "could not build $pkg@$version"; }
    mkdir -p "$GOBIN"
    mv "$tmp/${pkg##*/}" "$GOBIN/$name"
    rm -rf "$tmp"
  fi
  report "$name" "installed $version" "$t"
}

# `go install …model-registry@v0.3.0` is refused (its go.mod has replace directives); a throwaway module that
# requires it builds, because replaces in dependencies are ignored (recipe in STACK.md).
install_model_registry() {
  local module=github.com/kubeflow/model-registry version=$MODEL_REGISTRY_VERSION t dir
  t=$(now)
  need_go
  if [ "$(embedded_version "$GOBIN/model-registry" "$module")" = "$version" ]; then
    report model-registry "already present" "$t"; return
  fi
  dir="$CACHE/mrbuild"
  mkdir -p "$dir" "$GOBIN"
  cat >"$dir/go.mod" <<GOMOD
module example.invalid/mrbuild

go 1.24.4

require $module $version

replace $module/pkg/openapi v0.0.0 => $module/pkg/openapi $version
GOMOD
  printf '//go:build tools\npackage tools\nimport _ "%s"\n' "$module" >"$dir/tools.go"
  # the checksum database has no entry for v0.3.0's go.mod
  (cd "$dir" && export GONOSUMDB=github.com/kubeflow && go mod tidy &&
    CGO_ENABLED=0 go build -ldflags='-s -w' -o "$GOBIN/model-registry.tmp" "$module" &&
    mv "$GOBIN/model-registry.tmp" "$GOBIN/model-registry")
  report model-registry "installed $version" "$t"
}

# sigstore_tool NAME MODULE PACKAGE VERSION: like go_tool, with the toolchain the sigstore modules need
# ($SIGSTORE_GOTOOLCHAIN: some declare go 1.27), built into a scratch GOBIN and renamed to NAME (TesseraCT's and
# rekor-tiles' packages are both called `posix`, so `go install` alone would give two binaries of one name).
sigstore_tool() {
  local name=$1 module=$2 pkg=$3 version=$4 t tmp
  t=$(now)
  need_go
  if [ "$(embedded_version "$GOBIN/$name" "$module")" = "$version" ]; then
    report "$name" "already present" "$t"; return
  fi
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOTOOLCHAIN="$SIGSTORE_GOTOOLCHAIN" CGO_ENABLED=0 go install -ldflags='-s -w' "$pkg@$version" ||
    { rm -rf "$tmp"; die "could not build $pkg@$version"; }
  mkdir -p "$GOBIN"
  mv "$tmp/${pkg##*/}" "$GOBIN/$name"
  rm -rf "$tmp"
  report "$name" "installed $version" "$t"
}

install_awscli() {
  local t
  t=$(now)
  if aws --version 2>&1 | grep -q "^aws-cli/$AWSCLI_VERSION "; then
    report awscli "already present" "$t"; return
  fi
  "$PYTHON" -m pip install -q "awscli==$AWSCLI_VERSION"
  report awscli "installed $AWSCLI_VERSION" "$t"
}

run() {
  case "$1" in
    apt) install_apt ;;
    oras) go_tool oras oras.land/oras oras.land/oras/cmd/oras "$ORAS_VERSION" ;;
    registry) go_tool registry github.com/distribution/distribution/v3 \
      github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" ;;
    minio) go_tool minio github.com/minio/minio github.com/minio/minio "$MINIO_VERSION" ;;
    model-registry) install_model_registry ;;
    toxiproxy) go_tool toxiproxy-server github.com/Shopify/toxiproxy/v2 \
      github.com/Shopify/toxiproxy/v2/cmd/server "$TOXIPROXY_VERSION" ;;
    awscli) install_awscli ;;
    fulcio) sigstore_tool fulcio github.com/sigstore/fulcio github.com/sigstore/fulcio "$FULCIO_VERSION" ;;
    tesseract) sigstore_tool tesseract-posix github.com/transparency-dev/tesseract \
      github.com/transparency-dev/tesseract/cmd/tesseract/posix "$TESSERACT_VERSION" ;;
    timestamp-server) sigstore_tool timestamp-server github.com/sigstore/timestamp-authority/v2 \
      github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server "$TIMESTAMP_AUTHORITY_VERSION" ;;
    rekor-tiles) sigstore_tool rekor-tiles-posix github.com/sigstore/rekor-tiles/v2 \
      github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix "$REKOR_TILES_VERSION" ;;
    cosign) sigstore_tool cosign github.com/sigstore/cosign/v3 github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION" ;;
    sigstore) for c in fulcio tesseract timestamp-server rekor-tiles cosign; do run "$c"; done ;;
    *) die "unknown component: $1" ;;
  esac
}

start=$(now)
[ $# -gt 0 ] || set -- apt oras registry minio model-registry awscli toxiproxy sigstore
for c in "$@"; do run "$c"; done
report total done "$start"
