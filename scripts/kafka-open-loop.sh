#!/usr/bin/env bash
# How an open-loop run on Kafka develops: `threshold serve --log kafka://`
# under threshold-load at RATE events/s (default 2,000) for SECONDS (default
# 30), with every 5 s the broker's and the server's share of a core (from
# /proc), the server's stage timings and librdkafka's statistics of the
# log's producer (queue wait, request wait, the broker's round trip), then
# the client's latencies and the server's own histogram of acknowledgements.
# The plain librdkafka client (crates/log/benches/kafka_peer.rs) runs first
# at the same rate for as long, on a topic of its own, and the client's p99
# is printed beside its acknowledgement and read-back p99s, with the ratios.
#
#   scripts/test-broker.sh run scripts/kafka-open-loop.sh
#   RATE=1000 SECONDS_=60 scripts/test-broker.sh run scripts/kafka-open-loop.sh
#
# THRESHOLD_BIN=DIR runs another build's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kafka-bench-env.sh
rate=${RATE:-2000}
seconds=${SECONDS_:-30}
data=$(mktemp -d)
port=$((50900 + RANDOM % 100))
admin=$((port + 100))
prefix=open-$$
trap 'stop_started kafka-open-loop "$data"; rm -rf "$data"' EXIT
log=(--log "kafka://$THRESHOLD_TEST_KAFKA" --name "$prefix" --topic-prefix "$prefix")
PEER_RATE=$rate PEER_SECONDS=$seconds PEER_RECORDS=${PEER_RECORDS:-20000} PEER_WARMUP=${PEER_WARMUP:-0} PEER_OUT="$data/peer.json" \
    cargo bench -q -p threshold-log --features kafka --bench kafka_peer | grep '^peer at' || true
"$bin/threshold" credentials local-tokens "${log[@]:0:2}" --topic-prefix "$prefix" --data "$data" >/dev/null
RUST_LOG=info,threshold_log::kafka::stages=debug start_server "$data" \
    --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" "${log[@]}"
start_load "$data" --server "http://127.0.0.1:$port" --streams 64 --rate "$rate" \
    --parcels 5000 --seconds "$seconds" --out "$data/load.json"
echo "open loop at $rate events/s for $seconds s; every 5 s after planning:"
s0=$(ticks $server) t0=$(ticks "$tansu")
at=0
while kill -0 $load 2>/dev/null; do
    sleep 5
    at=$((at + 5))
    s1=$(ticks $server) t1=$(ticks "$tansu")
    awk -v at="$at" -v s="$((s1 - s0))" -v t="$((t1 - t0))" -v hz="$hz" \
        'BEGIN {printf "%3d s: tansu %3.0f%% of a core, server %3.0f%%\n", at, 100*t/hz/5, 100*s/hz/5}'
    echo "  stages (count x mean / max): $({ grep 'kafka::stages' "$data/serve.log" | grep -v librdkafka |
        tail -1 | grep -oE '(broker_ack|read_back|append|watermark|replica_wait|publish)=[^ ]*' | tr '\n' ' '; } || true)"
    grep 'librdkafka log producer' "$data/serve.log" | tail -1 | sed 's/.*(p50/  log producer (p50/' || true
    s0=$s1 t0=$t1
done
wait $load
load=
grep acknowledged "$data/load.out"
echo "the server's acknowledgements (threshold_handheld_ack_duration, stored), cumulative:"
curl -s "http://127.0.0.1:$admin/metrics" |
    grep -E 'threshold_handheld_ack_duration_bucket\{result="stored",le="0\.(01|025|05|1|25)"\}|threshold_handheld_ack_duration_count\{result="stored"\}' |
    sed 's/threshold_handheld_ack_duration_/  /' || true
python3 - "$data/load.json" "$data/peer.json" <<'PY'
import json, sys
threshold = json.load(open(sys.argv[1]))["ack_latency_ms"]["p99"]
peer = json.load(open(sys.argv[2]))["open_loop"]
ack, back = peer["ack_ms"]["p99"], peer["read_back_ms"]["p99"]
print(f"p99: Threshold {threshold:.1f} ms; the plain client at the same rate: acknowledged {ack:.1f} ms, "
      f"read back {back:.1f} ms; Threshold / acknowledged {threshold / ack:.2f}, / read back {threshold / back:.2f}")
PY
