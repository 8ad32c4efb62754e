#!/usr/bin/env bash
# scripts/bench.sh — throughput and latency of Portcullis against plain proxies.
#
# WHAT IT MEASURES
#   wrk drives HTTP/1.1 keep-alive GET requests at each target below; every
#   target ends at the same origin, a minimal nginx answering `200 "ok\n"`:
#
#     direct                      wrk -> origin                (the ceiling)
#     nginx                       wrk -> nginx proxy -> origin (the yardstick)
#     haproxy                     wrk -> haproxy     -> origin (only if installed)
#     portcullis                  wrk -> portcullis  -> origin (public route, no access log)
#     portcullis (access log on)  same, second instance writing its access log to a file
#
#   Fairness: every proxy runs ONE worker thread (portcullis `[server] threads = 1`,
#   nginx `worker_processes 1`, haproxy `nbthread 1`); the proxies and the origin
#   are pinned to CPU $SERVER_CPU (default 0) and wrk to CPU $WRK_CPU (default 1)
#   with taskset, so each proxy shares the same single core with the origin.
#   Same connections and duration for every target. Each measurement is preceded
#   by a $WARMUP-second warm-up (same wrk settings, discarded). Targets are
#   interleaved within a round (and the starting target rotates between rounds),
#   so slow drift of the machine hits all targets alike. The table shows the
#   MEDIAN over the rounds of each number.
#   All nginx/haproxy instances keep connections alive indefinitely
#   (keepalive_requests 1000000) so no target pays for reconnects the others
#   don't; nginx's upstream pool keeps max(64, CONNECTIONS) idle connections.
#
# HOW TO READ THE TABLE
#   req/s      median requests per second (higher is better).
#   p50, p99   median over rounds of wrk's 50th/99th percentile latency, in ms.
#              wrk runs a closed loop (CONNECTIONS requests always in flight),
#              so latency here is mostly queueing: p50 ≈ CONNECTIONS / req/s.
#              p99 shows the tail the proxy adds (scheduling, allocation, logging).
#   spread     (max - min) / median of req/s over the rounds: the noise level.
#              Differences smaller than the spread are not meaningful.
#   /direct    req/s of this row ÷ req/s of direct. Proxies share the core with
#              the origin, so even a free proxy would stay well below 1.0.
#   /nginx     req/s of this row ÷ req/s of nginx: the headline comparison;
#              1.00 means "as fast as nginx on one core".
#   p99-nginx  this row's p99 minus nginx's p99, in ms (positive = slower tail).
#   errors     non-2xx responses + socket errors summed over the measured runs;
#              anything but 0 makes that row suspect.
#   The summary lines under the table repeat the gateway ratios
#   (gateway/direct, gateway/nginx throughput, gateway − nginx p99).
#   With a single wrk thread on its own core, wrk itself may become the limit
#   for the fastest target (usually direct); check that wrk's core is not the
#   bottleneck before reading too much into the direct row.
#   Results are only meaningful on an otherwise idle machine; the script warns
#   when the load average says otherwise.
#
# USAGE
#   scripts/bench.sh               full run (64 connections, 10 s, 3 rounds)
#   scripts/bench.sh --quick       smoke run (2 s, 1 round)
#   scripts/bench.sh --no-gateway  baselines only (to check the harness)
#   scripts/bench.sh --instructions  instructions per request of each gateway
#                                    row, counted by callgrind (see below)
#   Environment overrides:
#     CONNECTIONS=64 DURATION=10 (seconds) ROUNDS=3 WRK_THREADS=1 WARMUP=1
#     SERVER_CPU=0 WRK_CPU=1 STARTUP_TIMEOUT=10 (seconds)
#     PORTCULLIS=target/release/portcullis NGINX=/usr/sbin/nginx WRK=wrk
#     PINGORA_BASELINE=target/release/examples/pingora_baseline (row skipped if absent)
#     HAPROXY=/path/to/haproxy (default: from PATH; HAPROXY=off to skip)
#     REDIS_SERVER=/usr/bin/redis-server (default: from PATH; REDIS_SERVER=off skips the
#       "rate limit (redis)" row, a third gateway keeping its buckets in that Redis)
#     ONLY=REGEX runs only the targets whose name matches (plus direct and nginx),
#       e.g. ONLY='jwt' to compare the JWT rows.
#     KEEP_TMP=1 keeps the temporary directory (configs, logs) for inspection.
#   Exits non-zero if a server fails to start or a target answers non-2xx
#   during its warm-up.
#
# INSTRUCTIONS PER REQUEST (--instructions)
#   req/s on a shared VM drifts by tens of percent within minutes, more than
#   most features cost. This mode counts instead: one gateway runs under
#   valgrind's callgrind, each gateway row gets $INSTR_WARMUP requests (not
#   counted) and then $INSTR_REQUESTS counted ones, one after another on one
#   keep-alive connection (curl), and the table shows the gateway's
#   instructions per request. They repeat to within a fraction of a percent.
#   They are the gateway's own user-space work only: not the kernel's socket
#   work, not the origin's. So a pair's instruction ratio (baseline ÷ row) is
#   a conservative estimate of its throughput ratio, assuming instructions
#   cost alike: the per-request time outside the gateway's code is the same
#   for both rows and only brings the real ratio closer to 1.
#   Needs valgrind (with callgrind_control) and curl; no wrk.
#   Environment: INSTR_REQUESTS=2000 INSTR_WARMUP=200.
#
# EXTENDING
#   Targets are declared in one list, define_targets(): `add_target NAME URL
#   [extra wrk args...]`, e.g. `add_target "portcullis jwt" "$GW/jwt/" -H
#   "Authorization: Bearer $TOKEN"`. Gateway routes (and any [auth] or limit
#   sections they need) go in gateway_routes(); both gateway instances get them.

