#!/usr/bin/env bash
# Where the CPU goes at the maximum: `threshold serve` on the Kafka log and on
# the embedded log under threshold-load (64 streams, window 16, or SHAPES),
# each process's share of a core and CPU per event over 10 s of the run
# (from /proc), the server's threads by name and its peak resident set
# (VmHWM). The embedded run is the Kafka run's peer: the same server and
# load without the broker.
#
#   scripts/test-broker.sh run scripts/kafka-cpu.sh
#   SHAPES="64x16 64x48 128x32" scripts/test-broker.sh run scripts/kafka-cpu.sh
#   SERVICES=manifest,planning,attempts scripts/test-broker.sh run scripts/kafka-cpu.sh
#
# SERVICES runs only those services (`threshold serve --services`; the load
# needs manifest, planning and attempts): the handhelds' process as
# deploy/k8s runs it, without the read models, outcomes and webhooks of
# the others.
#
# THRESHOLD_BIN=DIR runs another build's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kafka-bench-env.sh
threads() {
    for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done |
        awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
data=
trap 'stop_started kafka-cpu "$data"; if [ -n "$data" ]; then rm -rf "$data"; fi' EXIT
for shape in ${SHAPES:-64x16}; do
    streams=${shape%x*} window=${shape#*x}
    declare -A rates=() costs=()
    for mode in kafka embedded; do
        data=$(mktemp -d)
        port=$((50800 + RANDOM % 100))
        log=()
        if [ "$mode" = kafka ]; then
            log=(--log "kafka://$THRESHOLD_TEST_KAFKA" --name "cpu-$$-$shape" --topic-prefix "cpu-$$-$shape")
            # On Kafka the credentials live in the deployment's topic.
            "$bin/threshold" credentials local-tokens "${log[@]:0:2}" --topic-prefix "cpu-$$-$shape" \
                --data "$data" >/dev/null
        fi
        start_server "$data" --listen "127.0.0.1:$port" "${log[@]}" ${SERVICES:+--services "$SERVICES"}
        # Measured after planning (untimed) and two seconds of the run.
        # 20,000 parcels: at 45,000 events/s a parcel takes ~36 attempts in
        # the run, within a parcel's 100 (parcel::MAX_ATTEMPTS).
        start_load "$data" --server "http://127.0.0.1:$port" --streams "$streams" \
            --window "$window" --parcels 20000 --seconds 16 --out "$data/load.json"
        sleep 2
        s0=$(ticks $server) l0=$(ticks $load) t0=$(ticks "$tansu")
        threads $server >"$data/threads0"
        sleep 10
        s1=$(ticks $server) l1=$(ticks $load) t1=$(ticks "$tansu")
        threads $server >"$data/threads1"
        wait $load
        load=
        peak=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")
        rate=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['events_per_s'])" "$data/load.json")
        echo "== $mode, $streams streams x window $window: $(grep acknowledged "$data/load.out")"
        echo "  server's peak resident set: $((peak / 1024)) MiB"
        for p in "server $s0 $s1" "load-generator $l0 $l1" "tansu $t0 $t1"; do
            set -- $p
            awk -v n="$1" -v a="$2" -v b="$3" -v hz="$hz" -v r="$rate" \
                'BEGIN {c=(b-a)/hz/10; printf "  %-15s %4.0f%% of a core, %4.0f us of CPU per event\n", n, 100*c, 1e6*c/r}'
        done
        rates[$mode]=$rate
        costs[$mode]=$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v r="$rate" 'BEGIN {print 1e6*(b-a)/hz/10/r}')
        echo "  server threads:"
        join "$data/threads0" "$data/threads1" |
            awk -v hz="$hz" '{c=($3-$2)/hz/10; if (c >= 0.01) printf "    %-24s %4.0f%%\n", $1, 100*c}' | sort -k2 -nr
        stop_started kafka-cpu "$data"
        rm -rf "$data"
        data=
    done
    awk -v rk="${rates[kafka]}" -v re="${rates[embedded]}" -v ck="${costs[kafka]}" -v ce="${costs[embedded]}" \
        'BEGIN {printf "kafka / embedded: %.2f of the rate, %.2f times the server CPU per event\n", rk/re, ck/ce}'
done
