#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12, skipping what is present.
# Idempotent; safe to run on every `make test` / `make demo`.
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in build-essential pkg-config clang libclang-dev protobuf-compiler iproute2 procps \
         systemd stress-ng prometheus-node-exporter haproxy wrk criu; do
  have_pkg "$p" || need_apt+=("$p")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The exporter and HAProxy packages start services where systemd runs; benches and
  # tests start their own.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus-node-exporter haproxy >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
fi
