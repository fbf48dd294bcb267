#!/usr/bin/env bash
# The Python packages tests and benchmarks use as independent peers
# (DuckDB reading our Parquet, ...), in one virtual environment under
# .tools/venv, made and filled on first use from the Python registry.
#
#   scripts/python-env.sh MODULE[:PACKAGE]...   make sure each module imports
#                                               (installing PACKAGE, default
#                                               MODULE, when it does not), then
#                                               print the environment's python
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.tools/venv
PY=$VENV/bin/python

if [ $# -eq 0 ]; then
    echo "usage: $0 MODULE[:PACKAGE]..." >&2
    exit 2
fi
if [ ! -x "$PY" ]; then
    echo "python-env: creating $VENV (once)" >&2
    mkdir -p "$ROOT/.tools"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >&2
fi
missing=()
for spec in "$@"; do
    module=${spec%%:*}
    package=${spec#*:}
    if ! "$PY" -c "import $module" 2>/dev/null; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "python-env: installing ${missing[*]} into $VENV" >&2
    # Concurrent test processes may get here at once: one installs at a time.
    exec 9>"$VENV/.install.lock"
    flock 9
    "$PY" -m pip install --quiet "${missing[@]}" >&2
fi
echo "$PY"
