#!/usr/bin/env bash
# tessera vs redis-server under tessera-bench, back to back, in one run.
#
# Each server runs pinned to SERVER_CPU (tessera with one data core); tessera-bench runs
# pinned to CLIENT_CPU, so neither steals the other's core. Workloads: CONNECTIONS
# connections, VALUE_BYTES-byte values, KEYS keys (populated first), SET:GET 1:10, closed
# loop at pipeline 1 and 16, then open loop at 50% of Redis's measured pipeline-1 peak.
# Every run is repeated REPEATS times, alternating servers; the table shows medians.
#
# Server CPU seconds come from /proc/PID/stat (user + system, all threads) around each run,
# which has no warm-up, so "ops per server-CPU-second" is the run's requests divided by
# the CPU the server spent on them.
#
# Then a client check: tessera-bench and redis-benchmark, same settings (GET only, pipeline
# 1 and 16), against redis-server, to show the generator agrees with redis-benchmark when
# the server is the bottleneck.
#
#   benches/compare.sh                          # defaults below
#   DURATION=30 REPEATS=5 benches/compare.sh
#   CLIENT_CHECK=0 benches/compare.sh           # skip the redis-benchmark comparison
#   TLS=0 benches/compare.sh                    # skip the TLS vs plaintext comparison
#
# Last, TLS vs plaintext: both servers also listen with TLS (a CA and server certificate
# made here with openssl, P-256, no client certificates), and redis-benchmark (tessera-bench
# has no TLS) runs SET and GET, pipeline 1 and 16, against each server's plaintext and TLS
# ports: the table gives each server's TLS/plaintext ratio and tessera/Redis over TLS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-50}
KEYS=${KEYS:-100000}
VALUE_BYTES=${VALUE_BYTES:-32}
RATIO=${RATIO:-1:10}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
CLIENT_CHECK=${CLIENT_CHECK:-1}
CHECK_REQUESTS=${CHECK_REQUESTS:-1000000}
PORT_TESSERA=${PORT_TESSERA:-7621}
PORT_REDIS=${PORT_REDIS:-7622}
TLS=${TLS:-1}
TLS_REQUESTS=${TLS_REQUESTS:-500000}
PORT_TESSERA_TLS=${PORT_TESSERA_TLS:-7623}
PORT_REDIS_TLS=${PORT_REDIS_TLS:-7624}

need_redis redis-server redis-benchmark
build_release --bin tessera
build_release -p tessera-bench --bin tessera-bench
BENCH=target/release/tessera-bench

pids=()
work=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

tessera_tls=()
redis_tls=()
if [ "$TLS" = 1 ]; then
  command -v openssl >/dev/null || apt_install openssl
  # A throwaway CA and a server certificate for 127.0.0.1, both P-256.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=tessera bench CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$work/san.ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/san.ext" -out "$work/server.crt" 2>/dev/null
  tessera_tls=(--tls-port "$PORT_TESSERA_TLS" --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key"
    --tls-auth-clients no)
  redis_tls=(--tls-port "$PORT_REDIS_TLS" --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key"
    --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no)
fi

start_tessera target/release/tessera "$SERVER_CPU" "$PORT_TESSERA" /dev/null --loglevel warning "${tessera_tls[@]}"
pid_tessera=$!
pids+=("$pid_tessera")
start_redis "$SERVER_CPU" "$PORT_REDIS" /dev/null --loglevel warning "${redis_tls[@]}"
pid_redis=$!
pids+=("$pid_redis")
wait_up "$PORT_TESSERA"
wait_up "$PORT_REDIS"

pid_of() { if [ "$1" = tessera ]; then echo "$pid_tessera"; else echo "$pid_redis"; fi; }
# CPU ticks the process has used, user then system: fields 14 and 15 of /proc/PID/stat,
# counted after the command name, which may hold spaces.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

bench() { # server workload-name rep extra-args... ; writes $work/<server>-<name>-<rep>.{json,cpu}
  local server=$1 name=$2 rep=$3
  shift 3
  local pid u0 s0 u1 s1
  pid=$(pid_of "$server")
  read -r u0 s0 < <(ticks "$pid")
  taskset -c "$CLIENT_CPU" "$BENCH" -p "$(port_of "$server")" --cpus "$CLIENT_CPU" -q \
    -c "$CONNECTIONS" --keys "$KEYS" --value-size "$VALUE_BYTES" --ratio "$RATIO" -d "$DURATION" \
    --label "$server" --json "$work/$server-$name-$rep.json" "$@" >/dev/null
  read -r u1 s1 < <(ticks "$pid")
  echo "$((u1 - u0)) $((s1 - s0))" >"$work/$server-$name-$rep.cpu"
}

for server in tessera redis; do
  taskset -c "$CLIENT_CPU" "$BENCH" -p "$(port_of "$server")" -q -c "$CONNECTIONS" --keys "$KEYS" \
    --value-size "$VALUE_BYTES" --populate -n 1 >/dev/null
