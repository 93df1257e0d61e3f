#!/usr/bin/env bash
# Install the tools the local test stack (e2e/stack.py) runs, at the versions pinned in e2e/versions.env.
#
#   e2e/install-tools.sh [COMPONENT...]     components: apt oras registry minio model-registry awscli toxiproxy
#                                           fulcio tesseract timestamp-server rekor-tiles rekor-v1 trillian cosign
#                                           rh-model-signing kubernetes modctl olot
#                                           (default: all; `sigstore` = fulcio … cosign: the signing servers of
#                                           e2e/sigstore.py, and rh-model-signing: the verifier of the signing
#                                           tests, in its own venv $MODELSYNC_CACHE/rh-model-signing-VERSION;
#                                           rekor-v1 = rekor-server, trillian = trillian_log_server,
#                                           trillian_log_signer and the module's MySQL schema in the module cache;
#                                           kubernetes = containerd, runc and CNI plugins from apt, and
#                                           kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl,
#                                           kube-proxy, etcd and CoreDNS into
#                                           $MODELSYNC_CACHE/kubernetes-$KUBERNETES_VERSION/bin;
#                                           modctl = the ModelPack CLI the format tests pull/extract with, into GOBIN;
#                                           olot = olot in a virtual environment of its own,
#                                           $MODELSYNC_CACHE/olot-$OLOT_VERSION, the hybrid index's reference)
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
  printf '%-19s %4d.%01ds  %s\n' "$1" $((ms / 1000)) $((ms % 1000 / 100)) "$2"
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

# apt_need LABEL PACKAGE...: apt-get install the packages that are not installed (apt-get update only then, so the
# warm path makes no network traffic)
apt_need() {
  local label=$1 t missing=() pkg
  shift
  t=$(now)
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    report "$label" "already present" "$t"; return
  fi
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root to apt-get install them"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  report "$label" "installed ${missing[*]}" "$t"
}

