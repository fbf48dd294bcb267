#!/usr/bin/env bash
# The server's CPU at a moderate rate on the embedded log: `threshold serve`
# under threshold-load open loop at RATE events/s (default 2,000) for
# SECONDS_ (default 20), 64 streams; the server's and the generator's share
# of a core over the run after planning (less its first and last 2 s), the
# server's CPU per event, and the client's latencies. At the maximum the
# cost per event is what `scripts/kafka-cpu.sh` measures; at a moderate
# rate what a commit wakes (read models, subscribers) weighs more.
#
#   scripts/open-loop-cpu.sh
#   RATE=5000 SECONDS_=30 scripts/open-loop-cpu.sh
#
# THRESHOLD_BIN=DIR runs another build's binaries (an A/B: alternate them).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${RATE:-2000}
seconds=${SECONDS_:-20}
if [ "$seconds" -lt 8 ]; then
    echo "open-loop-cpu: SECONDS_ must be at least 8" >&2
    exit 2
fi
if [ -n "${THRESHOLD_BIN:-}" ]; then
    bin=$THRESHOLD_BIN
else
    cargo build --release -q -p threshold -p threshold-load
    bin=${CARGO_TARGET_DIR:-target}/release
fi
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
data=$(mktemp -d)
port=$((51000 + RANDOM % 500))
server=
load=
stop() {
    status=$?
    for p in $load $server; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$status" != 0 ]; then
        echo "open-loop-cpu: failed; the server's and the load's last lines:" >&2
        tail -5 "$data/serve.log" "$data/load.out" >&2 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap stop EXIT
"$bin/threshold" serve --data "$data" --listen "127.0.0.1:$port" >"$data/serve.log" 2>&1 &
server=$!
for _ in $(seq 600); do grep -q serving "$data/serve.log" 2>/dev/null && break; sleep 0.1; done
grep -q serving "$data/serve.log"
"$bin/threshold-load" --server "http://127.0.0.1:$port" --data "$data" --streams 64 --rate "$rate" \
    --parcels 5000 --seconds "$seconds" --out "$data/load.json" >"$data/load.out" 2>&1 &
load=$!
for _ in $(seq 1200); do grep -q planned "$data/load.out" 2>/dev/null && break; sleep 0.1; done
grep -q planned "$data/load.out"
sleep 2
s0=$(ticks $server) l0=$(ticks $load) t0=$(date +%s.%N)
sleep $((seconds - 4))
s1=$(ticks $server) l1=$(ticks $load) t1=$(date +%s.%N)
wait $load
load=
# Per event acknowledged, not offered: a server that falls behind costs more.
acked=$(grep -oE '[0-9]+ events/s acknowledged' "$data/load.out" | grep -oE '^[0-9]+' || echo "$rate")
awk -v s="$((s1 - s0))" -v l="$((l1 - l0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v r="$rate" -v a="$acked" 'BEGIN {
    d = t1 - t0
    printf "embedded, open loop at %d events/s: server %.0f%% of a core (%.0f us per event acknowledged), load generator %.0f%%\n",
        r, 100 * s / hz / d, 1e6 * s / hz / d / (a > 0 ? a : r), 100 * l / hz / d
}'
grep acknowledged "$data/load.out"
