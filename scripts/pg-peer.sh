#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server, the peer of the
# track store's benchmark: initdb in a temporary directory, listening on a
# unix socket there only (no TCP port), removed afterwards. The command
# finds it in THRESHOLD_BENCH_PG (a libpq connection string).
#
#   scripts/pg-peer.sh run cargo bench -p threshold-projections --bench track
#
# Needs Debian's postgresql package; installs it where it can (root with
# apt-get). As root the server runs as the postgres user (initdb refuses root).
set -euo pipefail
if [ "${1:-}" != run ] || [ $# -lt 2 ]; then
    echo "usage: scripts/pg-peer.sh run COMMAND [ARG...]" >&2
    exit 2
fi
shift
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "pg-peer: installing Debian's postgresql" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    else
        echo "pg-peer: PostgreSQL is not installed (apt-get install postgresql)" >&2
        exit 1
    fi
fi
dir=$(mktemp -d /tmp/threshold-pg.XXXXXX)
user=$(id -un)
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
    user=postgres
fi
stop() {
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -U "$user" -A trust >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-k $dir -c listen_addresses=''" start >/dev/null
echo "pg-peer: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $dir" >&2
export THRESHOLD_BENCH_PG="host=$dir user=$user dbname=postgres"
"$@"
