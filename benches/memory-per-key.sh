#!/usr/bin/env bash
# Memory per key: tessera vs redis-server, each holding KEYS keys of 16 bytes (tessera-bench's
# key names, `key:` and 12 digits) with VALUE_BYTES-byte values.
#
# Each server runs alone on SERVER_CPU (tessera with one data core, redis-server with no
# persistence), on a free port. Before loading and after, the script reads the process's
# resident memory (VmRSS in /proc/PID/status) and INFO memory's used_memory; the differences
# divided by KEYS are the bytes per key. tessera-bench (pinned to CLIENT_CPU) loads the keys
# with --populate, and DBSIZE must then equal KEYS on both. The "after" readings are taken
# once the loader has disconnected, so no client buffers are counted.
#
# Goal (issue 4): tessera at most GOAL (0.6) times Redis's RSS per key.
#
#   benches/memory-per-key.sh                  # 1,000,000 keys, 32-byte values
#   KEYS=100000 VALUE_BYTES=100 benches/memory-per-key.sh
#   DRY_RUN=redis benches/memory-per-key.sh    # a second redis-server in tessera's place
#
# The table goes to benches/results/memory-per-key-<UTC stamp>.md (…-dry-run.md for a dry run).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
KEYS=${KEYS:-1000000}
VALUE_BYTES=${VALUE_BYTES:-32}
CONNECTIONS=${CONNECTIONS:-50}
GOAL=${GOAL:-0.6}
DRY_RUN=${DRY_RUN:-}
START_DEADLINE_S=${START_DEADLINE_S:-20}
LOAD_DEADLINE_S=${LOAD_DEADLINE_S:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The command as run, with the settings that were given, for the results file.
command_line=""
for v in SERVER_CPU CLIENT_CPU KEYS VALUE_BYTES CONNECTIONS GOAL DRY_RUN; do
  if printenv "$v" >/dev/null; then command_line+="$v=${!v} "; fi
done
command_line+="benches/memory-per-key.sh"

case "$DRY_RUN" in
  "" | redis) ;;
  *) echo "memory-per-key.sh: DRY_RUN must be empty or 'redis', not '$DRY_RUN'" >&2; exit 2 ;;
esac
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
build() { cargo build --release "$@" >/dev/null 2>&1 || cargo build --release "$@"; }
build --bin tessera
build -p tessera-bench --bin tessera-bench
TESSERA=$TARGET_DIR/release/tessera
BENCH=$TARGET_DIR/release/tessera-bench

pids=()
work=$(mktemp -d)
# Stops every server this script started: SIGTERM, up to 5 s, then SIGKILL.
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "memory-per-key.sh: $*" >&2; exit 1; }

# Two free ports, bound at once so they differ.
read -r PORT_TESSERA PORT_REDIS < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

