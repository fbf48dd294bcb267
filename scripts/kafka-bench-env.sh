# Sourced by the scripts that measure Threshold on the test broker
# (bench-kafka.sh, kafka-cpu.sh, kafka-open-loop.sh), from the project's
# root, under `set -euo pipefail`. Gives what scripts/serve-env.sh gives
# (bin, hz, ticks, start_server, start_load, stop_started), and
#   tansu  the test broker's pid
: "${THRESHOLD_TEST_KAFKA:?run through scripts/test-broker.sh run}"
tansu=$(pgrep -f "tansu broker --listener-url tcp://${THRESHOLD_TEST_KAFKA}" | head -1 || true)
if [ -z "$tansu" ]; then
    echo "$(basename "$0"): no tansu broker on $THRESHOLD_TEST_KAFKA (run through scripts/test-broker.sh run)" >&2
    exit 1
fi
. scripts/serve-env.sh
