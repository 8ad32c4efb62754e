#!/usr/bin/env bash
# Fails when a module of src/ reaches a module of its own layer or of a
# higher one (README, "Architecture"). Every `crate::NAME` in a module's
# files counts, doc links included.
set -euo pipefail
cd "$(dirname "$0")/../src"

# Lowest first; a module may use only modules of lower layers.
layers=(
  "core"
  "config"
  "observe tls routing"
  "auth cache protect upstream"
  "authz"
  "runtime"
  "proxy reload"
  "admin"
  "front"
  "server testkit import"
)

declare -A rank
for i in "${!layers[@]}"; do
  for m in ${layers[$i]}; do rank[$m]=$i; done
done

status=0
for path in *; do
  module=${path%.rs}
  case $module in lib | main) continue ;; esac
  if [[ -z ${rank[$module]:-} ]]; then
    echo "layers: src/$path is in no layer; add it to scripts/layers.sh" >&2
    status=1
    continue
  fi
  while IFS=: read -r file line used; do
    used=${used#crate::}
    [[ $used == "$module" ]] && continue
    if [[ -z ${rank[$used]:-} ]]; then
      echo "layers: $file:$line uses crate::$used, which is in no layer" >&2
      status=1
    elif ((rank[$used] >= rank[$module])); then
      echo "layers: $file:$line: $module (layer $((rank[$module]))) uses $used (layer $((rank[$used])))" >&2
      status=1
    fi
  done < <(grep -rnoHE 'crate::[a-z_]+' "$path")
done
if ((status == 0)); then
  echo "layers: every import runs downwards"
fi
exit $status
