#!/usr/bin/env bash
# The project's own virtual environment (make's first step): nothing is ever installed into the system Python,
# which Debian 12 and Ubuntu 23.04+ refuse anyway (PEP 668, "externally-managed-environment").
#
#   e2e/venv.sh PYTHON VENV      e.g. e2e/venv.sh python3 .venv
#
# PYTHON must be 3.11 or newer. Debian/Ubuntu ship `venv` without ensurepip (it is in python3.X-venv): when that
# is missing and we are root, it is apt-get installed; otherwise the script stops with one line saying what to
# install. Idempotent: an existing working VENV is left as it is (no network).
set -euo pipefail
PYTHON=${1:?usage: e2e/venv.sh PYTHON VENV}
VENV=${2:?usage: e2e/venv.sh PYTHON VENV}
die() { echo "venv: $*" >&2; exit 1; }
# make puts VENV/bin first on PATH: PYTHON=python3 must not find the venv's own python3
vbin="$(realpath -m "$VENV")/bin"
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$vbin" | paste -sd: -)

# kept when it works and was made from this PYTHON (make PYTHON=python3.12 after python3 remakes it)
base='import sys; print(sys.base_prefix, sys.version_info[:2])'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1 &&
  [ "$("$VENV/bin/python" -c "$base")" = "$("$PYTHON" -c "$base" 2>/dev/null)" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found: install Python 3.11 or newer (Debian/Ubuntu: apt-get install python3), or run make PYTHON=/path/to/python3.11+"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$PYTHON" -c 'import platform; print(platform.python_version())') is too old ($(command -v "$PYTHON")): modelsync needs Python 3.11 or newer; run make PYTHON=/path/to/python3.11+"

err=""
make_venv() {
  rm -rf "$VENV"
  err=$("$PYTHON" -m venv "$VENV" 2>&1) && "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

if ! make_venv; then
  rm -rf "$VENV"
  # Debian/Ubuntu's own interpreter lacks ensurepip until python3.X-venv is installed
  pkg=python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv
  prefix=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
  if [ "$prefix" = /usr ] && command -v apt-get >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "$PYTHON cannot make a virtual environment: apt-get install $pkg (as root), then run make again"
    echo "venv: installing $pkg (ensurepip for $PYTHON)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    make_venv || { rm -rf "$VENV"; die "$PYTHON -m venv $VENV still fails after installing $pkg"; }
  else
    printf '%s\n' "$err" | tail -n 3 >&2
    die "$PYTHON -m venv $VENV fails (no venv/ensurepip in that Python?): use a Python 3.11+ that has them, e.g. make PYTHON=/path/to/python3.11+"
  fi
fi
echo "venv: made $VENV with $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')"
