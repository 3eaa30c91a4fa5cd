#!/usr/bin/env bash
# What a MONITOR client costs: redis-benchmark SET/GET (50 connections, pipeline 1 and 16)
# against tessera (one data core) and redis-server, each pinned to SERVER_CPU, without and
# with `redis-cli monitor` attached (its output thrown away); the benchmark and the monitor
# share CLIENT_CPU. Prints one line per server, mode and pipeline.
#
#   benches/monitor-cost.sh
#   REQUESTS=1000000 benches/monitor-cost.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
REQUESTS=${REQUESTS:-300000}
PORT=${PORT:-$(free_ports 1)}

need_redis redis-server redis-cli redis-benchmark
build_release --bin tessera
work=$(mktemp -d)
pids=()
trap cleanup_pids_and_work EXIT

for server in tessera redis; do
  if [ "$server" = tessera ]; then
    start_tessera target/release/tessera "$SERVER_CPU" "$PORT" /dev/null --save "" --dir "$work" --loglevel warning
  else
    start_redis "$SERVER_CPU" "$PORT" /dev/null --dir "$work" --loglevel warning
  fi
  pid=$!
  pids+=("$pid")
  wait_up "$PORT"
  for mode in none monitor; do
    mpid=
    if [ "$mode" = monitor ]; then
      taskset -c "$CLIENT_CPU" redis-cli -p "$PORT" monitor >/dev/null &
      mpid=$!
      pids+=("$mpid")
      # The monitor is attached once it has been answered; a PING from it cannot be seen,
      # so wait for the server to list a client with flags or cmd=monitor.
      for _ in $(seq 1 100); do
        rcli "$PORT" client list | grep -q "cmd=monitor" && break
        sleep 0.05
      done
    fi
    for p in 1 16; do
      r=$(taskset -c "$CLIENT_CPU" redis-benchmark -p "$PORT" -t set,get -n "$REQUESTS" -c 50 -P "$p" -r 100000 -d 32 \
        --csv 2>/dev/null | tail -n +2 | tr -d '"' | awk -F, '{printf "%s=%.0f ", $1, $2}')
      echo "$server monitor=$mode P$p $r"
    done
    if [ -n "$mpid" ]; then
      kill "$mpid" 2>/dev/null || true
      wait "$mpid" 2>/dev/null || true
    fi
  done
  stop_server "$pid"
done
