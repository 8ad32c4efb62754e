#!/usr/bin/env bash
# Installs the system packages Portcullis needs to build and test on Debian:
# Pingora builds zlib-ng with cmake and vendors OpenSSL with perl; the
# tests start their own redis-server (and a cluster with redis-cli, in
# redis-tools) for the shared rate-limit store, and
# check conf/alerts with promtool (Debian ships it in `prometheus`); the
# WAF links libmodsecurity 3 and its tests load the OWASP CRS; the
# dashboard's browser test drives chromium through chromedriver; the
# deployment tests run systemd-analyze (from `systemd`) and
# kubernetes-validate (PyPI, through pip; its schemas are bundled).
# `--bench` adds what scripts/bench.sh runs against and measures with.
set -euo pipefail
packages=(build-essential cmake perl pkg-config libssl-dev curl procps openssl redis-server redis-tools prometheus libmodsecurity3 libmodsecurity-dev modsecurity-crs chromium chromium-driver systemd python3-pip)
if [ "${1:-}" = "--bench" ]; then
  packages+=(nginx wrk util-linux haproxy caddy valgrind gnuplot-nox protobuf-compiler nghttp2-client)
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/kubernetes-validate" ]; then
  python3 -m pip install --user --break-system-packages kubernetes-validate
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi
