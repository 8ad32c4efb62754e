#!/usr/bin/env bash
# scripts/ab.sh OLD NEW — paired throughput A/B of two portcullis binaries.
#
# Both gateways (threads = 1, a public catch-all route, no access log) and
# one nginx origin answering `200 ok` run pinned to CPU $SERVER_CPU (0);
# wrk (1 thread, $CONNECTIONS keep-alive connections) runs on CPU $WRK_CPU
# (1). Each pair is one $DURATION-second run against each binary, seconds
# apart and in alternating order, so the machine's drift mostly cancels;
# the result is the median of the per-pair ratios NEW/OLD.
#
#   scripts/ab.sh /tmp/old/portcullis target/release/portcullis
#   PAIRS=40 DURATION=3 scripts/ab.sh OLD NEW
#
# Needs wrk, nginx and taskset (apt-get install -y wrk nginx util-linux).
set -euo pipefail

OLD=${1:?usage: scripts/ab.sh OLD NEW}
NEW=${2:?usage: scripts/ab.sh OLD NEW}
PAIRS=${PAIRS:-16}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

dir=$(mktemp -d /tmp/portcullis-ab.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

origin=$(free_port)
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$origin; location / { return 200 "ok\n"; } }
}
EOF
taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" >/dev/null 2>&1 &
pids+=($!)

start_gateway() { # NAME BINARY -> prints the port
    local name=$1 bin=$2 port
    port=$(free_port)
    cat >"$dir/$name.toml" <<EOF
[server]
threads = 1
pid_file = "$dir/$name.pid"
upgrade_sock = "$dir/$name.sock"
[log]
access_log = "off"
security_log = "$dir/$name-security.log"
[[listeners]]
name = "http"
listen = "127.0.0.1:$port"
[upstreams.origin]
targets = ["127.0.0.1:$origin"]
[[routes]]
name = "public"
path_prefix = "/"
public = true
upstream = "origin"
EOF
    taskset -c "$SERVER_CPU" "$bin" run -c "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    echo "$port"
}

old_port=$(start_gateway old "$OLD")
new_port=$(start_gateway new "$NEW")
for port in "$origin" "$old_port" "$new_port"; do
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
done

run() { # PORT -> requests per second
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$1/" |
        awk '/Requests\/sec/ { print $2 }'
}

run "$old_port" >/dev/null
run "$new_port" >/dev/null
echo "pair   old req/s   new req/s   new/old"
ratios=()
for i in $(seq 1 "$PAIRS"); do
    if ((i % 2)); then
        o=$(run "$old_port"); n=$(run "$new_port")
    else
        n=$(run "$new_port"); o=$(run "$old_port")
    fi
    r=$(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.3f", n / o }')
    ratios+=("$r")
    printf '%4d %11s %11s %9s\n' "$i" "$o" "$n" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
    { v[NR] = $1 }
    END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "median new/old %.3f over %d pairs (range %.3f .. %.3f)\n", m, NR, v[1], v[NR]
    }'
