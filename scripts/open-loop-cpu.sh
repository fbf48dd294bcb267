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
. scripts/serve-env.sh
data=$(mktemp -d)
port=$((51000 + RANDOM % 500))
trap 'stop_started open-loop-cpu "$data"; rm -rf "$data"' EXIT
start_server "$data" --listen "127.0.0.1:$port"
start_load "$data" --server "http://127.0.0.1:$port" --streams 64 --rate "$rate" \
    --parcels 5000 --seconds "$seconds" --out "$data/load.json"
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
