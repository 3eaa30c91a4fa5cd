#!/usr/bin/env bash
# Throughput, p99 and memory while BGSAVE runs back to back: tessera vs redis-server.
#
# One server at a time runs alone on SERVER_CPU (tessera with one data core; redis-server
# under taskset, so its forked child saves on that same CPU, as tessera's save shares its
# core). tessera-bench, the BGSAVE loop and the memory sampler run on CLIENT_CPU. The
# servers start with no save rules and a fresh --dir each, so only our BGSAVEs write.
#
# Per server: load KEYS keys of VALUE_BYTES-byte values (tessera-bench --populate; DBSIZE
# must then equal KEYS), then two tessera-bench runs of DURATION seconds each (1 s warm-up
# first): closed loop, CONNECTIONS connections, pipeline 1, SET:GET 1:1 (writes are what
# make a snapshot copy pages), uniform keys over the loaded key space, same seed.
#   baseline  no BGSAVE;
#   bgsave    a loop issues BGSAVE, polls INFO persistence every POLL_S until
#             rdb_bgsave_in_progress:0, and issues the next, until the run ends (the save
#             running then is let finish). Each save's time is taken around that loop, so it
#             includes up to POLL_S of polling (and, for Redis, the up to 100 ms before its
#             cron reaps the child).
# The baseline run polls INFO persistence at the same rate without BGSAVE, so the two runs
# differ only by the saves.
#
# Memory is sampled every 50 ms during both runs: the server's VmRSS (/proc/PID/status)
# plus, for every child process of the server (Redis's fork), Private_Clean + Private_Dirty
# from /proc/CHILD/smaps_rollup: the pages the child holds alone, i.e. what the fork really
# copied; pages still shared with the parent are no extra memory. tessera forks no child.
# "RSS baseline" is the reading just before the bgsave run; growth is peak / baseline - 1.
#
# Goals (issue text): tessera's dip (1 - ops during / ops baseline) smaller than Redis's,
# and tessera's RSS no more than 10% above baseline during the snapshot.
#
# Settings (environment, defaults): KEYS 2000000, VALUE_BYTES 64, DURATION 20 (seconds),
# CONNECTIONS 50, SERVER_CPU 1, CLIENT_CPU 0, PORT_TESSERA 7631, PORT_REDIS 7632, POLL_S 0.1;
# binaries come from CARGO_TARGET_DIR (default target/).
#
#   benches/bgsave-dip.sh                               # defaults below
#   KEYS=200000 DURATION=5 benches/bgsave-dip.sh        # a quick try
#   SERVER_CPU=3 CLIENT_CPU=2 benches/bgsave-dip.sh
#
# The table goes to benches/results/bgsave-dip-<UTC stamp>.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

