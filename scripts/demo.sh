#!/usr/bin/env bash
# Builds Portcullis and runs it on conf/demo.toml, with the demo echo
# upstream on 127.0.0.1:9001. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bin portcullis --example echo
./target/release/examples/echo 127.0.0.1:9001 echo &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
./target/release/portcullis check -c conf/demo.toml
echo "portcullis listening on http://127.0.0.1:8080 — try: curl -i http://127.0.0.1:8080/ping"
./target/release/portcullis run -c conf/demo.toml
