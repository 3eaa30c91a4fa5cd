#!/usr/bin/env bash
# Cache hit ratio under eviction: tessera vs redis-server with the same maxmemory.
#
# Both servers run pinned to SERVER_CPU (tessera with one data core, redis-server with no
# persistence) on free ports, and get `CONFIG SET maxmemory MAXMEMORY`. For each POLICY,
# each server is flushed (FLUSHALL) and given `CONFIG SET maxmemory-policy POLICY`; then
# tessera-bench, pinned to CLIENT_CPU, runs a cache-aside load (--set-on-miss: GET a key,
# and SET it when the GET misses) over KEYS zipf-distributed keys, far more than MAXMEMORY
# holds: first WARMUP_REQUESTS requests to fill the cache (not measured), then REQUESTS
# measured ones. The hit ratio is GET hits / GETs of the measured run; evicted_keys is the
# growth of INFO stats' evicted_keys over the measured run.
#
# A server that refuses a CONFIG SET stops the script with its reply, except that Redis
# refusing a policy it does not have (allkeys-fifo, volatile-fifo) only leaves its column
# empty. Error replies during a run also stop it.
#
#   benches/hit-ratio.sh                           # allkeys-lru and allkeys-lfu, 32mb
#   POLICIES="allkeys-lru allkeys-fifo" MAXMEMORY=64mb benches/hit-ratio.sh
#   DRY_RUN=redis benches/hit-ratio.sh             # a second redis-server in tessera's place
#
# The table goes to benches/results/hit-ratio-<UTC stamp>.md (…-dry-run.md for a dry run).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
MAXMEMORY=${MAXMEMORY:-32mb}
POLICIES=${POLICIES:-allkeys-lru allkeys-lfu}
KEYS=${KEYS:-2000000}
VALUE_BYTES=${VALUE_BYTES:-32}
DISTRIBUTION=${DISTRIBUTION:-zipf:0.99}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-3000000}
REQUESTS=${REQUESTS:-3000000}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINE=${PIPELINE:-16}
DRY_RUN=${DRY_RUN:-}
START_DEADLINE_S=${START_DEADLINE_S:-20}
RUN_DEADLINE_S=${RUN_DEADLINE_S:-900}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
command_line=""
for v in SERVER_CPU CLIENT_CPU MAXMEMORY POLICIES KEYS VALUE_BYTES DISTRIBUTION WARMUP_REQUESTS \
  REQUESTS CONNECTIONS PIPELINE DRY_RUN; do
  if printenv "$v" >/dev/null; then command_line+="$v='${!v}' "; fi
done
command_line+="benches/hit-ratio.sh"

case "$DRY_RUN" in
  "" | redis) ;;
  *) echo "hit-ratio.sh: DRY_RUN must be empty or 'redis', not '$DRY_RUN'" >&2; exit 2 ;;
esac
[ -n "$POLICIES" ] || die "POLICIES is empty"
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

name_of() { if [ "$1" = tessera ] && [ "$DRY_RUN" = redis ]; then echo "tessera (a redis-server, DRY_RUN)"; else echo "$1"; fi; }
# CONFIG SET $3 $4 on server $1 (port $2); returns 1 when refused, the reply in $work/refusal.
config_set() {
  local reply
  reply=$(rcli "$2" config set "$3" "$4" 2>&1 | tr -d '\r') || true
  if [ "$reply" != OK ]; then
    echo "${reply:-no reply}" >"$work/refusal"
    return 1
  fi
}
refused() { # server setting value
  die "$(name_of "$1") refused \`CONFIG SET $2 $3\`: $(cat "$work/refusal")
(tessera needs maxmemory and maxmemory-policy for this benchmark; DRY_RUN=redis checks the script with a second redis-server in its place)"
}
# Fails the script if the run in $2 (server $1) had error replies or did not complete.
check_run() {
  python3 - "$1" "$2" <<'PY' || exit 1
import json, sys
server, path = sys.argv[1:]
j = json.load(open(path))
t = j["total"]
if t["errors"] or j["timed_out"] or j["hit_ratio"] is None:
    sys.exit(f"hit-ratio.sh: {server}: {t['errors']} error replies (first: {j['first_error']}), "
             f"{j['timed_out']} unanswered, hit ratio {j['hit_ratio']}; see {path}")
PY
}
bench() { # server seed requests json
  local out=$work/bench.txt
  timeout "$RUN_DEADLINE_S" taskset -c "$CLIENT_CPU" "$BENCH" -p "$(port_of "$1")" --cpus "$CLIENT_CPU" -q \
    -c "$CONNECTIONS" -P "$PIPELINE" --keys "$KEYS" --value-size "$VALUE_BYTES" \
    --distribution "$DISTRIBUTION" --set-on-miss --seed "$2" -n "$3" --json "$4" >"$out" 2>&1 ||
    { cat "$out" >&2; die "tessera-bench against $(name_of "$1") failed (output above)"; }
  check_run "$(name_of "$1")" "$4"
}

for server in tessera redis; do
  port=$(port_of "$server")
  config_set "$server" "$port" maxmemory "$MAXMEMORY" || refused "$server" maxmemory "$MAXMEMORY"
  rcli "$port" config get maxmemory | tail -n 1 >"$work/$server.maxmemory"
done

