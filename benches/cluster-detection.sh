#!/usr/bin/env bash
# Cluster failure detection, rejoin and forwarding cost, measured with real processes.
#
# Part 1, detection. For clusters of 3 nodes (127.0.31.1-3) and 6 nodes (127.0.32.1-6), with
# the default membership settings (no flags: probe every 200 ms, suspect timeout 2000 ms)
# and with `--cluster-probe-interval-ms 100 --cluster-suspect-timeout-ms 1000`, REPEATS
# times each, on fresh nodes (`--cores 1 --save "" --cluster-enabled yes`, bus port +10000):
#   1. form the cluster with `tessera-ctl create`;
#   2. kill -9 one node (node ((repeat-1) mod n)+1, so a different one each repeat) and poll
#      CLUSTER NODES and CLUSTER INFO on every survivor every POLL_MS (20) ms, at most
#      DEADLINE_MS (30000) ms, over one open connection per node; times are from the kill:
#        suspect  every survivor lists the victim with `fail?` or `fail`
#        dead     every survivor lists it with `fail`
#        placed   every survivor reports cluster_state:ok and a cluster_current_epoch above
#                 the one before the kill, and lists the victim with no slots
#   3. restart it with the same port and --dir (same id, from nodes.conf); from the restart:
#        rejoin   every node reports cluster_state:ok and lists all n nodes without a fail
#                 flag, and every node lists the restarted node with slots
#        stable   the start of the first SETTLE_MS (2000) ms in which that held in every
#                 poll (fail? flags that come back after `rejoin` move it later)
# Times come from `date +%s%3N` taken after each poll round (a round is POLL_MS plus the
# queries), so each is an upper bound within one round. Node logs ("cluster: node X is ...")
# are checked for live nodes suspected, and for the victim flapping.
#
# Part 2, forwarding cost. Every tessera process pinned to SERVER_CPU (1) with taskset and
# `--cores 1`, redis-benchmark pinned to CLIENT_CPU (0); `redis-benchmark -t set,get
# -n BENCH_REQUESTS -c 50 -P 1|16 -r KEYSPACE` (-r spreads keys over slots: without it
# every request uses one key) against (a) one standalone node, (b) node 1 of a 3-node
# cluster in forward mode, (c) the same cluster with `redis-benchmark --cluster`. Median
# requests/s of BENCH_REPEATS runs and the ratios (b)/(a), (c)/(a). --cluster makes
# redis-benchmark run one thread per master, and in that mode the elapsed time it counts
# comes in steps of about 250 ms, which caps (c) near -n/0.5 s for short runs; (c2)
# repeats (c) with more requests (C2_REQUESTS_P1 at P=1, C2_REQUESTS_P16 at P=16) so that
# the step is a few percent of the run.
#
# Usage:
#   benches/cluster-detection.sh          # everything: about 7 minutes on a quiet 2-CPU machine
#   REPEATS=3 PARTS=detection SIZES=3 benches/cluster-detection.sh
#   TESSERA_BIN=path/tessera TESSERA_CTL=path/tessera-ctl benches/cluster-detection.sh
# Environment (defaults): REPEATS (5), SIZES ("3 6"), SETTINGS ("default fast"),
#   PARTS ("detection forwarding"), PORT (7430), POLL_MS (20), DEADLINE_MS (30000),
#   SETTLE_MS (2000), BENCH_REQUESTS (200000), BENCH_REPEATS (5), KEYSPACE (100000),
#   C2_REQUESTS_P1 (500000), C2_REQUESTS_P16 (2000000): the (c2) run, see above,
#   SERVER_CPU (1), CLIENT_CPU (0), LOG_DIR (unset: node logs and poll traces are deleted
#   with the temp dir; set: copied there), VERBOSE (0; 1 prints every poll trace),
#   BUSY_PCT (10), RETRIES (3), RETRY_PAUSE_S (30): a repeat or run during which other
#   processes' CPU time plus hypervisor steal passed BUSY_PCT % of its length is done again
#   after RETRY_PAUSE_S, at most RETRIES times, and marked if it stays busy.
# Without TESSERA_BIN/TESSERA_CTL it builds them: cargo build --release -p tessera
#   -p tessera-ctl (CARGO_TARGET_DIR is honoured). Needs bash >= 5.0, redis-cli,
#   redis-benchmark (part 2) and taskset. Every process and temp dir is removed on exit.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-5}
SIZES=${SIZES:-"3 6"}
SETTINGS=${SETTINGS:-"default fast"}
PARTS=${PARTS:-"detection forwarding"}
PORT=${PORT:-7430}
POLL_MS=${POLL_MS:-20}
DEADLINE_MS=${DEADLINE_MS:-30000}
SETTLE_MS=${SETTLE_MS:-2000}
BENCH_REQUESTS=${BENCH_REQUESTS:-200000}
BENCH_REPEATS=${BENCH_REPEATS:-5}
C2_REQUESTS_P1=${C2_REQUESTS_P1:-500000}
C2_REQUESTS_P16=${C2_REQUESTS_P16:-2000000}
KEYSPACE=${KEYSPACE:-100000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
LOG_DIR=${LOG_DIR:-}
VERBOSE=${VERBOSE:-0}
BUSY_PCT=${BUSY_PCT:-10}
RETRIES=${RETRIES:-3}
RETRY_PAUSE_S=${RETRY_PAUSE_S:-30}
FAST_FLAGS=(--cluster-probe-interval-ms 100 --cluster-suspect-timeout-ms 1000)

# ---------------------------------------------------------------------------- setup

need_tools "apt-get install -y redis-tools util-linux" redis-cli taskset
BUILT=no
if [[ -z ${TESSERA_BIN:-} || -z ${TESSERA_CTL:-} ]]; then
  BUILT=yes
  target=${CARGO_TARGET_DIR:-target}
  build_cluster_binaries "$target"
  TESSERA_BIN=${TESSERA_BIN:-$target/release/tessera}
  TESSERA_CTL=${TESSERA_CTL:-$target/release/tessera-ctl}
fi
need_executables "$TESSERA_BIN" "$TESSERA_CTL"

TMP=$(mktemp -d /tmp/tessera-cluster-detection.XXXXXX)
declare -A NODE_PID=() # node key -> pid of a running tessera
declare -A FD=()       # node key -> fd of an open connection
declare -A IP=()       # node key -> ip

cleanup() {
  kill_all_nodes
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap '' PIPE # a write to a closed socket fails instead of killing the script

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------- RESP over /dev/tcp

Q_NODES=$'*2\r\n$7\r\nCLUSTER\r\n$5\r\nNODES\r\n'
Q_INFO=$'*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n'
Q_MYID=$'*2\r\n$7\r\nCLUSTER\r\n$4\r\nMYID\r\n'
R=''  # query's reply
F=''  # info_field's result

# ---------------------------------------------------------------------------- processes

# Starts (or restarts) node `key` on IP[key]:PORT with its dir; extra args follow.
start_node() { # key dir pin(yes|no) args...
  local key=$1 dir=$2 pin=$3 t
  shift 3
  mkdir -p "$dir"
  if [[ $pin == yes ]]; then
    taskset -c "$SERVER_CPU" "$TESSERA_BIN" --bind "${IP[$key]}" --port "$PORT" --dir "$dir" \
      --save "" --cores 1 "$@" >/dev/null 2>>"$dir.log" &
  else
    "$TESSERA_BIN" --bind "${IP[$key]}" --port "$PORT" --dir "$dir" \
      --save "" --cores 1 "$@" >/dev/null 2>>"$dir.log" &
  fi
  NODE_PID[$key]=$!
  t=$(($(now_ms) + 10000))
  until connect "$key"; do
    if (($(now_ms) > t)) || ! kill -0 "${NODE_PID[$key]}" 2>/dev/null; then
      echo "node ${IP[$key]}:$PORT did not start:" >&2
      tail -n 20 "$dir.log" >&2
      exit 1
    fi
    sleep 0.02
  done
  disconnect "$key"
}

stop_node() { # key [signal]: TERM (KILL after 5 s) unless told
  local pid=${NODE_PID[$1]:-} t
  disconnect "$1"
  [[ -z $pid ]] && return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  t=$(($(now_ms) + 5000))
  while kill -0 "$pid" 2>/dev/null && (($(now_ms) < t)); do sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "NODE_PID[$1]"
}

# Frees the port on every address of the run before starting (a node left by a killed run).
check_free() { # ip
  if { exec {probe}<>"/dev/tcp/$1/$PORT"; } 2>/dev/null; then
    exec {probe}>&-
    echo "$1:$PORT is already in use; set PORT to a free port" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------------------- part 1

# Results of one repeat (globals, read by the caller).
T_FORM='' T_SUSPECT='' T_DEAD='' T_PLACED='' T_DOWN='' T_UP='' T_VOK='' T_REJOIN='' T_STABLE=''
T_RDOWN=''
ROUND_MS='' NOTES=''

# The flags CLUSTER NODES text R gives the node at addr ("" if not listed); FL_SLOTS=1 if
# it lists slots for it. A regex: bash's own pattern expansion is quadratic on 10 KB texts.
FL='' FL_SLOTS=0
flags_of() { # addr
  local re="${1//./\\.}@[0-9]+ ([^ ]+) [^ ]+ [^ ]+ [^ ]+ [^ ]+ [^ "$'\r\n'"]+( [0-9])?"
  FL='' FL_SLOTS=0
  if [[ $R =~ $re ]]; then
    FL=${BASH_REMATCH[1]}
    [[ -n ${BASH_REMATCH[2]} ]] && FL_SLOTS=1
  fi
  return 0
}

# Every listed node whose flags say fail? or fail, as " addr:flags".
failing_in_R() { # addr...
  local a out=''
  for a in "$@"; do
    flags_of "$a"
    [[ ,$FL, == *,fail* ]] && out+=" $a:$FL"
  done
  echo "$out"
}

# A poll round starts every POLL_MS ms: the pause is what the queries left of it (measured
# with bash's $EPOCHREALTIME, which needs no fork; the times recorded come from now_ms).
ROUND_US=0
round_start() { ROUND_US=${EPOCHREALTIME/./}; }
pause_rest() { sleep_rest "$POLL_MS" "$ROUND_US"; }

# One repeat: n nodes on 127.0.net.x with the setting's flags; victim node index.
detection_repeat() { # n net setting victim tag
  local n=$1 net=$2 setting=$3 victim=$4 tag=$5
  local -a flags=()
  [[ $setting == fast ]] && flags=("${FAST_FLAGS[@]}")
  local dir=$TMP/$tag trace=$TMP/$tag.trace i s k c
  mkdir -p "$dir"
  : >"$trace"
  local -a all=() survivors=() addrs=()
  for ((i = 1; i <= n; i++)); do
    IP[n$i]=127.0.$net.$i
    all+=("n$i")
    addrs+=("127.0.$net.$i:$PORT")
    ((i == victim)) || survivors+=("n$i")
    check_free "127.0.$net.$i"
  done
  for k in "${all[@]}"; do start_node "$k" "$dir/$k" no --cluster-enabled yes "${flags[@]}"; done

  local t0 t tprev
  t0=$(now_ms)
  create_cluster "$TESSERA_CTL" "$dir/create.out" "${addrs[@]}"
  T_FORM=$(($(now_ms) - t0))

  # Before the kill: the epoch, the ids, the coordinator (the live primary with the lowest id).
  local vkey=n$victim vaddr=127.0.$net.$victim:$PORT base_epoch vid coord role=''
  query n1 "$Q_INFO"
  info_field "$R" cluster_current_epoch
  base_epoch=$F
  query "$vkey" "$Q_MYID"
  vid=$R
  query n1 "$Q_NODES"
  coord=$(awk '{print $1}' <<<"$R" | sort | head -n 1)
  [[ $coord == "$vid" ]] && role=' (the coordinator)'
  echo "# $tag: victim $vaddr id $vid$role, epoch before the kill $base_epoch" >>"$trace"

  # Kill -9, then poll the survivors until suspect, dead and placed all hold (or deadline).
  local -A at_kill=() at_restart=() was_susp=() was_dead=() seen=()
  for s in "${survivors[@]}"; do at_kill[$s]=$(wc -l <"$dir/$s.log"); done
  cpu_window start
  stop_node "$vkey" KILL
  t0=$(now_ms)
  tprev=0
  local suspect=- dead=- placed=- down=0 rounds=0 ioerr=0 false_susp=0 flaps=0
  while true; do
    round_start
    local all_s=1 all_d=1 all_p=1 down_now=0
    local -a changes=()
    for s in "${survivors[@]}"; do
      local vflags='' vslots=0 others='' state='' epoch=''
      if ! query "$s" "$Q_NODES"; then
        ioerr=$((ioerr + 1))
        all_s=0 all_d=0 all_p=0
        changes+=("${IP[$s]} CLUSTER NODES failed")
        continue
      fi
      flags_of "$vaddr"
      vflags=$FL vslots=$FL_SLOTS
      # A ",fail" beyond the victim's own: a live node suspected.
      if [[ $R =~ ,fail.*,fail ]] || { [[ $R == *,fail* ]] && [[ ,$vflags, != *,fail* ]]; }; then
        others=$(failing_in_R "${addrs[@]}")
        others=${others/" $vaddr:$vflags"/}
      fi
      if query "$s" "$Q_INFO"; then
        info_field "$R" cluster_state
        state=$F
        info_field "$R" cluster_current_epoch
        epoch=$F
      else
        ioerr=$((ioerr + 1))
      fi
      local is_s=0 is_d=0
      [[ ,$vflags, == *",fail?,"* || ,$vflags, == *",fail,"* ]] && is_s=1
      [[ ,$vflags, == *",fail,"* ]] && is_d=1
      ((is_s)) || all_s=0
      ((is_d)) || all_d=0
      if [[ $state != ok || -z $epoch ]] || ((epoch <= base_epoch || vslots)); then all_p=0; fi
      [[ $state != ok ]] && down_now=1
      # Flapping: a survivor that stops suspecting the victim, or goes from fail to fail?.
      if ((!is_s)) && [[ -n ${was_susp[$s]:-} ]]; then flaps=$((flaps + 1)); fi
      if ((!is_d)) && [[ -n ${was_dead[$s]:-} ]]; then flaps=$((flaps + 1)); fi
      ((is_s)) && was_susp[$s]=1
      ((is_d)) && was_dead[$s]=1
      [[ -n $others ]] && false_susp=$((false_susp + 1))
      local line="victim:$vflags victim-slots:$vslots state:$state epoch:$epoch${others:+ others-failing:$others}"
      if [[ ${seen[$s]:-} != "$line" ]]; then
        seen[$s]=$line
        changes+=("${IP[$s]} $line")
      fi
    done
    rounds=$((rounds + 1))
    t=$(($(now_ms) - t0))
    for c in "${changes[@]}"; do echo "+$t ms $c" >>"$trace"; done
    ((down_now)) && down=$((down + t - tprev))
    tprev=$t
    if ((all_s)) && [[ $suspect == - ]]; then suspect=$t; fi
    if ((all_d)) && [[ $dead == - ]]; then dead=$t; fi
    if ((all_p)) && [[ $placed == - ]]; then placed=$t; fi
    [[ $suspect != - && $dead != - && $placed != - ]] && break
    if ((t > DEADLINE_MS)); then
      echo "# deadline: suspect $suspect dead $dead placed $placed after $DEADLINE_MS ms" >>"$trace"
      break
    fi
    pause_rest
  done
  T_SUSPECT=$suspect T_DEAD=$dead T_PLACED=$placed T_DOWN=$down
  ROUND_MS=$(((t + rounds - 1) / rounds))
  NOTES=''
  ((ioerr)) && NOTES+=" io-errors:$ioerr"
  ((false_susp)) && NOTES+=" POLL:live-node-flagged($false_susp)"
  ((flaps)) && NOTES+=" POLL:victim-flags-flapped($flaps)"
  [[ $suspect == - ]] && NOTES+=" NOT-SUSPECTED-BY-ALL"
  [[ $dead == - ]] && NOTES+=" NOT-DEAD-ON-ALL"
  [[ $placed == - ]] && NOTES+=" NOT-RE-PLACED"

  # Restart the victim on the same port and dir; poll every node.
  for k in "${all[@]}"; do at_restart[$k]=$(wc -l <"$dir/$k.log"); done
  echo "# restart" >>"$trace"
  start_node_async "$vkey" "$dir/$vkey" --cluster-enabled yes "${flags[@]}"
  t0=$(now_ms)
  tprev=0
  local up=- vok=- rejoin=- streak=- unsettled=0 rdown=0
  seen=()
  while true; do
    round_start
    local all_ok=1 up_now=0 down_now=0 vok_now=0
    local -a changes=()
    for k in "${all[@]}"; do
      local listed=0 bad='' vhas=0 state='' a
      if ! query "$k" "$Q_NODES"; then
        all_ok=0
        continue
      fi
      [[ $k == "$vkey" ]] && up_now=1
      for a in "${addrs[@]}"; do [[ $R == *"$a@"* ]] && listed=$((listed + 1)); done
      [[ $R == *fail* ]] && bad=$(failing_in_R "${addrs[@]}")
      flags_of "$vaddr"
      vhas=$FL_SLOTS
      if query "$k" "$Q_INFO"; then
        info_field "$R" cluster_state
        state=$F
      fi
      if [[ $state != ok || -n $bad ]] || ((listed != n || vhas == 0)); then all_ok=0; fi
      [[ $state != ok && $k != "$vkey" ]] && down_now=1
      [[ $state == ok && $k == "$vkey" ]] && vok_now=1
      local line="state:$state listed:$listed victim-slots:$vhas${bad:+ failing:$bad}"
      if [[ ${seen[$k]:-} != "$line" ]]; then
        seen[$k]=$line
        changes+=("${IP[$k]} $line")
      fi
    done
    t=$(($(now_ms) - t0))
    for c in "${changes[@]}"; do echo "+$t ms $c" >>"$trace"; done
    if ((up_now)) && [[ $up == - ]]; then up=$t; fi
    if ((vok_now)) && [[ $vok == - ]]; then vok=$t; fi
    ((down_now)) && rdown=$((rdown + t - tprev))
    tprev=$t
    # rejoin: the first round where it all holds; stable: the start of the first run of
    # rounds where it holds for SETTLE_MS on end.
    if ((all_ok)); then
      [[ $rejoin == - ]] && rejoin=$t
      [[ $streak == - ]] && streak=$t
      ((t - streak >= SETTLE_MS)) && break
    else
      [[ $rejoin != - ]] && unsettled=$((unsettled + 1))
      streak=-
    fi
    if ((t > DEADLINE_MS)); then
      echo "# deadline: rejoin $rejoin, not stable for $SETTLE_MS ms within $DEADLINE_MS ms" >>"$trace"
      streak=-
      break
    fi
    pause_rest
  done
  T_UP=$up T_VOK=$vok T_REJOIN=$rejoin T_STABLE=$streak T_RDOWN=$rdown
  [[ $rejoin == - ]] && NOTES+=" DID-NOT-REJOIN"
  ((unsettled)) && NOTES+=" POLL:fail-flags-again-in-$unsettled-rounds-after-rejoin"
  if query "$vkey" "$Q_MYID" && [[ $R != "$vid" ]]; then NOTES+=" NEW-ID-AFTER-RESTART"; fi

  # The survivors' logs: live nodes suspected, the victim alive again while it was down,
  # or suspected again after its restart.
  local live_susp=0 early_alive=0 late_fail=0
  for s in "${survivors[@]}"; do
    local down_part after
    down_part=$(sed -n "$((at_kill[$s] + 1)),${at_restart[$s]}p" "$dir/$s.log")
    after=$(tail -n +"$((at_restart[$s] + 1))" "$dir/$s.log")
    live_susp=$((live_susp + $(grep -E 'is (pdead|dead)' "$dir/$s.log" | grep -vc "$vid" || true)))
    early_alive=$((early_alive + $(grep -c "$vid is alive" <<<"$down_part" || true)))
    late_fail=$((late_fail + $(grep -cE "$vid is (pdead|dead)" <<<"$after" || true)))
  done
  ((live_susp)) && NOTES+=" LOG:live-nodes-suspected($live_susp)"
  ((early_alive)) && NOTES+=" LOG:victim-alive-while-down($early_alive)"
  ((late_fail)) && NOTES+=" LOG:victim-suspected-after-restart($late_fail)"
  local own
  own=$(tail -n +"$((at_restart[$vkey] + 1))" "$dir/$vkey.log" | grep -cE 'is (pdead|dead)' || true)
  ((own)) && NOTES+=" LOG:restarted-node-suspected-others($own)"
  cpu_window end
  NOTES="victim ${IP[$vkey]}$role; from the kill to the end: $OTHERS_TEXT${NOTES:+;$NOTES}"
  echo "# result: suspect $suspect dead $dead placed $placed down $down | up $up ok $vok rejoin $rejoin stable $streak survivors-down $rdown | $NOTES" >>"$trace"

  for k in "${all[@]}"; do stop_node "$k"; done
  keep_round_logs "$dir" "$trace" "$tag"
}

# Restarts a node without waiting for it to listen (the poll loop sees when it does).
start_node_async() { # key dir args...
  local key=$1 dir=$2
  shift 2
  "$TESSERA_BIN" --bind "${IP[$key]}" --port "$PORT" --dir "$dir" \
    --save "" --cores 1 "$@" >/dev/null 2>>"$dir.log" &
  NODE_PID[$key]=$!
}

detection() {
  local n setting net rep
  echo "Part 1: failure detection and rejoin (times in ms; suspect/dead/placed from the kill -9,"
  echo "rejoin from the restart; poll every $POLL_MS ms, deadline $DEADLINE_MS ms; '-' = not reached)"
  echo "Nodes are not pinned: all share the machine's $(nproc) CPUs with the poller."
  for n in $SIZES; do
    net=31
    ((n > 3)) && net=32
    for setting in $SETTINGS; do
      local label
      case $setting in
        default) label="default (probe 200 ms, suspect 2000 ms: no flags)" ;;
        fast) label="fast (${FAST_FLAGS[*]})" ;;
        *) echo "unknown setting $setting (default|fast)" >&2; exit 1 ;;
      esac
      local -a form=() susp=() dead=() placed=() down=() up=() vok=() rejoin=() stable=() rdown=()
      local -a notes=() rounds=()
      for ((rep = 1; rep <= REPEATS; rep++)); do
        local victim=$(((rep - 1) % n + 1))
        log "n=$n $setting repeat $rep/$REPEATS: kill -9 127.0.$net.$victim"
        run_unless_busy detection_repeat "$n" "$net" "$setting" "$victim" "n$n-$setting-r$rep"
        ((CPU_BUSY)) && NOTES+="; BUSY MACHINE"
        form+=("$T_FORM") susp+=("$T_SUSPECT") dead+=("$T_DEAD") placed+=("$T_PLACED")
        down+=("$T_DOWN") up+=("$T_UP") vok+=("$T_VOK") rejoin+=("$T_REJOIN") stable+=("$T_STABLE")
        rdown+=("$T_RDOWN")
        notes+=("$NOTES") rounds+=("$ROUND_MS")
        log "  suspect $T_SUSPECT dead $T_DEAD placed $T_PLACED rejoin $T_REJOIN; $NOTES"
      done
      echo
      echo "== n=$n, setting $label =="
      local row
      local -a vals
      printf "%-3s %-8s %-8s" n setting time
      for ((rep = 1; rep <= REPEATS; rep++)); do printf " %6s" "r$rep"; done
      printf " | %6s %6s %6s\n" min median max
      for row in suspect dead placed rejoin - stable form down listen ok rejdown round; do
        case $row in
          suspect) vals=("${susp[@]}") ;;
          dead) vals=("${dead[@]}") ;;
          placed) vals=("${placed[@]}") ;;
          rejoin) vals=("${rejoin[@]}") ;;
          form) vals=("${form[@]}") ;;
          down) vals=("${down[@]}") ;;
          listen) vals=("${up[@]}") ;;
          ok) vals=("${vok[@]}") ;;
          stable) vals=("${stable[@]}") ;;
          rejdown) vals=("${rdown[@]}") ;;
          round) vals=("${rounds[@]}") ;;
          -)
            echo "  more, ms: stable = from the restart to the start of $SETTLE_MS ms in which the rejoin"
            echo "  condition held in every poll; form = tessera-ctl create; down = some survivor said"
            echo "  cluster_state:fail (after the kill); listen = restarted node answers; ok = restarted"
            echo "  node says cluster_state:ok; rejdown = some survivor said cluster_state:fail (after"
            echo "  the restart); round = mean poll round"
            continue
            ;;
        esac
        printf "%-3s %-8s %-8s" "$n" "$setting" "$row"
        printf " %6s" "${vals[@]}"
        local -a mmm
        read -r -a mmm <<<"$(stats "${vals[@]}")"
        printf " | %6s %6s %6s\n" "${mmm[@]}"
      done
      for ((rep = 1; rep <= REPEATS; rep++)); do echo "  r$rep: ${notes[rep - 1]}"; done
    done
  done
}

