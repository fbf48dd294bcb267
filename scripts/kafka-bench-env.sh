# Sourced by the scripts that measure Threshold on the test broker
# (bench-kafka.sh, kafka-cpu.sh, kafka-open-loop.sh), from the project's
# root, under `set -euo pipefail`. Gives:
#   bin    where threshold and threshold-load are: THRESHOLD_BIN=DIR runs
#          another build's (an A/B of two builds against one broker), else
#          they are built here (release)
#   tansu  the test broker's pid
#   hz     clock ticks per second, and ticks PID: a process's CPU in ticks
: "${THRESHOLD_TEST_KAFKA:?run through scripts/test-broker.sh run}"
if [ -n "${THRESHOLD_BIN:-}" ]; then
    bin=$THRESHOLD_BIN
else
    cargo build --release -q -p threshold -p threshold-load
    bin=${CARGO_TARGET_DIR:-target}/release
fi
tansu=$(pgrep -f "tansu broker --listener-url tcp://${THRESHOLD_TEST_KAFKA}" | head -1 || true)
if [ -z "$tansu" ]; then
    echo "$(basename "$0"): no tansu broker on $THRESHOLD_TEST_KAFKA (run through scripts/test-broker.sh run)" >&2
    exit 1
fi
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
