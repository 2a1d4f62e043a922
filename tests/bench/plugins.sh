#!/usr/bin/env bash
# What plugins cost: Tandem with no plugin, with a TopicFilter plugin behind the decision cache,
# the same plugin with caching off, with an event plugin receiving every message_received event,
# and connects/s with an Authenticate plugin. One run, variants interleaved per repetition,
# medians and ratios against "no plugin" printed.
#
# The topic and auth plugin is examples/policy (tandem-policy), started by the broker (`command:`)
# on a unix socket, as a sidecar would be. It allows everything, so every variant delivers the same
# messages and only the cost of asking differs. Events go to tandem-event-sink (counts them, does
# nothing else: the broker's cost) and to examples/event-logger (a JSON line each, to /dev/null:
# what a real consumer adds when it shares the machine's two cores with broker and load).
#
# Two event figures: at saturation (every process competes for the same 2 cores, so the
# consumer's own CPU is taken from the broker and the load generator), and at a fixed offered
# load of 200k msg/s, where the broker's CPU per message is compared: its inverse is the
# throughput the broker would reach on the same CPU, the consumer running elsewhere (a sidecar
# has its own CPU limit).
#
# With --pinned every scenario also runs pinned (run.sh's -pinned: the broker, and the plugin
# it starts, on core 0, the load generator on core 1): efficiency per core, the plugin's CPU
# counted against the broker's. With --save the raw results (each variant's run.sh meta record
# included: commit, versions, machine) are copied to tests/bench/results/plugins-<date>-<commit>.jsonl;
# tests/bench/plugins_table.py draws the tables again from such a file.
#
# usage: tests/bench/plugins.sh [--reps N] [--duration S] [--pinned] [--save] [--no-build]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
REPS=3
DURATION=5
BUILD=1
PINNED=()
SAVE=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --no-build) BUILD=0 ;;
        --pinned) PINNED=(--pinned) ;;
        --save) SAVE=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "plugins.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $BUILD == 1 ]]; then
    (cd "$REPO" && cargo build --release -p tandem-broker -p tandem-tests -p tandem-policy -p tandem-event-logger --bins)
fi
POLICY=$TARGET/release/tandem-policy
LOGGER=$TARGET/release/tandem-event-logger
SINK=$TARGET/release/tandem-event-sink
[[ -x $POLICY ]] || { echo "plugins.sh: no $POLICY (build it)" >&2; exit 1; }
[[ -x $LOGGER ]] || { echo "plugins.sh: no $LOGGER (build it)" >&2; exit 1; }
[[ -x $SINK ]] || { echo "plugins.sh: no $SINK (build it)" >&2; exit 1; }

OUT=${BENCH_OUT:-$(mktemp -d /tmp/tandem-plugins-bench.XXXXXX)}
mkdir -p "$OUT"
PORT=${TANDEM_PORT:-21893}
SOCK=$OUT/policy.sock

# variant NAME CHAINS CACHE_TTL_MS: writes $OUT/NAME.yaml
variant() {
    local name=$1 chains=$2 ttl=$3
    {
        echo "listeners: { default: { type: tcp, bind: 127.0.0.1:$PORT } }"
        echo "mqtt: { max_queued_messages: 10000000 }"
        if [[ $chains != none ]]; then
            echo "plugins:"
            echo "  policy:"
            echo "    endpoint: unix://$SOCK"
            echo "    command: [$POLICY]"
            echo "    max_concurrency: 4096"
            echo "    config: { auth_default: allow, topic_default: allow, cache_ttl_ms: $ttl }"
        fi
        case $chains in
            topic) echo "topic-check: { plugins: [policy] }" ;;
            auth) echo "auth: { plugins: [policy] }" ;;
        esac
    } >"$OUT/$name.yaml"
}
variant none none 0
variant topic-cached topic 60000
variant topic-uncached topic 0
variant auth auth 0
# A plugin receiving every message_received event: the counting sink, and the JSON logger
# (written to /dev/null).
cat >"$OUT/events.yaml" <<EOF
listeners: { default: { type: tcp, bind: 127.0.0.1:$PORT } }
mqtt: { max_queued_messages: 10000000 }
plugins:
  sink:
    endpoint: unix://$OUT/sink.sock
    command: [$SINK, --kinds, message_received]
EOF
cat >"$OUT/events-logger.yaml" <<EOF
listeners: { default: { type: tcp, bind: 127.0.0.1:$PORT } }
mqtt: { max_queued_messages: 10000000 }
plugins:
  log:
    endpoint: unix://$OUT/log.sock
    command: [$LOGGER, --kinds, message_received, --output, /dev/null]
EOF

: >"$OUT/results.jsonl"
for ((rep = 1; rep <= REPS; rep++)); do
    for v in none topic-cached topic-uncached events events-logger; do
        TANDEM_CONFIG=$OUT/$v.yaml TANDEM_PORT=$PORT BENCH_OUT=$OUT/$v-$rep \
            "$REPO/tests/bench/run.sh" --no-build --brokers tandem --reps 1 \
            "${PINNED[@]}" --duration "$DURATION" --scenarios fan-in-qos0,fan-in-qos1,pairs-qos1 >/dev/null 2>"$OUT/$v-$rep.log" \
            || { echo "plugins.sh: run $v/$rep failed; see $OUT/$v-$rep.log" >&2; exit 1; }
        sed "s/\"label\":\"tandem\"/\"label\":\"$v\"/" "$OUT/$v-$rep/results.jsonl" >>"$OUT/results.jsonl"
    done
    for v in none events; do
        TANDEM_CONFIG=$OUT/$v.yaml TANDEM_PORT=$PORT BENCH_OUT=$OUT/$v-fixed-$rep \
            "$REPO/tests/bench/run.sh" --no-build --brokers tandem --reps 1 \
            "${PINNED[@]}" --duration "$DURATION" --scenarios fan-in-qos0-fixed >/dev/null 2>"$OUT/$v-fixed-$rep.log" \
            || { echo "plugins.sh: fixed-rate run $v/$rep failed; see $OUT/$v-fixed-$rep.log" >&2; exit 1; }
        sed "s/\"label\":\"tandem\"/\"label\":\"$v\"/" "$OUT/$v-fixed-$rep/results.jsonl" >>"$OUT/results.jsonl"
    done
    for v in none auth; do
        TANDEM_CONFIG=$OUT/$v.yaml TANDEM_PORT=$PORT BENCH_OUT=$OUT/$v-connect-$rep \
            "$REPO/tests/bench/run.sh" --no-build --brokers tandem --reps 1 \
            "${PINNED[@]}" --duration "$DURATION" --scenarios connect >/dev/null 2>"$OUT/$v-connect-$rep.log" \
            || { echo "plugins.sh: connect run $v/$rep failed; see $OUT/$v-connect-$rep.log" >&2; exit 1; }
        sed "s/\"label\":\"tandem\"/\"label\":\"$v\"/" "$OUT/$v-connect-$rep/results.jsonl" >>"$OUT/results.jsonl"
    done
done

python3 "$REPO/tests/bench/plugins_table.py" "$OUT/results.jsonl" | tee "$OUT/table.md"
if [[ $SAVE == 1 ]]; then
    saved=$REPO/tests/bench/results/plugins-$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$REPO" rev-parse --short HEAD).jsonl
    cp "$OUT/results.jsonl" "$saved"
    echo "plugins.sh: raw results saved to ${saved#"$REPO"/} (commit it with the figures it backs)" >&2
fi
echo "plugins.sh: results in $OUT" >&2
