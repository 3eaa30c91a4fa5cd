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
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
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
command_line=$(command_line_of benches/memory-per-key.sh SERVER_CPU CLIENT_CPU KEYS VALUE_BYTES CONNECTIONS \
  GOAL DRY_RUN)

case "$DRY_RUN" in
  "" | redis) ;;
  *) echo "memory-per-key.sh: DRY_RUN must be empty or 'redis', not '$DRY_RUN'" >&2; exit 2 ;;
esac
need_redis redis-server redis-cli
build_release --bin tessera
build_release -p tessera-bench --bin tessera-bench
TESSERA=$TARGET_DIR/release/tessera
BENCH=$TARGET_DIR/release/tessera-bench

pids=()
work=$(mktemp -d)
# On exit, stops every server this script started (SIGTERM, up to 5 s, then SIGKILL) and
# removes $work.
trap cleanup_pids_and_work EXIT
trap 'exit 130' INT TERM

read -r PORT_TESSERA PORT_REDIS < <(free_ports 2)
start_tessera_and_redis "$work"

pid_of() { if [ "$1" = tessera ]; then echo "$pid_tessera"; else echo "$pid_redis"; fi; }
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
sample() { # server phase: writes $work/<server>-<phase> as "rss used_memory"
  echo "$(rss_bytes "$(pid_of "$1")") $(info_value "$(port_of "$1")" memory used_memory)" >"$work/$1-$2"
}

for server in tessera redis; do
  port=$(port_of "$server")
  [ "$(rcli "$port" dbsize)" = 0 ] || die "$server on port $port is not empty"
  sample "$server" before
  # The keys are key:000000000000 … (16 bytes each).
  populate "$server" "$port" "$work/$server-load.txt"
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
