#!/usr/bin/env bash
# How far a replica falls behind its primary under a full write load: tessera vs
# redis-server, one primary + replica pair at a time, in one run.
#
# Per server: a primary and a replica with no save rules and a fresh dir each,
#   tessera   tessera --port P --cores 1 --save "" --dir D
#             tessera --port R --cores 1 --save "" --dir D' --replicaof "127.0.0.1 P"
#   Redis     redis-server --port P --save '' --appendonly no --bind 127.0.0.1 --dir D
#             redis-server --port R --save '' --appendonly no --bind 127.0.0.1 --dir D' \
#               --replicaof 127.0.0.1 P
# (--dir keeps Redis's sync files out of the tree; --bind keeps it off the network.)
# Once INFO replication on the replica shows master_link_status:up (deadline
# LINK_DEADLINE_S), redis-benchmark writes:
#   redis-benchmark -p P -t set -n REQUESTS -P 16 -c 50 -r 1000000 -d 64 -q
#
# CPUs (this machine has 2): the load generator alone gets CLIENT_CPU (0); the primary AND
# the replica share SERVER_CPU (1). Giving the replica the generator's CPU would make its
# speed depend on how busy redis-benchmark keeps that CPU; on the server CPU it competes
# only with its own primary, the same way for both servers, so the throughput figure is
# the primary's with its replica's apply cost on the same core, and the lag shows how much
# of that CPU the replica gets. This script, the sampler and redis-cli run on CLIENT_CPU.
#
# While the load runs, a sampler (one persistent connection to each server, on the client
# CPU) takes a sample every SAMPLE_S (0.1 s): the primary's master_repl_offset (p1), the
# replica's slave_repl_offset (r), the primary's again (p2). Under this load each INFO reply
# takes milliseconds, in which the primary takes hundreds of writes, so one read of each
# would be off by that much; with the primary read on both sides, the true lag when the
# replica was read lies between p1 - r and p2 - r, and the figure is the middle. Lag is in
# each server's own unit:
#   tessera   records: offsets are the sum of the per-shard ring positions, one per write;
#   Redis     bytes of the replication stream (a 64-byte SET is 107 bytes).
# "max lag in SETs" divides by how much the primary's offset grew per SET in this run.
# When redis-benchmark exits, the script writes the time to a FIFO on which a watcher
# process (forked by the sampler, its own connections) waits; it asks the primary for its
# final master_repl_offset and the replica for its offset at once, then polls the replica
# every ~1 ms until it has reached that offset (deadline CATCHUP_DEADLINE_S). Catch-up =
# the reply that showed it - the load's end, in ms: the unit-free figure, an upper bound
# good to a few ms (the INFO round trip on the busy server CPU).
# Then DBSIZE of primary and replica must agree.
#
# Other users of this machine disturb such a run: the script adds up the CPU time of every
# user-space process outside its own tree (and the hypervisor's steal; kernel threads are
# shown apart, they mostly work for this run) over the load, and flags the run
# (CAUTION, in the output and the results) when that passes 5% of one CPU.
#
# Settings (environment, defaults): TESSERA (target/release/tessera, built with
# `cargo build --release` if missing), REQUESTS 2000000, PIPELINE 16, CONNECTIONS 50,
# RANDOM_KEYS 1000000, VALUE_BYTES 64, SERVER_CPU 1, CLIENT_CPU 0, SAMPLE_S 0.1,
# PORT_TESSERA 7651 (replica 7652), PORT_REDIS 7653 (replica 7654), OUT
# (benches/results/replication-lag.md); deadlines START_DEADLINE_S 30, LINK_DEADLINE_S 60,
# LOAD_DEADLINE_S 600, CATCHUP_DEADLINE_S 120.
#
#   benches/replication-lag.sh
#   TESSERA=/work/target-helper/release/tessera REQUESTS=500000 benches/replication-lag.sh
#
# Prints the table (progress goes to stderr) and writes it, with the details, to OUT.
# Exits 1 if a replica did not catch up, a DBSIZE differs, the link dropped or a sample got
# no reply (after writing the results, which say so).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-2000000}
PIPELINE=${PIPELINE:-16}
CONNECTIONS=${CONNECTIONS:-50}
RANDOM_KEYS=${RANDOM_KEYS:-1000000}
VALUE_BYTES=${VALUE_BYTES:-64}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SAMPLE_S=${SAMPLE_S:-0.1}
PORT_TESSERA=${PORT_TESSERA:-7651}
PORT_REDIS=${PORT_REDIS:-7653}
OUT=${OUT:-benches/results/replication-lag.md}
START_DEADLINE_S=${START_DEADLINE_S:-30}
LINK_DEADLINE_S=${LINK_DEADLINE_S:-60}
LOAD_DEADLINE_S=${LOAD_DEADLINE_S:-600}
CATCHUP_DEADLINE_S=${CATCHUP_DEADLINE_S:-120}
# The command as run, with the settings that were given, for the results file.
command_line=$(command_line_of benches/replication-lag.sh TESSERA REQUESTS PIPELINE CONNECTIONS RANDOM_KEYS \
  VALUE_BYTES SERVER_CPU CLIENT_CPU SAMPLE_S PORT_TESSERA PORT_REDIS OUT START_DEADLINE_S LINK_DEADLINE_S \
  LOAD_DEADLINE_S CATCHUP_DEADLINE_S)