KEYS=${KEYS:-2000000}
VALUE_BYTES=${VALUE_BYTES:-64}
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PORT_TESSERA=${PORT_TESSERA:-7631}
PORT_REDIS=${PORT_REDIS:-7632}
POLL_S=${POLL_S:-0.1}
RSS_GOAL_PCT=10
START_DEADLINE_S=${START_DEADLINE_S:-60}
LOAD_DEADLINE_S=${LOAD_DEADLINE_S:-900}
SAVE_DEADLINE_S=${SAVE_DEADLINE_S:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The command as run, with the settings that were given, for the results file.
command_line=$(command_line_of benches/bgsave-dip.sh KEYS VALUE_BYTES DURATION CONNECTIONS SERVER_CPU \
  CLIENT_CPU PORT_TESSERA PORT_REDIS POLL_S)

need_redis redis-server redis-cli
build_release --bin tessera
build_release -p tessera-bench --bin tessera-bench
TESSERA=$TARGET_DIR/release/tessera
# Which source the binaries were built from, for the results file.
commit=$(source_commit)
BENCH=$TARGET_DIR/release/tessera-bench

# From here on every helper (redis-cli, the sampler) inherits the client CPU; the servers
# are started under their own taskset.
pin_script "$CLIENT_CPU"

pids=()
work=$(mktemp -d)
# Stops every process this script started: SIGTERM, up to 5 s, then SIGKILL.
cleanup() {
  touch "$work/stop" 2>/dev/null || true
  cleanup_pids_and_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# INFO persistence as "in_progress status last_time_sec saves last_cow_size", or nothing
# when the server did not answer. One redis-cli per call: the poll runs on the client CPU.
persistence() {
  local out f vals=""
  out=$(rcli "$1" info persistence 2>/dev/null) || return 0
  for f in rdb_bgsave_in_progress rdb_last_bgsave_status rdb_last_bgsave_time_sec rdb_saves rdb_last_cow_size; do
    if [[ $out =~ $f:([^[:space:]]*) ]]; then vals+="${BASH_REMATCH[1]} "; else vals+="n/a "; fi
  done
  echo "${vals% }"
}

# The memory sampler: one line per 50 ms, "unix_time vmrss_kb children_private_kb children".
cat >"$work/sample.py" <<'PY'
import os, sys, time
pid, stop, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def kb(path, names):
    total = 0
    with open(path) as f:
        for line in f:
            if line.split(":", 1)[0] in names:
                total += int(line.split()[1])
    return total

def children():
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(d)
    return kids

with open(out, "w") as o:
    due = time.monotonic()
    while not os.path.exists(stop):
        now = time.time()
        try:
            rss = kb(f"/proc/{pid}/status", {"VmRSS"})
        except OSError:
            break
        kids, private = children(), 0
        for k in kids:
            try:  # a child that has just exited has no smaps left
                private += kb(f"/proc/{k}/smaps_rollup", {"Private_Clean", "Private_Dirty"})
            except (OSError, ValueError):
                pass
        o.write(f"{now:.3f} {rss} {private} {len(kids)}\n")
        due += 0.05
        time.sleep(max(0.0, due - time.monotonic()))
PY

# Runs until $work/stop exists. With BGSAVE (mode bgsave) it keeps one save running and
# logs each as "save start end in_progress status last_time_sec saves last_cow_size" (or
# "refused time reply"); without (mode poll) it only polls INFO at the same rate.
save_loop() { # mode port log
  local mode=$1 port=$2 log=$3 t0 reply p deadline
  while [ ! -e "$work/stop" ]; do
    if [ "$mode" = poll ]; then
      persistence "$port" >/dev/null
      sleep "$POLL_S"
      continue
    fi
    t0=$EPOCHREALTIME
    reply=$(rcli "$port" bgsave 2>&1) || true
    if [ "$reply" != "Background saving started" ]; then
      echo "refused $t0 ${reply//$'\n'/ }" >>"$log"
      sleep "$POLL_S"
      continue
    fi
    deadline=$((SECONDS + SAVE_DEADLINE_S))
    while :; do
      sleep "$POLL_S"
      p=$(persistence "$port")
      [ "${p%% *}" = 0 ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then echo "stuck $t0 $p" >>"$log"; return 0; fi
    done
    echo "save $t0 $EPOCHREALTIME $p" >>"$log"
  done
}

# One measured run of server $1 (pid $2, port $3), phase baseline or bgsave.
run() {
  local server=$1 pid=$2 port=$3 phase=$4 loop_pid sampler_pid mode=poll
  [ "$phase" = bgsave ] && mode=bgsave
  rm -f "$work/stop"
  awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" >"$work/$server-$phase.rss0"
  python3 "$work/sample.py" "$pid" "$work/stop" "$work/$server-$phase.mem" &
  sampler_pid=$!
  pids+=("$sampler_pid")
  : >"$work/$server-$phase.saves"
  save_loop "$mode" "$port" "$work/$server-$phase.saves" &
  loop_pid=$!
  pids+=("$loop_pid")
  echo "$EPOCHREALTIME" >"$work/$server-$phase.start"
  taskset -c "$CLIENT_CPU" "$BENCH" -p "$port" --cpus "$CLIENT_CPU" -q -c "$CONNECTIONS" -P 1 \
    --keys "$KEYS" --value-size "$VALUE_BYTES" --ratio 1:1 --distribution uniform \
    --warmup 1s -d "$DURATION" --label "$server $phase" --json "$work/$server-$phase.json" \
    >"$work/$server-$phase.txt" 2>&1 || { cat "$work/$server-$phase.txt" >&2; die "tessera-bench failed on $server ($phase)"; }
  echo "$EPOCHREALTIME" >"$work/$server-$phase.end"
  # The loop lets a running save finish; the sampler keeps going until then.
  touch "$work/stop"
  wait "$loop_pid" || true
  wait "$sampler_pid" || true
  persistence "$port" >"$work/$server-$phase.info"
}

for server in tessera redis; do
  port=$(port_of "$server")
  [ "$(rcli "$port" ping 2>/dev/null)" = PONG ] && die "something already answers on port $port"
  dir="$work/$server-dir"
  mkdir -p "$dir"
  log="$work/$server.log"
  if [ "$server" = tessera ]; then
    start_tessera "$TESSERA" "$SERVER_CPU" "$port" "$log" \
      --save "" --appendonly no --dir "$dir" --loglevel notice
  else
    start_redis "$SERVER_CPU" "$port" "$log" --dir "$dir" --loglevel notice
  fi
  pid=$!
  pids+=("$pid")
  wait_ping "$port" "$pid" "$server" "$log"
  cut -d' ' -f1-3 /proc/loadavg >"$work/$server.load"
  [ "$(rcli "$port" dbsize)" = 0 ] || die "$server on port $port is not empty"

  echo "$server: loading $KEYS keys" >&2
  populate "$server" "$port" "$work/$server-load.txt"

  for phase in baseline bgsave; do
    echo "$server: $phase run, ${DURATION}s" >&2
    run "$server" "$pid" "$port" "$phase"
  done
  [ "$(rcli "$port" dbsize)" = "$KEYS" ] || die "$server no longer holds $KEYS keys"
  ls -l "$dir" >"$work/$server.files"
  stop_server "$pid"
done

stamp=$(date -u +%Y-%m-%dT%H-%MZ)
out="benches/results/bgsave-dip-$stamp.md"
python3 - "$work" "$out" "$command_line" "$TESSERA" "$KEYS" "$VALUE_BYTES" "$DURATION" "$CONNECTIONS" \
  "$SERVER_CPU" "$CLIENT_CPU" "$POLL_S" "$RSS_GOAL_PCT" "$commit" <<'PY'
import json, os, platform, re, statistics, subprocess, sys
(work, out, command, tessera, keys, size, dur, conns, server_cpu, client_cpu, poll_s,
 rss_goal, commit) = sys.argv[1:]
keys, size, dur, rss_goal = int(keys), int(size), float(dur), float(rss_goal)
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
tessera_v = subprocess.run([tessera, "--version"], capture_output=True, text=True).stdout.strip() or "tessera"
try:
    thp = re.search(r"\[(\w+)\]", open("/sys/kernel/mm/transparent_hugepage/enabled").read()).group(1)
except (OSError, AttributeError):
    thp = "unknown"
fs = subprocess.run(["df", "-T", work], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
load = open("/proc/loadavg").read().split()[:3]
loads = ", ".join(f"{s} " + open(os.path.join(work, f"{s}.load")).read().strip() for s in ("tessera", "redis"))
overcommit = open("/proc/sys/vm/overcommit_memory").read().strip()

def f(name):
    return os.path.join(work, name)

def measure(server):
    m = {}
    for phase in ("baseline", "bgsave"):
        j = json.load(open(f(f"{server}-{phase}.json")))
        t = j["total"]
        start, end = float(open(f(f"{server}-{phase}.start")).read()), float(open(f(f"{server}-{phase}.end")).read())
        mem = [tuple(map(float, l.split())) for l in open(f(f"{server}-{phase}.mem")) if l.strip()]
        peak = max(mem, key=lambda s: s[1] + s[2]) if mem else (0, 0, 0, 0)
        saves, refused, stuck = [], [], []
        for line in open(f(f"{server}-{phase}.saves")):
            w = line.split()
            if w[0] == "save":
                saves.append(dict(t0=float(w[1]), t1=float(w[2]), status=w[4], last_s=w[5], cow=w[7]))
            elif w[0] == "refused":
                refused.append(" ".join(w[2:]))
            else:
                stuck.append(line.strip())
        # A save counts as completed in the run when the loop saw it end before the bench did.
        w1 = end
        m[phase] = dict(
            ops=j["ops_per_sec"], p50=t["latency_ms"]["p50"], p99=t["latency_ms"]["p99"],
            p999=t["latency_ms"]["p99_9"], max=t["latency_ms"]["max"], errors=t["errors"],
            timed_out=j["timed_out"], first_error=j["first_error"], client_us=j["client_cpu_us_per_op"],
            rss0=int(open(f(f"{server}-{phase}.rss0")).read()) * 1024,
            peak=(peak[1] + peak[2]) * 1024, peak_parent=peak[1] * 1024, peak_child=peak[2] * 1024,
            children=max((s[3] for s in mem), default=0), samples=len(mem),
            saves=saves, done=sum(1 for s in saves if s["t1"] <= w1), refused=refused, stuck=stuck,
            child_s=sum(1 for s in mem if s[3] > 0) * 0.05,
            info=open(f(f"{server}-{phase}.info")).read().split(),
        )
    b, d = m["baseline"], m["bgsave"]
    m["ratio"] = d["ops"] / b["ops"] if b["ops"] else float("nan")
    m["dip"] = 1 - m["ratio"]
    m["growth"] = d["peak"] / d["rss0"] - 1 if d["rss0"] else float("nan")
    ok = [s for s in d["saves"] if s["status"] == "ok"]
    m["save_s"] = statistics.mean(s["t1"] - s["t0"] for s in ok) if ok else float("nan")
    m["failed"] = sum(1 for s in d["saves"] if s["status"] != "ok")
    return m

m = {s: measure(s) for s in ("tessera", "redis")}
mib = lambda b: f"{b / 2**20:,.1f}"
pct = lambda x: f"{100 * x:.1f}%"
lines = [
    f"# Throughput and memory during back-to-back BGSAVE: tessera vs redis-server {redis_v}",
    "",
    f"CPU: {cpu}; kernel {platform.release()}; transparent hugepages `{thp}`; snapshot dir on {fs}; "
    f"load average before each server's runs {loads}, at the end {' '.join(load)}; "
    f"vm.overcommit_memory {overcommit}. tessera: {tessera_v} at commit {commit}.",
    f"{keys:,} keys (`key:` + 12 digits) with {size}-byte values, loaded by `tessera-bench --populate`, "
    "DBSIZE checked. One server at a time, pinned to CPU "
    f"{server_cpu} (tessera `--cores 1`; Redis's fork inherits the CPU); tessera-bench, the BGSAVE loop "
    f"and the sampler on CPU {client_cpu}.",
    f"Each run: tessera-bench closed loop, {conns} connections, pipeline 1, SET:GET 1:1, uniform keys, "
    f"1 s warm-up then {dur:g} s measured; baseline without BGSAVE, then with BGSAVE back to back "
    f"(the next issued once INFO persistence, polled every {poll_s} s, shows none in progress; "
    "the baseline run polls INFO at the same rate).",
    "Latency in ms from each request's intended send time. RSS: VmRSS plus the Private_Clean + "
    "Private_Dirty of the server's child processes (Redis's fork: the pages it copied), sampled every 50 ms; "
    "baseline is the reading just before the BGSAVE run.",
    f"Command: `{command}`.",
    "",
    "| server | ops/s baseline | ops/s during BGSAVE | during / baseline | dip | p99 baseline | p99 during | "
    "saves completed | s per save | RSS baseline MiB | RSS peak MiB | RSS growth |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for s in ("tessera", "redis"):
    x, b, d = m[s], m[s]["baseline"], m[s]["bgsave"]
    lines.append(
        f"| {s} | {b['ops']:,.0f} | {d['ops']:,.0f} | {x['ratio']:.3f} | {pct(x['dip'])} | {b['p99']:.3f} | "
        f"{d['p99']:.3f} | {d['done']} | {x['save_s']:.2f} | {mib(d['rss0'])} | "
        f"{mib(d['peak'])} | {pct(x['growth'])} |")
t, r = m["tessera"], m["redis"]
lines += [
    "",
    f"- Dip: tessera {pct(t['dip'])} vs Redis {pct(r['dip'])}: goal (tessera's dip smaller than Redis's) "
    f"{'met' if t['dip'] < r['dip'] else 'not met'}.",
    f"- RSS growth during the snapshot: tessera {pct(t['growth'])} vs goal ≤ {rss_goal:g}%: "
    f"{'met' if 100 * t['growth'] <= rss_goal else 'not met'} (Redis {pct(r['growth'])}).",
    "",
    "## Details",
    "",
    "| server | run | ops/s | p50 | p99 | p99.9 | max | errors | timed out | client µs/op | "
    "RSS before MiB | RSS peak MiB (server + child private) | children seen | samples |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for s in ("tessera", "redis"):
    for phase in ("baseline", "bgsave"):
        x = m[s][phase]
        lines.append(
            f"| {s} | {phase} | {x['ops']:,.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['p999']:.3f} | "
            f"{x['max']:.3f} | {x['errors']} | {x['timed_out']} | {x['client_us']:.2f} | {mib(x['rss0'])} | "
            f"{mib(x['peak'])} ({mib(x['peak_parent'])} + {mib(x['peak_child'])}) | {x['children']:.0f} | {x['samples']} |")
lines.append("")
for s in ("tessera", "redis"):
    d = m[s]["bgsave"]
    durs = ", ".join(f"{x['t1'] - x['t0']:.2f}" for x in d["saves"])
    lines.append(f"- {s}: {len(d['saves'])} saves issued ({d['done']} finished inside the window, "
                 f"{m[s]['failed']} with rdb_last_bgsave_status other than ok); seconds each, from the loop: {durs or 'none'}.")
    lines.append(f"  rdb_last_bgsave_time_sec after each: {', '.join(x['last_s'] for x in d['saves']) or 'none'}; "
                 f"rdb_last_cow_size MiB after each: "
                 f"{', '.join(mib(int(x['cow'])) if x['cow'].isdigit() else x['cow'] for x in d['saves']) or 'none'}.")
    if d["children"]:
        lines.append(f"  A child process was alive in {d['child_s']:.2f} s of samples (50 ms each) "
                     f"during the BGSAVE run, {d['child_s'] / max(len(d['saves']), 1):.2f} s per save.")
    if d["refused"]:
        lines.append(f"  BGSAVE refused {len(d['refused'])} times, first reply: `{d['refused'][0]}`.")
    if d["stuck"]:
        lines.append(f"  A save did not finish within the deadline: `{d['stuck'][0]}`.")
    for phase in ("baseline", "bgsave"):
        if m[s][phase]["first_error"]:
            lines.append(f"  {phase}: first error reply `{m[s][phase]['first_error']}`.")
    # Warnings and errors from the server's log, less the shutdown this script asked for.
    noted = [l.rstrip() for l in open(f(f"{s}.log"), errors="replace")
             if re.search(r" (WARN|ERROR) |# WARNING|[Ee]rror|[Ff]ail", l)
             and not re.search(r"Received signal 15|Received SIGTERM", l)]
    if noted:
        lines.append(f"  Log warnings ({len(noted)}): " + "; ".join(f"`{l}`" for l in noted[:5]) + ".")
    files = [l.split() for l in open(f(f"{s}.files")).read().splitlines()[1:]]
    lines.append("  Files in its dir at the end: " + (", ".join(f"{w[-1]} {int(w[4]):,} bytes" for w in files) or "none") + ".")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out}")
PY
