#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up a virtual environment, then ruff, mypy and pytest.
#   bash scripts/test.sh            everything, as CI runs it
#   bash scripts/test.sh --fast     the fast lane: the tests not marked slow (pytest -m "not slow"), no browser
# Any other arguments go to pytest (e.g. -k charlm, -x, tests/test_charlm.py).
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
ARGS=()
for arg in "$@"; do
    if [ "$arg" = "--fast" ]; then FAST=1; else ARGS+=("$arg"); fi
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the CPU build this project is tested with; the package itself asks for torch>=2.4.
.venv/bin/python -m pip install -q torch==2.13.0 -e '.[dev]'
# The gate viewer's tests open it in a real headless browser: Debian's chromium (skipped where it is missing).
if [ "$FAST" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "scripts/test.sh: could not install chromium; the browser tests will be skipped" >&2
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src
if [ "$FAST" = 1 ]; then
    .venv/bin/python -m pytest -q -n 2 -m "not slow" ${ARGS[@]+"${ARGS[@]}"}
else
    .venv/bin/python -m pytest -q -n 2 ${ARGS[@]+"${ARGS[@]}"}
fi