done

for rep in $(seq 1 "$REPEATS"); do
  for p in 1 16; do
    for server in tessera redis; do
      bench "$server" "closed-p$p" "$rep" -P "$p"
    done
  done
done

peak=$(python3 - "$work" "$REPEATS" <<'PY'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
print(statistics.median(json.load(open(f"{work}/redis-closed-p1-{r}.json"))["ops_per_sec"] for r in range(1, reps + 1)))
PY
)
rate=$(python3 -c "print(round($peak * $OPEN_FRACTION))")
for rep in $(seq 1 "$REPEATS"); do
  for server in tessera redis; do
    # Pipeline 16 is the most each connection may have in flight: at half load a
    # connection rarely has more than one out, but a stall can queue requests.
    bench "$server" open "$rep" --rate "$rate" -P 16
  done
done

if [ "$CLIENT_CHECK" = 1 ]; then
  for p in 1 16; do
    # /usr/bin/time: each client's own CPU (user + system seconds), whole process.
    /usr/bin/time -f "%U %S" -o "$work/check-redis-benchmark-p$p.time" \
      taskset -c "$CLIENT_CPU" redis-benchmark -p "$PORT_REDIS" -t get -n "$CHECK_REQUESTS" -c "$CONNECTIONS" \
      -P "$p" -r "$KEYS" -d "$VALUE_BYTES" --csv 2>/dev/null | tail -n +2 >"$work/check-redis-benchmark-p$p.csv"
    /usr/bin/time -f "%U %S" -o "$work/check-tessera-bench-p$p.time" \
      taskset -c "$CLIENT_CPU" "$BENCH" -p "$PORT_REDIS" --cpus "$CLIENT_CPU" -q -c "$CONNECTIONS" -P "$p" \
      --keys "$KEYS" --value-size "$VALUE_BYTES" --ratio 0:1 -n "$CHECK_REQUESTS" \
      --json "$work/check-tessera-bench-p$p.json" >/dev/null
  done
fi

if [ "$TLS" = 1 ]; then
  for server in tessera redis; do
    for mode in plain tls; do
      port=$(port_of "$server")
      tls_args=()
      if [ "$mode" = tls ]; then
        if [ "$server" = tessera ]; then port=$PORT_TESSERA_TLS; else port=$PORT_REDIS_TLS; fi
        tls_args=(--tls --cacert "$work/ca.crt")
      fi
      for p in 1 16; do
        taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" "${tls_args[@]}" -t set,get -n "$TLS_REQUESTS" \
          -c "$CONNECTIONS" -P "$p" -r "$KEYS" -d "$VALUE_BYTES" --csv 2>/dev/null | tail -n +2 \
          >"$work/tls-$server-$mode-p$p.csv"
      done
    done
  done
fi

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out="benches/results/compare-$stamp.md"
svg="benches/results/compare-$stamp-open.svg"
"$BENCH" plot "$svg" --title "Open loop at ${rate} ops/s, SET:GET $RATIO" "$work/tessera-open-1.json" "$work/redis-open-1.json"
CHECK_REQUESTS=$CHECK_REQUESTS TLS_REQUESTS=$TLS_REQUESTS python3 - "$work" "$out" "$svg" "$REPEATS" "$DURATION" "$CONNECTIONS" \
  "$KEYS" "$VALUE_BYTES" "$RATIO" "$rate" "$CLIENT_CHECK" "$(getconf CLK_TCK)" "$TLS" <<'PY'
import csv, json, os, platform, statistics, subprocess, sys
work, out, svg, reps, dur, conns, keys, size, ratio, rate, check, hz, tls = sys.argv[1:]
reps, hz = int(reps), float(hz)
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
load = open("/proc/loadavg").read().split()[:3]

def runs(server, name):
    rows = []
    for r in range(1, reps + 1):
        j = json.load(open(f"{work}/{server}-{name}-{r}.json"))
        user_s, sys_s = (int(x) / hz for x in open(f"{work}/{server}-{name}-{r}.cpu").read().split())
        cpu_s = user_s + sys_s
        t = j["total"]
        rows.append(dict(ops=j["ops_per_sec"], p50=t["latency_ms"]["p50"], p99=t["latency_ms"]["p99"],
                         p999=t["latency_ms"]["p99_9"], cpu=cpu_s, per_cpu=t["ops"] / cpu_s if cpu_s else 0.0,
                         user_us=user_s * 1e6 / max(t["ops"], 1), sys_us=sys_s * 1e6 / max(t["ops"], 1),
                         unsent=j["unsent"], client_us=j["client_cpu_us_per_op"]))
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

workloads = [("closed-p1", "closed loop, pipeline 1"), ("closed-p16", "closed loop, pipeline 16"),
             ("open", f"open loop, {int(rate):,} ops/s (50% of Redis's P1 peak)")]