# ---------------------------------------------------------------------------- part 2

declare -A RPS=() OTHERS_RUNS=() RETRIED=() STILL_BUSY=()

# One redis-benchmark run (SET and GET) at pipeline p; requests/s appended to RPS.
bench() { # label rep p host port requests extra-args...
  local label=$1 rep=$2 p=$3 host=$4 port=$5 requests=$6 out=$TMP/bench.out err=$TMP/bench.err
  shift 6
  local rc set get try=0
  while true; do
    rc=0
    cpu_window start
    taskset -c "$CLIENT_CPU" redis-benchmark -h "$host" -p "$port" -t set,get \
      -n "$requests" -c 50 -P "$p" -r "$KEYSPACE" --csv "$@" >"$out" 2>"$err" || rc=$?
    cpu_window end
    ((CPU_BUSY && try < RETRIES)) || break
    try=$((try + 1))
    log "  ($label) P=$p run $rep busy ($OTHERS_TEXT): again in $RETRY_PAUSE_S s (retry $try/$RETRIES)"
    RETRIED[$label]=$((${RETRIED[$label]:-0} + 1))
    sleep "$RETRY_PAUSE_S"
  done
  ((CPU_BUSY)) && STILL_BUSY[$label]=$((${STILL_BUSY[$label]:-0} + 1))
  set=$(awk -F'"' '$2 == "SET" {print $4}' "$out")
  get=$(awk -F'"' '$2 == "GET" {print $4}' "$out")
  if [[ -z $set || -z $get ]]; then
    echo "($label) P=$p run $rep: redis-benchmark -h $host -p $port $* FAILED (exit $rc); its output:"
    sed 's/^/    /' "$out" "$err" | grep -v '^ *$' | tail -n 15
    RPS[$label,$p,SET]+=" -" RPS[$label,$p,GET]+=" -"
    return 0
  fi
  RPS[$label,$p,SET]+=" ${set%.*}" RPS[$label,$p,GET]+=" ${get%.*}"
  OTHERS_RUNS[$label,$p]+=" $CPU_OD/$CPU_SD"
  log "  ($label) P=$p run $rep: SET $set GET $get ($OTHERS_TEXT)"
}

