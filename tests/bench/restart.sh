#!/usr/bin/env bash
# How long a broker takes to come back with a full store: Tandem (storage.path set) beside
# Mosquitto (persistence true), in one run. Each repetition, for each broker:
#
#   1. start it on an empty store (timed: the start with nothing to restore);
#   2. fill it: N persistent sessions (clean session 0), each subscribed to its own topic at
#      QoS 1 and disconnected, then M QoS 1 messages published to each while it is offline
#      (every one acknowledged by the broker): N x M stored messages;
#   3. stop it with SIGTERM (timed: Mosquitto writes its database then) and measure the store;
#   4. start it again (timed: from just before the process is started to the first CONNACK,
#      polled every 2 ms by `tandem-loadgen ready`), reading Tandem's `storage: restored` line;
#   5. reconnect the N sessions and count what each receives (`tandem-loadgen drain`): the
#      proof that the N x M messages were there, for both brokers;
#   6. stop it.
#
# Medians over repetitions, and the restart time's ratio mosquitto/tandem (above 1: Tandem is
# back sooner). It prints numbers; it never fails on a slow result. See tests/bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/bench/restart.sh [--reps N] [--sessions N] [--messages M] [--sync always|periodic]
                              [--brokers tandem,mosquitto] [--drop-caches] [--no-build]

  --reps N       repetitions per broker; the table shows medians (default 3)
  --sessions N   persistent sessions (default 10000)
  --messages M   QoS 1 messages stored per session (default 10: 100,000 in all)
  --sync MODE    Tandem's storage.sync while filling (default always); the restart reads
                 the same store either way
  --brokers      which brokers (default tandem,mosquitto; a missing binary is skipped)
  --drop-caches  drop the kernel's page cache (as root) before each timed restart, so the
                 store is read from disk; by default it is still cached from the stop
  --no-build     use the binaries already built

environment:
  CARGO_TARGET_DIR  where cargo builds (default <repo>/target)
  TANDEM_BIN, LOADGEN, MOSQUITTO   override a binary
  TANDEM_PORT, MOSQUITTO_PORT      ports (default 21983, 21984)
  BENCH_OUT         directory for configs, logs, stores and raw results (default a new /tmp dir)
  BENCH_STORE       where the stores go (default BENCH_OUT/store; on the disk you mean to
                    measure). Mosquitto saves as the user mosquitto: its directory is handed
                    to it, and directories from there up to BENCH_OUT get o+x.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
REPS=3
SESSIONS=10000
MESSAGES=10
SYNC=always
BROKERS=tandem,mosquitto
DROP_CACHES=0
BUILD=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --messages) MESSAGES=$2; shift ;;
        --sync) SYNC=$2; shift ;;
        --brokers) BROKERS=$2; shift ;;
        --drop-caches) DROP_CACHES=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "restart.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $SYNC == always || $SYNC == periodic ]] || { echo "restart.sh: --sync is always or periodic" >&2; exit 2; }

log() { echo "restart: $*" >&2; }
die() { echo "restart: error: $*" >&2; exit 1; }

OUT=${BENCH_OUT:-$(mktemp -d /tmp/tandem-restart.XXXXXX)}
mkdir -p "$OUT"
STORE=${BENCH_STORE:-$OUT/store}
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

declare -A PID_OF=()
cleanup() {
    local pid
    for pid in "${PID_OF[@]}"; do [[ -n $pid ]] && kill "$pid" 2>/dev/null; done
    for pid in "${PID_OF[@]}"; do [[ -n $pid ]] && wait "$pid" 2>/dev/null; done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $BUILD == 1 ]]; then
    log "building tandem and tandem-loadgen (release)"
    (cd "$REPO" && cargo build --release -p tandem-broker --bin tandem -p tandem-tests --bin tandem-loadgen) \
        || die "the release build failed (see above)"
fi
TANDEM_BIN=${TANDEM_BIN:-$TARGET/release/tandem}
LOADGEN=${LOADGEN:-$TARGET/release/tandem-loadgen}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN (build it, or set LOADGEN)"