lines = [
    f"# tessera vs redis-server {redis_v} under tessera-bench",
    "",
    f"CPU: {cpu}; kernel {platform.release()}; load average at the end {' '.join(load)}.",
    f"Each server pinned to one CPU (tessera: one data core), tessera-bench pinned to the other.",
    f"{conns} connections, {keys} keys (populated), {size}-byte values, SET:GET {ratio}; "
    f"{dur} s per run, median of {reps} runs, servers alternating. Command: `benches/compare.sh`.",
    "Latencies in ms, all commands together, measured from each request's intended send time.",
    "Server CPU s: user + system from /proc over the run, also shown per request split into",
    "user and system (kernel) µs. Ratios are tessera / Redis.",
    "",
    "| workload | server | ops/s | p50 | p99 | p99.9 | server CPU s | user µs/op | system µs/op | ops per server-CPU-s | ops/s ratio | p99 ratio | ops/CPU-s ratio |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for name, desc in workloads:
    t, r = runs("tessera", name), runs("redis", name)
    for server, m in (("tessera", t), ("redis", r)):
        ratio_cols = (f"{t['ops']/r['ops']:.2f} | {t['p99']/r['p99']:.2f} | {t['per_cpu']/r['per_cpu']:.2f}"
                      if server == "tessera" else "1.00 | 1.00 | 1.00")
        lines.append(f"| {desc} | {server} | {m['ops']:,.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['p999']:.3f} | "
                     f"{m['cpu']:.2f} | {m['user_us']:.2f} | {m['sys_us']:.2f} | {m['per_cpu']:,.0f} | {ratio_cols} |")
lines += ["", f"Open-loop percentile plot (first repeat): `{os.path.basename(svg)}`."]
unsent = {s: runs(s, "open")["unsent"] for s in ("tessera", "redis")}
if any(unsent.values()):
    lines.append(f"Open-loop requests never sent (server behind schedule), median: {unsent}.")
if check == "1":
    lines += ["", "## Client check: tessera-bench vs redis-benchmark on redis-server",
              "", "GET only, same connections, keys, value size and request count, both pinned to the client CPU.",
              "Client CPU: each process's user + system time (`/usr/bin/time`) per request.",
              "", "| pipeline | redis-benchmark ops/s | tessera-bench ops/s | ratio | redis-benchmark p50 | tessera-bench p50 | redis-benchmark µs CPU/request | tessera-bench µs CPU/request |",
              "|---|---|---|---|---|---|---|---|"]
    def cpu_us(name):
        u, s = open(f"{work}/{name}.time").read().split()[-2:]
        return (float(u) + float(s)) * 1e6 / int(os.environ.get("CHECK_REQUESTS", "1000000"))
    for p in (1, 16):
        row = next(csv.reader(open(f"{work}/check-redis-benchmark-p{p}.csv")))
        rb_ops, rb_p50 = float(row[1]), float(row[4])
        j = json.load(open(f"{work}/check-tessera-bench-p{p}.json"))
        lines.append(f"| {p} | {rb_ops:,.0f} | {j['ops_per_sec']:,.0f} | {j['ops_per_sec']/rb_ops:.2f} | "
                     f"{rb_p50:.3f} | {j['total']['latency_ms']['p50']:.3f} | "
                     f"{cpu_us(f'check-redis-benchmark-p{p}'):.2f} | {cpu_us(f'check-tessera-bench-p{p}'):.2f} |")
if tls == "1":
    def rb(server, mode, p):
        rows = {r[0]: float(r[1]) for r in csv.reader(open(f"{work}/tls-{server}-{mode}-p{p}.csv"))}
        return rows["SET"], rows["GET"]
    lines += ["", "## TLS vs plaintext (redis-benchmark)", "",
              f"redis-benchmark -t set,get -n {int(os.environ.get('TLS_REQUESTS', '500000')):,} -c {conns} -P 1|16 -r {keys} -d {size}, "
              "pinned to the client CPU, against each server's plaintext port and its TLS port (`--tls --cacert`; "
              "TLS 1.3, P-256 certificate, no client certificates). One run each.",
              "", "| pipeline | command | server | plaintext ops/s | TLS ops/s | TLS/plaintext | tessera/Redis over TLS |",
              "|---|---|---|---|---|---|---|"]
    for p in (1, 16):
        for i, cmd in enumerate(("SET", "GET")):
            t_plain, t_tls = rb("tessera", "plain", p)[i], rb("tessera", "tls", p)[i]
            r_plain, r_tls = rb("redis", "plain", p)[i], rb("redis", "tls", p)[i]
            lines.append(f"| {p} | {cmd} | tessera | {t_plain:,.0f} | {t_tls:,.0f} | {t_tls/t_plain:.2f} | {t_tls/r_tls:.2f} |")
            lines.append(f"| {p} | {cmd} | redis | {r_plain:,.0f} | {r_tls:,.0f} | {r_tls/r_plain:.2f} | 1.00 |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out} and {svg}")
PY
