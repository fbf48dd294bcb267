#!/usr/bin/env bash
# make load-tracing: handheld ingestion with tracing off, then with OTLP export
# at 1% sampling to a local receiver, three runs each, alternating. Each run
# starts a release server on a fresh data dir on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p threshold -p threshold-load
cargo build --release -q -p threshold-telemetry --example otlp_sink
port=${LOAD_PORT:-50071}
otlp=${OTLP_PORT:-54317}
seconds=${LOAD_SECONDS:-10}
mkdir -p target/bench
./target/release/examples/otlp_sink "127.0.0.1:$otlp" > target/bench/otlp_sink.log 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null' EXIT
for run in 1 2 3; do
  for mode in off on; do
    data=$(mktemp -d)
    if [ "$mode" = on ]; then
      OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp" ./target/release/threshold serve \
        --data "$data" --listen "127.0.0.1:$port" --trace-sample 0.01 > "$data/serve.log" 2>&1 &
    else
      ./target/release/threshold serve --data "$data" --listen "127.0.0.1:$port" > "$data/serve.log" 2>&1 &
    fi
    server=$!
    for _ in $(seq 50); do grep -q serving "$data/serve.log" 2>/dev/null && break; sleep 0.1; done
    echo "== tracing $mode, run $run"
    ./target/release/threshold-load --server "http://127.0.0.1:$port" --data "$data" --streams 512 --window 16 \
      --seconds "$seconds" --out "target/bench/load_tracing_${mode}_max_$run.json"
    ./target/release/threshold-load --server "http://127.0.0.1:$port" --data "$data" --streams 64 --rate 5000 \
      --seconds "$seconds" --out "target/bench/load_tracing_${mode}_5k_$run.json"
    kill -INT $server; wait $server 2>/dev/null || true
    rm -rf "$data"
  done
done
tail -1 target/bench/otlp_sink.log