TANDEM_PORT=${TANDEM_PORT:-21983}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-21984}
declare -A BIN_OF=([tandem]=$TANDEM_BIN [mosquitto]=$MOSQUITTO)
declare -A PORT_OF=([tandem]=$TANDEM_PORT [mosquitto]=$MOSQUITTO_PORT)
declare -A ARGS_OF=([tandem]="--config $OUT/tandem.yaml" [mosquitto]="-c $OUT/mosquitto.conf")
declare -A FILE_OF=([tandem]=tandem.redb [mosquitto]=mosquitto.db)

# Both keep every session and message: queues and parked sessions well above the load.
cat >"$OUT/tandem.yaml" <<EOF
listeners:
  default: { type: tcp, bind: 127.0.0.1:$TANDEM_PORT }
mqtt:
  max_queued_messages: 10000000
  max_parked_sessions: $((SESSIONS * 2))
  max_connections: $((SESSIONS + 1000))
storage:
  path: $STORE/tandem
  sync: $SYNC
  interval: 1s
EOF
# Mosquitto saves its whole database at shutdown and every autosave_interval (default 1800 s).
cat >"$OUT/mosquitto.conf" <<EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 10000000
persistence true
persistence_location $STORE/mosquitto/
EOF

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
now_ns() { date +%s%N; }

