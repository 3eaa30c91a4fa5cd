# shellcheck shell=bash
# Helpers shared by the benchmark scripts in benches/. Each script sources it first:
#
#   . "$(dirname "$0")/lib.sh"
#
# Only functions are defined here. Where a function reads one of the script's settings
# (SERVER_CPU, START_DEADLINE_S, ...) or keeps state in the script's globals (the cluster
# helpers: IP, PORT, FD, NODE_PID, R, F, ...), its comment says which.

# ---------------------------------------------------------------------------- setup

# Prints "<script name>: message" on stderr and stops the script.
die() { # message...
  echo "${0##*/}: $*" >&2
  exit 1
}

# Installs Debian packages with apt-get, quietly. When the package lists cannot be updated
# it installs nothing and returns 0 (the caller finds out when it needs the command).
apt_install() { # package...
  if apt-get update -qq; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# Installs redis-server and redis-tools (redis-cli, redis-benchmark) when any of the given
# commands is missing.
need_redis() { # command...
  local c
  for c in "$@"; do
    if ! command -v "$c" >/dev/null; then
      apt_install redis-server redis-tools
      return 0
    fi
  done
}

# cargo build --release with the given arguments, quietly; if it fails, again with cargo's
# output shown (and the script stops there).
build_release() { # cargo-args...
  cargo build --release "$@" >/dev/null 2>&1 || cargo build --release "$@"
}

# Prints the command as run, for the results file: "NAME=value " for each of the given
# settings that came from the environment, then the script's path.
command_line_of() { # script setting-name...
  local script=$1 v line=""
  shift
  for v in "$@"; do
    if printenv "$v" >/dev/null; then line+="$v=${!v} "; fi
  done
  echo "$line$script"
}

# Prints the commit the repository is at (short hash, or "unknown"), followed by " with
# uncommitted changes" when the sources differ from it.
source_commit() {
  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- src shards tools Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    commit+=" with uncommitted changes"
  fi
  echo "$commit"
}

# Pins this script's own process to CPU $1, so every command it starts from then on
# inherits that CPU (unless started under a taskset of its own).
pin_script() { # cpu
  taskset -cp "$1" $$ >/dev/null
}

# Prints COUNT free TCP ports on 127.0.0.1, separated by spaces; they are bound all at once,
# so they differ.
free_ports() { # count
  python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))' "$1"
}