install_apt() {
  # busybox-static: the modelcar base image for tests and the demo is built from it (docker.io is unreachable)
  # podman, buildah, runc, mmdebstrap: the job image is built and smoke-tested here (e2e/image.sh)
  apt_need apt skopeo mariadb-server openssl apache2-utils ca-certificates busybox-static podman buildah runc mmdebstrap
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

# Trillian's log server and signer (Rekor v1's storage), and the module itself in the module cache: e2e/sigstore.py
# loads the MySQL schema from $(go env GOMODCACHE)/github.com/google/trillian@$TRILLIAN_VERSION/storage/mysql/schema.
install_trillian() {
  local t
  sigstore_tool trillian_log_server github.com/google/trillian github.com/google/trillian/cmd/trillian_log_server \
    "$TRILLIAN_VERSION"
  sigstore_tool trillian_log_signer github.com/google/trillian github.com/google/trillian/cmd/trillian_log_signer \
    "$TRILLIAN_VERSION"
  t=$(now)
  # outside any module (a go.mod above the current directory would make this a `go get`)
  (cd / && GOTOOLCHAIN="$SIGSTORE_GOTOOLCHAIN" go mod download "github.com/google/trillian@$TRILLIAN_VERSION") ||
    die "could not download github.com/google/trillian@$TRILLIAN_VERSION"
  report trillian-schema "in $(go env GOMODCACHE)/github.com/google/trillian@$TRILLIAN_VERSION" "$t"
}

# Kubernetes for e2e/kubernetes.py, into $CACHE/kubernetes-$KUBERNETES_VERSION/bin (names as upstream; kept out of
# GOBIN so that a kubectl of another version on PATH is never shadowed). `go install k8s.io/kubernetes/cmd/...@v` is
# refused (kubernetes' go.mod replaces its k8s.io/* staging modules with ./staging dirs): a throwaway module requires
# k8s.io/kubernetes and pins each of those staging modules to its own tag v0.MINOR.PATCH, read from kubernetes' go.mod.
# etcd the same way (its server module's go.mod has replaces too). Each binary is checked with `go version -m`, so a
# warm run skips them. The build uses a Go cache of its own, removed after a full build (several GB).
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

install_kubernetes() {
  local v=$KUBERNETES_VERSION dir="$CACHE/kubernetes-$KUBERNETES_VERSION" t name missing=() gomod ver m built=""
  # containerd (with ctr), runc and the CNI plugins (/usr/lib/cni) the kubelet's pods run with; busybox for the
  # sandbox (pause) image e2e/kubernetes.py makes; iproute2 and iptables for the cluster's network namespace and
  # kube-proxy's rules in it (e2e/kubernetes_network.py)
  apt_need kubernetes-apt containerd runc containernetworking-plugins busybox-static iproute2 iptables
  need_go
  for name in "${KUBE_BINARIES[@]}"; do
    t=$(now)
    if [ "$(embedded_version "$dir/bin/$name" k8s.io/kubernetes)" = "$v" ]; then
      report "$name" "already present" "$t"
    else
      missing+=("$name")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    t=$(now)
    mkdir -p "$dir/k8sbuild" "$dir/bin"
    gomod=$(cd / && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
    [ -s "$gomod" ] || die "could not download k8s.io/kubernetes@$v"
    ver="v0.${v#v1.}" # v1.34.2 -> v0.34.2
    {
      printf 'module example.invalid/k8sbuild\n\n'
      awk '$1 == "go" || $1 == "godebug" { print }' "$gomod"
      printf '\nrequire k8s.io/kubernetes %s\n\n' "$v"
      for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod"); do
        printf 'replace %s => %s %s\n' "$m" "$m" "$ver"
      done
      printf '\n'
      for name in "${KUBE_BINARIES[@]}"; do printf 'tool k8s.io/kubernetes/cmd/%s\n' "$name"; done
    } >"$dir/k8sbuild/go.mod"
    (cd "$dir/k8sbuild" && go mod tidy) || die "go mod tidy failed in $dir/k8sbuild"
    report kubernetes-module "$(grep -c '^replace' "$dir/k8sbuild/go.mod") staging replaces, tidy" "$t"
    for name in "${missing[@]}"; do
      k8s_build "$dir" "$name" k8sbuild "k8s.io/kubernetes/cmd/$name" \
        "-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$(echo "$v" | cut -d. -f1 | tr -d v) -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v"
    done
    built=1
  fi
  t=$(now)
  if [ "$(embedded_version "$dir/bin/etcd" go.etcd.io/etcd/server/v3)" = "$ETCD_VERSION" ]; then
    report etcd "already present" "$t"
  else
    mkdir -p "$dir/etcdbuild" "$dir/bin"
    printf 'module example.invalid/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' \
      "$ETCD_VERSION" >"$dir/etcdbuild/go.mod"
    (cd "$dir/etcdbuild" && go mod tidy) || die "go mod tidy failed in $dir/etcdbuild"
    k8s_build "$dir" etcd etcdbuild go.etcd.io/etcd/server/v3 ""
    built=1
  fi
  t=$(now)
  # CoreDNS: its go.mod has no replaces, so a plain static `go install` builds it (into a scratch GOBIN, then moved:
  # the binary goes into a scratch-based image, e2e/kubernetes_dns.py)
  if [ "$(embedded_version "$dir/bin/coredns" github.com/coredns/coredns)" = "$COREDNS_VERSION" ]; then
    report coredns "already present" "$t"
  else
    mkdir -p "$dir/corednsbuild" "$dir/bin"
    (cd / && GOBIN="$dir/corednsbuild" GOCACHE="$dir/gocache" CGO_ENABLED=0 \
      go install -trimpath -ldflags='-s -w' "github.com/coredns/coredns@$COREDNS_VERSION") ||
      die "could not build github.com/coredns/coredns@$COREDNS_VERSION"
    mv "$dir/corednsbuild/coredns" "$dir/bin/coredns"
    rmdir "$dir/corednsbuild"
    report coredns "built $(embedded_version "$dir/bin/coredns" github.com/coredns/coredns)" "$t"
    built=1
  fi
  if [ -n "$built" ]; then rm -rf "$dir/gocache"; fi
}

# k8s_build DIR NAME MODULEDIR PACKAGE LDFLAGS: one static binary into DIR/bin/NAME, with DIR/gocache as Go cache
k8s_build() {
  local dir=$1 name=$2 moddir=$3 pkg=$4 ldflags=$5 t
  t=$(now)
  (cd "$dir/$moddir" && GOCACHE="$dir/gocache" CGO_ENABLED=0 \
    go build -trimpath -ldflags="-s -w $ldflags" -o "$dir/bin/$name.tmp" "$pkg") || die "could not build $pkg"
  mv "$dir/bin/$name.tmp" "$dir/bin/$name"
  report "$name" "built $(embedded_version "$dir/bin/$name" "$([ "$name" = etcd ] && echo go.etcd.io/etcd/server/v3 || echo k8s.io/kubernetes)")" "$t"
}

# modctl (the ModelPack CLI, tests/support/modctl.py). The proxy serves it only under its old path
# github.com/CloudNativeAI/modctl (github.com/modelpack/modctl is refused, and so is the version list, which
# `go install` asks for), while its go.mod says `module github.com/modelpack/modctl`: a throwaway module requires the
# declared path and replaces it with the served one. Static (CGO off): libgit2 is behind the build tag
# enable_libgit2, so nothing needs C. Measured cold here (2 shared cores, module cache partly warm): tidy 8 s, build
# 71 s. `go version -m` shows the module as github.com/modelpack/modctl at $MODCTL_VERSION.
install_modctl() {
  local module=github.com/modelpack/modctl served=github.com/CloudNativeAI/modctl version=$MODCTL_VERSION t dir
  t=$(now)
  need_go
  if [ "$(embedded_version "$GOBIN/modctl" "$module")" = "$version" ]; then
    report modctl "already present" "$t"; return
  fi
  dir="$CACHE/modctlbuild"
  mkdir -p "$dir" "$GOBIN"
  printf 'module example.invalid/modctlbuild\n\ngo 1.24.1\n\nrequire %s %s\n\nreplace %s %s => %s %s\n\ntool %s\n' \
    "$module" "$version" "$module" "$version" "$served" "$version" "$module" >"$dir/go.mod"
  (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X $module/pkg/version.GitVersion=$version" \
    -o "$GOBIN/modctl.tmp" "$module" &&
    mv "$GOBIN/modctl.tmp" "$GOBIN/modctl") || die "could not build $served@$version"
  report modctl "installed $version" "$t"
}

# olot $OLOT_VERSION (tests/support/olot_ref.py: the reference for the hybrid modelcar + ModelPack index) in a virtual
# environment of its own, $CACHE/olot-$OLOT_VERSION: its pinned dependencies (pydantic, click, ...) must not move
# the project's. Made by e2e/venv.sh (ensurepip on Debian); kept when it already holds that version.
install_olot() {
  local venv="$CACHE/olot-$OLOT_VERSION" t
  t=$(now)
  if [ -x "$venv/bin/olot" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("olot"))' 2>/dev/null)" = "$OLOT_VERSION" ]; then
    report olot "already present" "$t"; return
  fi
  bash "$here/venv.sh" "$PYTHON" "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "olot==$OLOT_VERSION" ||
    die "could not pip install olot==$OLOT_VERSION into $venv"
  report olot "installed $OLOT_VERSION into $venv" "$t"
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

# rh-model-signing's CLI in its own venv (its module `model_signing` clashes with model-signing in the project's);
# every package pinned by e2e/rh-model-signing.txt (pyOpenSSL among them: it imports it without declaring it).
install_rh_model_signing() {
  local t venv="$CACHE/rh-model-signing-$RH_MODEL_SIGNING_VERSION"
  t=$(now)
  if [ -x "$venv/bin/rh_model_signing" ] &&
    [ "$("$venv/bin/python" -m pip show rh-model-signing 2>/dev/null | awk '$1 == "Version:" { print $2 }')" = "$RH_MODEL_SIGNING_VERSION" ] &&
    "$venv/bin/python" -c 'import OpenSSL, model_signing._cli' 2>/dev/null; then
    report rh-model-signing "already present" "$t"; return
  fi
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -c "$here/rh-model-signing.txt" "rh-model-signing==$RH_MODEL_SIGNING_VERSION" pyOpenSSL
  report rh-model-signing "installed $RH_MODEL_SIGNING_VERSION in $venv" "$t"
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
    rekor-v1) sigstore_tool rekor-server github.com/sigstore/rekor github.com/sigstore/rekor/cmd/rekor-server \
      "$REKOR_V1_VERSION" ;;
    trillian) install_trillian ;;
    cosign) sigstore_tool cosign github.com/sigstore/cosign/v3 github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION" ;;
    kubernetes) install_kubernetes ;;
    rh-model-signing) install_rh_model_signing ;;
    sigstore) for c in fulcio tesseract timestamp-server rekor-tiles rekor-v1 trillian cosign rh-model-signing; do
      run "$c"; done ;;
    modctl) install_modctl ;;
    olot) install_olot ;;
    *) die "unknown component: $1" ;;
  esac
}

start=$(now)
[ $# -gt 0 ] || set -- apt oras registry minio model-registry awscli toxiproxy sigstore kubernetes modctl olot
for c in "$@"; do run "$c"; done
report total done "$start"
