# Sourced by the scripts that measure a server under threshold-load
# (open-loop-cpu.sh, and through kafka-bench-env.sh bench-kafka.sh,
# kafka-cpu.sh and kafka-open-loop.sh), from the project's root, under
# `set -euo pipefail`. Gives:
#   bin            where threshold and threshold-load are: THRESHOLD_BIN=DIR
#                  runs another build's (an A/B of two builds), else they are
#                  built here (release)
#   hz, ticks PID  clock ticks per second, and a process's CPU in ticks
#   start_server DATA ARGS...
#                  starts `threshold serve --data DATA ARGS...` (its output in
#                  DATA/serve.log) as $server and waits until it serves
#   start_load DATA ARGS...
#                  starts `threshold-load --data DATA ARGS...` (its output in
#                  DATA/load.out) as $load and waits until its day is planned
#   stop_started NAME DATA
#                  stops $load and $server (SIGTERM, SIGKILL after 10 s) and
#                  reaps them; on a failed status ($?), prints their last
#                  lines as NAME's
if [ -n "${THRESHOLD_BIN:-}" ]; then
    bin=$THRESHOLD_BIN
else
    cargo build --release -q -p threshold -p threshold-load
    bin=${CARGO_TARGET_DIR:-target}/release
fi
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
server=
load=

# Waits up to TENTHS tenths of a second for PATTERN in FILE while PID lives.
wait_for_line() {
    local file=$1 pattern=$2 pid=$3 tenths=$4
    for _ in $(seq "$tenths"); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    echo "$(basename "$0"): no '$pattern' in $file; its last lines:" >&2
    tail -5 "$file" >&2 2>/dev/null || true
    return 1
}

start_server() {
    local data=$1
    shift
    "$bin/threshold" serve --data "$data" "$@" >"$data/serve.log" 2>&1 &
    server=$!
    wait_for_line "$data/serve.log" serving "$server" 600
}

start_load() {
    local data=$1
    shift
    "$bin/threshold-load" --data "$data" "$@" >"$data/load.out" 2>&1 &
    load=$!
    wait_for_line "$data/load.out" planned "$load" 1200
}

# SIGTERM: a job started in the background of a script ignores SIGINT
# until it installs its own handler.
stop_started() {
    local status=$? name=$1 data=$2
    for p in $load $server; do
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    load=
    server=
    if [ "$status" != 0 ]; then
        echo "$name: failed; the server's and the load's last lines:" >&2
        tail -5 "$data/serve.log" "$data/load.out" >&2 2>/dev/null || true
    fi
}