for policy in $POLICIES; do
  for server in tessera redis; do
    port=$(port_of "$server")
    base=$work/$server-$policy
    [ "$(rcli "$port" flushall | tr -d '\r')" = OK ] || die "$(name_of "$server"): FLUSHALL failed"
    if ! config_set "$server" "$port" maxmemory-policy "$policy"; then
      # Redis lacks tessera's FIFO policies: leave its column empty rather than stop.
      if [ "$server" = redis ] && [[ "$policy" == *fifo* ]]; then
        cp "$work/refusal" "$base.unsupported"
        echo "$policy: redis-server does not have it: $(cat "$work/refusal")" >&2
        continue
      fi
      refused "$server" maxmemory-policy "$policy"
    fi
    echo "$policy: $(name_of "$server"): warm-up, $WARMUP_REQUESTS requests" >&2
    bench "$server" 1 "$WARMUP_REQUESTS" "$base-warmup.json"
    info_value "$port" stats evicted_keys >"$base.evicted0"
    rcli "$port" dbsize | tr -d '\r' >"$base.held0"
    echo "$policy: $(name_of "$server"): measuring, $REQUESTS requests" >&2
    bench "$server" 2 "$REQUESTS" "$base.json"
    info_value "$port" stats evicted_keys >"$base.evicted1"
    echo "$(rcli "$port" dbsize | tr -d '\r') $(info_value "$port" memory used_memory)" >"$base.after"
  done
done

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out="benches/results/hit-ratio-$stamp${DRY_RUN:+-dry-run}.md"
python3 - "$work" "$out" "$POLICIES" "$MAXMEMORY" "$KEYS" "$VALUE_BYTES" "$DISTRIBUTION" "$WARMUP_REQUESTS" \
  "$REQUESTS" "$CONNECTIONS" "$PIPELINE" "$command_line" "$DRY_RUN" "$TESSERA" <<'PY'
import json, os, platform, subprocess, sys
(work, out, policies, maxmem, keys, size, dist, warm, reqs, conns, pipeline, command, dry,
 tessera) = sys.argv[1:]
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
if dry:
    tessera_v = f"a second redis-server {redis_v} (DRY_RUN=redis)"
else:
    tessera_v = subprocess.run([tessera, "--version"], capture_output=True, text=True).stdout.strip() or "tessera"

def read(path):
    return open(path).read().strip()

def result(server, policy):
    base = f"{work}/{server}-{policy}"
    if os.path.exists(f"{base}.unsupported"):
        return None
    j = json.load(open(f"{base}.json"))
    e0, e1 = read(f"{base}.evicted0"), read(f"{base}.evicted1")
    held, used = read(f"{base}.after").split()
    row = lambda n: next((c for c in j["commands"] if c["name"] == n), {"ops": 0, "hits": 0, "misses": 0})
    return dict(ratio=j["hit_ratio"], evicted=(int(e1) - int(e0)) if "n/a" not in (e0, e1) else None,
                gets=row("GET")["ops"], misses=row("GET")["misses"], sets=row("SET")["ops"],
                ops=j["ops_per_sec"], held0=int(read(f"{base}.held0")), held=int(held),
                used=None if used == "n/a" else int(used))

fmt = lambda v, f: "n/a" if v is None else f(v)
lines = [f"# Hit ratio under eviction: tessera vs redis-server {redis_v}", ""]
if dry:
    lines += ["**Dry run: the tessera column is a second redis-server, not tessera.**", ""]
lines += [
    f"CPU: {cpu}; kernel {platform.release()}. tessera: {tessera_v}.",
    f"maxmemory {maxmem} on both (CONFIG GET: tessera {read(f'{work}/tessera.maxmemory')}, "
    f"Redis {read(f'{work}/redis.maxmemory')} bytes). Each server pinned to one CPU (tessera: one data "
    "core), tessera-bench pinned to the other.",
    f"Cache-aside load (`tessera-bench --set-on-miss`): GET of one of {int(keys):,} keys ({dist}), "
    f"a miss followed by `SET key <{size} bytes>`; {conns} connections, pipeline {pipeline}.",
    f"Per policy and server: FLUSHALL, `CONFIG SET maxmemory-policy`, {int(warm):,} requests of warm-up, "
    f"then {int(reqs):,} measured requests (GETs and SETs).",
    "Hit ratio: GET hits / GETs of the measured run. evicted_keys: growth of INFO stats' "
    "`evicted_keys` over the measured run. Ratio: tessera / Redis.",
    f"Command: `{command}`.",
    "",
    "| policy | tessera hit ratio | Redis hit ratio | ratio | tessera evicted_keys | Redis evicted_keys |",
    "|---|---|---|---|---|---|",
]
details = []
for policy in policies.split():
    t, r = result("tessera", policy), result("redis", policy)
    ratio = t["ratio"] / r["ratio"] if r and r["ratio"] else None
    lines.append(f"| {policy} | {t['ratio']:.4f} | {fmt(r and r['ratio'], lambda v: f'{v:.4f}')} | "
                 f"{fmt(ratio, lambda v: f'{v:.3f}')} | {fmt(t['evicted'], lambda v: f'{v:,}')} | "
                 f"{fmt(r and r['evicted'], lambda v: f'{v:,}') if r else 'n/a (policy not in Redis)'} |")
    for name, x in (("tessera", t), ("redis", r)):
        if x:
            details.append(f"| {policy} | {name} | {x['gets']:,} | {x['misses']:,} | {x['sets']:,} | "
                           f"{x['ops']:,.0f} | {x['held0']:,} | {x['held']:,} | {fmt(x['used'], lambda v: f'{v / 2**20:,.1f}')} |")
lines += ["", "Measured runs in detail (keys held: DBSIZE before and after the measured run):", "",
          "| policy | server | GETs | misses | SETs | ops/s | keys held before | keys held after | used_memory after MiB |",
          "|---|---|---|---|---|---|---|---|---|"] + details
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out}")
PY