set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

QUICK=0
WITH_GATEWAY=1
INSTRUCTIONS=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --no-gateway) WITH_GATEWAY=0 ;;
        --instructions) INSTRUCTIONS=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

if ((QUICK)); then
    DURATION=${DURATION:-2}
    ROUNDS=${ROUNDS:-1}
fi
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-10}
INSTR_REQUESTS=${INSTR_REQUESTS:-2000}
INSTR_WARMUP=${INSTR_WARMUP:-200}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORTCULLIS=${PORTCULLIS:-$REPO/target/release/portcullis}
# A bare Pingora proxy (examples/pingora_baseline.rs): the framework's own
# cost, so the table separates it from what the gateway adds. Skipped when
# not built (cargo build --release --example pingora_baseline).
PINGORA_BASELINE=${PINGORA_BASELINE:-$REPO/target/release/examples/pingora_baseline}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
HAPROXY=${HAPROXY:-$(command -v haproxy || true)}
[[ $HAPROXY == off ]] && HAPROXY=""
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
[[ $REDIS_SERVER == off ]] && REDIS_SERVER=""

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- checks ---

is_uint() { [[ $1 =~ ^(0|[1-9][0-9]*)$ ]]; }
for v in CONNECTIONS DURATION ROUNDS WRK_THREADS WARMUP STARTUP_TIMEOUT SERVER_CPU WRK_CPU INSTR_REQUESTS INSTR_WARMUP; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
((CONNECTIONS >= 1 && DURATION >= 1 && ROUNDS >= 1 && WRK_THREADS >= 1)) ||
    die "CONNECTIONS, DURATION, ROUNDS and WRK_THREADS must be at least 1"
((WRK_THREADS <= CONNECTIONS)) || die "WRK_THREADS ($WRK_THREADS) must not exceed CONNECTIONS ($CONNECTIONS)"

if ((INSTRUCTIONS)); then
    ((WITH_GATEWAY)) || die "--instructions measures the gateway: drop --no-gateway"
    ((INSTR_REQUESTS >= 1)) || die "INSTR_REQUESTS must be at least 1"
    for tool in valgrind callgrind_control curl; do
        command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install valgrind curl)"
    done
else
    command -v "$WRK" >/dev/null || die "wrk not found (Debian: apt-get install wrk)"
fi
[[ -x $NGINX ]] || die "nginx not found at $NGINX (set NGINX=...)"
command -v taskset >/dev/null || die "taskset not found (util-linux)"
if ((WITH_GATEWAY)) && [[ ! -x $PORTCULLIS ]]; then
    die "gateway binary $PORTCULLIS not found; run 'cargo build --release' (or set PORTCULLIS=..., or pass --no-gateway)"
fi
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU (set SERVER_CPU=...)"
taskset -c "$WRK_CPU" true 2>/dev/null || die "cannot pin to CPU $WRK_CPU (set WRK_CPU=...)"

# Room for client + upstream sockets of every connection, with margin.
NOFILE=$((CONNECTIONS * 4 + 1024))
if (($(ulimit -n) < NOFILE)); then
    ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

# ------------------------------------------------------ processes & ports ---

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
PIDS=()