# Stops the given processes: SIGTERM, up to 5 s for them to exit, then SIGKILL to any left;
# then reaps every child of the script.
stop_pids() { # pid...
  local p alive
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# The EXIT trap of the scripts that keep the pids of the processes they start in the array
# pids and their files in the directory $work (both the script's): stops those processes
# (stop_pids) and removes $work.
# shellcheck disable=SC2154 # pids and work are the script's
cleanup_pids_and_work() {
  stop_pids "${pids[@]}"
  rm -rf "$work"
}

# ---------------------------------------------------------------------------- servers

# redis-cli against 127.0.0.1 port $1 with the other arguments, given up after 10 s.
rcli() { # port args...
  local port=$1
  shift
  timeout 10 redis-cli -p "$port" "$@"
}

# Starts tessera binary BIN in the background, pinned to CPU with taskset and running its one
# data core there (--port PORT --cores 1 --cpus CPU, then the other arguments); its stdout
# and stderr go to LOG. Its pid is in $! afterwards.
start_tessera() { # bin cpu port log args...
  local bin=$1 cpu=$2 port=$3 log=$4
  shift 4
  taskset -c "$cpu" "$bin" --port "$port" --cores 1 --cpus "$cpu" "$@" >"$log" 2>&1 &
}

# Starts redis-server in the background, pinned to CPU with taskset, on 127.0.0.1 PORT with
# no persistence (--bind 127.0.0.1 --save '' --appendonly no, then the other arguments); its
# stdout and stderr go to LOG. Its pid is in $! afterwards.
start_redis() { # cpu port log args...
  local cpu=$1 port=$2 log=$3
  shift 3
  taskset -c "$cpu" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    "$@" >"$log" 2>&1 &
}

# Waits until the server on port $1 answers PING: 200 tries, 50 ms apart; stops the script
# if it never does.
wait_up() { # port
  for _ in $(seq 1 200); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2
  exit 1
}

# Waits until the server on port PORT (process PID, called NAME in messages, output in LOG)
# answers PING, for up to START_DEADLINE_S (the script's) seconds. Stops the script, showing
# LOG, if the process exits first or the time runs out.
wait_ping() { # port pid name log
  local port=$1 pid=$2 name=$3 log=$4 deadline=$((SECONDS + START_DEADLINE_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$name exited during start-up (log above)"; }
    [ "$(rcli "$port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  cat "$log" >&2
  die "$name did not answer PING on port $port within ${START_DEADLINE_S}s"
}

# Starts tessera ($TESSERA; with DRY_RUN=redis a second redis-server in its place) on
# PORT_TESSERA and redis-server on PORT_REDIS, both pinned to SERVER_CPU with
# `--loglevel warning` and their logs in WORK (tessera.log, redis.log); adds their pids to
# the array pids and sets pid_tessera and pid_redis; then waits until both answer PING
# (wait_ping). All those names are the script's.
start_tessera_and_redis() { # work
  local work=$1
  if [ "$DRY_RUN" = redis ]; then
    start_redis "$SERVER_CPU" "$PORT_TESSERA" "$work/tessera.log" --loglevel warning
  else
    start_tessera "$TESSERA" "$SERVER_CPU" "$PORT_TESSERA" "$work/tessera.log" --loglevel warning
  fi
  pid_tessera=$!
  pids+=("$pid_tessera")
  start_redis "$SERVER_CPU" "$PORT_REDIS" "$work/redis.log" --loglevel warning
  pid_redis=$!
  pids+=("$pid_redis")
  wait_ping "$PORT_TESSERA" "$pid_tessera" tessera "$work/tessera.log"
  wait_ping "$PORT_REDIS" "$pid_redis" redis-server "$work/redis.log"
}

# Prints the port of server tessera or redis: the script's PORT_TESSERA or PORT_REDIS.
port_of() { # tessera|redis
  if [ "$1" = tessera ]; then echo "$PORT_TESSERA"; else echo "$PORT_REDIS"; fi
}

# Prints field FIELD of INFO section SECTION on port PORT, or n/a when the server does not
# report it (or does not answer: that does not stop the script).
info_value() { # port section field
  local v
  v=$(rcli "$1" info "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f { print $2 }') || true
  echo "${v:-n/a}"
}

# Loads the script's KEYS keys of VALUE_BYTES-byte values into server NAME on port PORT
# with tessera-bench ($BENCH --populate, pinned to CLIENT_CPU, CONNECTIONS connections, at
# most LOAD_DEADLINE_S seconds), its output in OUT. Stops the script, showing OUT, if the
# load fails, or if DBSIZE is not KEYS after it.
populate() { # name port out
  local server=$1 port=$2 out=$3 got
  # --populate SETs every key once, in order; -n 1 is one GET after it.
  timeout "$LOAD_DEADLINE_S" taskset -c "$CLIENT_CPU" "$BENCH" -p "$port" --cpus "$CLIENT_CPU" -q \
    -c "$CONNECTIONS" --keys "$KEYS" --value-size "$VALUE_BYTES" --populate -n 1 --ratio 0:1 \
    >"$out" 2>&1 || { cat "$out" >&2; die "loading $server failed"; }
  got=$(rcli "$port" dbsize)
  [ "$got" = "$KEYS" ] || die "$server holds $got keys after loading, not $KEYS"
}

# Stops one server: SIGTERM, up to 10 s for it to exit, then SIGKILL; reaps it.
stop_server() { # pid
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------------------- cluster scripts
#
# For cluster-detection.sh and failover.sh. Their state lives in the script's globals:
# IP (node key -> ip; the script fills it), PORT (every node's port), FD (node key -> fd
# of an open connection), NODE_PID (node key -> pid of a running tessera), R (the last
# reply, set by query), F (set by info_field), and the settings BUSY_PCT, RETRIES,
# RETRY_PAUSE_S, LOG_DIR and VERBOSE.

# Stops the script, naming the first missing tool and HINT (how to install it), unless
# every given tool is on PATH.
need_tools() { # hint tool...
  local hint=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "needs $tool ($hint)" >&2; exit 1; }
  done
}

# Builds tessera and tessera-ctl (release) into cargo's target dir TARGET, which the
# message on stderr names; cargo's output goes to stderr too.
build_cluster_binaries() { # target
  echo "building: cargo build --release -p tessera -p tessera-ctl (target dir $1)" >&2
  cargo build --release -p tessera -p tessera-ctl >&2
}

# Stops the script unless every given file is executable.
need_executables() { # file...
  local b
  for b in "$@"; do
    [[ -x $b ]] || { echo "not executable: $b" >&2; exit 1; }
  done
}

# Prints which binaries the run uses (the script's TESSERA_BIN and TESSERA_CTL) and where
# they came from: built by the script (BUILT=yes) from the source tree, or given, with the
# tessera binary's date, after DATE_PREFIX ("" or "built ").
print_binaries() { # date_prefix
  local tree
  tree=$(git describe --always --dirty 2>/dev/null || echo unknown)
  if [[ $BUILT == yes ]]; then
    echo "binaries built by this script from $tree: $TESSERA_BIN, $TESSERA_CTL"
  else
    echo "binaries given: $TESSERA_BIN ($1$(date -u -r "$TESSERA_BIN" +%Y-%m-%dT%H:%MZ)), $TESSERA_CTL;"
    echo "the source tree is at $tree now (the binaries may be older)"
  fi
}

# A progress line on stderr, with the time.
log() { # message...
  echo "[$(date +%H:%M:%S)] $*" >&2
}

# What else used the machine: CPU time (utime+stime+cutime+cstime, /proc/PID/stat) of
# every process but this script (whose children's time lands in its own cutime) and its
# nodes (NODE_PID), and the time the hypervisor stole (/proc/stat). Another test run on the
# same CPUs skews every figure; a window's numbers say how much it did.
cpu_sample() { # -> CPU_OTHERS, CPU_STEAL (ms since boot)
  local ours=" $$ ${NODE_PID[*]} " f pid line ticks=0 steal tick_ms
  local -a fl
  tick_ms=$((1000 / $(getconf CLK_TCK)))
  for f in /proc/[0-9]*/stat; do
    pid=${f#/proc/}
    pid=${pid%/stat}
    [[ $ours == *" $pid "* ]] && continue
    { read -r line <"$f"; } 2>/dev/null || continue
    read -r -a fl <<<"${line##*) }"
    ticks=$((ticks + fl[11] + fl[12] + fl[13] + fl[14]))
  done
  CPU_OTHERS=$((ticks * tick_ms))
  read -r _ _ _ _ _ _ _ _ steal _ </proc/stat
  CPU_STEAL=$((steal * tick_ms))
}

# A window (between `cpu_window start` and `cpu_window end`) is busy when others' CPU plus
# steal exceed BUSY_PCT % of its length. At the end it sets CPU_OD and CPU_SD (others' CPU
# and steal in the window, ms), CPU_BUSY (1 if busy) and OTHERS_TEXT (all that, in words).
cpu_window() { # start|end
  cpu_sample
  if [[ $1 == start ]]; then
    CPU_O0=$CPU_OTHERS CPU_S0=$CPU_STEAL CPU_T0=${EPOCHREALTIME/./}
  else
    local o=$((CPU_OTHERS - CPU_O0)) st=$((CPU_STEAL - CPU_S0))
    local wall=$(((${EPOCHREALTIME/./} - CPU_T0) / 1000))
    ((o < 0)) && o=0
    # shellcheck disable=SC2034 # CPU_OD and CPU_SD are for the script
    CPU_OD=$o CPU_SD=$st CPU_BUSY=0
    (((o + st) * 100 > BUSY_PCT * wall)) && CPU_BUSY=1
    OTHERS_TEXT="others ${o} ms CPU, steal ${st} ms in ${wall} ms"
  fi
  return 0
}

# Runs the given command (a repeat or round that ends with `cpu_window end`), and runs it
# again while the machine was busy during it (CPU_BUSY), at most RETRIES more times,
# RETRY_PAUSE_S seconds apart. When it ran more than once, says so at the end of NOTES.
run_unless_busy() { # command args...
  local try=0
  while true; do
    "$@"
    ((CPU_BUSY && try < RETRIES)) || break
    try=$((try + 1))
    log "  busy ($OTHERS_TEXT): again in $RETRY_PAUSE_S s (retry $try/$RETRIES)"
    sleep "$RETRY_PAUSE_S"
  done
  ((try)) && NOTES+="; run $((try + 1)) times (busy)"
  return 0
}

# Opens a connection to node KEY (IP[key]:PORT) and keeps its fd in FD[key]; returns 1 if
# the node does not accept it.
connect() { # key
  local fd
  # shellcheck disable=SC2153 # PORT is the script's, not a misspelt port
  if { exec {fd}<>"/dev/tcp/${IP[$1]}/$PORT"; } 2>/dev/null; then
    FD[$1]=$fd
    return 0
  fi
  return 1
}

# Closes node KEY's connection, if it has one.
disconnect() { # key
  local fd=${FD[$1]:-}
  if [[ -n $fd ]]; then exec {fd}>&-; fi
  unset "FD[$1]"
}

# Sends a prepared command on the node's connection (opened if needed); the reply text is
# left in R. Returns 1 on an I/O error (the connection is then closed), 2 on an error reply.
query() { # key payload
  local fd head len
  if [[ -z ${FD[$1]:-} ]]; then connect "$1" || return 1; fi
  fd=${FD[$1]}
  if ! printf '%s' "$2" 1>&"$fd" 2>/dev/null; then disconnect "$1"; return 1; fi
  if ! IFS= read -r -t 2 -u "$fd" head; then disconnect "$1"; return 1; fi
  head=${head%$'\r'}
  case $head in
    \$*)
      len=${head#\$}
      # No -t here: with a timeout bash reads a byte per syscall (7 ms for 10 KB); the
      # header above, read with one, shows the node is answering.
      if ! IFS= read -r -N "$((len + 2))" -u "$fd" R; then disconnect "$1"; return 1; fi
      R=${R%$'\r\n'}
      ;;
    +*) R=${head#+} ;;
    -*) R=${head#-}; return 2 ;;
    *) disconnect "$1"; return 1 ;;
  esac
}

# Sets F to the value of FIELD in the INFO-style TEXT ("field:value" lines), or to "" when
# it is not there. (No subshell: the poll loops fork as little as they can.)
info_field() { # text field -> F
  F=${1#*"$2":}
  if [[ $F == "$1" ]]; then F=''; else F=${F%%$'\r'*}; fi
}

# Closes every node connection (FD) and kills (-9) and reaps every node still running
# (NODE_PID). For the scripts' EXIT traps.
kill_all_nodes() {
  local k pid
  for k in "${!FD[@]}"; do disconnect "$k"; done
  for k in "${!NODE_PID[@]}"; do
    pid=${NODE_PID[$k]}
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  NODE_PID=()
}

# Sleeps what is left of PERIOD_MS milliseconds since START_US (microseconds, as
# ${EPOCHREALTIME/./}), if that is more than a millisecond.
sleep_rest() { # period_ms start_us
  local left=$(($1 * 1000 - (${EPOCHREALTIME/./} - $2))) p
  if ((left > 1000)); then
    printf -v p '%d.%06d' $((left / 1000000)) $((left % 1000000))
    sleep "$p"
  fi
}

# Prints "min median max" over the values that are whole numbers ("- - -" if none).
stats() { # values...
  local sorted n med
  mapfile -t sorted < <(printf '%s\n' "$@" | grep -E '^-?[0-9]+$' | sort -n)
  n=${#sorted[@]}
  if ((n == 0)); then echo "- - -"; return; fi
  if ((n % 2)); then
    med=${sorted[n / 2]}
  else
    med=$(((sorted[n / 2 - 1] + sorted[n / 2]) / 2))
  fi
  echo "${sorted[0]} $med ${sorted[n - 1]}"
}

# Forms a cluster with `CTL create ARGS...`, its output in OUT. Stops the script, showing
# that output, unless it succeeds and reports every slot covered.
create_cluster() { # ctl out args...
  local ctl=$1 out=$2
  shift 2
  if ! "$ctl" create "$@" >"$out" 2>&1 || ! grep -q "All 16384 slots covered." "$out"; then
    echo "tessera-ctl create failed:" >&2
    cat "$out" >&2
    exit 1
  fi
}

# At the end of a round or repeat: copies the node logs and create.out in DIR and the poll
# TRACE to LOG_DIR/TAG when LOG_DIR is set, prints the trace when VERBOSE is 1, and removes
# DIR and TRACE.
keep_round_logs() { # dir trace tag
  local dir=$1 trace=$2 tag=$3
  if [[ -n $LOG_DIR ]]; then
    mkdir -p "$LOG_DIR/$tag"
    cp "$dir"/*.log "$dir/create.out" "$trace" "$LOG_DIR/$tag/"
  fi
  if [[ $VERBOSE == 1 ]]; then cat "$trace" >&2; fi
  rm -rf "$dir" "$trace"
}