need_redis redis-server redis-cli redis-benchmark
if [ ! -x /usr/bin/time ]; then
  apt_install time
fi
if [ -z "${TESSERA:-}" ]; then
  TESSERA=target/release/tessera
  if [ ! -x "$TESSERA" ]; then
    # shellcheck disable=SC2119 # no arguments: cargo's default build
    build_release
  fi
fi
[ -x "$TESSERA" ] || die "no tessera binary at $TESSERA"
# Which source the repository holds, for the results file (the binary may be older).
commit=$(source_commit)

# From here on every helper (redis-cli, the sampler) inherits the client CPU; the servers
# and redis-benchmark are started under their own taskset.
pin_script "$CLIENT_CPU"

pids=()
work=$(mktemp -d)
# On exit, stops every process this script started (SIGTERM, up to 5 s, then SIGKILL) and
# removes $work.
trap cleanup_pids_and_work EXIT
trap 'exit 130' INT TERM

# One field of INFO replication on port $1, or nothing.
replication_field() {
  local out
  out=$(rcli "$1" info replication 2>/dev/null) || return 0
  if [[ $out =~ $2:([^[:space:]]*) ]]; then echo "${BASH_REMATCH[1]}"; fi
}

# Waits until the replica on $1 (pid $2, named $3, log $4) shows master_link_status:up.
wait_link() {
  local port=$1 pid=$2 name=$3 log=$4 deadline=$((SECONDS + LINK_DEADLINE_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$name exited before its link came up (log above)"; }
    [ "$(replication_field "$port" master_link_status)" = up ] && return 0
    sleep 0.1
  done
  cat "$log" >&2
  die "$name: master_link_status not up within ${LINK_DEADLINE_S}s"
}

# CPU ticks (user + system, all threads) of process $1: fields 14 and 15 of /proc/PID/stat,
# counted after the command name, which may hold spaces.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Prints "ours busy steal" in ticks since boot: CPU used by this script's process tree
# (user + system, with the children it has reaped, so redis-benchmark is in), CPU used on
# the whole machine (/proc/stat: user, nice, system, irq, softirq, all CPUs), and steal.
# Writes every other process as "pid start_time ticks k|u name" to $1 (k: a kernel thread), ticks again
# with the children it has reaped: between two readings, what other users of the machine
# took meanwhile (a child reaped in between counts in full, even its time from before).
# busy - ours - others is interrupt work the kernel charged to no process (idle CPU).
cpu_reading() {
  python3 - "$$" "$1" <<'PY'
import os, sys
me, out, procs = int(sys.argv[1]), sys.argv[2], {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        w = s.rsplit(")", 1)[1].split()
        name = s[s.index("(") + 1:s.rindex(")")].replace(" ", "_")
        procs[int(d)] = (int(w[1]), sum(int(x) for x in w[11:15]), name, w[19])
def ours(pid):
    while pid > 1:
        if pid == me:
            return True
        pid = procs.get(pid, (0,))[0]
    return False
with open(out, "w") as o:
    for pid, (ppid, t, name, start) in procs.items():
        if not ours(pid):  # kernel threads (children of kthreadd) marked "k"
            o.write(f"{pid} {start} {t} {'k' if 2 in (pid, ppid) else 'u'} {name}\n")
v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
print(sum(p[1] for pid, p in procs.items() if ours(pid)), v[0] + v[1] + v[2] + v[5] + v[6], v[7])
PY
}
# The /proc/stat line of CPU $1: "cpuN user nice system idle iowait irq softirq steal …".
cpu_line() { grep "^cpu$1 " /proc/stat; }

# The sampler. Every interval a line "s wall_time primary_offset replica_offset
# primary_offset_again link_status sample_ms", until the load's end time arrives on the
# stop FIFO; then one line from the watcher,
# "c load_end final_read final_offset caught_time|none replica_offset polls woke_time".
cat >"$work/sampler.py" <<'PY'
import os, select, socket, sys, time
pport, rport, stop, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
interval, deadline_s = float(sys.argv[5]), float(sys.argv[6])
REQ = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"

class Conn:
    def __init__(self, port):
        self.port, self.s, self.f = port, None, None

    def close(self):
        if self.s is not None:
            self.s.close()
        self.s, self.f = None, None

    def send(self):
        """Sends INFO replication; False (and closed) on an error."""
        try:
            if self.f is None:
                self.s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.f = self.s.makefile("rb")
            self.s.sendall(REQ)
            return True
        except OSError:
            self.close()
            return False

    def recv(self):
        """The reply as a dict, or None (the next send reconnects)."""
        if self.f is None:
            return None
        try:
            head = self.f.readline()
            if not head.startswith(b"$"):
                raise ValueError(head)
            body = self.f.read(int(head[1:]) + 2).decode(errors="replace")
            return dict(l.split(":", 1) for l in body.split("\r\n") if ":" in l)
        except (OSError, ValueError):
            self.close()
            return None

    def info(self):
        return self.recv() if self.send() else None

def num(d, k):
    try:
        return int(d[k])
    except (TypeError, KeyError, ValueError):
        return -1

# The catch-up watcher is a child process with its own connections, already open, that
# waits on the FIFO alone, so it wakes at the load's end even while a sample is waiting
# for a reply; it tells the sampler to stop through a pipe.
def watch():
    os.close(wake_r)
    # Read-write, so the FIFO never reports end-of-file: select wakes when a line arrives.
    fifo = os.open(stop, os.O_RDWR)
    got = b""
    while not got.endswith(b"\n"):
        if select.select([fifo], [], [], 1)[0]:
            got += os.read(fifo, 256)
        elif os.getppid() != parent:  # the sampler is gone (the script was stopped)
            return
    load_end, woke = float(got.decode().split()[0]), time.time()
    os.write(wake_w, b"x")
    wake_w_sent.append(1)
    # Both asked at once, so a replica already caught up is seen without waiting for the
    # primary's reply first; then the replica alone, every ~1 ms.
    primary.send()
    replica.send()
    final = num(primary.recv(), "master_repl_offset")
    final_read = time.time()
    ro, t, polls = num(replica.recv(), "slave_repl_offset"), time.time(), 1
    deadline = time.monotonic() + deadline_s
    while final >= 0 and ro < final and time.monotonic() < deadline:
        time.sleep(0.001)
        ro, t, polls = num(replica.info(), "slave_repl_offset"), time.time(), polls + 1
    caught = f"{t:.6f}" if final >= 0 and ro >= final else "none"
    with open(out + ".end", "w") as o:
        o.write(f"c {load_end:.6f} {final_read:.6f} {final} {caught} {ro} {polls} {woke:.6f}\n")

wake_r, wake_w = os.pipe()
wake_w_sent, parent = [], os.getpid()
primary, replica = Conn(pport), Conn(rport)
primary.info()
replica.info()
child = os.fork()
if child == 0:
    code = 1
    try:
        watch()
        code = 0
    finally:
        if not wake_w_sent:  # failed before the load's end: stop the sampler all the same
            os.write(wake_w, b"x")
        os._exit(code)
os.close(wake_w)
primary.close()
replica.close()
with open(out, "w", buffering=1) as o:
    due = time.monotonic()
    while True:
        t = time.time()
        p1 = num(primary.info(), "master_repl_offset")
        ri = replica.info()
        p2 = num(primary.info(), "master_repl_offset")
        rtt = (time.time() - t) * 1000
        link = ri.get("master_link_status", "?") if ri else "noreply"
        o.write(f"s {t:.4f} {p1} {num(ri, 'slave_repl_offset')} {p2} {link} {rtt:.3f}\n")
        due += interval
        if time.monotonic() > due:  # fell behind (a slow reply): no burst of samples
            due = time.monotonic()
        if select.select([wake_r], [], [], max(0.0, due - time.monotonic()))[0]:
            break
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit("the catch-up watcher failed")
    o.write(open(out + ".end").read())
PY

run_pair() { # server port
  local server=$1 pport=$2 rport=$(($2 + 1)) ppid rpid sampler_pid start end p stop_fd
  for p in "$pport" "$rport"; do
    [ "$(rcli "$p" ping 2>/dev/null)" = PONG ] && die "something already answers on port $p"
  done
  mkdir -p "$work/$server-primary-dir" "$work/$server-replica-dir"
  if [ "$server" = tessera ]; then
    taskset -c "$SERVER_CPU" "$TESSERA" --port "$pport" --cores 1 --save "" \
      --dir "$work/$server-primary-dir" >"$work/$server-primary.log" 2>&1 &
  else
    taskset -c "$SERVER_CPU" redis-server --port "$pport" --save '' --appendonly no --bind 127.0.0.1 \
      --dir "$work/$server-primary-dir" >"$work/$server-primary.log" 2>&1 &
  fi
  ppid=$!
  pids+=("$ppid")
  wait_ping "$pport" "$ppid" "$server primary" "$work/$server-primary.log"
  if [ "$server" = tessera ]; then
    taskset -c "$SERVER_CPU" "$TESSERA" --port "$rport" --cores 1 --save "" \
      --dir "$work/$server-replica-dir" --replicaof "127.0.0.1 $pport" >"$work/$server-replica.log" 2>&1 &
  else
    taskset -c "$SERVER_CPU" redis-server --port "$rport" --save '' --appendonly no --bind 127.0.0.1 \
      --dir "$work/$server-replica-dir" --replicaof 127.0.0.1 "$pport" >"$work/$server-replica.log" 2>&1 &
  fi
  rpid=$!
  pids+=("$rpid")
  wait_ping "$rport" "$rpid" "$server replica" "$work/$server-replica.log"
  wait_link "$rport" "$rpid" "$server replica" "$work/$server-replica.log"
  [ "$(rcli "$pport" dbsize)" = 0 ] || die "$server primary on port $pport is not empty"
  [ "$(rcli "$rport" dbsize)" = 0 ] || die "$server replica on port $rport is not empty"
  cut -d' ' -f1-3 /proc/loadavg >"$work/$server.load"
  replication_field "$pport" master_repl_offset >"$work/$server.offset0"

  rm -f "$work/$server.stop"
  mkfifo "$work/$server.stop"
  # Opened read-write, so neither side ever blocks on the other; written with a builtin
  # right after the load, so the sampler wakes within a fraction of a millisecond.
  exec {stop_fd}<>"$work/$server.stop"
  timeout $((LOAD_DEADLINE_S + CATCHUP_DEADLINE_S + 60)) python3 "$work/sampler.py" "$pport" "$rport" \
    "$work/$server.stop" "$work/$server.samples" "$SAMPLE_S" "$CATCHUP_DEADLINE_S" &
  sampler_pid=$!
  pids+=("$sampler_pid")
  sleep 0.3 # a few samples before the load
  echo "$server: $REQUESTS SETs, pipeline $PIPELINE, $CONNECTIONS connections, then the catch-up (deadline ${CATCHUP_DEADLINE_S}s)" >&2
  { cpu_line "$SERVER_CPU"; cpu_line "$CLIENT_CPU"; } >"$work/$server.stat0"
  echo "$(ticks "$ppid") $(ticks "$rpid") $(cpu_reading "$work/$server.procs0")" >"$work/$server.ticks0"
  start=$EPOCHREALTIME
  # /usr/bin/time: redis-benchmark's own CPU, to tell what else ran on the client CPU.
  timeout "$LOAD_DEADLINE_S" taskset -c "$CLIENT_CPU" /usr/bin/time -f "%U %S" -o "$work/$server-bench.time" \
    redis-benchmark -p "$pport" -t set -n "$REQUESTS" \
    -P "$PIPELINE" -c "$CONNECTIONS" -r "$RANDOM_KEYS" -d "$VALUE_BYTES" -q >"$work/$server-bench.txt" 2>&1 \
    || { tr '\r' '\n' <"$work/$server-bench.txt" | tail -5 >&2; die "redis-benchmark failed or passed ${LOAD_DEADLINE_S}s on $server"; }
  end=$EPOCHREALTIME
  echo "$end" >&"$stop_fd"
  echo "$start $end" >"$work/$server.window"
  wait "$sampler_pid" || die "the sampler failed on $server"
  # CPU readings once the replica has caught up (nothing else runs on the client CPU while
  # the sampler times that), so they cover the load and the catch-up.
  echo "$(ticks "$ppid") $(ticks "$rpid") $(cpu_reading "$work/$server.procs1")" >"$work/$server.ticks1"
  { cpu_line "$SERVER_CPU"; cpu_line "$CLIENT_CPU"; } >"$work/$server.stat1"
  exec {stop_fd}>&-
  echo "$(rcli "$pport" dbsize) $(rcli "$rport" dbsize)" >"$work/$server.dbsize"
  rcli "$pport" info >"$work/$server-primary.info" 2>&1 || true
  rcli "$rport" info >"$work/$server-replica.info" 2>&1 || true
  kill -0 "$ppid" 2>/dev/null || echo "primary exited during the run" >>"$work/$server.died"
  kill -0 "$rpid" 2>/dev/null || echo "replica exited during the run" >>"$work/$server.died"
  stop_server "$rpid"
  stop_server "$ppid"
}

run_pair tessera "$PORT_TESSERA"
run_pair redis "$PORT_REDIS"

python3 - "$work" "$OUT" "$command_line" "$TESSERA" "$commit" "$REQUESTS" "$PIPELINE" "$CONNECTIONS" \
  "$RANDOM_KEYS" "$VALUE_BYTES" "$SERVER_CPU" "$CLIENT_CPU" "$SAMPLE_S" "$(getconf CLK_TCK)" <<'PY'
import datetime, os, platform, re, statistics, subprocess, sys
(work, out, command, tessera, commit, requests, pipeline, conns, rkeys, size, server_cpu,
 client_cpu, sample_s, hz) = sys.argv[1:]
requests, rkeys, hz = int(requests), int(rkeys), float(hz)

def f(name):
    return os.path.join(work, name)

def info(path):
    d = {}
    for l in open(path, errors="replace"):
        if ":" in l:
            k, v = l.rstrip("\r\n").split(":", 1)
            d[k] = v
    return d

def stat(path):
    """{cpu: (busy ticks, steal ticks)} from saved /proc/stat lines."""
    r = {}
    for l in open(path):
        w = l.split()
        v = [int(x) for x in w[1:]]
        r[w[0]] = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[7])
    return r

cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
ncpu = os.cpu_count()
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
tessera_v = subprocess.run([tessera, "--version"], capture_output=True, text=True).stdout.strip() or "tessera"
built = datetime.datetime.fromtimestamp(os.path.getmtime(tessera), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

m, problems, cautions = {}, [], []
for s in ("tessera", "redis"):
    start, end = map(float, open(f(f"{s}.window")).read().split())
    samples, catch = [], None
    for l in open(f(f"{s}.samples")):
        w = l.split()
        if w[0] == "s":
            samples.append((float(w[1]), int(w[2]), int(w[3]), int(w[4]), w[5], float(w[6])))
        elif w[0] == "c":
            catch = w
    during = [x for x in samples if start <= x[0] <= end]
    good = [x for x in during if min(x[1:4]) >= 0]
    # Per sample: the true lag at the replica's read is between p1 - r and p2 - r; the
    # estimate is the middle.
    lags = [((x[1] + x[3]) / 2 - x[2], x[1] - x[2], x[3] - x[2]) for x in good]
    bench = open(f(f"{s}-bench.txt"), errors="replace").read().replace("\r", "\n")
    hit = re.findall(r"SET: ([0-9.]+) requests per second, p50=([0-9.]+) msec", bench)
    ops, p50 = (float(hit[-1][0]), float(hit[-1][1])) if hit else (float("nan"), float("nan"))
    if not hit:
        problems.append(f"{s}: no throughput line in redis-benchmark's output")
    offset0 = int(open(f(f"{s}.offset0")).read().strip() or 0)
    load_end, final_read, final = float(catch[1]), float(catch[2]), int(catch[3])
    caught = None if catch[4] == "none" else float(catch[4])
    per_set = (final - offset0) / requests if final >= 0 else float("nan")
    pdb, rdb = (open(f(f"{s}.dbsize")).read().split() + ["?", "?"])[:2]
    pi, ri = info(f(f"{s}-primary.info")), info(f(f"{s}-replica.info"))
    if s == "tessera":
        syncs = (pi.get("tessera_full_syncs", "?"), pi.get("tessera_partial_syncs", "?"))
    else:
        syncs = (pi.get("sync_full", "?"), pi.get("sync_partial_ok", "?"))
    t0, t1 = (list(map(int, open(f(f"{s}.ticks{i}")).read().split())) for i in (0, 1))
    st0, st1 = stat(f(f"{s}.stat0")), stat(f(f"{s}.stat1"))
    sc, cc = f"cpu{server_cpu}", f"cpu{client_cpu}"
    bench_cpu = sum(float(v) for v in open(f(f"{s}-bench.time")).read().split()[-2:])
    x = dict(
        ops=ops, p50=p50, secs=end - start, samples=len(during), good=len(good),
        link_down=sum(1 for x in during if x[4] != "up"),
        rtt_med=statistics.median(x[5] for x in during) if during else float("nan"),
        rtt_max=max((x[5] for x in during), default=float("nan")),
        med=statistics.median(l[0] for l in lags) if lags else float("nan"),
        med_lo=statistics.median(l[1] for l in lags) if lags else float("nan"),
        med_hi=statistics.median(l[2] for l in lags) if lags else float("nan"),
        max=max(lags)[0] if lags else float("nan"),
        max_lo=max(lags)[1] if lags else float("nan"), max_hi=max(lags)[2] if lags else float("nan"),
        hi_max=max((l[2] for l in lags), default=float("nan")),
        final=final, offset0=offset0, per_set=per_set, caught=caught,
        catch_ms=(caught - load_end) * 1000 if caught else None,
        catch_replica=int(catch[5]), polls=int(catch[6]), final_after_ms=(final_read - load_end) * 1000,
        woke_ms=(float(catch[7]) - load_end) * 1000,
        pdb=pdb, rdb=rdb, syncs=syncs,
        primary_cpu=(t1[0] - t0[0]) / hz, replica_cpu=(t1[1] - t0[1]) / hz,
        cpu_busy=(st1[sc][0] - st0[sc][0]) / hz, steal=(st1[sc][1] - st0[sc][1]) / hz,
        client_busy=(st1[cc][0] - st0[cc][0]) / hz, client_steal=(st1[cc][1] - st0[cc][1]) / hz,
        bench_cpu=bench_cpu, not_ours=((t1[3] - t0[3]) - (t1[2] - t0[2])) / hz, stolen=(t1[4] - t0[4]) / hz,
        load=open(f(f"{s}.load")).read().strip(),
        replica_info_offset=ri.get("slave_repl_offset", "?"),
    )
    # Other users of the machine and the hypervisor (steal); the largest other processes by
    # CPU between the readings (with what they reaped, so a long child counts in full).
    def procs(i):
        r = {}
        for l in open(f(f"{s}.procs{i}")):
            pid, start, t, kind, name = l.split(maxsplit=4)
            r[(pid, start)] = (int(t), kind, name.strip())
        return r
    pr0, pr1 = procs(0), procs(1)
    # A process started since the first reading counts with all its time.
    used = [(t - pr0.get(key, (0,))[0], kind, name) for key, (t, kind, name) in pr1.items()]
    top = sorted(((d, name) for d, kind, name in used if kind == "u" and d > 0), reverse=True)
    ktop = sorted(((d, name) for d, kind, name in used if kind == "k" and d > 0), reverse=True)
    x["top"] = ", ".join(f"{name} {d / hz:.2f} s" for d, name in top[:3]) or "none"
    x["ktop"] = ", ".join(f"{name} {d / hz:.2f} s" for d, name in ktop[:3]) or "none"
    x["others"] = sum(d for d, _ in top) / hz
    x["kernel"] = sum(d for d, _ in ktop) / hz
    x["unattributed"] = x["not_ours"] - x["others"] - x["kernel"]
    stolen = x["stolen"]
    if x["others"] + stolen > 0.05 * x["secs"]:
        cautions.append(f"{s}: during the {x['secs']:.1f} s load other processes used {x['others']:.2f} s of CPU "
                        f"(largest: {x['top']}) and the hypervisor stole {stolen:.2f} s (over 5% of one CPU): "
                        "the figures are disturbed")
    x["max_sets"] = x["max"] / per_set if per_set and per_set == per_set else float("nan")
    x["med_sets"] = x["med"] / per_set if per_set and per_set == per_set else float("nan")
    m[s] = x
    if caught is None:
        problems.append(f"{s}: the replica did NOT reach the primary's final offset {final} "
                        f"(last read {x['catch_replica']}, {x['polls']} polls)")
    if pdb != rdb:
        problems.append(f"{s}: DBSIZE differs, primary {pdb}, replica {rdb}")
    if x["link_down"]:
        problems.append(f"{s}: {x['link_down']} of {x['samples']} samples during the load saw master_link_status other than up")
    if x["good"] < x["samples"]:
        problems.append(f"{s}: {x['samples'] - x['good']} samples without an offset (no reply)")
    if os.path.exists(f(f"{s}.died")):
        problems.append(f"{s}: " + open(f(f"{s}.died")).read().strip().replace("\n", "; "))
    if syncs[0] not in ("1", "?") or syncs[1] not in ("0", "?"):
        problems.append(f"{s}: the primary counted {syncs[0]} full and {syncs[1]} partial syncs (1 and 0 expected: the link was re-established)")

t, r = m["tessera"], m["redis"]
ratio = t["ops"] / r["ops"]
unit = {"tessera": "records", "redis": "bytes"}

def n(v, fmt="{:,.0f}"):
    return "n/a" if v is None or v != v else fmt.format(v)

table = [
    "| server | SET/s | lag unit | median lag (bounds) | max lag (bounds) | max lag in SETs | catch-up after the load, ms | DBSIZE primary / replica |",
    "|---|---|---|---|---|---|---|---|",
]
for s in ("tessera", "redis"):
    x = m[s]
    catch = ((("≤ " if x["polls"] == 1 else "") + n(x["catch_ms"], "{:,.1f}")) if x["catch_ms"] is not None
             else "not within the deadline")
    table.append(f"| {s} | {x['ops']:,.0f} | {unit[s]} | {n(x['med'])} ({n(x['med_lo'])}–{n(x['med_hi'])}) | "
                 f"{n(x['max'])} ({n(x['max_lo'])}–{n(x['max_hi'])}) | {n(x['max_sets'])} | "
                 f"{catch} | {x['pdb']} / {x['rdb']} |")
summary = [f"SET/s ratio tessera / Redis: {ratio:.2f}"]
summary += [f"PROBLEM: {p}" for p in problems] + [f"CAUTION: {c}" for c in cautions]
print("\n".join(table + [""] + summary))

lines = [
    f"# Replication lag under a write load: tessera vs redis-server {redis_v}",
    "",
    f"Date: {now}. Machine: {ncpu} CPUs ({cpu}), kernel {platform.release()}. "
    f"{tessera_v} (binary `{tessera}`, built {built}; the repository was at commit {commit} when the script ran); redis-server and redis-benchmark {redis_v}.",
    f"Load average before each pair: tessera {t['load']}, redis {r['load']}.",
    "",
    "Command:",
    "",
    "```sh",
    command,
    "```",
    "",
    "One primary + replica pair at a time, each with no save rules and a fresh dir:",
    "",
    "```sh",
    f"taskset -c {server_cpu} tessera --port P --cores 1 --save \"\" --dir D",
    f"taskset -c {server_cpu} tessera --port R --cores 1 --save \"\" --dir D2 --replicaof \"127.0.0.1 P\"",
    f"taskset -c {server_cpu} redis-server --port P --save '' --appendonly no --bind 127.0.0.1 --dir D",
    f"taskset -c {server_cpu} redis-server --port R --save '' --appendonly no --bind 127.0.0.1 --dir D2 --replicaof 127.0.0.1 P",
    f"taskset -c {client_cpu} redis-benchmark -p P -t set -n {requests} -P {pipeline} -c {conns} -r {rkeys} -d {size} -q",
    "```",
    "",
    f"CPUs: redis-benchmark alone on CPU {client_cpu}; the primary and its replica share CPU {server_cpu}, so the",
    "replica never competes with the load generator, and the throughput is the primary's with its",
    "replica applying the stream on the same core (the same for both servers). The sampler, this",
    f"script and redis-cli run on CPU {client_cpu}. The load starts once the replica shows `master_link_status:up`.",
    "",
    *table,
    "",
    f"SET/s ratio tessera / Redis: **{ratio:.2f}**.",
    "",
    "## What the figures mean",
    "",
    f"- **SET/s**: redis-benchmark's requests per second for the whole load ({requests:,} SETs, "
    f"pipeline {pipeline}, {conns} connections, {size}-byte values, keys drawn from {rkeys:,}).",
    f"- **Lag** = primary `master_repl_offset` - replica `slave_repl_offset`, sampled every {sample_s} s "
    "during the load over one persistent connection to each. Under this load an INFO reply takes",
    "  milliseconds (both servers share a saturated CPU; see \"sample ms\" below), long enough for the",
    "  primary to take hundreds of writes, so each sample reads the primary, then the replica, then the",
    "  primary again (p1, r, p2): the replica's offset was taken between the two primary reads, so the",
    "  true lag at that moment lies between p1 - r and p2 - r (the **bounds**), and the figure shown is",
    "  the middle. Median: of the middles (bounds: medians of the lower and of the upper bounds); max:",
    "  the sample with the largest middle, with its own bounds.",
    "  Each server's own unit: tessera's offsets are the sum of its per-shard ring positions, one per",
    "  write, so its lag is in **records** (here one record per SET); Redis's are **bytes** of the",
    "  replication stream. The two are not comparable as they stand.",
    f"  Both servers answer an INFO between rounds of client batches, so the primary's offset moves",
    f"  in steps of about {int(conns) * int(pipeline):,} writes ({conns} connections × pipeline {pipeline}) from one read",
    "  to the next: lags and bounds come in multiples of about that, which is the resolution here.",
    f"- **Max lag in SETs**: the lag divided by how much the primary's offset grew per SET in this run "
    f"(tessera {t['per_set']:.3f} records, Redis {r['per_set']:.1f} bytes), so both read as writes not yet applied.",
    "- **Catch-up after the load**: from redis-benchmark's exit (every SET answered) to the first reply in",
    "  which the replica's offset had reached the primary's offset read right after the load; the replica",
    "  is polled every ~1 ms, so the figure is good to a millisecond or two (\"≤\": the replica had already",
    "  reached it at the first poll, so the figure is only the time to ask). Unit-free, comparable.",
    "- **DBSIZE** of primary and replica after the catch-up.",
    "- Details: *sample ms* is the time one sample's three INFO replies took; *max lag ÷ SET rate* is the",
    "  max lag in SETs over the load's SET/s, i.e. how many ms of writes the replica was behind at worst.",
    "  CPU seconds over the load and the catch-up: processes' user + system from /proc (redis-benchmark's from",
    "  `/usr/bin/time`), each CPU's busy time and steal from /proc/stat; *other processes* = every",
    "  user-space process outside this script's tree (other users of the machine); *kernel threads*",
    "  (kworker, ksoftirqd, …) work largely for this run's I/O and memory;",
    "  *no process's* = busy time less all processes' (interrupt work the kernel charged to an idle",
    "  CPU, e.g. loopback network processing; below zero when a process reaped in the window brought",
    "  older CPU time with it); *syncs* are the primary's counts",
    "  (tessera `tessera_full_syncs` / `tessera_partial_syncs`, Redis `sync_full` / `sync_partial_ok`):",
    "  1 / 0 means the replica's first sync held for the whole run.",
    "",
    "## Details",
    "",
    "| server | load s | p50 ms | samples in the load | samples with link not up | sample ms (3 INFOs), median / max | median lag | max lag | largest upper bound | max lag ÷ SET rate, ms | offset before → after the load | offset per SET | "
    f"primary / replica CPU s | CPU {server_cpu} busy s | redis-benchmark CPU s | CPU {client_cpu} busy s | other processes' CPU s | kernel threads' CPU s | no process's CPU s | steal s | syncs full / partial |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for s in ("tessera", "redis"):
    x = m[s]
    lines.append(
        f"| {s} | {x['secs']:.2f} | {x['p50']:.3f} | {x['samples']} | {x['link_down']} | {x['rtt_med']:.2f} / {x['rtt_max']:.2f} | {n(x['med'])} {unit[s]} "
        f"({n(x['med_sets'])} SETs) | {n(x['max'])} {unit[s]} ({n(x['max_sets'])} SETs) | {n(x['hi_max'])} | {n(x['max_sets'] / x['ops'] * 1000, '{:.1f}')} | {x['offset0']:,} → {x['final']:,} | "
        f"{x['per_set']:.3f} | {x['primary_cpu']:.2f} / {x['replica_cpu']:.2f} | {x['cpu_busy']:.2f} | "
        f"{x['bench_cpu']:.2f} | {x['client_busy']:.2f} | {x['others']:.2f} | {x['kernel']:.2f} | {x['unattributed']:.2f} | {x['stolen']:.2f} | "
        f"{x['syncs'][0]} / {x['syncs'][1]} |")
lines.append("")
for s in ("tessera", "redis"):
    x = m[s]
    lines.append(f"- {s}: other processes that used the most CPU during the load: {x['top']}; kernel threads: {x['ktop']}.")
    lines.append(f"- {s}: the sampler heard of the load's end {x['woke_ms']:.1f} ms after it and had the primary's "
                 f"final offset {x['final_after_ms']:.1f} ms after it; the replica was "
                 f"polled {x['polls']} times until it reached it (last read {x['catch_replica']:,}).")
lines += ["", "Checks: " + ("all passed (replicas caught up, DBSIZE equal, link up in every sample, one full sync each)."
                             if not problems else "")]
lines += [f"- **PROBLEM**: {p}" for p in problems]
lines += [f"- **CAUTION**: {c}" for c in cautions]
if not cautions:
    lines.append("- No other load: other processes' CPU plus steal stayed under 5% of one CPU during each load.")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(f"written to {out}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