median_of() { # "v1 v2 ..." -> median or -
  local s
  local -a v
  read -r -a v <<<"$1"
  s=$(stats "${v[@]}")
  echo "${s#* }" | awk '{print $1}'
}

ratio() { # b a -> b/a with 2 decimals, or -
  if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && (($2 > 0)); then
    awk -v b="$1" -v a="$2" 'BEGIN { printf "%.2f", b / a }'
  else
    echo -
  fi
}

forwarding() {
  need_tools "apt-get install -y redis-tools" redis-benchmark
  local dir=$TMP/fwd k rep p
  mkdir -p "$dir"
  echo
  echo "Part 2: forwarding cost. Every tessera process: taskset -c $SERVER_CPU, --cores 1;"
  echo "redis-benchmark: taskset -c $CLIENT_CPU, -t set,get -n $BENCH_REQUESTS -c 50 -r $KEYSPACE,"
  echo "$(redis-benchmark --version | cut -d' ' -f1-2); median of $BENCH_REPEATS runs, the targets taken in turn"
  echo "in every run (a, b, c, c2 at P=1, then at P=16), so drift of the machine hits all alike."
  echo "This machine has $(nproc) CPUs, so the 3 cluster nodes share one CPU: (b) and (c) are an"
  echo "upper bound on the cost, not a deployment figure."

  # (a) one standalone node; (b) and (c) a 3-node cluster with the default settings. All
  # four processes run throughout, on the same CPU (the idle ones only gossip).
  IP[solo]=127.0.31.10
  check_free 127.0.31.10
  start_node solo "$dir/solo" yes
  local -a addrs=()
  for k in 1 2 3; do
    IP[c$k]=127.0.31.$k
    check_free "127.0.31.$k"
    addrs+=("127.0.31.$k:$PORT")
  done
  for k in 1 2 3; do start_node "c$k" "$dir/c$k" yes --cluster-enabled yes; done
  if ! "$TESSERA_CTL" create "${addrs[@]}" >"$dir/create.out" 2>&1; then
    cat "$dir/create.out" >&2
    exit 1
  fi
  local routing sizes="" csizes="" total=0 d
  routing=$(redis-cli -h 127.0.31.1 -p "$PORT" config get cluster-routing | tail -n 1)
  log "forwarding: (a) ${IP[solo]}:$PORT, (b) 127.0.31.1:$PORT (cluster-routing $routing), (c) --cluster"
  for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
    for p in 1 16; do
      bench a "$rep" "$p" "${IP[solo]}" "$PORT" "$BENCH_REQUESTS"
      bench b "$rep" "$p" 127.0.31.1 "$PORT" "$BENCH_REQUESTS"
      if [[ -z $sizes ]]; then
        # Where the keys written through node 1 went; then empty nodes for (c).
        for k in 1 2 3; do
          d=$(redis-cli -h "127.0.31.$k" -p "$PORT" dbsize)
          sizes+=" $d"
          total=$((total + d))
          redis-cli -h "127.0.31.$k" -p "$PORT" flushall >/dev/null
        done
      fi
      bench c "$rep" "$p" 127.0.31.1 "$PORT" "$BENCH_REQUESTS" --cluster
      if [[ -z $csizes ]]; then
        for k in 1 2 3; do csizes+=" $(redis-cli -h "127.0.31.$k" -p "$PORT" dbsize)"; done
      fi
      local n2=$C2_REQUESTS_P1
      ((p == 16)) && n2=$C2_REQUESTS_P16
      bench c2 "$rep" "$p" 127.0.31.1 "$PORT" "$n2" --cluster
    done
  done
  stop_node solo
  for k in 1 2 3; do stop_node "c$k"; done
  [[ -n $LOG_DIR ]] && mkdir -p "$LOG_DIR/forwarding" && cp "$dir"/*.log "$dir/create.out" "$LOG_DIR/forwarding/"

  echo "(b) runs on node 1 with cluster-routing $routing; after its first run the nodes hold [${sizes# }] keys,"
  echo "so $(awk -v a="${sizes# }" -v t="$total" 'BEGIN { split(a, x, " "); printf "%.0f", 100 * (t - x[1]) / t }')% of the keys written through node 1 were forwarded to the others."
  echo "(c): the nodes were flushed before it and hold [${csizes# }] keys after its first run. redis-benchmark"
  echo "--cluster runs one thread per master (3), all on CPU $CLIENT_CPU; (a) and (b) use one thread."
  echo "In that threaded mode the elapsed time redis-benchmark counts comes in steps of about"
  echo "250 ms (200000 requests at P=16 took 0.50 s in every run tried), so (c) is capped near"
  echo "-n/0.5 s and coarse at P=1; (c2) repeats it with -n $C2_REQUESTS_P1 at P=1 and"
  echo "-n $C2_REQUESTS_P16 at P=16."
  echo
  printf "%-42s %4s %10s %10s  %s\n" target P "SET rps" "GET rps" "runs (SET | GET)"
  local label p
  for label in a b c c2; do
    local name
    case $label in
      a) name="(a) standalone node" ;;
      b) name="(b) cluster node 1, forward mode" ;;
      c) name="(c) cluster, redis-benchmark --cluster" ;;
      c2) name="(c2) as (c), more requests" ;;
    esac
    for p in 1 16; do
      printf "%-42s %4s %10s %10s  %s |%s\n" "$name" "$p" \
        "$(median_of "${RPS[$label,$p,SET]:-}")" "$(median_of "${RPS[$label,$p,GET]:-}")" \
        "${RPS[$label,$p,SET]:-}" "${RPS[$label,$p,GET]:-}"
    done
  done
  echo
  echo "During each run kept (in the order above), ms of CPU used by other processes / ms stolen"
  echo "by the hypervisor; runs where that passed $BUSY_PCT% of the run were done again:"
  for label in a b c c2; do
    for p in 1 16; do
      printf "  (%s) P=%-2s %s\n" "$label" "$p" "${OTHERS_RUNS[$label,$p]:-}"
    done
    echo "  ($label) runs done again: ${RETRIED[$label]:-0}; kept although busy: ${STILL_BUSY[$label]:-0}"
  done
  echo
  printf "%-10s %4s %10s %10s\n" ratio P SET GET
  for label in b c c2; do
    for p in 1 16; do
      local t r
      printf "%-10s %4s" "($label)/(a)" "$p"
      for t in SET GET; do
        r=$(ratio "$(median_of "${RPS[$label,$p,$t]:-}")" "$(median_of "${RPS[a,$p,$t]:-}")")
        printf " %10s" "$r"
      done
      echo
    done
  done
}

# ---------------------------------------------------------------------------- main

echo "cluster-detection: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)"
print_binaries ""
echo "REPEATS=$REPEATS SIZES=\"$SIZES\" SETTINGS=\"$SETTINGS\""
for part in $PARTS; do
  case $part in
    detection) detection ;;
    forwarding) forwarding ;;
    *) echo "unknown part $part (detection|forwarding)" >&2; exit 1 ;;
  esac
done
