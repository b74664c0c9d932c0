#!/usr/bin/env bash
# Creates the Python environment for the model pipeline and the ONNX Runtime library the
# aggregator loads (the `onnxruntime` wheel ships libonnxruntime.so). Idempotent: skips
# the install when the venv already matches models/requirements.txt.
#
# The venv lives outside the clone: ${AUGUR_VENV:-$HOME/.cache/augur/venv}.
# Prints nothing on the fast path; `--print-ort` prints the path of libonnxruntime.so.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AUGUR_VENV:-$HOME/.cache/augur/venv}"
req=models/requirements.txt
stamp="$venv/.augur-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-python-deps: python3-venv is missing (run as root or install it)" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "install-python-deps: creating $venv from $req"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi

if [ "${1:-}" = "--print-ort" ]; then
  lib="$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n1)"
  if [ -z "$lib" ]; then
    echo "install-python-deps: libonnxruntime.so not found in $venv" >&2
    exit 1
  fi
  echo "$lib"
fi
