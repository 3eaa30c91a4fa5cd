#!/usr/bin/env bash
# Cluster failover time, measured with real processes: from the kill -9 of a primary to the
# first write that succeeds on its slots, and to its replica reporting role:master.
#
# For each setup in SETUPS, ROUNDS times, on fresh nodes:
#   default  no timing flags: probe every 200 ms, suspect timeout 2000 ms,
#            cluster-failover-delay-ms 100                        (nodes on 127.0.41.1-6)
#   tight    --cluster-probe-interval-ms 100 --cluster-suspect-timeout-ms 500, and
#            cluster-failover-delay-ms 20                         (nodes on 127.0.42.1-6)
# tessera has no --cluster-failover-delay-ms flag (and CONFIG SET refuses the parameter: it
# is read at start only), so `tight` passes it in a config file (redis.conf syntax, the
# positional argument); the script reads it back with CONFIG GET on every node.
#
# A round:
#   1. six nodes, `tessera [CONF] --bind 127.0.NET.i --port PORT --dir D/ni --save ""
#      --cores 1 --cluster-enabled yes [flags]` (bus port PORT+10000), unpinned: this
#      machine has 2 CPUs, so the six nodes, this script and redis-cli share them;
#   2. `tessera-ctl create` over all six, then CLUSTER REPLICATE on nodes 4, 5, 6 for
#      nodes 1, 2, 3 (the coordinator moves the new replicas' slots to the primaries);
#   3. waits until every replica's INFO replication shows role:slave, its primary as
#      master_host and master_link_status:up, and every node reports cluster_state:ok and
#      lists three primaries with slots (deadline READY_DEADLINE_S);
#   4. writes KEYS keys (SET fo:i) through a primary, WAIT 1 on every primary, and picks a
#      key the victim holds (SCAN on the victim: in cluster mode a node scans its own keys).
#      The victim is primary ((round-1) mod 3)+1, so each primary in turn; its replica is
#      node victim+3; the ENTRY is the next primary, (victim mod 3)+1. One SET of that key
#      through the entry before the kill opens the entry's forwarding link to the victim;
#   5. kill -9 of the victim; at once a background loop sends `redis-cli -h ENTRY -p PORT
#      SET key after-R` (the entry forwards it: cluster-routing forward, the default) every
#      POLL_MS (10) ms until the reply is OK, and the trace keeps every other reply
#      (TRYAGAIN, CLUSTERDOWN, ...) with the times it first and last came back:
#        write    the time the OK came back;
#      and a main loop polls every POLL_MS ms, at most FAILOVER_DEADLINE_MS:
#        role     the replica's INFO replication says role:master (one open connection);
#        table    the entry's CLUSTER NODES lists the replica as a master with slots;
#        all-ok   every survivor reports cluster_state:ok and lists the replica as a master
#                 with slots (a survivor that stays CLUSTERDOWN leaves this at '-');
#   6. the node logs (tracing timestamps, UTC, microseconds; the kill time is taken from the
#      same wall clock) give, from the kill:
#        link-lost  the entry's "forwarding link lost" line (its link to the victim reset)
#        suspect    the first survivor's "cluster: node <victim> is pdead (suspected)"
#        dead-repl  the replica's "cluster: node <victim> is dead"
#        dead-all   the last survivor's "is dead" for the victim
#        won        the replica's "failover: this replica won the election ..." line
#        primlog    the replica's "this node is a primary now" (its replication side)
#      and the split of the write time: detection = dead-repl, election = won - dead-repl,
#      after = write - won, itself split by the poll of the entry into spread = table - won
#      (the new table reaching the entry) and forward = write - table (the entry's
#      forwarder opening a link to the new owner and the reply coming back);
#   7. the replica's DBSIZE must equal the victim's before the kill (WAIT 1 made every key
#      reach it), and GET key through the entry must return the value written; all nodes
#      are killed (kill -9) and the next round starts on fresh dirs.
# Times come from bash's $EPOCHREALTIME taken after each reply, so each is an upper bound
# within one attempt or poll iteration (write: the gap between two SET attempts, POLL_MS or
# one redis-cli run if that is longer, `wgap`; the others: the main loop's iteration,
# `iter`; both printed). A round during which other processes' CPU time plus hypervisor
# steal passed BUSY_PCT % of the round's length (from the kill to the end) is marked BUSY
# (and run again after RETRY_PAUSE_S if RETRIES > 0): on 2 CPUs another load delays the
# control loops, and a paused node gives suspicions the time it lost (membership.rs tick).
#
# Usage:
#   benches/failover.sh                          # 2 setups x 5 rounds: under a minute
#   ROUNDS=3 SETUPS=tight benches/failover.sh
#   TESSERA_BIN=/work/target-helper/release/tessera \
#     TESSERA_CTL=/work/target-helper/release/tessera-ctl benches/failover.sh
# Environment (defaults): ROUNDS (5), SETUPS ("default tight"), PORT (7000), NET_DEFAULT
#   (41), NET_TIGHT (42), KEYS (1000), POLL_MS (10), FAILOVER_DEADLINE_MS (30000),
#   READY_DEADLINE_S (60), START_DEADLINE_S (10), BUSY_PCT (10), RETRIES (0),
#   RETRY_PAUSE_S (30), LOG_DIR (unset: node logs are deleted with the temp dir; set: each
#   round's logs and poll trace are copied there), VERBOSE (0; 1 prints every poll trace).
# TESSERA_BIN / TESSERA_CTL default to ${CARGO_TARGET_DIR:-target}/release/{tessera,
#   tessera-ctl}, built with `cargo build --release -p tessera -p tessera-ctl` if either is
#   missing (a plain `cargo build --release` builds only the tessera package, not the ctl).
# Needs bash >= 5.0 ($EPOCHREALTIME), redis-cli, coreutils (timeout, GNU date), pkill. Every
# process and temp dir is removed on exit. Prints the report on stdout, progress on stderr.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SETUPS=${SETUPS:-"default tight"}
PORT=${PORT:-7000}
NET_DEFAULT=${NET_DEFAULT:-41}
NET_TIGHT=${NET_TIGHT:-42}
KEYS=${KEYS:-1000}
POLL_MS=${POLL_MS:-10}
FAILOVER_DEADLINE_MS=${FAILOVER_DEADLINE_MS:-30000}
READY_DEADLINE_S=${READY_DEADLINE_S:-60}
START_DEADLINE_S=${START_DEADLINE_S:-10}
BUSY_PCT=${BUSY_PCT:-10}
RETRIES=${RETRIES:-0}
RETRY_PAUSE_S=${RETRY_PAUSE_S:-30}
LOG_DIR=${LOG_DIR:-}
VERBOSE=${VERBOSE:-0}
TIGHT_FLAGS=(--cluster-probe-interval-ms 100 --cluster-suspect-timeout-ms 500)
TIGHT_CONF='cluster-failover-delay-ms 20'

