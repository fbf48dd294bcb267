#!/usr/bin/env bash
# make bench-kafka: in one run against one test broker, the plain librdkafka
# peer (crates/log/benches/kafka_peer.rs) and `threshold serve --log kafka://`
# under threshold-load (maximum, then open loop at 2,000 events/s); prints
# both rates and their ratio, and the peer's latencies at 2,000 records/s
# beside Threshold's; then, from a window in the middle of the maximum, the
# records Threshold wrote per event (to the log, and the partners' outcomes)
# and the CPU per event of the server, the broker and the load and per
# record written of the first two, beside the CPU per record of the peer's
# client and of the broker;
# writes target/bench/kafka_*.json.
#
# Run through the test broker: scripts/test-broker.sh run scripts/bench-kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# THRESHOLD_BIN=DIR runs the server and load generator in DIR instead of
# building them (an A/B of two builds against one broker).
. scripts/kafka-bench-env.sh
out=target/bench
mkdir -p "$out"
# The peer's binary, run directly to count what Threshold wrote (its
# PEER_COUNT mode) without cargo's start in the middle of a measurement.
peer=$(cargo bench -q -p threshold-log --features kafka --bench kafka_peer --no-run \
    --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kafka_peer":
        print(m["executable"])')
PEER_OUT="$PWD/$out/kafka_peer.json" PEER_TANSU_PID=$tansu PEER_HZ=$hz "$peer"

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
# The records each of this phase's topics holds ("records TOPIC N").
records() { PEER_COUNT="bench-$$-max" "$peer"; }
serve max
# 20,000 parcels: a parcel takes ~15 attempts in a 10 s run at 30,000
# events/s, well within its 100 (parcel::MAX_ATTEMPTS).
start_load "$data" --server "$url" --streams 64 --window 16 \
    --parcels 20000 --seconds "$seconds" --out "$out/kafka_load_max.json"
# A window in the middle of the run (after planning, which is not timed):
# the records written, and the CPU of the server, the broker and the load.
window=$((seconds > 6 ? seconds - 4 : 2))
sleep 2
w0=$(date +%s.%N) s0=$(ticks $server) t0=$(ticks "$tansu") l0=$(ticks $load)
records >"$data/records0"
sleep "$window"
w1=$(date +%s.%N) s1=$(ticks $server) t1=$(ticks "$tansu") l1=$(ticks $load)
records >"$data/records1"
wait $load
load=
python3 - "$data" "$out/kafka_max_window.json" "$w0" "$w1" "$hz" $((s1 - s0)) $((t1 - t0)) $((l1 - l0)) <<'PY'
import json, sys
data, path, w0, w1, hz, server, broker, load = sys.argv[1:]
def written(name):
    # Per kind, the records the topics hold: the partners' outcome topics
    # (PREFIX.outcome.PARTNER), and the category topics of the log (not
    # credentials or the vault).
    out = {"log": 0, "outcome": 0}
    for line in open(f"{data}/{name}"):
        _, topic, n = line.split()
        kind = topic.split(".")[1]
        if kind == "outcome":
            out["outcome"] += int(n)
        elif kind not in ("credentials", "vault"):
            out["log"] += int(n)
    return out
before, after = written("records0"), written("records1")
json.dump({"from": float(w0), "to": float(w1), "hz": int(hz),
           "server_ticks": int(server), "broker_ticks": int(broker), "load_ticks": int(load),
           "log_records": after["log"] - before["log"],
           "outcome_records": after["outcome"] - before["outcome"]}, open(path, "w"))
PY
grep -E 'acknowledged|first stream error' "$data/load.out"
stages maximum
stop
serve open
"$bin/threshold-load" --server "$url" --data "$data" --streams 64 --rate 2000 \
    --parcels 20000 --seconds "$seconds" --out "$out/kafka_load_open_2k.json"
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
# What the maximum phase wrote per event, and its CPU per event and per
# record written, over the window in its middle (its events counted at the
# whole run's rate); beside them, what one record of the peer cost its
# client and the broker.
w = json.load(open(f"{out}/kafka_max_window.json"))
seconds = w["to"] - w["from"]
events = rate(top) * seconds
written = (w["log_records"] + w["outcome_records"]) / events if events else 0
if written:
    per_event = lambda ticks: 1e6 * ticks / w["hz"] / events
    summary["records_per_event"] = {"log": w["log_records"] / events, "outcome": w["outcome_records"] / events}
    summary["threshold_records_per_s"] = written * rate(top)
    summary["records_ratio"] = summary["threshold_records_per_s"] / peer["records_per_s"]
    summary["cpu_us_per_event"] = {"server": per_event(w["server_ticks"]), "broker": per_event(w["broker_ticks"]),
                                   "load": per_event(w["load_ticks"])}
    summary["cpu_us_per_record_written"] = {k: v / written for k, v in summary["cpu_us_per_event"].items()}
summary["peer_cpu"] = peer.get("cpu")
if written and summary["peer_cpu"]:
    # Threshold's CPU per record written over the peer's per record.
    summary["cpu_per_record_vs_peer"] = {
        "server_vs_client": summary["cpu_us_per_record_written"]["server"] / summary["peer_cpu"]["client_us_per_record"],
        "broker": summary["cpu_us_per_record_written"]["broker"] / summary["peer_cpu"]["broker_us_per_record"],
    }
json.dump(summary, open(f"{out}/kafka.json", "w"), indent=2)
print(f"peer {summary['peer_records_per_s']:.0f} records/s; threshold {summary['threshold_events_per_s']:.0f} events/s; "
      f"ratio {100*ratio:.2f}% (target 25%); open loop 2,000/s: {summary['open_2k_events_per_s']:.0f} events/s, "
      f"p99 {summary['open_2k_p99_ms']} ms (target 50 ms); the plain client at 2,000/s: "
      f"acknowledged p99 {summary['peer_open_2k_ack_p99_ms']:.1f} ms, read back p99 "
      f"{summary['peer_open_2k_read_back_p99_ms']:.1f} ms; Threshold's p99 / the client's read-back p99: "
      f"{summary['open_2k_p99_ms'] / summary['peer_open_2k_read_back_p99_ms']:.2f}, "
      f"/ its acknowledgement p99: {summary['open_2k_p99_ms'] / summary['peer_open_2k_ack_p99_ms']:.2f}")
if not written:
    print("the window of the maximum counted no record or no event: no figures per event")
else:
    c = summary["cpu_us_per_event"]
    r = summary["cpu_us_per_record_written"]
    print(f"per event Threshold wrote {summary['records_per_event']['log']:.2f} records to the log and "
          f"{summary['records_per_event']['outcome']:.2f} outcomes ({summary['threshold_records_per_s']:.0f} records "
          f"written a second, {100*summary['records_ratio']:.1f}% of the peer's rate); CPU per event: the server "
          f"{c['server']:.0f} us, the broker {c['broker']:.0f} us, the load {c['load']:.0f} us; per record written: "
          f"the server {r['server']:.1f} us, the broker {r['broker']:.1f} us (over {seconds:.1f} s in the middle "
          f"of the run, its events counted at the run's rate)")
cpu = summary["peer_cpu"]
if cpu:
    print(f"the peer's CPU per record: its client {cpu['client_us_per_record']:.1f} us, the broker "
          f"{cpu['broker_us_per_record']:.1f} us ({100*cpu['client_cores']:.0f}% and {100*cpu['broker_cores']:.0f}% "
          f"of a core)")
    if written:
        print(f"per record written, Threshold / the peer: the server / its client "
              f"{summary['cpu_per_record_vs_peer']['server_vs_client']:.1f}x, the broker "
              f"{summary['cpu_per_record_vs_peer']['broker']:.1f}x")
print(f"wrote {out}/kafka.json")
PY