rcli() { local port=$1; shift; timeout 10 redis-cli -p "$port" "$@"; }
# Waits for PING on $1 from process $2 (named $3, log $4), up to START_DEADLINE_S.
wait_ping() {
  local port=$1 pid=$2 name=$3 log=$4 deadline=$((SECONDS + START_DEADLINE_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$name exited during start-up (log above)"; }
    [ "$(rcli "$port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  cat "$log" >&2
  die "$name did not answer PING on port $port within ${START_DEADLINE_S}s"
}
start_redis() { # port log
  taskset -c "$SERVER_CPU" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
    --loglevel warning >"$2" 2>&1 &
}

if [ "$DRY_RUN" = redis ]; then
  start_redis "$PORT_TESSERA" "$work/tessera.log"
else
  taskset -c "$SERVER_CPU" "$TESSERA" --port "$PORT_TESSERA" --cores 1 --cpus "$SERVER_CPU" \
    --loglevel warning >"$work/tessera.log" 2>&1 &
fi
pid_tessera=$!
pids+=("$pid_tessera")
start_redis "$PORT_REDIS" "$work/redis.log"
pid_redis=$!
pids+=("$pid_redis")
wait_ping "$PORT_TESSERA" "$pid_tessera" tessera "$work/tessera.log"
wait_ping "$PORT_REDIS" "$pid_redis" redis-server "$work/redis.log"

port_of() { if [ "$1" = tessera ]; then echo "$PORT_TESSERA"; else echo "$PORT_REDIS"; fi; }
pid_of() { if [ "$1" = tessera ]; then echo "$pid_tessera"; else echo "$pid_redis"; fi; }
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
# INFO memory's used_memory, or n/a when the server does not report it.
used_memory() {
  local v
  v=$(rcli "$1" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')
  echo "${v:-n/a}"
}
sample() { # server phase: writes $work/<server>-<phase> as "rss used_memory"
  echo "$(rss_bytes "$(pid_of "$1")") $(used_memory "$(port_of "$1")")" >"$work/$1-$2"
}

for server in tessera redis; do
  port=$(port_of "$server")
  [ "$(rcli "$port" dbsize)" = 0 ] || die "$server on port $port is not empty"
  sample "$server" before
  # --populate SETs key:000000000000 … in order, each once; -n 1 is one GET after it.
  timeout "$LOAD_DEADLINE_S" taskset -c "$CLIENT_CPU" "$BENCH" -p "$port" --cpus "$CLIENT_CPU" -q \
    -c "$CONNECTIONS" --keys "$KEYS" --value-size "$VALUE_BYTES" --populate -n 1 --ratio 0:1 \
    >"$work/$server-load.txt" 2>&1 || { cat "$work/$server-load.txt" >&2; die "loading $server failed"; }
  got=$(rcli "$port" dbsize)
  [ "$got" = "$KEYS" ] || die "$server holds $got keys after loading, not $KEYS"
  sample "$server" after
done

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out="benches/results/memory-per-key-$stamp${DRY_RUN:+-dry-run}.md"
python3 - "$work" "$out" "$KEYS" "$VALUE_BYTES" "$GOAL" "$command_line" "$DRY_RUN" "$TESSERA" <<'PY'
import platform, subprocess, sys
work, out, keys, size, goal, command, dry, tessera = sys.argv[1:]
keys, size, goal = int(keys), int(size), float(goal)
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
if dry:
    tessera_v = f"a second redis-server {redis_v} (DRY_RUN=redis)"
else:
    tessera_v = subprocess.run([tessera, "--version"], capture_output=True, text=True).stdout.strip() or "tessera"

def read(server, phase):
    rss, used = open(f"{work}/{server}-{phase}").read().split()
    return int(rss), (None if used == "n/a" else int(used))

m = {}
for s in ("tessera", "redis"):
    (rss0, used0), (rss1, used1) = read(s, "before"), read(s, "after")
    m[s] = dict(rss0=rss0, rss1=rss1, rss_key=(rss1 - rss0) / keys,
                used0=used0, used1=used1,
                used_key=None if used0 is None or used1 is None else (used1 - used0) / keys)
mib = lambda b: f"{b / 2**20:,.1f}"
opt = lambda v, f: "n/a" if v is None else f(v)
t, r = m["tessera"], m["redis"]
rss_ratio = t["rss_key"] / r["rss_key"] if r["rss_key"] > 0 else float("nan")
used_ratio = (t["used_key"] / r["used_key"]
              if t["used_key"] is not None and r["used_key"] not in (None, 0) else None)
verdict = "met" if rss_ratio <= goal else "not met"
lines = [
    f"# Memory per key: tessera vs redis-server {redis_v}",
    "",
]
if dry:
    lines += ["**Dry run: the tessera column is a second redis-server, not tessera.**", ""]
lines += [
    f"CPU: {cpu}; kernel {platform.release()}. tessera: {tessera_v}.",
    f"{keys:,} keys of 16 bytes (`key:` + 12 digits) with {size}-byte values "
    f"({16 + size} bytes of key and value), loaded by `tessera-bench --populate`; DBSIZE checked on both.",
    "Each server pinned to one CPU (tessera: one data core; redis-server: `--save '' --appendonly no`).",
    "Bytes per key: (after − before) / keys, for VmRSS (/proc/PID/status) and INFO `used_memory`.",
    f"Command: `{command}`.",
    "",
    "| server | RSS before MiB | RSS after MiB | RSS bytes/key | used_memory before MiB | used_memory after MiB | used_memory bytes/key |",
    "|---|---|---|---|---|---|---|",
]
for s in ("tessera", "redis"):
    x = m[s]
    lines.append(f"| {s} | {mib(x['rss0'])} | {mib(x['rss1'])} | {x['rss_key']:.1f} | "
                 f"{opt(x['used0'], mib)} | {opt(x['used1'], mib)} | {opt(x['used_key'], lambda v: f'{v:.1f}')} |")
lines.append(f"| tessera / Redis | | | {rss_ratio:.2f} | | | {opt(used_ratio, lambda v: f'{v:.2f}')} |")
lines += ["", f"Goal: tessera ≤ {goal}× Redis RSS per key. Measured {rss_ratio:.2f}×: {verdict}."]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out}")
PY
