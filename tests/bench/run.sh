#!/usr/bin/env bash
# Tandem beside Mosquitto and rumqttd, in one run, on one machine: every scenario against every
# broker, medians of R repetitions, and Tandem's ratio to each peer. A second Tandem build
# (tandem-base, TANDEM_BASE_BIN) can run beside them, to compare a change with its base in the
# same run. Scenarios can also run over TLS or WebSocket (suffix -tls, -ws) beside plain TCP.
# Tandem with a store (tandem-always, tandem-periodic) and Mosquitto with persistence
# (mosquitto-persistent) run as brokers of their own, each with a fresh, empty store per run.
# See tests/bench/README.md.
#
# This prints numbers; it never fails on a slow result (benchmarks are not tests).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/bench/run.sh [--quick] [--reps N] [--duration S] [--warmup S]
                          [--brokers tandem,tandem-base,mosquitto,rumqttd,...] [--scenarios a,b,...]
                          [--pinned] [--save] [--no-build]

  --quick       one short repetition per scenario (a smoke run, about 2 minutes)
  --reps N      repetitions per scenario and broker; the table shows min / median / max
                and ratios of medians (default 5)
  --duration S  measurement window per run in seconds (default 5; --quick 2)
  --warmup S    warm-up before each window in seconds (default 1; --quick 0.5)
  --brokers     which brokers to run (default tandem,mosquitto,rumqttd; a missing binary is
                skipped); tandem-base is a second Tandem build (TANDEM_BASE_BIN), run only
                when named, and the table then gives tandem/tandem-base and its spread.
                With a store, each run starting from an empty one (only when named, TCP only):
                tandem-always (storage sync: always), tandem-periodic (sync: periodic, every
                STORAGE_INTERVAL), mosquitto-persistent (persistence true, its default
                autosave); a table of their ratios follows the main one
  --scenarios   which scenarios (default all): fan-in-qos0 fan-in-qos1 fan-out-qos0
                fan-out-qos1 pairs-qos0 pairs-qos1 connect latency
                (fan-in-qos0-fixed: 200k msg/s offered; fan-in-qos0-v5, fan-in-qos1-v5,
                fan-out-qos0-v5, fan-out-qos1-v5: MQTT 5;
                fan-in-qos1-persistent, fan-out-qos1-persistent: subscribers with persistent
                sessions, clean session 0, so a broker with a store stores their messages;
                all only when named)
                Any scenario with -tls (TLS) or -ws (MQTT over WebSocket) appended runs
                over that transport, e.g. connect-tls, fan-in-qos1-tls, fan-in-qos0-ws; only
                when named. Its plain-TCP scenario is added if missing, for the ratio.
                rumqttd is not run over TLS or WebSocket.
                Any scenario with -pinned appended runs with the broker on core 0 and the
                load generator on core 1 (taskset): efficiency per core, where a
                multi-threaded broker cannot borrow the load generator's core.
  --pinned      add the -pinned variant of every scenario (both modes in one run)
  --save        also copy the raw results (with the commit, versions and machine) to
                tests/bench/results/<UTC date>-<commit>.jsonl, for committing
  --no-build    use the binaries already built