# ---------------------------------------------------------------------------- setup

need_tools "apt-get install -y redis-tools coreutils" redis-cli timeout date pkill
((BASH_VERSINFO[0] >= 5)) || { echo "needs bash >= 5.0" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
TESSERA_BIN=${TESSERA_BIN:-$target/release/tessera}
TESSERA_CTL=${TESSERA_CTL:-$target/release/tessera-ctl}
BUILT=no
if [[ ! -x $TESSERA_BIN || ! -x $TESSERA_CTL ]]; then
  BUILT=yes
  build_cluster_binaries "$target"
fi
need_executables "$TESSERA_BIN" "$TESSERA_CTL"

TMP=$(mktemp -d /tmp/tessera-failover.XXXXXX)
declare -A NODE_PID=() # node key -> pid of a running tessera
declare -A FD=()       # node key -> fd of an open connection
declare -A IP=()       # node key -> ip

cleanup() {
  stop_writer
  kill_all_nodes
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap '' PIPE # a write to a closed socket fails instead of killing the script

# Unlike lib.sh's die, without the script's name in front.
die() { echo "$*" >&2; exit 1; }
now_us() { echo "${EPOCHREALTIME/./}"; }

# ---------------------------------------------------------------------------- RESP over /dev/tcp

Q_NODES=$'*2\r\n$7\r\nCLUSTER\r\n$5\r\nNODES\r\n'
Q_INFO=$'*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n'
Q_REPL=$'*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n'
R=''  # query's reply
F=''  # info_field's result

# Whether the CLUSTER NODES text in R lists addr as a master with at least one slot range.
master_with_slots() { # addr
  local re="${1//./\\.}@[0-9]+ ([^ ]+) [^ ]+ [^ ]+ [^ ]+ [^ ]+ [^ "$'\r\n'"]+ [0-9]"
  [[ $R =~ $re && ,${BASH_REMATCH[1]}, == *,master,* ]]
}

# Number of masters with slots in the CLUSTER NODES text in R.
masters_with_slots() {
  local line n=0
  local -a w
  while IFS= read -r line; do
    line=${line%$'\r'}
    read -r -a w <<<"$line"
    [[ ,${w[2]:-}, == *,master,* && ${#w[@]} -gt 8 ]] && n=$((n + 1))
  done <<<"$R"
  echo "$n"
}

cli() { # key args... -> the reply on stdout (redis-cli, 5 s at most)
  local k=$1
  shift
  timeout 5 redis-cli -h "${IP[$k]}" -p "$PORT" "$@" 2>&1 || true
}

# ---------------------------------------------------------------------------- processes

start_node() { # key dir args...
  local key=$1 dir=$2 t
  shift 2
  mkdir -p "$dir"
  "$TESSERA_BIN" "$@" --bind "${IP[$key]}" --port "$PORT" --dir "$dir" \
    --save "" --cores 1 --cluster-enabled yes >/dev/null 2>>"$dir.log" &
  NODE_PID[$key]=$!
}

# Up when it answers PING (a connect alone can land on a killed process's late listener).
wait_started() { # key dir
  local t=$(($(now_us) + START_DEADLINE_S * 1000000))
  until [[ $(cli "$1" ping) == PONG ]]; do
    if (($(now_us) > t)) || ! kill -0 "${NODE_PID[$1]}" 2>/dev/null; then
      echo "node ${IP[$1]}:$PORT did not start:" >&2
      tail -n 20 "$2.log" >&2
      exit 1
    fi
    sleep 0.02
  done
}

stop_all() { # keys...
  local k pid
  for k in "$@"; do
    disconnect "$k"
    pid=${NODE_PID[$k]:-}
    [[ -z $pid ]] && continue
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "NODE_PID[$k]"
  done
}

# Waits until nothing listens on ip:PORT or ip:PORT+10000 (a killed run's listener).
wait_free() { # ip
  local t=$(($(now_us) + 10000000)) probe p
  for p in "$PORT" $((PORT + 10000)); do
    while { exec {probe}<>"/dev/tcp/$1/$p"; } 2>/dev/null; do
      exec {probe}>&-
      (($(now_us) > t)) && die "$1:$p is in use; set PORT (or NET_DEFAULT/NET_TIGHT) to free ones"
      sleep 0.1
    done
  done
}

# ---------------------------------------------------------------------------- stats

diff_or_dash() { # a b -> a - b, or - if either is not a number
  if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]]; then echo $(($1 - $2)); else echo -; fi
}

# ---------------------------------------------------------------------------- the writer

# Runs in the background from the kill on: SET key value through host with redis-cli every
# POLL_MS ms (the next attempt starts POLL_MS after the last one started, or at once when
# that one took longer) until one answers OK or FAILOVER_DEADLINE_MS passes. Appends
# "ms-since-kill<TAB>reply" per attempt to the file, the time taken when the reply came.
# (In the background so that the polls of the main loop do not space the attempts out; no
# `timeout` around redis-cli, which would add a fork to every attempt: stop_writer ends a
# redis-cli left waiting at the deadline, and the node times forwarded calls out by itself.)
WRITER_PID=''
writer() { # host key value kill_us file
  local host=$1 key=$2 value=$3 kill_us=$4 file=$5 start t reply
  local end=$((kill_us + FAILOVER_DEADLINE_MS * 1000)) out=$file.reply
  : >"$file"
  while (($(now_us) < end)); do
    start=$(now_us)
    redis-cli -h "$host" -p "$PORT" set "$key" "$value" >"$out" 2>&1 || true
    t=$((($(now_us) - kill_us) / 1000))
    reply=$(<"$out")
    reply=${reply//$'\n'/ }
    printf '%s\t%s\n' "$t" "$reply" >>"$file"
    [[ $reply == OK ]] && return 0
    sleep_rest "$POLL_MS" "$start"
  done
}

stop_writer() {
  [[ -z $WRITER_PID ]] && return 0
  pkill -KILL -P "$WRITER_PID" 2>/dev/null || true # its redis-cli or sleep, by parent pid
  kill -9 "$WRITER_PID" 2>/dev/null || true
  wait "$WRITER_PID" 2>/dev/null || true
  WRITER_PID=''
}

# ---------------------------------------------------------------------------- one round

# Results of one round (globals, read by the caller).
declare -A RES=()
NOTES=''

# ms from the kill of the first log line matching the regex (in the given logs), or -.
# Log lines start with an RFC 3339 UTC timestamp with microseconds.
first_log_ms() { # kill_us regex files... (earliest over the files)
  local kill_us=$1 re=$2 f stamp us best=-
  shift 2
  for f in "$@"; do
    stamp=$(grep -m1 -E "$re" "$f" | cut -d' ' -f1 || true)
    [[ -z $stamp ]] && continue
    us=$(date -u -d "$stamp" +%s%6N)
    if [[ $best == - ]] || (((us - kill_us) / 1000 < best)); then best=$(((us - kill_us) / 1000)); fi
  done
  echo "$best"
}
last_of_firsts_ms() { # kill_us regex files...: the latest over the files of each one's first
  local kill_us=$1 re=$2 f stamp us worst=- missing=0
  shift 2
  for f in "$@"; do
    stamp=$(grep -m1 -E "$re" "$f" | cut -d' ' -f1 || true)
    if [[ -z $stamp ]]; then missing=1; continue; fi
    us=$(date -u -d "$stamp" +%s%6N)
    if [[ $worst == - ]] || (((us - kill_us) / 1000 > worst)); then worst=$(((us - kill_us) / 1000)); fi
  done
  ((missing)) && worst=-
  echo "$worst"
}

failover_round() { # setup net round tag
  local setup=$1 net=$2 round=$3 tag=$4
  local dir=$TMP/$tag trace=$TMP/$tag.trace i k
  local -a args=() all=(n1 n2 n3 n4 n5 n6) addrs=()
  mkdir -p "$dir"
  : >"$trace"
  RES=() NOTES=''
  if [[ $setup == tight ]]; then
    printf '%s\n' "$TIGHT_CONF" >"$dir/tight.conf"
    args=("$dir/tight.conf" "${TIGHT_FLAGS[@]}")
  fi
  for ((i = 1; i <= 6; i++)); do
    IP[n$i]=127.0.$net.$i
    addrs+=("127.0.$net.$i:$PORT")
    wait_free "127.0.$net.$i"
  done
  for k in "${all[@]}"; do start_node "$k" "$dir/$k" "${args[@]}"; done
  for k in "${all[@]}"; do wait_started "$k" "$dir/$k"; done
  # What the nodes run with (the failover delay comes from the config file in `tight`).
  local conf='' v
  for k in "${all[@]}"; do
    v=$(cli "$k" config get cluster-failover-delay-ms | tail -n 1)
    v+="/$(cli "$k" config get cluster-probe-interval-ms | tail -n 1)"
    v+="/$(cli "$k" config get cluster-suspect-timeout-ms | tail -n 1)"
    [[ -n $conf && $conf != "$v" ]] && die "nodes differ in their settings: $conf vs $v"
    conf=$v
  done
  RES[conf]=$conf

  # Form: create over all six, then 4, 5, 6 follow 1, 2, 3.
  local t0
  t0=$(now_us)
  create_cluster "$TESSERA_CTL" "$dir/create.out" --timeout-secs "$READY_DEADLINE_S" "${addrs[@]}"
  declare -A id=()
  for k in "${all[@]}"; do id[$k]=$(cli "$k" cluster myid); done
  for i in 1 2 3; do
    v=$(cli "n$((i + 3))" cluster replicate "${id[n$i]}")
    [[ $v == OK ]] || die "CLUSTER REPLICATE on ${IP[n$((i + 3))]} for ${IP[n$i]}: $v"
  done
  local deadline=$(($(now_us) + READY_DEADLINE_S * 1000000)) ready=0 why=''
  while ((!ready)); do
    ready=1 why=''
    for i in 1 2 3; do
      k=n$((i + 3))
      if ! query "$k" "$Q_REPL"; then ready=0 why+=" ${IP[$k]}:no-reply"; continue; fi
      local role host link
      info_field "$R" role; role=$F
      info_field "$R" master_host; host=$F
      info_field "$R" master_link_status; link=$F
      if [[ $role != slave || $host != "${IP[n$i]}" || $link != up ]]; then
        ready=0 why+=" ${IP[$k]}:role=$role,master=$host,link=$link"
      fi
    done
    for k in "${all[@]}"; do
      local state='' m=0
      if query "$k" "$Q_INFO"; then info_field "$R" cluster_state; state=$F; fi
      if query "$k" "$Q_NODES"; then m=$(masters_with_slots); fi
      if [[ $state != ok ]] || ((m != 3)); then ready=0 why+=" ${IP[$k]}:state=$state,masters=$m"; fi
    done
    ((ready)) && break
    (($(now_us) > deadline)) && die "the cluster was not ready within $READY_DEADLINE_S s:$why"
    sleep 0.05
  done
  RES[form]=$((($(now_us) - t0) / 1000))

  # Keys, through the entry; WAIT 1 on every primary; a key the victim holds.
  local victim=$(((round - 1) % 3 + 1))
  local vkey=n$victim rkey=n$((victim + 3)) ekey=n$((victim % 3 + 1))
  local raddr=${IP[$rkey]}:$PORT
  local -a survivors=()
  for k in "${all[@]}"; do [[ $k != "$vkey" ]] && survivors+=("$k"); done
  local okc
  okc=$(for ((i = 0; i < KEYS; i++)); do printf 'SET fo:%d v%d\n' "$i" "$i"; done \
    | timeout 30 redis-cli -h "${IP[$ekey]}" -p "$PORT" | grep -c '^OK$' || true)
  ((okc == KEYS)) || die "only $okc of $KEYS SETs through ${IP[$ekey]} answered OK"
  for i in 1 2 3; do
    v=$(cli "n$i" wait 1 5000)
    [[ $v == 1 ]] || die "WAIT 1 5000 on ${IP[n$i]} answered '$v'"
  done
  local key vsize
  key=$(cli "$vkey" --scan --pattern 'fo:*' | head -n 1)
  [[ $key == fo:* ]] || die "SCAN on the victim ${IP[$vkey]} found no key: '$key'"
  vsize=$(cli "$vkey" dbsize)
  v=$(cli "$ekey" set "$key" before)
  [[ $v == OK ]] || die "SET $key through ${IP[$ekey]} before the kill: $v"
  v=$(cli "$vkey" wait 1 5000)
  [[ $v == 1 ]] || die "WAIT 1 5000 on ${IP[$vkey]} answered '$v'"
  RES[victim]=${IP[$vkey]} RES[replica]=${IP[$rkey]} RES[entry]=${IP[$ekey]} RES[key]=$key
  local vid=${id[$vkey]}

  # The kill, and the poll.
  local base_epoch
  query "$ekey" "$Q_INFO" || die "CLUSTER INFO on the entry failed"
  info_field "$R" cluster_current_epoch
  base_epoch=$F
  local kill_us pid=${NODE_PID[$vkey]}
  cpu_window start
  kill_us=$(now_us)
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  unset "NODE_PID[$vkey]"
  disconnect "$vkey"

  local attempts=$dir/attempts
  writer "${IP[$ekey]}" "$key" "after-$round" "$kill_us" "$attempts" &
  WRITER_PID=$!
  echo "# $(date -u -d "@${kill_us:0:10}.${kill_us:10}" +%H:%M:%S.%6N) kill -9 ${IP[$vkey]} (pid $pid), epoch $base_epoch" >>"$trace"
  local write=- role=- table=- allok=- t iter=0 start
  while true; do
    start=$(now_us)
    iter=$((iter + 1))
    if [[ $write == - && -n $WRITER_PID ]] && ! kill -0 "$WRITER_PID" 2>/dev/null; then
      wait "$WRITER_PID" 2>/dev/null || true
      WRITER_PID=''
      [[ $(tail -n 1 "$attempts") == *$'	'OK ]] && write=$(tail -n 1 "$attempts" | cut -f1)
    fi
    if [[ $role == - ]] && query "$rkey" "$Q_REPL"; then
      info_field "$R" role
      if [[ $F == master ]]; then
        role=$((($(now_us) - kill_us) / 1000))
        echo "+$role ms ${IP[$rkey]} role:master" >>"$trace"
      fi
    fi
    if [[ $table == - ]] && query "$ekey" "$Q_NODES" && master_with_slots "$raddr"; then
      table=$((($(now_us) - kill_us) / 1000))
      echo "+$table ms the entry lists ${IP[$rkey]} as a master with slots" >>"$trace"
    fi
    if [[ $allok == - ]]; then
      local good=1
      for k in "${survivors[@]}"; do
        if ! query "$k" "$Q_INFO"; then good=0; break; fi
        info_field "$R" cluster_state
        [[ $F == ok ]] || { good=0; break; }
        if ! query "$k" "$Q_NODES" || ! master_with_slots "$raddr"; then good=0; break; fi
      done
      if ((good)); then
        allok=$((($(now_us) - kill_us) / 1000))
        echo "+$allok ms every survivor: cluster_state:ok, ${IP[$rkey]} a master with slots" >>"$trace"
      fi
    fi
    t=$((($(now_us) - kill_us) / 1000))
    [[ $write != - && $role != - && $table != - && $allok != - ]] && break
    if ((t > FAILOVER_DEADLINE_MS)); then
      echo "# deadline $FAILOVER_DEADLINE_MS ms: write $write role $role table $table all-ok $allok" >>"$trace"
      break
    fi
    sleep_rest "$POLL_MS" "$start"
  done
  local loop_ms=$((($(now_us) - kill_us) / 1000))
  cpu_window end
  stop_writer
  # The write attempts, runs of one reply folded: first and last time, count.
  local errs=0 prev='' first=0 lastt=0 cnt=0 at reply t1=- n=0
  while IFS=$'\t' read -r at reply; do
    if [[ $reply != "$prev" ]]; then
      ((cnt)) && echo "+$first..$lastt ms (${cnt}x) SET: $prev" >>"$trace"
      prev=$reply first=$at cnt=0
    fi
    lastt=$at cnt=$((cnt + 1)) n=$((n + 1))
    [[ $t1 == - ]] && t1=$at
    [[ $reply == OK ]] || errs=$((errs + 1))
  done <"$attempts"
  ((cnt)) && echo "+$first..$lastt ms (${cnt}x) SET: $prev" >>"$trace"
  RES[attempts]=$n
  RES[wgap]=-
  ((n > 1)) && RES[wgap]=$(((lastt - t1) / (n - 1)))
  RES[write]=$write RES[role]=$role RES[table]=$table RES[allok]=$allok
  RES[iter]=$((loop_ms / iter)) RES[errs]=$errs
  [[ $write == - ]] && NOTES+=" NO-WRITE-WITHIN-DEADLINE"
  [[ $role == - ]] && NOTES+=" REPLICA-NOT-MASTER"
  [[ $allok == - ]] && NOTES+=" SOME-SURVIVOR-NOT-OK"

  # After: the data, the epoch, survivors' states.
  local rsize got epoch
  rsize=$(cli "$rkey" dbsize)
  got=$(cli "$ekey" get "$key")
  query "$ekey" "$Q_INFO" && info_field "$R" cluster_current_epoch && epoch=$F
  [[ $rsize == "$vsize" ]] || NOTES+=" DBSIZE:victim-$vsize-new-primary-$rsize"
  [[ $write == - || $got == "after-$round" ]] || NOTES+=" GET-AFTER:'$got'"
  RES[epoch]="$base_epoch->${epoch:-?}"
  for k in "${survivors[@]}"; do
    if query "$k" "$Q_INFO"; then info_field "$R" cluster_state; else F=no-reply; fi
    [[ $F == ok ]] || NOTES+=" ${IP[$k]}:cluster_state=$F"
  done

  local end_us
  end_us=$(now_us)
  stop_all "${all[@]}"

  # The logs.
  local -a slogs=()
  for k in "${survivors[@]}"; do slogs+=("$dir/$k.log"); done
  RES[linklost]=$(first_log_ms "$kill_us" 'forwarding link lost.*node='"${IP[$vkey]//./\\.}:$PORT" "$dir/$ekey.log")
  RES[suspect]=$(first_log_ms "$kill_us" "node $vid is pdead" "${slogs[@]}")
  RES[deadrepl]=$(first_log_ms "$kill_us" "node $vid is dead" "$dir/$rkey.log")
  RES[deadall]=$(last_of_firsts_ms "$kill_us" "node $vid is dead" "${slogs[@]}")
  RES[won]=$(first_log_ms "$kill_us" 'failover: this replica won' "$dir/$rkey.log")
  RES[primlog]=$(first_log_ms "$kill_us" 'this node is a primary now' "$dir/$rkey.log")
  RES[detect]=${RES[deadrepl]}
  RES[elect]=$(diff_or_dash "${RES[won]}" "${RES[deadrepl]}")
  RES[spread]=$(diff_or_dash "$table" "${RES[won]}")
  RES[forward]=$(diff_or_dash "$write" "$table")
  RES[after]=$(diff_or_dash "$write" "${RES[won]}")
  # Every failover:/dead/pdead/alive line of the round, for the trace; odd ones for NOTES.
  local f n
  {
    echo "# log lines from 1 s before the kill to the teardown (ms from the kill; node):"
    for f in "$dir"/n?.log; do
      n=$(basename "$f" .log)
      grep -E 'failover:|is (pdead|dead|alive)|primary now|forwarding link lost|WARN|ERROR' "$f" \
        | while IFS= read -r line; do
          local us
          us=$(date -u -d "${line%% *}" +%s%6N 2>/dev/null) || continue
          ((us < kill_us - 1000000 || us > end_us)) && continue
          printf '%+8d ms %-12s %s\n' $(((us - kill_us) / 1000)) "${IP[$n]}" "${line#* }"
        done
    done | sort -n
  } >>"$trace"
  n=$(grep -hE 'failover:' "$dir"/n?.log | grep -vc "$vid" || true)
  ((n)) && NOTES+=" LOG:failover-of-another-node($n)"
  n=$(grep -hcE 'failover:' "$dir/$rkey.log" || true)
  ((n > 1)) && NOTES+=" LOG:replica-won-$n-times"
  n=0
  for f in "${slogs[@]}"; do
    n=$((n + $(grep -E 'is (pdead|dead)' "$f" | grep -vc "$vid" || true)))
  done
  ((n)) && NOTES+=" LOG:live-nodes-suspected($n)"
  n=0
  for f in "${slogs[@]}"; do n=$((n + $(grep -c "$vid is alive" "$f" || true))); done
  ((n > 5)) && NOTES+=" LOG:victim-alive-lines($n)"
  # How much later than suspect + suspect timeout the first survivor declared it dead (the
  # others mostly learn it by gossip). A node starved of CPU for more than half a probe
  # interval gives its suspicions the time it lost (membership.rs tick), which shows here.
  RES[deadfirst]=$(first_log_ms "$kill_us" "node $vid is dead" "${slogs[@]}")
  RES[excess]=-
  [[ ${RES[deadfirst]} != - && ${RES[suspect]} != - ]] \
    && RES[excess]=$((RES[deadfirst] - RES[suspect] - ${conf##*/}))
  ((CPU_BUSY)) && NOTES+=" BUSY"
  NOTES="victim ${RES[victim]} (replica ${RES[replica]}, entry ${RES[entry]}, key ${RES[key]}), epoch ${RES[epoch]}, ${RES[attempts]} SETs ($errs failed); $OTHERS_TEXT${NOTES:+;$NOTES}"
  echo "# result: write $write role $role table $table all-ok $allok | $NOTES" >>"$trace"

  keep_round_logs "$dir" "$trace" "$tag"
}

# ---------------------------------------------------------------------------- main

echo "failover: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r)"
print_binaries "built "
echo "ROUNDS=$ROUNDS SETUPS=\"$SETUPS\" KEYS=$KEYS POLL_MS=$POLL_MS; $(redis-cli --version)"
echo "Nodes unpinned (--cores 1, no --cpus): six nodes, this script and redis-cli share $(nproc) CPUs."
echo "Times in ms from the kill -9; '-' = not reached within $FAILOVER_DEADLINE_MS ms (or no log line)."

SUMMARY=()
for setup in $SETUPS; do
  case $setup in
    default) net=$NET_DEFAULT label="default (no timing flags)" ;;
    tight) net=$NET_TIGHT label="tight (${TIGHT_FLAGS[*]}, config file: $TIGHT_CONF)" ;;
    *) die "unknown setup $setup (default|tight)" ;;
  esac
  declare -A COL=()
  notes=()
  for ((round = 1; round <= ROUNDS; round++)); do
    log "$setup round $round/$ROUNDS"
    run_unless_busy failover_round "$setup" "$net" "$round" "$setup-r$round"
    for m in write role table allok linklost suspect deadrepl deadall won primlog deadfirst excess detect elect after spread forward form iter wgap; do
      COL[$m]+=" ${RES[$m]}"
    done
    conf_seen=${RES[conf]}
    notes+=("$NOTES")
    log "  write ${RES[write]} role ${RES[role]} (dead ${RES[deadrepl]} won ${RES[won]} table ${RES[table]}); $NOTES"
  done
  echo
  echo "== $label: on every node CONFIG GET cluster-failover-delay-ms/probe-interval/suspect-timeout = $conf_seen =="
  printf "%-10s" ms
  for ((round = 1; round <= ROUNDS; round++)); do printf " %6s" "r$round"; done
  printf " | %6s %6s %6s\n" min median max
  for m in write role - linklost suspect deadfirst deadrepl deadall won table allok primlog - excess detect elect after spread forward - form iter wgap; do
    if [[ $m == - ]]; then echo "  --"; continue; fi
    read -r -a vals <<<"${COL[$m]}"
    read -r -a mmm <<<"$(stats "${vals[@]}")"
    printf "%-10s" "$m"
    printf " %6s" "${vals[@]}"
    printf " | %6s %6s %6s\n" "${mmm[@]}"
  done
  for ((round = 1; round <= ROUNDS; round++)); do echo "  r$round: ${notes[round - 1]}"; done
  for m in write role detect elect after; do
    read -r -a vals <<<"${COL[$m]}"
    SUMMARY+=("$(printf '%-8s %-7s %s' "$setup" "$m" "$(stats "${vals[@]}")")")
  done
  unset COL
done
echo
echo "Summary (ms from the kill -9, $ROUNDS rounds each): min median max"
printf '%s\n' "${SUMMARY[@]}" | awk '{ printf "%-8s %-7s %6s %6s %6s\n", $1, $2, $3, $4, $5 }'
cat <<'EOF'

write = first OK to SET through the entry (a surviving primary, forward mode); role = the
replica's INFO replication says role:master; from the node logs: linklost = the entry's
forwarding link to the victim lost; suspect = first survivor logs it pdead; deadfirst =
first survivor logs it dead; deadrepl = the replica does; deadall = the last survivor
does; won = the replica's "failover:" line; primlog = its "this node is a primary now"
line. table = the entry lists the replica as a master with slots; allok = every survivor
says cluster_state:ok and lists it so. The replica's replication side follows the table
on core 0's cron tick (hz 10) and first waits for its replica task to stop, which looks
every 100 ms (REPL_READ_POLL_MS), so role lags the table by up to ~200 ms.
excess = deadfirst - suspect - the suspect timeout; detect = deadrepl; elect = won -
deadrepl; after = write - won (the table reaching the entry, its forwarder connecting to
the new owner, the reply), split by the entry poll into spread = table - won and
forward = write - table (each good to about one poll iteration, so either can be
negative). form = start of tessera-ctl create to the cluster ready with replicas linked;
iter = mean poll iteration of the main loop; wgap = mean time between two SET attempts
(one redis-cli run each, in its own background loop). The "failover:" line is logged on
the replica's next control tick (20 ms) when the deciding vote arrived in a bus frame, so
won can trail the real win by up to 20 ms (then spread or forward can come out a few ms
below zero).
EOF
