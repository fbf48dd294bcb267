#!/usr/bin/env bash
# make bench-kafka: in one run against one test broker, the plain librdkafka
# peer (crates/log/benches/kafka_peer.rs) and `threshold serve --log kafka://`
# under threshold-load (maximum, then open loop at 2,000 events/s); prints
# both rates and their ratio, and the peer's latencies at 2,000 records/s
# beside Threshold's; writes target/bench/kafka_*.json.
#
# Run through the test broker: scripts/test-broker.sh run scripts/bench-kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# THRESHOLD_BIN=DIR runs the server and load generator in DIR instead of
# building them (an A/B of two builds against one broker).
. scripts/kafka-bench-env.sh
out=target/bench
mkdir -p "$out"
PEER_OUT="$PWD/$out/kafka_peer.json" cargo bench -q -p threshold-log --features kafka --bench kafka_peer

# Each phase gets a server of its own on topics of its own, as each of the
# peer's phases gets a fresh topic: the test broker's memory storage lists
# every batch a partition holds on every fetch and ListOffsets (tansu 0.6,
# `tansu-storage` `src/dynostore.rs`), so a phase run on topics an earlier
# phase filled would time that listing, not Threshold.
port=${LOAD_PORT:-50072}
url="http://127.0.0.1:$port"
seconds=${LOAD_SECONDS:-10}
data=
stop() {
    stop_started bench-kafka "$data"
    if [ -n "$data" ]; then rm -rf "$data"; fi
    data=
}
trap stop EXIT
# Starts a server on fresh topics (prefix $1); its stage timings of the
# Kafka log go to its log every 5 s.
serve() {
    data=$(mktemp -d)
    # On Kafka the credentials live in the deployment's topic: the load's
    # tokens are made there, and written where threshold-load reads them.
    "$bin/threshold" credentials local-tokens --log "kafka://$THRESHOLD_TEST_KAFKA" \
        --topic-prefix "bench-$$-$1" --data "$data" >/dev/null
    RUST_LOG=${RUST_LOG:-info,threshold_log::kafka::stages=debug} \
        start_server "$data" --listen "127.0.0.1:$port" \
        --log "kafka://$THRESHOLD_TEST_KAFKA" --name "bench-$$-$1" \
        --topic-prefix "bench-$$-$1"
}
stages() {
    echo "stage timings of the $1 phase (count x mean / max), last reports:"
    grep 'kafka::stages' "$data/serve.log" | grep -v librdkafka | tail -2 | sed 's/.*stages[^ ]* //' || true
    echo "librdkafka's statistics of the log's and the publisher's producers, last reports:"
    grep -E 'librdkafka (log|publisher) producer' "$data/serve.log" | tail -4 | sed 's/.*stages[^ ]* //' || true
}
serve max
"$bin/threshold-load" --server "$url" --data "$data" --streams 64 --window 16 \
    --parcels 5000 --seconds "$seconds" --out "$out/kafka_load_max.json"
stages maximum
stop
serve open
"$bin/threshold-load" --server "$url" --data "$data" --streams 64 --rate 2000 \
    --parcels 5000 --seconds "$seconds" --out "$out/kafka_load_open_2k.json"
stages "open loop"
stop

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
peer = json.load(open(f"{out}/kafka_peer.json"))
top = json.load(open(f"{out}/kafka_load_max.json"))
open2k = json.load(open(f"{out}/kafka_load_open_2k.json"))
def rate(j):
    return j["events_per_s"]
def p99(j):
    return j["ack_latency_ms"]["p99"]
ratio = rate(top) / peer["records_per_s"]
summary = {
    "benchmark": "kafka",
    "peer_records_per_s": peer["records_per_s"],
    "threshold_events_per_s": rate(top),
    "ratio": ratio,
    "target_ratio": 0.25,
    "open_2k_events_per_s": rate(open2k),
    "open_2k_p99_ms": p99(open2k),
    "target_open_2k_p99_ms": 50,
    # The same rate from the plain client: its acknowledgement, and its
    # send-to-read-back (the floor under an append answered on read-back).
    "peer_open_2k_ack_p99_ms": peer["open_loop"]["ack_ms"]["p99"],
    "peer_open_2k_read_back_p99_ms": peer["open_loop"]["read_back_ms"]["p99"],
}
json.dump(summary, open(f"{out}/kafka.json", "w"), indent=2)
print(f"peer {summary['peer_records_per_s']:.0f} records/s; threshold {summary['threshold_events_per_s']:.0f} events/s; "
      f"ratio {100*ratio:.2f}% (target 25%); open loop 2,000/s: {summary['open_2k_events_per_s']:.0f} events/s, "
      f"p99 {summary['open_2k_p99_ms']} ms (target 50 ms); the plain client at 2,000/s: "
      f"acknowledged p99 {summary['peer_open_2k_ack_p99_ms']:.1f} ms, read back p99 "
      f"{summary['peer_open_2k_read_back_p99_ms']:.1f} ms; Threshold's p99 / the client's read-back p99: "
      f"{summary['open_2k_p99_ms'] / summary['peer_open_2k_read_back_p99_ms']:.2f}, "
      f"/ its acknowledgement p99: {summary['open_2k_p99_ms'] / summary['peer_open_2k_ack_p99_ms']:.2f}")
print(f"wrote {out}/kafka.json")
PY
