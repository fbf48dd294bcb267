#!/usr/bin/env bash
# The open solvers the planner is measured against: PyVRP and VROOM (pyvroom),
# in a Python virtual environment under .tools/venv.
#
#   scripts/routing-peers.sh install     create the environment and install both (once)
#   scripts/routing-peers.sh python      print the environment's python (installing first)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.tools/venv
PY=$VENV/bin/python

install() {
    if [ -x "$PY" ] && "$PY" -c 'import pyvrp, vroom' 2>/dev/null; then
        return 0
    fi
    echo "routing-peers: installing pyvrp and pyvroom into $VENV (once)" >&2
    mkdir -p "$ROOT/.tools"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >&2
    "$PY" -m pip install --quiet pyvrp pyvroom >&2
}

case "${1:-}" in
    install) install ;;
    python) install; echo "$PY" ;;
    *) echo "usage: $0 install|python" >&2; exit 2 ;;
esac