environment:
  CARGO_TARGET_DIR  where cargo builds (default <repo>/target)
  BENCH_TOOLS       install root of peer tools (default /work/.bench-tools); rumqttd is
                    cargo-installed there if missing
  TANDEM_BIN, LOADGEN, CERTGEN, MOSQUITTO, RUMQTTD   override a binary
  TANDEM_BASE_BIN   the second Tandem build, e.g. the commit before a change (no default)
  TANDEM_CONFIG     a Tandem config file to use instead of the generated one (it must listen
                    on TANDEM_PORT)
  TANDEM_BASE_CONFIG  the same for tandem-base (it must listen on TANDEM_BASE_PORT); needed
                    with TANDEM_CONFIG, so that both builds run the config you mean
  TANDEM_PORT, MOSQUITTO_PORT, RUMQTTD_PORT, TANDEM_BASE_PORT
                    ports (default 21883, 21884, 21885, 21886)
  TANDEM_ALWAYS_PORT, TANDEM_PERIODIC_PORT, MOSQUITTO_PERSISTENT_PORT
                    ports of the brokers with a store (default 21887, 21888, 21889)
  STORAGE_INTERVAL  tandem-periodic's storage.interval (default 1s)
  BENCH_STORE       where the stores go, one directory per broker, emptied before every run
                    (default BENCH_OUT/store; it must be on the disk you mean to measure)
  TANDEM_TLS_PORT, MOSQUITTO_TLS_PORT, TANDEM_BASE_TLS_PORT
                    TLS listeners (default 21893, 21894, 21896)
  TANDEM_WS_PORT, MOSQUITTO_WS_PORT, TANDEM_BASE_WS_PORT
                    WebSocket listeners, path /mqtt (default 21903, 21904, 21906)
  MOSQUITTO_NODELAY=1  Mosquitto with set_tcp_nodelay true (default: its default, false)
  MOSQUITTO_MAX_QUEUED  Mosquitto's max_queued_messages (default 10000000; ANCHORS.md used 100000)
  BENCH_OUT         directory for configs, broker logs and raw results (default a new /tmp dir)
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BENCH_TOOLS=${BENCH_TOOLS:-/work/.bench-tools}
RUMQTTD_VERSION=0.20.0

REPS=5
DURATION=5
WARMUP=1
BROKERS=tandem,mosquitto,rumqttd
ALL_SCENARIOS=fan-in-qos0,fan-in-qos1,fan-out-qos0,fan-out-qos1,pairs-qos0,pairs-qos1,connect,latency
SCENARIOS=$ALL_SCENARIOS
BUILD=1
ORIG_ARGS=("$@")
PINNED=0
SAVE=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) REPS=1 DURATION=2 WARMUP=0.5 ;;
        --reps) REPS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --brokers) BROKERS=$2; shift ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --pinned) PINNED=1 ;;
        --save) SAVE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# transport_of SCENARIO: tcp, tls or ws, from the scenario's suffix (before -pinned).
transport_of() {
    case ${1%-pinned} in
        *-tls) echo tls ;;
        *-ws) echo ws ;;
        *) echo tcp ;;
    esac
}
# base_of SCENARIO: the same scenario over plain TCP (and unpinned).
base_of() {
    local s=${1%-pinned}
    s=${s%-tls}
    echo "${s%-ws}"
}
# The cores of a pinned run: the broker on one, the load generator on the other.
BROKER_CORE=${BROKER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}

