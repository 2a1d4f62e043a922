#!/usr/bin/env bash
# Memory per idle connection: Tandem beside Mosquitto and rumqttd, in one run. For each broker
# and each count, a fresh broker is started, COUNT clients connect (CONNECT, one SUBSCRIBE,
# then silent; tests/bench/idle_clients.py, spread over processes of at most 5000 connections
# each, as every process here is limited to 20,000 descriptors), and the broker's RSS is read
# once they are all set up. Per connection = (RSS with the clients - RSS at start) / COUNT.
# Then the clients leave and the RSS is read again after SETTLE seconds: what comes back.
#
# usage: tests/bench/idle.sh [--counts 1000,10000,19000] [--brokers tandem,mosquitto,rumqttd]
#                            [--settle S] [--no-build]
# environment: TANDEM_BIN, MOSQUITTO, RUMQTTD (binaries), CARGO_TARGET_DIR, BENCH_TOOLS,
#              BENCH_OUT (default a new /tmp dir), IDLE_PORT (default 21950)
#
# This prints numbers; it never fails on a large result (benchmarks are not tests).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BENCH_TOOLS=${BENCH_TOOLS:-/work/.bench-tools}
COUNTS=1000,10000,19000
BROKERS=tandem,mosquitto,rumqttd
SETTLE=5
BUILD=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --counts) COUNTS=$2; shift ;;
        --brokers) BROKERS=$2; shift ;;
        --settle) SETTLE=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "idle.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "idle: $*" >&2; }
# Up to 5000 sockets per client process, and the brokers hold one per client: as many
# descriptors as this machine allows (20,000 here; a common soft limit is 1024).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
die() { echo "idle: error: $*" >&2; exit 1; }

if [[ $BUILD == 1 ]]; then
    log "building tandem (release)"
    (cd "$REPO" && cargo build --release --quiet -p tandem-broker --bin tandem)
fi
TANDEM_BIN=${TANDEM_BIN:-$TARGET/release/tandem}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
RUMQTTD=${RUMQTTD:-$BENCH_TOOLS/bin/rumqttd}
PORT=${IDLE_PORT:-21950}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/tandem-idle.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/idle.jsonl
: >"$RESULTS"

# The same bounds for all: room for 19,000 clients, no per-connection log line.
cat >"$OUT/tandem.yaml" <<EOF
listeners:
  default: { type: tcp, bind: 127.0.0.1:$PORT }
mqtt:
  max_connections: 20000
  max_handshakes: 20000
EOF
cat >"$OUT/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
connection_messages false
max_inflight_messages 100
EOF
cat >"$OUT/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$PORT"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
declare -A CMD_OF=(
    [tandem]="$TANDEM_BIN --config $OUT/tandem.yaml"
    [mosquitto]="$MOSQUITTO -c $OUT/mosquitto.conf"
    [rumqttd]="$RUMQTTD -q -c $OUT/rumqttd.toml"
)

BROKER_PID="" CLIENT_PIDS=() FIFOS=()
cleanup() {
    local pid
    for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

for name in ${BROKERS//,/ }; do
    bin=${CMD_OF[$name]%% *}
    [[ -x $bin ]] || { log "skipping $name: no binary at $bin"; continue; }
    for count in ${COUNTS//,/ }; do
        # shellcheck disable=SC2086 # the command is meant to split
        ${CMD_OF[$name]} >>"$OUT/$name.log" 2>&1 &
        BROKER_PID=$!
        deadline=$((SECONDS + 10))
        until port_open; do
            ((SECONDS < deadline)) || die "$name did not listen on $PORT (log: $OUT/$name.log)"
            sleep 0.05
        done
        sleep 0.5
        before=$(rss_kib "$BROKER_PID")
        CLIENT_PIDS=() FIFOS=()
        left=$count part=0
        started=$SECONDS
        while ((left > 0)); do
            n=$((left < 5000 ? left : 5000))
            fifo=$OUT/hold-$part
            rm -f "$fifo" && mkfifo "$fifo"
            # Held open by the fifo: the clients stay until it is closed.
            python3 "$REPO/tests/bench/idle_clients.py" 127.0.0.1 "$PORT" "$n" "idle-$part" \
                <"$fifo" >"$OUT/clients-$part.out" 2>&1 &
            CLIENT_PIDS+=($!)
            exec {fd}>"$fifo"
            FIFOS+=("$fd")
            left=$((left - n)) part=$((part + 1))
        done
        deadline=$((SECONDS + 300))
        while true; do
            ready=0
            for i in "${!CLIENT_PIDS[@]}"; do
                if grep -q '^ready' "$OUT/clients-$i.out"; then
                    ready=$((ready + 1))
                elif ! kill -0 "${CLIENT_PIDS[i]}" 2>/dev/null; then
                    die "$name: client process $i failed: $(head -3 "$OUT/clients-$i.out")"
                fi
            done
            ((ready == ${#CLIENT_PIDS[@]})) && break
            ((SECONDS < deadline)) || die "$name: $count clients not set up within 300 s"
            sleep 0.2
        done
        setup=$((SECONDS - started))
        sleep 2
        with=$(rss_kib "$BROKER_PID")
        for fd in "${FIFOS[@]}"; do exec {fd}>&-; done
        for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
        CLIENT_PIDS=()
        sleep "$SETTLE"
        after=$(rss_kib "$BROKER_PID")
        kill "$BROKER_PID" && wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
        rm -f "$OUT"/clients-*.out "$OUT"/hold-*
        per=$(((with - before) * 1024 / count))
        log "$name: $count idle connections: RSS $before -> $with KiB ($per bytes each), $after KiB ${SETTLE}s after they left (set up in ${setup}s)"
        printf '{"broker":"%s","connections":%d,"rss_start_kib":%d,"rss_with_kib":%d,"rss_after_kib":%d,"bytes_per_connection":%d,"settle_s":%s}\n' \
            "$name" "$count" "$before" "$with" "$after" "$per" "$SETTLE" >>"$RESULTS"
    done
done

python3 - "$RESULTS" "$COUNTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
counts = [int(c) for c in sys.argv[2].split(",")]
brokers = list(dict.fromkeys(r["broker"] for r in rows))
print("Broker RSS per idle connection (CONNECT + one SUBSCRIBE), bytes; in brackets, RSS after the")
print("clients left, against the RSS at start (MiB):")
print()
print("| broker | " + " | ".join(f"{c} connections" for c in counts) + " |")
print("|---|" + "---|" * len(counts))
for b in brokers:
    cells = []
    for c in counts:
        r = next((r for r in rows if r["broker"] == b and r["connections"] == c), None)
        cells.append("-" if r is None else
                     f"{r['bytes_per_connection']:,} ({r['rss_after_kib'] / 1024:.0f} / {r['rss_start_kib'] / 1024:.0f})")
    print(f"| {b} | " + " | ".join(cells) + " |")
PY
log "raw results in $RESULTS"
