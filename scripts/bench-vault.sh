#!/usr/bin/env bash
# Manifest loads on Kafka with the vault in the deployment's vault topic
# (a key-encryption key given) against the vault in a directory (--vault),
# alternating, in one run against one broker: the four sample manifests
# (240 rows, 240 new households) loaded into a fresh deployment each time.
# Prints each run and the median ratio; writes target/bench/vault.json.
#
#   scripts/test-broker.sh run scripts/bench-vault.sh      (make bench-vault)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
: "${THRESHOLD_TEST_KAFKA:?run under scripts/test-broker.sh run}"
RUNS=${RUNS:-3}
cargo build --release -q -p threshold
B=$ROOT/target/release/threshold

load_all() { # MODE -> seconds
    local mode=$1 dir prefix extra pid addr start end
    dir=$(mktemp -d)
    prefix=bench-vault-$mode-$$-$RANDOM
    "$B" credentials local-tokens --log "kafka://$THRESHOLD_TEST_KAFKA" --topic-prefix "$prefix" \
        --data "$dir/tokens" 2>/dev/null
    if [ "$mode" = topic ]; then
        extra=()
        THRESHOLD_VAULT_KEK=$("$B" privacy new-kek)
        export THRESHOLD_VAULT_KEK
    else
        extra=(--vault "$dir/vault")
        unset THRESHOLD_VAULT_KEK
    fi
    "$B" serve --listen 127.0.0.1:0 --log "kafka://$THRESHOLD_TEST_KAFKA" --topic-prefix "$prefix" \
        --name manifest --services manifest --data "$dir/manifest" "${extra[@]}" >"$dir/out" 2>"$dir/err" &
    pid=$!
    for _ in $(seq 200); do grep -q "serving on" "$dir/out" 2>/dev/null && break; sleep 0.05; done
    addr=$(grep -o "127.0.0.1:[0-9]*" "$dir/out" | head -1)
    start=$(date +%s.%N)
    for cc in dk fi no se; do
        cp "crates/manifest/samples/2026-11-23-$cc.csv" "$dir/"
        "$B" manifest load "$dir/2026-11-23-$cc.csv" --server "http://$addr" --data "$dir/tokens" >/dev/null 2>&1
    done
    end=$(date +%s.%N)
    kill "$pid"; wait "$pid" || true
    rm -rf "$dir"
    echo "$end - $start" | bc
}

topic=(); file=()
for run in $(seq "$RUNS"); do
    t=$(load_all topic); f=$(load_all file)
    topic+=("$t"); file+=("$f")
    printf 'run %d: vault topic %.2f s, vault file %.2f s (240 rows, 240 new households)\n' "$run" "$t" "$f"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mt=$(median "${topic[@]}"); mf=$(median "${file[@]}")
ratio=$(echo "scale=2; $mt / $mf" | bc)
printf 'median: vault topic %.2f s, vault file %.2f s; the topic takes %s times as long\n' "$mt" "$mf" "$ratio"
mkdir -p target/bench
printf '{"rows": 240, "runs": %d, "topic_s": [%s], "file_s": [%s], "median_topic_s": %s, "median_file_s": %s, "ratio": %s}\n' \
    "$RUNS" "$(IFS=,; echo "${topic[*]}")" "$(IFS=,; echo "${file[*]}")" "$mt" "$mf" "$ratio" >target/bench/vault.json
echo "written target/bench/vault.json"