# The loadgen arguments of each scenario (the transport's flags are added per broker).
scenario_args() {
    case $1 in
        *-pinned) scenario_args "${1%-pinned}" ;;
        *-tls | *-ws) scenario_args "$(base_of "$1")" ;;
        fan-in-qos0) echo "fan-in --qos 0 --clients 8" ;;
        fan-in-qos1) echo "fan-in --qos 1 --clients 8" ;;
        fan-out-qos0) echo "fan-out --qos 0 --clients 8" ;;
        fan-out-qos1) echo "fan-out --qos 1 --clients 8" ;;
        pairs-qos0) echo "pairs --qos 0 --clients 4" ;;
        pairs-qos1) echo "pairs --qos 1 --clients 4" ;;
        connect) echo "connect --clients 16" ;;
        latency) echo "latency --qos 1 --rate 2000 --clients 1" ;;
        # A fixed offered load well below saturation (8 x 25k = 200k msg/s): the figure that
        # matters is the broker's CPU per message, not the rate (plugins.sh uses it).
        fan-in-qos0-fixed) echo "fan-in --qos 0 --clients 8 --rate 25000" ;;
        # The same four over MQTT 5 (empty property blocks): against their 3.1.1 runs in
        # the same table, and against Mosquitto's MQTT 5. Only when named.
        fan-in-qos0-v5 | fan-in-qos1-v5 | fan-out-qos0-v5 | fan-out-qos1-v5)
            echo "$(scenario_args "${1%-v5}") --mqtt 5" ;;
        # Subscribers with persistent sessions (3.1.1 clean session 0, fixed ids for the run),
        # so that a broker with a store stores every message queued or in flight for them.
        # Publishers keep clean sessions. Only when named.
        fan-in-qos1-persistent | fan-out-qos1-persistent)
            echo "$(scenario_args "${1%-persistent}") --persistent" ;;
        *) die "unknown scenario $1 (known: $ALL_SCENARIOS)" ;;
    esac
}
if [[ $PINNED == 1 ]]; then
    pinned=()
    for s in ${SCENARIOS//,/ }; do [[ $s == *-pinned ]] || pinned+=("$s-pinned"); done
    SCENARIOS+=,$(IFS=,; echo "${pinned[*]}")
fi
if [[ $SCENARIOS == *-pinned* ]]; then
    command -v taskset >/dev/null || die "pinned scenarios need taskset (util-linux)"
    ((BROKER_CORE != LOADGEN_CORE)) || die "BROKER_CORE and LOADGEN_CORE must differ"
fi
for s in ${SCENARIOS//,/ }; do scenario_args "$s" >/dev/null; done
# A TLS or WebSocket scenario is judged against the same scenario over TCP in the same run:
# add the TCP one before it where it is missing.
with_bases=()
for s in ${SCENARIOS//,/ }; do
    base=$(base_of "$s")
    if [[ $base != "$s" && " ${with_bases[*]} " != *" $base "* && ",$SCENARIOS," != *",$base,"* ]]; then
        echo "bench: adding $base: $s is reported against it" >&2
        with_bases+=("$base")
    fi
    with_bases+=("$s")
done
SCENARIOS=$(IFS=,; echo "${with_bases[*]}")
NEED_TLS=0 NEED_WS=0
for s in ${SCENARIOS//,/ }; do
    case $(transport_of "$s") in
        tls) NEED_TLS=1 ;;
        ws) NEED_WS=1 ;;
    esac
done

OUT=${BENCH_OUT:-$(mktemp -d /tmp/tandem-bench.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# --- everything this script starts is stopped on exit -------------------------------------
declare -A PID_OF=()
cleanup() {
    local pid
    for pid in "${PID_OF[@]}"; do [[ -n $pid ]] && kill "$pid" 2>/dev/null; done
    for pid in "${PID_OF[@]}"; do [[ -n $pid ]] && wait "$pid" 2>/dev/null; done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binaries ---------------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building tandem and tandem-loadgen (release)"
    (cd "$REPO" && cargo build --release -p tandem-broker -p tandem-tests --bins) \
        || die "the release build failed (see above)"
fi
TANDEM_BIN=${TANDEM_BIN:-$TARGET/release/tandem}
LOADGEN=${LOADGEN:-$TARGET/release/tandem-loadgen}
[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN (build it, or set LOADGEN)"
CERTGEN=${CERTGEN:-$(dirname "$LOADGEN")/tandem-certgen}
CERTS=$OUT/certs
if [[ $NEED_TLS == 1 ]]; then
    # A CA and a server certificate made for this run: none is committed, no openssl needed.
    [[ -x $CERTGEN ]] || die "no certificate generator at $CERTGEN (build tandem-certgen, or set CERTGEN)"
    "$CERTGEN" --out "$CERTS" 2>>"$OUT/certgen.log" || die "tandem-certgen failed (see $OUT/certgen.log)"
fi

wanted() { [[ ",$BROKERS," == *",$1,"* ]]; }

# Two builds compared under different configs would measure the configs, not the builds.
if wanted tandem-base && [[ -n ${TANDEM_CONFIG:-} && -z ${TANDEM_BASE_CONFIG:-} ]]; then
    die "TANDEM_CONFIG is set: set TANDEM_BASE_CONFIG too (the same config on TANDEM_BASE_PORT)"
fi

if wanted mosquitto || wanted mosquitto-persistent; then
    MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
    if [[ ! -x $MOSQUITTO ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        log "installing Debian's mosquitto"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto >&2 \
            || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends mosquitto >&2; } \
            || log "could not install mosquitto"
        MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    fi
fi
if wanted rumqttd; then
    RUMQTTD=${RUMQTTD:-$BENCH_TOOLS/bin/rumqttd}
    if [[ ! -x $RUMQTTD ]]; then
        log "installing rumqttd $RUMQTTD_VERSION into $BENCH_TOOLS (takes minutes)"
        # Not --locked: rumqttd 0.20.0's lockfile pins metrics 0.22.1, which no longer compiles
        # on Rust 1.95 (E0521), so it takes the newest semver-compatible dependencies instead.
        cargo install rumqttd --version "$RUMQTTD_VERSION" --root "$BENCH_TOOLS" >&2 \
            || log "could not install rumqttd"
    fi
fi

# --- brokers ----------------------------------------------------------------------------------
TANDEM_PORT=${TANDEM_PORT:-21883}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-21884}
RUMQTTD_PORT=${RUMQTTD_PORT:-21885}
TANDEM_BASE_PORT=${TANDEM_BASE_PORT:-21886}
TANDEM_ALWAYS_PORT=${TANDEM_ALWAYS_PORT:-21887}
TANDEM_PERIODIC_PORT=${TANDEM_PERIODIC_PORT:-21888}
MOSQUITTO_PERSISTENT_PORT=${MOSQUITTO_PERSISTENT_PORT:-21889}
STORAGE_INTERVAL=${STORAGE_INTERVAL:-1s}
TANDEM_TLS_PORT=${TANDEM_TLS_PORT:-21893}
MOSQUITTO_TLS_PORT=${MOSQUITTO_TLS_PORT:-21894}
TANDEM_BASE_TLS_PORT=${TANDEM_BASE_TLS_PORT:-21896}
TANDEM_WS_PORT=${TANDEM_WS_PORT:-21903}
MOSQUITTO_WS_PORT=${MOSQUITTO_WS_PORT:-21904}
TANDEM_BASE_WS_PORT=${TANDEM_BASE_WS_PORT:-21906}
WS_PATH=/mqtt

# Queues as roomy as the peers' (Mosquitto's max_queued_messages below, rumqttd's commitlog).
# tandem-base gets the same config on its own ports, so the two builds differ in code only.
# TLS and WebSocket listeners only when a scenario uses them (a build without them still runs
# the TCP scenarios).
tandem_config() {
    echo "listeners:"
    echo "  default: { type: tcp, bind: 127.0.0.1:$1 }"
    if [[ $NEED_TLS == 1 ]]; then
        echo "  secure: { type: tls, bind: 127.0.0.1:$2, tls: { cert: $CERTS/server.pem, key: $CERTS/server.key } }"
    fi
    if [[ $NEED_WS == 1 ]]; then
        echo "  web: { type: ws, bind: 127.0.0.1:$3, path: $WS_PATH }"
    fi
    echo "mqtt:"
    echo "  max_queued_messages: 10000000"
}
tandem_config "$TANDEM_PORT" "$TANDEM_TLS_PORT" "$TANDEM_WS_PORT" >"$OUT/tandem.yaml"
tandem_config "$TANDEM_BASE_PORT" "$TANDEM_BASE_TLS_PORT" "$TANDEM_BASE_WS_PORT" >"$OUT/tandem-base.yaml"

# The brokers with a store: the same settings on plain TCP only, plus the store. Each run
# starts with its store directory emptied (start below), so no run reads another's data.
# Started as root, Mosquitto saves its database as the user mosquitto: its directory is
# handed to that user, and the directories above it must let it through.
STORE=${BENCH_STORE:-$OUT/store}
declare -A STORE_OF=(
    [tandem-always]=$STORE/tandem-always [tandem-periodic]=$STORE/tandem-periodic
    [mosquitto-persistent]=$STORE/mosquitto-persistent
)
# tandem_store_config PORT SYNC DIR
tandem_store_config() {
    echo "listeners:"
    echo "  default: { type: tcp, bind: 127.0.0.1:$1 }"
    echo "mqtt:"
    echo "  max_queued_messages: 10000000"
    echo "storage:"
    echo "  path: $3"
    echo "  sync: $2"
    echo "  interval: $STORAGE_INTERVAL"
}
tandem_store_config "$TANDEM_ALWAYS_PORT" always "${STORE_OF[tandem-always]}" >"$OUT/tandem-always.yaml"
tandem_store_config "$TANDEM_PERIODIC_PORT" periodic "${STORE_OF[tandem-periodic]}" >"$OUT/tandem-periodic.yaml"
# ANCHORS.md measured Mosquitto with max_queued_messages 100000. Mosquitto 2.0.11 then drops
# QoS 1 messages for a busy subscriber once about 100k messages have passed through its queue,
# however short the queue is at the time (seen here: fan-in QoS 1 with 8000 messages at most in
# the broker loses thousands after a few seconds; it logs "Outgoing messages are being dropped").
# A higher bound keeps every run below that count, so Mosquitto is measured delivering exactly.
# Its TLS listener takes OpenSSL's defaults (it negotiates TLS 1.3, as rustls does); its
# WebSocket listener is libwebsockets, built into Debian's package. Started as root, Mosquitto
# runs as the user mosquitto: the certificates must be readable by it (a BENCH_OUT under /root
# is not; the default under /tmp is).
# Every broker gets the same outbound window as Tandem's default (100 messages in flight per
# client; Mosquitto's default is 20, rumqttd's was 500 here) and no per-connection log line
# (Mosquitto logs every connect by default; Tandem logs them at debug).
{
    echo "listener $MOSQUITTO_PORT 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_inflight_messages 100"
    echo "connection_messages false"
    echo "max_queued_messages ${MOSQUITTO_MAX_QUEUED:-10000000}"
    if [[ ${MOSQUITTO_NODELAY:-0} == 1 ]]; then echo "set_tcp_nodelay true"; fi
    if [[ $NEED_TLS == 1 ]]; then
        echo "listener $MOSQUITTO_TLS_PORT 127.0.0.1"
        echo "cafile $CERTS/ca.pem"
        echo "certfile $CERTS/server.pem"
        echo "keyfile $CERTS/server.key"
    fi
    if [[ $NEED_WS == 1 ]]; then
        echo "listener $MOSQUITTO_WS_PORT 127.0.0.1"
        echo "protocol websockets"
    fi
} >"$OUT/mosquitto.conf"
# Mosquitto's persistence: the whole database is written at shutdown and every
# autosave_interval (default 1800 s); nothing is synced per message.
{
    echo "listener $MOSQUITTO_PERSISTENT_PORT 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_inflight_messages 100"
    echo "connection_messages false"
    echo "max_queued_messages ${MOSQUITTO_MAX_QUEUED:-10000000}"
    if [[ ${MOSQUITTO_NODELAY:-0} == 1 ]]; then echo "set_tcp_nodelay true"; fi
    echo "persistence true"
    echo "persistence_location ${STORE_OF[mosquitto-persistent]}/"
} >"$OUT/mosquitto-persistent.conf"
# One v4 listener; next_connection_delay_ms = 0 because the default 1 ms caps connects at 1k/s.
# The rest is rumqttd's own default config.
cat >"$OUT/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$RUMQTTD_PORT"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF

# port_open PORT: true once something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

declare -A BIN_OF PORT_OF PORTS_OF ARGS_OF
BIN_OF=(
    [tandem]=$TANDEM_BIN [tandem-base]=${TANDEM_BASE_BIN:-}
    [mosquitto]=${MOSQUITTO:-} [rumqttd]=${RUMQTTD:-}
    [tandem-always]=$TANDEM_BIN [tandem-periodic]=$TANDEM_BIN
    [mosquitto-persistent]=${MOSQUITTO:-}
)
PORT_OF=(
    [tandem]=$TANDEM_PORT [tandem-base]=$TANDEM_BASE_PORT
    [mosquitto]=$MOSQUITTO_PORT [rumqttd]=$RUMQTTD_PORT
    [tandem-always]=$TANDEM_ALWAYS_PORT [tandem-periodic]=$TANDEM_PERIODIC_PORT
    [mosquitto-persistent]=$MOSQUITTO_PERSISTENT_PORT
    [tandem:tls]=$TANDEM_TLS_PORT [tandem-base:tls]=$TANDEM_BASE_TLS_PORT
    [mosquitto:tls]=$MOSQUITTO_TLS_PORT
    [tandem:ws]=$TANDEM_WS_PORT [tandem-base:ws]=$TANDEM_BASE_WS_PORT
    [mosquitto:ws]=$MOSQUITTO_WS_PORT
)
# Every broker this script knows, in the order of the table's columns.
ALL_BROKERS="tandem tandem-always tandem-periodic tandem-base mosquitto mosquitto-persistent rumqttd"
# Every port a broker listens on: it has started when all are open.
for name in $ALL_BROKERS; do
    PORTS_OF[$name]=${PORT_OF[$name]}
    if [[ $NEED_TLS == 1 && -n ${PORT_OF[$name:tls]:-} ]]; then
        PORTS_OF[$name]+=" ${PORT_OF[$name:tls]}"
    fi
    if [[ $NEED_WS == 1 && -n ${PORT_OF[$name:ws]:-} ]]; then
        PORTS_OF[$name]+=" ${PORT_OF[$name:ws]}"
    fi
done

# transport_args NAME TRANSPORT: the load generator's port and transport flags.
transport_args() {
    case $2 in
        tcp) echo "--port ${PORT_OF[$1]}" ;;
        tls) echo "--port ${PORT_OF[$1:tls]} --tls-ca $CERTS/ca.pem --tls-server-name localhost" ;;
        ws) echo "--port ${PORT_OF[$1:ws]} --ws $WS_PATH" ;;
    esac
}
# serves NAME TRANSPORT: whether that broker is run over that transport here.
serves() { [[ $2 == tcp || -n ${PORT_OF[$1:$2]:-} ]]; }
ARGS_OF=(
    [tandem]="--config ${TANDEM_CONFIG:-$OUT/tandem.yaml}"
    [tandem-base]="--config ${TANDEM_BASE_CONFIG:-$OUT/tandem-base.yaml}"
    [mosquitto]="-c $OUT/mosquitto.conf"
    [rumqttd]="-q -c $OUT/rumqttd.toml"
    [tandem-always]="--config $OUT/tandem-always.yaml"
    [tandem-periodic]="--config $OUT/tandem-periodic.yaml"
    [mosquitto-persistent]="-c $OUT/mosquitto-persistent.conf"
)

# all_open PORTS...: true once every one accepts connections.
all_open() {
    local p
    for p in "$@"; do port_open "$p" || return 1; done
}

# start NAME: starts a fresh broker and waits (10 s) for its ports; false if it did not come up.
start() {
    local name=$1 port bin=${BIN_OF[$1]}
    for port in ${PORTS_OF[$name]}; do
        if port_open "$port"; then
            log "$name: port $port is already taken by another process"
            return 1
        fi
    done
    local store=${STORE_OF[$name]:-}
    if [[ -n $store ]]; then
        # A fresh, empty store for every run.
        rm -rf "$store"
        mkdir -p "$store"
        if [[ $name == mosquitto-* && $(id -u) == 0 ]] && id mosquitto >/dev/null 2>&1; then
            # Mosquitto saves as the user mosquitto: its directory is that user's, and the
            # directories between it and BENCH_OUT (mktemp's are 0700) let it through.
            chown mosquitto: "$store"
            local up=$store
            while [[ $up == "$OUT"/* ]]; do
                up=$(dirname "$up")
                chmod o+x "$up"
            done
        fi
    fi
    # shellcheck disable=SC2086 # the arguments are meant to split
    ${PIN_BROKER:-} "$bin" ${ARGS_OF[$name]} >>"$OUT/$name.log" 2>&1 &
    local pid=$!
    PID_OF[$name]=$pid
    local deadline=$((SECONDS + 10))
    # shellcheck disable=SC2086 # the list of ports is meant to split
    until all_open ${PORTS_OF[$name]}; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited at start; last lines of $OUT/$name.log:"
            tail -5 "$OUT/$name.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$name: ports ${PORTS_OF[$name]} not all open after 10 s (log: $OUT/$name.log)"
            stop "$name"
            return 1
        fi
        sleep 0.05
    done
}

# stop NAME: stops the broker started last under NAME and waits for it to exit.
stop() {
    local pid=${PID_OF[$1]:-}
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PID_OF[$1]=
}

RUNNING=()
for name in $ALL_BROKERS; do
    wanted "$name" || continue
    bin=${BIN_OF[$name]}
    if [[ $name == tandem-base && -z $bin ]]; then
        log "skipping tandem-base: set TANDEM_BASE_BIN to the Tandem build to compare with"
    elif [[ -z $bin || ! -x $bin ]]; then
        log "skipping $name: no binary at '${bin:-?}'"
    elif start "$name"; then
        log "$name starts on 127.0.0.1, ports ${PORTS_OF[$name]// /, }"
        stop "$name"
        RUNNING+=("$name")
    else
        log "skipping $name: it does not start (log: $OUT/$name.log)"
    fi
done
((${#RUNNING[@]} > 0)) || die "no broker is running"

# --- runs -------------------------------------------------------------------------------------
# Each run gets a freshly started broker, so that no run inherits another's queues, logs or
# damage; brokers are interleaved within each repetition, so that drift in the machine's load
# falls on all of them alike.
#
# run_order K: the running brokers in the order of the K-th (repetition, scenario) turn. A
# fixed order would always give the same broker the first place and another the last, and a
# drift in the machine's load within a repetition would then fall on one more than another.
# So the list is rotated by K (every broker takes every place in turn) and reversed on every
# other round of rotations (of any two brokers, each runs before the other equally often): over
# 2 x brokers turns every broker has run in every place twice.
run_order() {
    local n=${#RUNNING[@]} k=$1 i order=()
    for ((i = 0; i < n; i++)); do order+=("${RUNNING[(i + k) % n]}"); done
    if (((k / n) % 2 == 1)); then
        for ((i = n - 1; i >= 0; i--)); do echo "${order[i]}"; done
    else
        printf '%s\n' "${order[@]}"
    fi
}

# The first line of the raw results says what was measured, on what, by which command: a
# saved file is a record that stands on its own.
version_of() { "$@" 2>&1 | head -1 || true; }
python3 - >>"$RESULTS" <<PY
import json, os, platform, subprocess, sys
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return None
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
print(json.dumps({"meta": {
    "command": "tests/bench/run.sh ${ORIG_ARGS[*]}".strip(),
    "date": out("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
    "commit": out("git", "-C", "$REPO", "rev-parse", "HEAD"),
    "dirty": bool(out("git", "-C", "$REPO", "status", "--porcelain", "--untracked-files=no")),
    "versions": {
        "tandem": "$(version_of "$TANDEM_BIN" --version)",
        "mosquitto": "$(version_of "${MOSQUITTO:-true}" -h)",
        "rumqttd": "$(version_of "${RUMQTTD:-true}" --version)",
    },
    "machine": {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
                "mem_kib": int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))},
    "reps": $REPS, "duration_s": $DURATION, "warmup_s": $WARMUP,
    "scenarios": "$SCENARIOS".split(","), "brokers": "$BROKERS".split(","),
}}))
PY
log "results in $OUT; $REPS repetition(s) of ${DURATION}s windows"
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for ((rep = 1; rep <= REPS; rep++)); do
    for ((s = 0; s < ${#SCENARIO_LIST[@]}; s++)); do
        scenario=${SCENARIO_LIST[s]}
        transport=$(transport_of "$scenario")
        PIN_BROKER="" PIN_LOADGEN=()
        if [[ $scenario == *-pinned ]]; then
            PIN_BROKER="taskset -c $BROKER_CORE"
            PIN_LOADGEN=(taskset -c "$LOADGEN_CORE")
        fi
        # The turn counts repetitions and scenarios, so a single repetition (--quick) varies
        # the order across scenarios too.
        mapfile -t order < <(run_order $((rep - 1 + s)))
        for ((slot = 0; slot < ${#order[@]}; slot++)); do
            name=${order[slot]}
            if ! serves "$name" "$transport"; then
                if [[ $rep == 1 ]]; then
                    log "skipping $name for $scenario: not run over $transport here"
                fi
                continue
            fi
            if ! start "$name"; then
                echo "{\"bench\":\"$scenario\",\"rep\":$rep,\"slot\":$slot,\"label\":\"$name\",\"error\":true}" >>"$RESULTS"
                continue
            fi
            # shellcheck disable=SC2046 # the scenario's arguments are meant to split
            status=0
            line=$("${PIN_LOADGEN[@]}" "$LOADGEN" $(scenario_args "$scenario") $(transport_args "$name" "$transport") \
                --label "$name" --broker-pid "${PID_OF[$name]}" \
                --duration "$DURATION" --warmup "$WARMUP" 2>>"$OUT/loadgen.log") || status=$?
            # Status 4: the run finished but was not exact; kept in the raw results (its
            # "exact" is false) and left out of the medians below.
            if [[ $status == 0 || ( $status == 4 && -n $line ) ]]; then
                echo "{\"bench\":\"$scenario\",\"rep\":$rep,\"slot\":$slot,\"run\":$line}" >>"$RESULTS"
            else
                echo "{\"bench\":\"$scenario\",\"rep\":$rep,\"slot\":$slot,\"label\":\"$name\",\"error\":true}" >>"$RESULTS"
                log "$scenario on $name failed: $(tail -1 "$OUT/loadgen.log")"
            fi
            tail -1 "$OUT/loadgen.log" >&2
            kill -0 "${PID_OF[$name]}" 2>/dev/null || log "$name died during $scenario (log: $OUT/$name.log)"
            stop "$name"
        done
    done
done

# --- table ------------------------------------------------------------------------------------
# The tables are drawn by table.py, which also re-renders a saved results file alone.
python3 "$REPO/tests/bench/table.py" "$RESULTS" "${SCENARIOS//,/ }" "$BROKERS" >"$OUT/table.md"
cat "$OUT/table.md"
log "table saved to $OUT/table.md; raw results in $RESULTS"
if [[ $SAVE == 1 ]]; then
    mkdir -p "$REPO/tests/bench/results"
    saved=$REPO/tests/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$REPO" rev-parse --short HEAD).jsonl
    cp "$RESULTS" "$saved"
    log "raw results saved to ${saved#"$REPO"/} (commit it with the figures it backs)"
fi
