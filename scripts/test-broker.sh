#!/usr/bin/env bash
# The test broker: tansu, a Kafka-protocol broker, on loopback.
#
#   scripts/test-broker.sh install        build tansu into .tools/ (once, ~12 min on 2 cores)
#   scripts/test-broker.sh run CMD...     start a broker (memory storage) on a free loopback
#                                         port, run CMD with THRESHOLD_TEST_KAFKA=127.0.0.1:PORT
#                                         and THRESHOLD_TANSU=<the binary>, stop the broker
#
#   TEST_BROKER_STORAGE=sqlite://FILE  another storage engine for `run`, FILE
#                                         relative to the working directory and
#                                         kept (a measurement's; tests use memory)
#
# Tests that restart a broker (sqlite storage) start their own with THRESHOLD_TANSU.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/.tools
TANSU=$TOOLS/bin/tansu
TANSU_VERSION=0.6.0

install() {
    if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return 0
    fi
    echo "test-broker: building tansu $TANSU_VERSION into $TOOLS (once; about 12 minutes on 2 cores)" >&2
    # Its own target directory, removed afterwards: only the binary stays.
    CARGO_TARGET_DIR="$TOOLS/build" CARGO_PROFILE_RELEASE_DEBUG=false \
        cargo install tansu --version "$TANSU_VERSION" --locked \
        --features dynostore,libsql --root "$TOOLS"
    rm -rf "$TOOLS/build"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local port=$1 pid=$2
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "test-broker: tansu exited; its log:" >&2
            cat "$TOOLS/tansu-$port.log" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "test-broker: tansu did not listen on 127.0.0.1:$port within 10 s" >&2
    return 1
}

run() {
    install
    local port status
    port=$(free_port)
    # Warnings only: at info, tansu logs a line per request span, gigabytes
    # an hour under load.
    RUST_LOG="${TANSU_LOG:-warn}" "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "${TEST_BROKER_STORAGE:-memory://tansu/}" >"$TOOLS/tansu-$port.log" 2>&1 &
    pid=$!
    trap 'kill "${pid:-}" 2>/dev/null || true; wait "${pid:-}" 2>/dev/null || true' EXIT
    wait_for "$port" "$pid"
    echo "test-broker: tansu on 127.0.0.1:$port (log: .tools/tansu-$port.log)" >&2
    status=0
    THRESHOLD_TEST_KAFKA="127.0.0.1:$port" THRESHOLD_TANSU="$TANSU" "$@" || status=$?
    return $status
}

case "${1:-}" in
    install) install ;;
    run) shift; run "$@" ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
