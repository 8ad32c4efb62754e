#!/usr/bin/env bash
# The test command of README.md and CI: system packages, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --release --all-targets
