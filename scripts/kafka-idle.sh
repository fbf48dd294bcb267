#!/usr/bin/env bash
# What an idle process asks of the broker: `threshold serve` on Kafka, every
# service, the vault in its topic, doing nothing, with its followers' default
# fetch waits and with each wait in WAITS (default 500, as deploy/k8s sets
# it). Counts the requests it sends the broker over 10 s (the data segments
# of its connections, from the kernel: one a request on loopback) and the
# fetch requests of each follower (its /metrics,
# threshold_kafka_fetch_requests_total), prints them per second and each
# wait's requests as a share of the defaults', and writes
# target/bench/kafka_idle.json.
#
#   scripts/test-broker.sh run scripts/kafka-idle.sh
#   WAITS="100 500 2000" scripts/test-broker.sh run scripts/kafka-idle.sh
#
# THRESHOLD_BIN=DIR runs another build's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kafka-bench-env.sh
port=${THRESHOLD_TEST_KAFKA##*:}
# Data segments sent so far on every connection to the broker.
sent() {
    ss -tinH "( dport = :$port )" | grep -oE 'data_segs_out:[0-9]+' | cut -d: -f2 |
        awk '{s += $1} END {print s + 0}'
}
data=
trap 'stop_started kafka-idle "$data"; if [ -n "$data" ]; then rm -rf "$data"; fi' EXIT
results=()
for wait in default ${WAITS:-500}; do
    data=$(mktemp -d)
    prefix="idle-$$-$wait"
    log=(--log "kafka://$THRESHOLD_TEST_KAFKA" --topic-prefix "$prefix")
    THRESHOLD_VAULT_KEK=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    export THRESHOLD_VAULT_KEK
    "$bin/threshold" credentials local-tokens "${log[@]}" --data "$data" >/dev/null
    flags=()
    if [ "$wait" != default ]; then flags=(--kafka-fetch-wait "$wait"); fi
    start_server "$data" "${log[@]}" --name idle --listen 127.0.0.1:0 --admin 127.0.0.1:0 "${flags[@]}"
    metrics=$(grep -oE 'metrics on http://[^ ]+' "$data/serve.log" | head -1 | cut -d' ' -f3)
    # Past opening: the replica's group joined, the tables read.
    sleep 5
    before=$(sent)
    curl -fsS "$metrics" >"$data/metrics0"
    sleep 10
    after=$(sent)
    curl -fsS "$metrics" >"$data/metrics1"
    per_s=$(((after - before) / 10))
    # Each follower's fetches a second, as "name rate" lines.
    cat "$data/metrics0" "$data/metrics1" |
        awk -F'[{}]' '/^threshold_kafka_fetch_requests_total\{/ {
            match($2, /follower="[^"]*"/); f = substr($2, RSTART + 10, RLENGTH - 11)
            split($3, v, " "); if (f in a) b[f] = v[1]; else a[f] = v[1]
        } END {for (f in a) printf "%s %.1f\n", f, (b[f] - a[f]) / 10}' | sort >"$data/followers"
    echo "fetch wait $wait: $per_s requests/s to the broker from an idle process (every service, the vault on Kafka); fetches a second: $(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$data/followers")"
    if [ "$wait" = default ]; then
        defaults=$per_s
    else
        awk -v d="$defaults" -v w="$per_s" -v ms="$wait" \
            'BEGIN {printf "  %s ms / the defaults: %.3f of the requests\n", ms, w / (d > 0 ? d : 1)}'
    fi
    results+=("\"$wait\": {\"requests_per_s\": $per_s, \"fetches_per_s\": {$(awk '{printf "%s\"%s\": %s", (NR > 1 ? ", " : ""), $1, $2}' "$data/followers")}}")
    stop_started kafka-idle "$data"
    rm -rf "$data"
    data=
done
mkdir -p target/bench
(
    IFS=,
    echo "{\"fetch_wait_ms\": {${results[*]}}}"
) >target/bench/kafka_idle.json
echo "written: target/bench/kafka_idle.json"