# Every process descended from $1 (nginx workers, ...), from /proc.
descendants() {
    local f line rest pid ppid state
    local -a pids=() ppids=() todo=("$1")
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        read -r state ppid _ <<<"$rest"
        : "$state"
        pids+=("${line%% *}")
        ppids+=("$ppid")
    done
    local i parent
    while ((${#todo[@]})); do
        parent=${todo[0]}
        todo=("${todo[@]:1}")
        for i in "${!pids[@]}"; do
            if [[ ${ppids[$i]} == "$parent" ]]; then
                pid=${pids[$i]}
                echo "$pid"
                todo+=("$pid")
            fi
        done
    done
}

any_alive() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

WRK_PID=""
stop_all() {
    if [[ -n $WRK_PID ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    ((${#PIDS[@]})) || return 0
    local pid i
    local -a all=()
    for pid in "${PIDS[@]}"; do
        all+=("$pid")
        mapfile -t -O "${#all[@]}" all < <(descendants "$pid")
    done
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        any_alive "${all[@]}" || break
        sleep 0.1
    done
    kill -KILL "${all[@]}" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "kept $WORKDIR" >&2
    else
        rm -rf "$WORKDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sets FREE_PORT to a port nobody uses, below the ephemeral range so that
# wrk's and the proxies' outgoing connections never collide with it.
ALLOCATED_PORTS=" "
FREE_PORT=""
free_port() {
    local lo=10000 hi eph_lo p hex n
    read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
    hi=$((eph_lo - 1))
    ((hi - lo >= 1000)) || { lo=20000; hi=65000; }
    for ((n = 0; n < 200; n++)); do
        p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        [[ $ALLOCATED_PORTS == *" $p "* ]] && continue
        printf -v hex '%04X' "$p"
        if ! awk -v h=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            ALLOCATED_PORTS+="$p "
            FREE_PORT=$p
            return 0
        fi
    done
    die "no free port found"
}

# start NAME LOGFILE COMMAND... : runs COMMAND pinned to SERVER_CPU in the
# background; its pid is appended to PIDS.
start() {
    local name=$1 log=$2
    shift 2
    taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
    echo "  started $name (pid $LAST_PID)"
}

# wait_for NAME PID PORT LOGFILE...: bounded poll until PORT accepts; on
# failure shows the tail of the log files.
wait_for() {
    local name=$1 pid=$2 port=$3 i
    shift 3
    for ((i = 0; i < STARTUP_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench.sh: $name exited during startup; its output:" >&2
            tail -n 30 "$@" >&2 || true
            exit 1
        fi
        # shellcheck disable=SC2016 # $1 is expanded by the inner bash
        if timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench.sh: $name did not accept on 127.0.0.1:$port within ${STARTUP_TIMEOUT}s; its output:" >&2
    tail -n 30 "$@" >&2 || true
    exit 1
}

# ------------------------------------------------------------ configs ---

nginx_main() { # $1 = instance dir
    local dir=$1
    mkdir -p "$dir/tmp"
    ((EUID == 0)) && echo "user root;"
    cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $NOFILE; }
EOF
}

nginx_http_common() { # $1 = instance dir
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

write_origin_config() { # dir port
    {
        nginx_main "$1"
        echo "http {"
        nginx_http_common "$1"
        cat <<EOF
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "ok\n"; }
    }
}
EOF
    } >"$1/nginx.conf"
}

write_nginx_proxy_config() { # dir port
    local keepalive=$((CONNECTIONS > 64 ? CONNECTIONS : 64))
    {
        nginx_main "$1"
        echo "http {"
        nginx_http_common "$1"
        cat <<EOF
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive $keepalive;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$1/nginx.conf"
}

write_haproxy_config() { # dir port
    cat >"$1/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $NOFILE
    pidfile $1/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench
    bind 127.0.0.1:$2
    default_backend origin

backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
}

# THE place for gateway routes: both gateway instances get exactly this.
# Add routes for later benchmarks (JWT, API key, rate limit) here, together
# with whatever sections they need, and a matching add_target line in
# define_targets(). The upstream "origin" is defined before this text.
gateway_routes() {
    cat <<EOF
[auth.bench_jwt]
kind = "jwt"
issuer = "https://demo.portcullis.local/"
audiences = ["demo-api"]
jwks_file = "$REPO/conf/demo-jwks.json"
algorithms = ["RS256"]
roles_claim = "realm_access.roles"

[auth.bench_keys]
kind = "api_key"
keys_file = "$WORKDIR/bench-keys.toml"

[[routes]]
name = "bench-jwt"
path_prefix = "/jwt"
auth = ["bench_jwt"]
upstream = "origin"

[[routes]]
name = "bench-authz"
path_prefix = "/authz"
auth = ["bench_jwt"]
upstream = "origin"
require_scopes = ["bench"]
allow_roles = ["demo"]
policy = 'identity.subject == "bench" && request.method == "GET" && claims.azp == "demo-cli"'

[[routes]]
name = "bench-norl"
path_prefix = "/norl"
public = true
upstream = "origin"

[[routes]]
name = "bench-rl"
path_prefix = "/rl"
public = true
upstream = "origin"
rate_limit = { per = "client_ip", requests = 1000000000, window_seconds = 1, burst = 1000000000 }

[[routes]]
name = "bench-key"
path_prefix = "/key"
auth = ["bench_keys"]
upstream = "origin"

[[routes]]
name = "bench"
path_prefix = "/"
public = true
upstream = "origin"
EOF
}

# Credentials for the authenticated routes: a fresh API key (its hash goes
# into the keys file) and a demo JWT (dev-only key in conf/).
make_credentials() {
    local generated
    generated=$("$PORTCULLIS" apikey generate --consumer bench --scopes bench)
    BENCH_KEY=$(head -n 1 <<<"$generated")
    tail -n +3 <<<"$generated" >"$WORKDIR/bench-keys.toml"
    BENCH_TOKEN=$("$REPO/scripts/demo-token.sh" bench bench 86400)
}

write_gateway_config() { # dir port access_log [extra sections]
    cat >"$1/portcullis.toml" <<EOF
[server]
threads = 1
pid_file = "$1/portcullis.pid"
upgrade_sock = "$1/portcullis.sock"
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1

[log]
level = "warn"
access_log = "$3"
security_log = "$1/security.log"

[[listeners]]
name = "http"
listen = "127.0.0.1:$2"

[upstreams.origin]
targets = ["127.0.0.1:$ORIGIN_PORT"]

${4:-}

$(gateway_routes)
EOF
}

# ------------------------------------------------------------ targets ---

T_NAMES=()
T_URLS=()
T_ARGS=() # extra wrk args, joined with \x1f
add_target() { # NAME URL [extra wrk args...]
    local name=$1 url=$2
    shift 2
    # ONLY=REGEX keeps the baselines and the targets whose name matches.
    if [[ -n ${ONLY:-} && $name != direct && $name != nginx && ! $name =~ $ONLY ]]; then
        return 0
    fi
    local IFS=$'\x1f'
    T_NAMES+=("$name")
    T_URLS+=("$url")
    T_ARGS+=("$*")
}

# THE list of targets, in table order. Called once every server is up.
# Rows named "direct" and "nginx" are the baselines of the ratio columns;
# rows whose name starts with "portcullis" get a summary line.
define_targets() {
    add_target "direct" "http://127.0.0.1:$ORIGIN_PORT/"
    add_target "nginx" "http://127.0.0.1:$NGINX_PORT/"
    if [[ -n $HAPROXY_PORT ]]; then
        add_target "haproxy" "http://127.0.0.1:$HAPROXY_PORT/"
    fi
    if ((WITH_GATEWAY)); then
        if [[ -n $BASELINE_PORT ]]; then
            add_target "pingora (bare, no logic)" "http://127.0.0.1:$BASELINE_PORT/"
        fi
        add_target "portcullis" "http://127.0.0.1:$GW_PORT/"
        add_target "portcullis (access log on)" "http://127.0.0.1:$GW_LOG_PORT/"
        add_target "portcullis jwt (cached)" "http://127.0.0.1:$GW_PORT/jwt/" -H "Authorization: Bearer $BENCH_TOKEN"
        add_target "portcullis jwt+scopes+roles+cel" "http://127.0.0.1:$GW_PORT/authz/" -H "Authorization: Bearer $BENCH_TOKEN"
        add_target "portcullis same route, no limit" "http://127.0.0.1:$GW_PORT/norl/"
        add_target "portcullis rate limit (local)" "http://127.0.0.1:$GW_PORT/rl/"
        if [[ -n $GW_REDIS_PORT ]]; then
            add_target "portcullis rate limit (redis)" "http://127.0.0.1:$GW_REDIS_PORT/rl/"
        fi
        add_target "portcullis api key" "http://127.0.0.1:$GW_PORT/key/" -H "x-api-key: $BENCH_KEY"
    fi
}

# THE list of paired rows, "ROW|BASELINE": the cost of one feature, read
# against the same route without it (both tables report these ratios).
PAIRS=(
    "portcullis|pingora (bare, no logic)"
    "portcullis jwt (cached)|portcullis"
    "portcullis jwt+scopes+roles+cel|portcullis jwt (cached)"
    "portcullis rate limit (local)|portcullis same route, no limit"
    "portcullis rate limit (redis)|portcullis same route, no limit"
    "portcullis api key|portcullis"
)

index_of() { # NAME -> index or empty
    local i
    for ((i = 0; i < ${#T_NAMES[@]}; i++)); do
        [[ ${T_NAMES[$i]} == "$1" ]] && { echo "$i"; return 0; }
    done
    return 0
}

# ---------------------------------------------------------------- wrk ---

# Prints "rps p50_ms p99_ms requests non2xx socket_errors" from wrk output.
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000
        if (u == "ms") return n
        if (u == "s")  return n * 1000
        if (u == "m")  return n * 60000
        if (u == "h")  return n * 3600000
        return -1
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /requests in/ { total = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $5 }
    /Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
    END {
        if (rps == "" || p50 == "" || p99 == "" || p50 < 0 || p99 < 0) exit 1
        printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, total, non2xx, serr
    }'
}

# run_wrk INDEX SECONDS OUTFILE: one wrk run against target INDEX.
run_wrk() {
    local i=$1 secs=$2 out=$3
    local -a extra=()
    if [[ -n ${T_ARGS[$i]} ]]; then
        IFS=$'\x1f' read -r -a extra <<<"${T_ARGS[$i]}"
    fi
    # In the background so that a signal to this script interrupts `wait`
    # at once instead of after the run; cleanup() stops it.
    timeout -k 5 $((secs + 30)) taskset -c "$WRK_CPU" "$WRK" \
        -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${secs}s" --latency \
        "${extra[@]+"${extra[@]}"}" "${T_URLS[$i]}" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || {
        echo "bench.sh: wrk failed against ${T_NAMES[$i]} (${T_URLS[$i]}):" >&2
        cat "$out" >&2
        exit 1
    }
    WRK_PID=""
}

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 }
        END {
            if (NR == 0) { print "nan"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

column_of() { # FILE COLUMN
    awk -v k="$2" '{ print $k }' "$1"
}

# ------------------------------------------------------ instructions ---

# curl_requests INDEX COUNT: COUNT requests to target INDEX, one after
# another on one keep-alive connection; dies on anything but 2xx.
curl_requests() {
    local i=$1 n=$2 k codes bad
    local -a extra=()
    if [[ -n ${T_ARGS[$i]} ]]; then
        IFS=$'\x1f' read -r -a extra <<<"${T_ARGS[$i]}"
    fi
    for ((k = 0; k < n; k++)); do
        printf 'url = "%s"\noutput = "/dev/null"\n' "${T_URLS[$i]}"
    done >"$WORKDIR/curl.cfg"
    codes=$(timeout -k 5 900 curl -sS --config "$WORKDIR/curl.cfg" -w '%{http_code}\n' \
        "${extra[@]+"${extra[@]}"}") || die "curl failed against ${T_NAMES[$i]} (${T_URLS[$i]})"
    bad=$(grep -cv '^2' <<<"$codes" || true)
    ((bad == 0)) || die "${T_NAMES[$i]} (${T_URLS[$i]}) answered $bad non-2xx of $n requests"
}

# The --instructions mode (see the header): runs once the origin is up.
measure_instructions() {
    local gw_pid base_pid="" pid out i dump ir
    free_port
    GW_PORT=$FREE_PORT
    mkdir -p "$WORKDIR/gw"
    make_credentials
    write_gateway_config "$WORKDIR/gw" "$GW_PORT" "off"
    "$PORTCULLIS" check -c "$WORKDIR/gw/portcullis.toml" >/dev/null ||
        die "portcullis rejects the generated $WORKDIR/gw/portcullis.toml"
    start "portcullis under callgrind on :$GW_PORT" "$WORKDIR/gw/stderr.log" \
        valgrind --tool=callgrind --callgrind-out-file="$WORKDIR/gw/callgrind.out" \
        "$PORTCULLIS" run -c "$WORKDIR/gw/portcullis.toml"
    gw_pid=$LAST_PID
    # Everything runs some 50x slower under valgrind, startup included.
    STARTUP_TIMEOUT=$((STARTUP_TIMEOUT * 10)) wait_for "portcullis under callgrind" \
        "$gw_pid" "$GW_PORT" "$WORKDIR/gw/stderr.log"
    BASELINE_PORT=""
    if [[ -x $PINGORA_BASELINE ]]; then
        free_port
        BASELINE_PORT=$FREE_PORT
        mkdir -p "$WORKDIR/baseline"
        start "pingora baseline under callgrind on :$BASELINE_PORT" "$WORKDIR/baseline/stderr.log" \
            valgrind --tool=callgrind --callgrind-out-file="$WORKDIR/baseline/callgrind.out" \
            "$PINGORA_BASELINE" "127.0.0.1:$BASELINE_PORT" "127.0.0.1:$ORIGIN_PORT"
        base_pid=$LAST_PID
        STARTUP_TIMEOUT=$((STARTUP_TIMEOUT * 10)) wait_for "pingora baseline under callgrind" \
            "$base_pid" "$BASELINE_PORT" "$WORKDIR/baseline/stderr.log"
    fi
    NGINX_PORT="" HAPROXY_PORT="" GW_LOG_PORT="" GW_REDIS_PORT=""
    define_targets
    IR=()
    echo
    printf '%-34s %14s\n' target "instr/request"
    printf '%-34s %14s\n' "$(printf '%.0s-' {1..34})" --------------
    for ((i = 0; i < ${#T_NAMES[@]}; i++)); do
        IR+=("")
        case ${T_URLS[$i]} in
            "http://127.0.0.1:$GW_PORT/"*) pid=$gw_pid out="$WORKDIR/gw/callgrind.out" ;;
            "http://127.0.0.1:${BASELINE_PORT:-none}/"*) pid=$base_pid out="$WORKDIR/baseline/callgrind.out" ;;
            *) continue ;;
        esac
        curl_requests "$i" "$INSTR_WARMUP"
        callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control cannot reach pid $pid"
        curl_requests "$i" "$INSTR_REQUESTS"
        callgrind_control -d "row$i" "$pid" >/dev/null 2>&1 || die "callgrind_control cannot reach pid $pid"
        dump=$(ls -t "$out".* 2>/dev/null | head -n 1)
        [[ -n $dump ]] || die "callgrind wrote no dump for ${T_NAMES[$i]}"
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
        [[ -n $ir ]] || die "no instruction total in $dump"
        rm -f "$dump"
        IR[i]=$((ir / INSTR_REQUESTS))
        printf '%-34s %14d\n' "${T_NAMES[$i]}" "${IR[$i]}"
    done
    echo
    echo "paired ratios (instructions of the baseline ÷ of the row; the throughput ratio is closer to 1):"
    local pair a b
    for pair in "${PAIRS[@]}"; do
        a=$(index_of "${pair%%|*}")
        b=$(index_of "${pair#*|}")
        [[ -n $a && -n $b && -n ${IR[$a]} && -n ${IR[$b]} ]] || continue
        awk -v what="$pair" -v row="${IR[$a]}" -v base="${IR[$b]}" 'BEGIN {
            sub(/\|/, " / ", what)
            printf "%s: %.3f (%+d instructions per request)\n", what, base / row, row - base
        }'
    done
}

# ---------------------------------------------------------- main ---

# Header: what ran, where, with which settings.
git_rev=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo "none (no commits yet)")
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null | head -n 1) ]]; then
    git_rev+=" +uncommitted changes"
fi
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "Portcullis benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "git revision: $git_rev"
echo "nproc:        $(nproc) (${cpu_model:-unknown cpu}), kernel $(uname -r)"
if ((WITH_GATEWAY)); then
    echo "gateway:      $PORTCULLIS ($("$PORTCULLIS" --version 2>/dev/null || echo '?'), built $(date -u -r "$PORTCULLIS" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$PORTCULLIS" | cut -c1-12))"
fi
echo "nginx:        $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
echo "wrk:          $("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }')"
if [[ -n $HAPROXY ]]; then
    echo "haproxy:      $("$HAPROXY" -v 2>&1 | awk 'NR == 1 { print $3 }')"
else
    echo "haproxy:      not installed, skipped"
fi
if ((INSTRUCTIONS)); then
    echo "settings:     gateway under callgrind; per row $INSTR_WARMUP requests, then $INSTR_REQUESTS counted, on one keep-alive connection"
else
    echo "settings:     $CONNECTIONS connections, $WRK_THREADS wrk thread(s), ${DURATION}s per run after ${WARMUP}s warm-up, $ROUNDS round(s), medians"
fi
echo "pinning:      servers (origin + proxies, 1 worker each) on CPU $SERVER_CPU, wrk on CPU $WRK_CPU"
((SERVER_CPU != WRK_CPU)) || echo "WARNING: servers and wrk share CPU $SERVER_CPU; results are not comparable to a normal run"
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "WARNING: load average is $load1 before starting: other work is running and will skew the results"
fi
echo

echo "starting servers in $WORKDIR"
free_port
ORIGIN_PORT=$FREE_PORT
mkdir -p "$WORKDIR/origin"
write_origin_config "$WORKDIR/origin" "$ORIGIN_PORT"
start "origin nginx on :$ORIGIN_PORT" "$WORKDIR/origin/stderr.log" \
    "$NGINX" -p "$WORKDIR/origin/" -c "$WORKDIR/origin/nginx.conf" -e "$WORKDIR/origin/error.log"
wait_for "origin nginx" "$LAST_PID" "$ORIGIN_PORT" "$WORKDIR/origin/stderr.log" "$WORKDIR/origin/error.log"

if ((INSTRUCTIONS)); then
    measure_instructions
    exit 0
fi

free_port
NGINX_PORT=$FREE_PORT
mkdir -p "$WORKDIR/nginx"
write_nginx_proxy_config "$WORKDIR/nginx" "$NGINX_PORT"
start "nginx proxy on :$NGINX_PORT" "$WORKDIR/nginx/stderr.log" \
    "$NGINX" -p "$WORKDIR/nginx/" -c "$WORKDIR/nginx/nginx.conf" -e "$WORKDIR/nginx/error.log"
wait_for "nginx proxy" "$LAST_PID" "$NGINX_PORT" "$WORKDIR/nginx/stderr.log" "$WORKDIR/nginx/error.log"

HAPROXY_PORT=""
if [[ -n $HAPROXY ]]; then
    free_port
    HAPROXY_PORT=$FREE_PORT
    mkdir -p "$WORKDIR/haproxy"
    write_haproxy_config "$WORKDIR/haproxy" "$HAPROXY_PORT"
    "$HAPROXY" -c -q -f "$WORKDIR/haproxy/haproxy.cfg" || die "haproxy rejects $WORKDIR/haproxy/haproxy.cfg"
    start "haproxy on :$HAPROXY_PORT" "$WORKDIR/haproxy/stderr.log" \
        "$HAPROXY" -db -f "$WORKDIR/haproxy/haproxy.cfg"
    wait_for "haproxy" "$LAST_PID" "$HAPROXY_PORT" "$WORKDIR/haproxy/stderr.log"
fi

BASELINE_PORT=""
if ((WITH_GATEWAY)) && [[ -x $PINGORA_BASELINE ]]; then
    free_port
    BASELINE_PORT=$FREE_PORT
    mkdir -p "$WORKDIR/baseline"
    start "pingora baseline on :$BASELINE_PORT" "$WORKDIR/baseline/stderr.log" \
        "$PINGORA_BASELINE" "127.0.0.1:$BASELINE_PORT" "127.0.0.1:$ORIGIN_PORT"
    wait_for "pingora baseline" "$LAST_PID" "$BASELINE_PORT" "$WORKDIR/baseline/stderr.log"
fi

GW_PORT=""
GW_LOG_PORT=""
GW_REDIS_PORT=""
ACCESS_LOG="$WORKDIR/gw-log/access.log"
if ((WITH_GATEWAY)); then
    free_port
    GW_PORT=$FREE_PORT
    free_port
    GW_LOG_PORT=$FREE_PORT
    mkdir -p "$WORKDIR/gw" "$WORKDIR/gw-log"
    make_credentials
    write_gateway_config "$WORKDIR/gw" "$GW_PORT" "off"
    write_gateway_config "$WORKDIR/gw-log" "$GW_LOG_PORT" "$ACCESS_LOG"
    for d in gw gw-log; do
        "$PORTCULLIS" check -c "$WORKDIR/$d/portcullis.toml" >/dev/null ||
            die "portcullis rejects the generated $WORKDIR/$d/portcullis.toml"
    done
    start "portcullis on :$GW_PORT" "$WORKDIR/gw/stderr.log" \
        "$PORTCULLIS" run -c "$WORKDIR/gw/portcullis.toml"
    wait_for "portcullis" "$LAST_PID" "$GW_PORT" "$WORKDIR/gw/stderr.log"
    start "portcullis (access log on) on :$GW_LOG_PORT" "$WORKDIR/gw-log/stderr.log" \
        "$PORTCULLIS" run -c "$WORKDIR/gw-log/portcullis.toml"
    wait_for "portcullis (access log on)" "$LAST_PID" "$GW_LOG_PORT" "$WORKDIR/gw-log/stderr.log"
    # A third instance keeps its rate limits in a local redis-server (also
    # pinned to the server core), for the shared-store row.
    if [[ -n $REDIS_SERVER ]]; then
        free_port
        REDIS_PORT=$FREE_PORT
        free_port
        GW_REDIS_PORT=$FREE_PORT
        mkdir -p "$WORKDIR/redis" "$WORKDIR/gw-redis"
        start "redis-server on :$REDIS_PORT" "$WORKDIR/redis/stderr.log" \
            "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORKDIR/redis"
        wait_for "redis-server" "$LAST_PID" "$REDIS_PORT" "$WORKDIR/redis/stderr.log"
        write_gateway_config "$WORKDIR/gw-redis" "$GW_REDIS_PORT" "off" \
            "$(printf '[rate_limit_store]\nkind = "redis"\nredis_url = "redis://127.0.0.1:%s"\ntimeout_ms = 1000\n' "$REDIS_PORT")"
        "$PORTCULLIS" check -c "$WORKDIR/gw-redis/portcullis.toml" >/dev/null ||
            die "portcullis rejects the generated $WORKDIR/gw-redis/portcullis.toml"
        start "portcullis (redis store) on :$GW_REDIS_PORT" "$WORKDIR/gw-redis/stderr.log" \
            "$PORTCULLIS" run -c "$WORKDIR/gw-redis/portcullis.toml"
        wait_for "portcullis (redis store)" "$LAST_PID" "$GW_REDIS_PORT" "$WORKDIR/gw-redis/stderr.log"
    fi
fi
echo

define_targets
N=${#T_NAMES[@]}
mkdir -p "$WORKDIR/results"
for ((i = 0; i < N; i++)); do
    : >"$WORKDIR/results/$i"
    echo 0 >"$WORKDIR/results/$i.sent" # every request sent, warm-ups included
done

add_sent() { # INDEX COUNT
    local f="$WORKDIR/results/$1.sent" sent
    sent=$(<"$f")
    echo $((sent + $2)) >"$f"
}

for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < N; k++)); do
        i=$(((k + r) % N))
        name=${T_NAMES[$i]}
        if ((WARMUP > 0)); then
            run_wrk "$i" "$WARMUP" "$WORKDIR/warmup.out"
            if ! w=$(parse_wrk <"$WORKDIR/warmup.out"); then
                cat "$WORKDIR/warmup.out" >&2
                die "cannot parse wrk output (warm-up of $name)"
            fi
            read -r _ _ _ total non2xx serr <<<"$w"
            add_sent "$i" "$total"
            if ((total == 0 || non2xx > 0)); then
                cat "$WORKDIR/warmup.out" >&2
                die "$name (${T_URLS[$i]}) answered $non2xx non-2xx of $total requests during warm-up; fix the target before measuring"
            fi
        fi
        out="$WORKDIR/results/$i.r$r.out"
        run_wrk "$i" "$DURATION" "$out"
        if ! m=$(parse_wrk <"$out"); then
            cat "$out" >&2
            die "cannot parse wrk output ($name)"
        fi
        echo "$m" >>"$WORKDIR/results/$i"
        read -r rps p50 p99 total non2xx serr <<<"$m"
        add_sent "$i" "$total"
        printf '  round %d/%d  %-28s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms%s\n' \
            $((r + 1)) "$ROUNDS" "$name" "$rps" "$p50" "$p99" \
            "$( ((non2xx + serr == 0)) || echo "  ($non2xx non-2xx, $serr socket errors)")"
    done
done
echo

# Medians per target.
MED_RPS=()
MED_P50=()
MED_P99=()
SPREAD=()
ERRORS=()
for ((i = 0; i < N; i++)); do
    f="$WORKDIR/results/$i"
    MED_RPS+=("$(column_of "$f" 1 | median)")
    MED_P50+=("$(column_of "$f" 2 | median)")
    MED_P99+=("$(column_of "$f" 3 | median)")
    SPREAD+=("$(awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 }
        END { print lo, hi }' "$f")")
    ERRORS+=("$(awk '{ e += $5 + $6 } END { print e + 0 }' "$f")")
done

DIRECT=$(index_of direct)
NGINX_ROW=$(index_of nginx)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

fmt='%-28s %10s %9s %9s %8s %8s %8s %10s %7s\n'
# shellcheck disable=SC2059
printf "$fmt" target "req/s" "p50 ms" "p99 ms" spread /direct /nginx "p99-nginx" errors
# shellcheck disable=SC2059
printf "$fmt" "$(printf '%.0s-' {1..28})" ---------- --------- --------- -------- -------- -------- ---------- -------
for ((i = 0; i < N; i++)); do
    read -r lo hi <<<"${SPREAD[$i]}"
    spread=$(awk -v lo="$lo" -v hi="$hi" -v m="${MED_RPS[$i]}" 'BEGIN { printf "%.1f%%", (m > 0 ? (hi - lo) / m * 100 : 0) }')
    vs_direct="-"
    vs_nginx="-"
    p99_nginx="-"
    [[ -n $DIRECT ]] && vs_direct=$(ratio "${MED_RPS[$i]}" "${MED_RPS[$DIRECT]}")
    if [[ -n $NGINX_ROW ]]; then
        vs_nginx=$(ratio "${MED_RPS[$i]}" "${MED_RPS[$NGINX_ROW]}")
        p99_nginx=$(diff_ms "${MED_P99[$i]}" "${MED_P99[$NGINX_ROW]}")
    fi
    # shellcheck disable=SC2059
    printf "$fmt" "${T_NAMES[$i]}" \
        "$(awk -v v="${MED_RPS[$i]}" 'BEGIN { printf "%.0f", v }')" \
        "$(awk -v v="${MED_P50[$i]}" 'BEGIN { printf "%.3f", v }')" \
        "$(awk -v v="${MED_P99[$i]}" 'BEGIN { printf "%.3f", v }')" \
        "$spread" "$vs_direct" "$vs_nginx" "$p99_nginx" "${ERRORS[$i]}"
done
echo

for ((i = 0; i < N; i++)); do
    [[ ${T_NAMES[$i]} == portcullis* ]] || continue
    line="${T_NAMES[$i]}:"
    [[ -n $DIRECT ]] && line+="  gateway/direct = $(ratio "${MED_RPS[$i]}" "${MED_RPS[$DIRECT]}")"
    if [[ -n $NGINX_ROW ]]; then
        line+="  gateway/nginx = $(ratio "${MED_RPS[$i]}" "${MED_RPS[$NGINX_ROW]}")"
        line+="  p99 gateway − nginx = $(diff_ms "${MED_P99[$i]}" "${MED_P99[$NGINX_ROW]}") ms"
    fi
    echo "$line"
done

# Paired ratios: the cost of one feature is best read against the same
# route without it, round by round. The two runs of a round are close in
# time, so the machine's drift (often more than the effect) mostly cancels
# in their ratio, where the ratio of two medians keeps it.
paired_ratio() { # NAME BASELINE
    local a b
    a=$(index_of "$1")
    b=$(index_of "$2")
    [[ -n $a && -n $b ]] || return 0
    paste -d ' ' <(column_of "$WORKDIR/results/$a" 1) <(column_of "$WORKDIR/results/$b" 1) |
        awk '$2 > 0 { print $1 / $2 }' | sort -g |
        awk -v what="$1 / $2" '{ v[NR] = $1 }
        END {
            if (NR == 0) exit
            lo = v[int((NR - 1) / 4) + 1]; hi = v[NR - int((NR - 1) / 4)]
            mid = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s: median %.3f over %d rounds (middle half %.3f..%.3f, all %.3f..%.3f)\n",
                what, mid, NR, lo, hi, v[1], v[NR]
        }'
}
echo
echo "paired ratios (req/s of a row ÷ req/s of its baseline in the same round):"
for pair in "${PAIRS[@]}"; do
    paired_ratio "${pair%%|*}" "${pair#*|}"
done

# The access-log writer drops lines rather than block the request path;
# say how many it kept.
LOG_ROW=$(index_of "portcullis (access log on)")
if [[ -n $LOG_ROW ]]; then
    sleep 0.5 # let the writer thread flush its last batch
    sent=$(<"$WORKDIR/results/$LOG_ROW.sent")
    lines=0
    [[ -f $ACCESS_LOG ]] && lines=$(wc -l <"$ACCESS_LOG")
    bytes=0
    [[ -f $ACCESS_LOG ]] && bytes=$(wc -c <"$ACCESS_LOG")
    # wrk does not count the requests still in flight when a run ends (up
    # to CONNECTIONS per run), but the gateway logs them.
    echo "access log: $lines lines ($((bytes / 1024 / 1024)) MiB) for $sent requests completed by wrk, warm-ups included"
    if ((lines < sent)); then
        echo "WARNING: the access log lost at least $((sent - lines)) lines (writer queue full?)"
    fi
fi
