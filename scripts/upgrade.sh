#!/usr/bin/env bash
# Zero-downtime upgrade of a running Portcullis to a (new) binary.
#
#   scripts/upgrade.sh -c conf/portcullis.toml [--daemon] [--binary PATH] [--log FILE]
#
# 1. validates the configuration with the new binary (`check`);
# 2. starts `PATH run --upgrade -c CONF` (with --daemon if given), which
#    waits on [server] upgrade_sock for the listening sockets;
# 3. sends SIGQUIT to the running process (pid from [server] pid_file): it
#    hands every listener (the admin one too) to the new process, keeps
#    answering with `Connection: close` for 5 s, then drains in-flight
#    requests for up to grace_period_seconds and exits 0;
# 4. waits until the old process is gone and the pid file names the new one.
set -euo pipefail

conf="" binary="" daemon="" log="/dev/null"
while [ $# -gt 0 ]; do
  case "$1" in
    -c|--config) conf="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --daemon|-d) daemon="--daemon"; shift ;;
    --log) log="$2"; shift 2 ;;
    *) echo "usage: $0 -c CONFIG [--daemon] [--binary PATH] [--log FILE]" >&2; exit 2 ;;
  esac
done
[ -n "$conf" ] || { echo "usage: $0 -c CONFIG [--daemon] [--binary PATH] [--log FILE]" >&2; exit 2; }
binary="${binary:-$(dirname "$0")/../target/release/portcullis}"

# [server] pid_file / upgrade_sock / grace_period_seconds, with the defaults.
server_value() {
  awk -v key="$1" '
    /^[[:space:]]*\[/ { in_server = ($0 ~ /^[[:space:]]*\[server\][[:space:]]*(#.*)?$/) ; next }
    in_server && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*#.*$/, ""); gsub(/"/, ""); print; exit
    }' "$conf"
}
pid_file="$(server_value pid_file)"; pid_file="${pid_file:-/tmp/portcullis.pid}"
upgrade_sock="$(server_value upgrade_sock)"; upgrade_sock="${upgrade_sock:-/tmp/portcullis_upgrade.sock}"
grace="$(server_value grace_period_seconds)"; grace="${grace:-30}"

"$binary" check -c "$conf" >/dev/null
old_pid="$(cat "$pid_file" 2>/dev/null || true)"
if [ -z "$old_pid" ] || ! kill -0 "$old_pid" 2>/dev/null; then
  echo "no running portcullis found through $pid_file" >&2
  exit 1
fi

rm -f "$upgrade_sock"
# shellcheck disable=SC2086 # $daemon is empty or one flag
setsid "$binary" run --upgrade $daemon -c "$conf" >>"$log" 2>&1 < /dev/null &
new_launcher=$!

for _ in $(seq 1 100); do
  [ -S "$upgrade_sock" ] && break
  if ! kill -0 "$new_launcher" 2>/dev/null && [ -z "$daemon" ]; then
    echo "the new process exited before taking over; see $log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -S "$upgrade_sock" ] || { echo "the new process never opened $upgrade_sock" >&2; kill "$new_launcher" 2>/dev/null || true; exit 1; }

kill -QUIT "$old_pid"
deadline=$(( $(date +%s) + grace + 15 ))
while kill -0 "$old_pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "old process $old_pid still running after the grace period" >&2
    exit 1
  fi
  sleep 0.2
done
for _ in $(seq 1 50); do
  new_pid="$(cat "$pid_file" 2>/dev/null || true)"
  if [ -n "$new_pid" ] && [ "$new_pid" != "$old_pid" ] && kill -0 "$new_pid" 2>/dev/null; then
    echo "upgraded: $old_pid -> $new_pid"
    exit 0
  fi
  sleep 0.1
done
echo "the pid file $pid_file does not name a new running process" >&2
exit 1
