#!/usr/bin/env bash
# make load: a release server on a fresh data dir on loopback, then the load
# generator in three scenarios; figures printed and written to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p threshold -p threshold-load
data=$(mktemp -d)
port=${LOAD_PORT:-50071}
./target/release/threshold serve --data "$data" --listen "127.0.0.1:$port" > "$data/serve.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do grep -q serving "$data/serve.log" 2>/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"
seconds=${LOAD_SECONDS:-10}
./target/release/threshold-load --server "$url" --data "$data" --streams 64 --rate 2000 --seconds "$seconds" --out target/bench/load_open_2k.json
./target/release/threshold-load --server "$url" --data "$data" --streams 64 --rate 5000 --seconds "$seconds" --out target/bench/load_open_5k.json
./target/release/threshold-load --server "$url" --data "$data" --streams 512 --window 16 --seconds "$seconds" --out target/bench/load_max.json
