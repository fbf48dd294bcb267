#!/usr/bin/env bash
# make load: a release server on a fresh data dir on loopback, then the load
# generator in four scenarios (open loop at 2,000, 5,000 and, on the embedded
# log, 20,000 events/s; then the maximum); figures printed and written to
# target/bench/.
#
#   load-tests/run.sh          on the embedded log
#   load-tests/run.sh kafka    on Kafka at $THRESHOLD_TEST_KAFKA (make load-kafka
#                              starts the test broker and sets it); files end in _kafka
#
# THRESHOLD_BIN=DIR runs the binaries in DIR instead of building (an A/B of
# two builds on one machine); LOAD_TAG=x adds _x to the files' names.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${THRESHOLD_BIN:-}" ]; then
    bin=$THRESHOLD_BIN
else
    cargo build --release -q -p threshold -p threshold-load
    bin=${CARGO_TARGET_DIR:-target}/release
fi
data=$(mktemp -d)
port=${LOAD_PORT:-50071}
log=embedded
suffix=${LOAD_TAG:+_$LOAD_TAG}
if [ "${1:-}" = kafka ]; then
    log="kafka://${THRESHOLD_TEST_KAFKA:?set THRESHOLD_TEST_KAFKA=host:port, or run make load-kafka}"
    suffix=_kafka$suffix
    # On Kafka the credentials live in the deployment's topic.
    "$bin/threshold" credentials local-tokens --log "$log" --data "$data" >/dev/null
fi
"$bin/threshold" serve --data "$data" --listen "127.0.0.1:$port" --log "$log" --name "load-$$" > "$data/serve.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 300); do grep -q serving "$data/serve.log" 2>/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"
seconds=${LOAD_SECONDS:-10}
"$bin/threshold-load" --server "$url" --data "$data" --streams 64 --rate 2000 --seconds "$seconds" --out target/bench/load_open_2k$suffix.json
"$bin/threshold-load" --server "$url" --data "$data" --streams 64 --rate 5000 --seconds "$seconds" --out target/bench/load_open_5k$suffix.json
# The design card's latency target (p99 ≤ 25 ms at 20,000/s), on the
# embedded log only: on Kafka that is above the maximum.
if [ "$log" = embedded ]; then
    "$bin/threshold-load" --server "$url" --data "$data" --streams 64 --rate 20000 --seconds "$seconds" --out target/bench/load_open_20k$suffix.json
fi
"$bin/threshold-load" --server "$url" --data "$data" --streams 512 --window 16 --seconds "$seconds" --out target/bench/load_max$suffix.json
