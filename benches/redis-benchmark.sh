#!/usr/bin/env bash
# redis-benchmark against tessera and redis-server, back to back, in one run.
#
# Each server runs pinned to one CPU (SERVER_CPU) with one data core; redis-benchmark runs
# pinned to another (CLIENT_CPU), so neither steals the other's core. Prints requests per
# second and p50/p99 for SET and GET at pipeline 1 and 16, the median of REPEATS runs, and
# tessera's ratio to Redis; writes the table under benches/results/.
#
#   benches/redis-benchmark.sh            # defaults below
#   REQUESTS=2000000 REPEATS=5 benches/redis-benchmark.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
REQUESTS=${REQUESTS:-1000000}
REPEATS=${REPEATS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
VALUE_BYTES=${VALUE_BYTES:-32}
PORT_TESSERA=${PORT_TESSERA:-7611}
PORT_REDIS=${PORT_REDIS:-7612}

need_redis redis-server redis-benchmark
build_release --bin tessera

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_tessera target/release/tessera "$SERVER_CPU" "$PORT_TESSERA" /dev/null --loglevel warning
pids+=($!)
start_redis "$SERVER_CPU" "$PORT_REDIS" /dev/null --loglevel warning
pids+=($!)
wait_up "$PORT_TESSERA"
wait_up "$PORT_REDIS"

run() { # port pipeline -> csv lines "test","rps","avg","min","p50","p95","p99","max"
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$1" -t set,get -n "$REQUESTS" -c "$CLIENTS" \
    -P "$2" -r "$KEYSPACE" -d "$VALUE_BYTES" --csv 2>/dev/null | tail -n +2
}

raw=$(mktemp)
for rep in $(seq 1 "$REPEATS"); do
  for p in 1 16; do
    for server in tessera redis; do
      run "$(port_of "$server")" "$p" | sed "s/^/$server,$p,$rep,/" >>"$raw"
    done
  done
done

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out="benches/results/redis-benchmark-$stamp.md"
python3 - "$raw" "$out" "$REQUESTS" "$CLIENTS" "$KEYSPACE" "$VALUE_BYTES" "$REPEATS" <<'PY'
import csv, sys, statistics, platform, subprocess
raw, out, n, clients, keys, size, reps = sys.argv[1:]
rows = {}
for r in csv.reader(open(raw)):
    server, p, rep, test, rps, avg, mn, p50, p95, p99, mx = r
    rows.setdefault((test, int(p), server), []).append((float(rps), float(p50), float(p99)))
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
lines = [
    f"# redis-benchmark: tessera vs redis-server ({subprocess.run(['redis-server','--version'],capture_output=True,text=True).stdout.split()[2]})",
    "",
    f"CPU: {cpu}; kernel {platform.release()}. Each server pinned to one CPU with one data core,",
    f"redis-benchmark pinned to the other. {n} requests, {clients} connections, {keys} keys,",
    f"{size}-byte values; median of {reps} runs. Command: `benches/redis-benchmark.sh`.",
    "",
    "| test | pipeline | tessera ops/s | redis ops/s | ratio | tessera p50/p99 ms | redis p50/p99 ms |",
    "|---|---|---|---|---|---|---|",
]
for test in ("SET", "GET"):
    for p in (1, 16):
        t = rows.get((test, p, "tessera")); r = rows.get((test, p, "redis"))
        if not t or not r: continue
        med = lambda xs, i: statistics.median(x[i] for x in xs)
        lines.append(f"| {test} | {p} | {med(t,0):,.0f} | {med(r,0):,.0f} | {med(t,0)/med(r,0):.2f} | "
                     f"{med(t,1):.3f}/{med(t,2):.3f} | {med(r,1):.3f}/{med(r,2):.3f} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out}")
PY
rm -f "$raw"