# fresh_store NAME: an empty store directory that the broker can write.
fresh_store() {
    local dir=$STORE/$1
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $1 == mosquitto && $(id -u) == 0 ]] && id mosquitto >/dev/null 2>&1; then
        chown mosquitto: "$dir"
        local up=$dir
        while [[ $up == "$OUT"/* ]]; do
            up=$(dirname "$up")
            chmod o+x "$up"
        done
    fi
}

# timed_start NAME LOG: starts the broker and waits for its first CONNACK; sets STARTED_MS
# (process start to CONNACK) and the broker's PID. The probe polls before the process
# exists, so the time counts from just before the exec to the first accepted CONNECT.
timed_start() {
    local name=$1 logf=$2 probe_out=$OUT/probe.json
    if port_open "${PORT_OF[$name]}"; then
        die "$name: port ${PORT_OF[$name]} is already taken by another process"
    fi
    "$LOADGEN" --port "${PORT_OF[$name]}" --label "$name" --timeout 300 ready \
        >"$probe_out" 2>>"$OUT/loadgen.log" &
    local probe=$!
    sleep 0.05 # the probe is polling (connection refused) before the broker starts
    local t0
    t0=$(now_ns)
    # shellcheck disable=SC2086 # the arguments are meant to split
    "${BIN_OF[$name]}" ${ARGS_OF[$name]} >>"$logf" 2>&1 &
    PID_OF[$name]=$!
    if ! wait "$probe"; then
        log "$name did not answer CONNECT (log: $logf)"
        tail -5 "$logf" >&2
        stop "$name"
        return 1
    fi
    local ready
    ready=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ready_unix_ns"])' "$probe_out")
    STARTED_MS=$(python3 -c "print(($ready - $t0) / 1e6)")
    T0_NS=$t0
}

# stop NAME: SIGTERM, waits for the exit; sets STOP_MS.
stop() {
    local pid=${PID_OF[$1]:-}
    [[ -n $pid ]] || return 0
    local t0
    t0=$(now_ns)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    STOP_MS=$(python3 -c "print(($(now_ns) - $t0) / 1e6)")
    PID_OF[$1]=
}

# proc_stats PID: "rss_kib cpu_s" of a running process.
proc_stats() {
    local rss ticks
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
    ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
    echo "$rss $(python3 -c "print($ticks / $(getconf CLK_TCK))")"
}

RUNNING=()
for name in tandem mosquitto; do
    [[ ",$BROKERS," == *",$name,"* ]] || continue
    if [[ -x ${BIN_OF[$name]} ]]; then
        RUNNING+=("$name")
    else
        log "skipping $name: no binary at ${BIN_OF[$name]}"
    fi
done
((${#RUNNING[@]} > 0)) || die "no broker to run"

log "results in $OUT; $REPS repetition(s), $SESSIONS sessions x $MESSAGES messages, tandem sync: $SYNC"
for ((rep = 1; rep <= REPS; rep++)); do
    # Alternate which broker goes first.
    order=("${RUNNING[@]}")
    if ((rep % 2 == 0)); then
        order=()
        for ((i = ${#RUNNING[@]} - 1; i >= 0; i--)); do order+=("${RUNNING[i]}"); done
    fi
    for name in "${order[@]}"; do
        tag="$name rep $rep"
        prefix=persist-r$rep
        fresh_store "$name"
        logf=$OUT/$name-r$rep-fill.log
        timed_start "$name" "$logf" || continue
        empty_ms=$STARTED_MS
        log "$tag: started empty in ${empty_ms} ms; filling"
        if ! fill=$("$LOADGEN" --port "${PORT_OF[$name]}" --label "$name" --qos 1 \
            --clients "$SESSIONS" --messages "$MESSAGES" --session-prefix "$prefix" fill \
            2>>"$OUT/loadgen.log"); then
            log "$tag: fill failed: $(tail -1 "$OUT/loadgen.log")"
            stop "$name"
            continue
        fi
        tail -1 "$OUT/loadgen.log" >&2
        stop "$name"
        stop_ms=$STOP_MS
        file=$STORE/$name/${FILE_OF[$name]}
        size=$(stat -c %s "$file" 2>/dev/null || echo 0)
        disk=$(($(du -k "$STORE/$name" | cut -f1) * 1024))
        if [[ $DROP_CACHES == 1 ]]; then
            sync
            echo 3 >/proc/sys/vm/drop_caches || log "could not drop the page cache"
        fi
        logf=$OUT/$name-r$rep-restart.log
        timed_start "$name" "$logf" || continue
        restart_ms=$STARTED_MS
        read -r rss cpu < <(proc_stats "${PID_OF[$name]}")
        opened=$(grep -m1 'storage: opened' "$logf" || true)
        restored=$(grep -m1 'storage: restored' "$logf" || true)
        log "$tag: restarted in ${restart_ms} ms (rss ${rss} KiB, cpu ${cpu} s); ${restored#*INFO }"
        if ! drain=$("$LOADGEN" --port "${PORT_OF[$name]}" --label "$name" \
            --clients "$SESSIONS" --messages "$MESSAGES" --session-prefix "$prefix" drain \
            2>>"$OUT/loadgen.log"); then
            log "$tag: drain failed: $(tail -1 "$OUT/loadgen.log")"
            drain=null
        else
            tail -1 "$OUT/loadgen.log" >&2
        fi
        stop "$name"
        python3 - "$name" "$rep" "$empty_ms" "$stop_ms" "$size" "$disk" "$restart_ms" "$rss" \
            "$cpu" "$opened" "$restored" "$T0_NS" "$fill" "$drain" >>"$RESULTS" <<'PY'
import datetime, json, re, sys
(name, rep, empty_ms, stop_ms, size, disk, restart_ms, rss, cpu, opened, restored, t0_ns,
 fill, drain) = sys.argv[1:]

def at_ms(line):
    """Milliseconds from the process start to a Tandem log line (its UTC timestamp)."""
    m = re.match(r"(\S+)Z", line.strip())
    if not m:
        return None
    at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    return (at.timestamp() * 1e9 - int(t0_ns)) / 1e6

r = {"broker": name, "rep": int(rep), "empty_start_ms": float(empty_ms),
     "stop_ms": float(stop_ms), "store_bytes": int(size), "store_disk_bytes": int(disk),
     "restart_ms": float(restart_ms), "rss_kib": int(rss), "cpu_s": float(cpu),
     "fill": json.loads(fill), "drain": json.loads(drain)}
# Tandem's log lines around the restore: where the restart's time goes.
if opened:
    r["opened_at_ms"] = at_ms(opened)
if restored:
    r["restored"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", restored)}
    r["restored_at_ms"] = at_ms(restored)
print(json.dumps(r))
PY
    done
done

# --- table ------------------------------------------------------------------------------------
python3 - "$RESULTS" "$SESSIONS" "$MESSAGES" >"$OUT/table.md" <<'PY'
import json, statistics, sys
results, sessions, messages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = {}
for line in open(results):
    r = json.loads(line)
    runs.setdefault(r["broker"], []).append(r)
brokers = [b for b in ["tandem", "mosquitto"] if b in runs]

def med(b, f):
    vals = [v for v in (f(r) for r in runs[b]) if v is not None]
    return statistics.median(vals) if vals else None

def get(*path):
    def f(r):
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r
    return f

ms = lambda x: "-" if x is None else f"{x:.0f} ms"
s = lambda x: "-" if x is None else f"{x:.2f} s"
mib = lambda x: "-" if x is None else f"{x / 2**20:.1f} MiB"
num = lambda x: "-" if x is None else f"{x:,.0f}"
rows = [
    ("restart: process start to first CONNACK", get("restart_ms"), ms, False),
    ("  of which until `storage: opened` was logged", get("opened_at_ms"), ms, None),
    ("  of which until `storage: restored` was logged", get("restored_at_ms"), ms, None),
    ("start with an empty store, to first CONNACK", get("empty_start_ms"), ms, False),
    ("broker CPU from start to first CONNACK", get("cpu_s"), s, False),
    ("broker memory (RSS) after the restart", lambda r: r["rss_kib"] * 1024, mib, False),
    ("store file size after the stop", get("store_bytes"), mib, False),
    ("store on disk (du)", get("store_disk_bytes"), mib, False),
    ("stop (SIGTERM to exit), with the full store", get("stop_ms"), ms, False),
    ("fill: sessions made", get("fill", "sessions_s"), s, False),
    ("fill: messages published and acknowledged", get("fill", "publish_s"), s, False),
    ("restored sessions (Tandem's log line)", get("restored", "sessions"), num, None),
    ("restored queued messages (Tandem's log line)", get("restored", "queued"), num, None),
    ("restored inflight messages (Tandem's log line)", get("restored", "inflight"), num, None),
    ("messages drained after the restart (distinct)", get("drain", "distinct"), num, None),
    ("drain: duplicates / foreign / sessions short",
     lambda r: None if not r.get("drain") else
        (r["drain"]["duplicates"], r["drain"]["foreign"], r["drain"]["sessions_short"]),
     lambda x: "-" if x is None else " / ".join(map(str, x)), None),
    ("drain: reconnect all sessions, take every message", get("drain", "seconds"), s, False),
]
head = "| | " + " | ".join(brokers) + (" | mosquitto/tandem |" if len(brokers) == 2 else " |")
print(f"{sessions:,} persistent sessions x {messages} QoS 1 messages = {sessions * messages:,} "
      f"stored; medians of {max(len(v) for v in runs.values())} repetition(s).")
print()
print(head)
print("|---|" + "---|" * (len(brokers) + (len(brokers) == 2)))
for label, f, fmt, lower_better in rows:
    if "drain: duplicates" in label:
        vals = {b: (lambda rs: rs[len(rs) // 2] if rs else None)(
            sorted(x for x in (f(r) for r in runs[b]) if x is not None)) for b in brokers}
    else:
        vals = {b: med(b, f) for b in brokers}
    cells = [fmt(vals[b]) for b in brokers]
    ratio = ""
    if len(brokers) == 2:
        t, m = vals["tandem"], vals["mosquitto"]
        ratio = (f" {m / t:.2f} |" if lower_better is False and t and m else " - |")
    print(f"| {label} | " + " | ".join(cells) + " |" + ratio)
print()
print("mosquitto/tandem: above 1 is Tandem's advantage (less time, memory or disk).")
for b in brokers:
    for r in runs[b]:
        d = r.get("drain")
        if not d or not d.get("exact"):
            print(f"- {b} rep {r['rep']}: the drain did not get every stored message exactly once")
PY
cat "$OUT/table.md"
log "table saved to $OUT/table.md; raw results in $RESULTS"
