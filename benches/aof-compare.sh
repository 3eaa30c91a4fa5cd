#!/usr/bin/env bash
# SET throughput with the append-only file on: tessera vs redis-server, redis-benchmark as
# the client, one server at a time.
#
# Each server runs alone on SERVER_CPU (tessera with one data core), redis-benchmark on
# CLIENT_CPU. Both start with no save rules, `appendonly yes` and a fresh dir; for each
# `appendfsync` policy in POLICIES (set with CONFIG SET), SET of RANDOM_KEYS random keys from
# CONNECTIONS connections at pipeline 1 and 16, REQUESTS requests each.
#
#   benches/aof-compare.sh
#   POLICIES="everysec" REQUESTS=2000000 benches/aof-compare.sh
#
# The table goes to benches/results/aof-compare-<UTC stamp>.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CONNECTIONS=${CONNECTIONS:-50}
REQUESTS=${REQUESTS:-1000000}
RANDOM_KEYS=${RANDOM_KEYS:-100000}
POLICIES=${POLICIES:-"everysec always no"}
PORT_TESSERA=${PORT_TESSERA:-7641}
PORT_REDIS=${PORT_REDIS:-7642}

need_redis redis-server redis-benchmark
build_release --bin tessera

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One redis-benchmark run: prints requests per second and p50 (ms).
bench() {
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$1" -t set -r "$RANDOM_KEYS" -n "$REQUESTS" \
    -c "$CONNECTIONS" -P "$2" -q 2>/dev/null | tr '\r' '\n' | grep 'per second' | tail -1 \
    | sed -E 's/.*SET: ([0-9.]+) requests per second, p50=([0-9.]+) msec.*/\1 \2/'
}

declare -A result
run_server() {
  local name=$1 port=$2
  for policy in $POLICIES; do
    redis-cli -p "$port" config set appendfsync "$policy" >/dev/null
    for p in 1 16; do
      result["$name,$policy,$p"]=$(bench "$port" "$p")
    done
  done
}

mkdir -p "$work/tessera" "$work/redis"
start_tessera target/release/tessera "$SERVER_CPU" "$PORT_TESSERA" /dev/null \
  --dir "$work/tessera" --save "" --appendonly yes --loglevel warning
pid=$!
wait_up "$PORT_TESSERA"
run_server tessera "$PORT_TESSERA"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

taskset -c "$SERVER_CPU" redis-server --port "$PORT_REDIS" --dir "$work/redis" --save '' \
  --appendonly yes --bind 127.0.0.1 --loglevel warning >/dev/null 2>&1 &
pid=$!
wait_up "$PORT_REDIS"
run_server redis "$PORT_REDIS"
redis-cli -p "$PORT_REDIS" shutdown nosave >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true; pid=""

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out=benches/results/aof-compare-$stamp.md
{
  echo "# SET with the append-only file: tessera vs redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); kernel $(uname -r)."
  echo "Server on CPU $SERVER_CPU (tessera: one data core), redis-benchmark on CPU $CLIENT_CPU;"
  echo "SET, $CONNECTIONS connections, $RANDOM_KEYS random keys, $REQUESTS requests per run, one run each."
  echo "Command: \`benches/aof-compare.sh\`."
  echo
  echo "| appendfsync | pipeline | tessera ops/s | tessera p50 ms | Redis ops/s | Redis p50 ms | ops/s ratio |"
  echo "|---|---|---|---|---|---|---|"
  for policy in $POLICIES; do
    for p in 1 16; do
      read -r t_ops t_p50 <<<"${result["tessera,$policy,$p"]}"
      read -r r_ops r_p50 <<<"${result["redis,$policy,$p"]}"
      ratio=$(awk -v a="$t_ops" -v b="$r_ops" 'BEGIN { printf "%.2f", a / b }')
      echo "| $policy | $p | $t_ops | $t_p50 | $r_ops | $r_p50 | $ratio |"
    done
  done
} >"$out"
cat "$out"
echo
echo "written to $out"
