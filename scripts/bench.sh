#!/usr/bin/env bash
# scripts/bench.sh [OPTIONS] — Portcullis against nginx, HAProxy, Caddy,
# pingap and bare Pingora on loopback (benches/peers/, `--help` for the
# options; README "Benchmarks" for how to read the output).
#
#   scripts/bench.sh                 3 rounds of 10 s per row
#   scripts/bench.sh --quick         one round of 2 s
#   scripts/bench.sh --instructions  instructions per request under callgrind
#   scripts/bench.sh --only jwt,401  some rows (direct and nginx always run)
#
# Needs wrk, nginx and taskset; the rows of HAProxy, Caddy, redis-server
# and pingap, and the plot (gnuplot), are skipped with a note when absent.
# `scripts/setup.sh --bench` installs the Debian packages (protoc among them,
# for pingap's etcd client); pingap is built
# once into target/peers/pingap (PINGAP=off skips that).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${PINGAP:-on} != off && ! -x target/peers/pingap/bin/pingap ]]; then
    mkdir -p target/peers
    echo "building pingap into target/peers/pingap (once; log in target/peers/pingap-build.log)"
    # 0.13 is the newest pingap release that builds with this toolchain.
    cargo install pingap@0.13.1 --locked --root target/peers/pingap >target/peers/pingap-build.log 2>&1 ||
        echo "pingap did not build (see target/peers/pingap-build.log): its row is skipped"
fi
cargo build --release --example pingora_baseline
exec cargo bench --bench peers -- "$@"
