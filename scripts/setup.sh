#!/usr/bin/env bash
# Create .venv/ in the repo root and install jaxadapt (+ test extra with --test).
# torch==2.13.0 is installed first and explicitly: an unpinned torch (peft needs one) makes pip pull
# a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Real text comes from Debian packages (`apt-get download`, for the quickstart and the tests): it needs package lists.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  apt-get update -qq || echo "warning: apt-get update failed; run it as root before fetching Debian text" >&2
fi
if [ "${1:-}" = "--test" ]; then
  # tests/recipes lint the shell scripts with shellcheck (skipped without it); only root can install it here.
  if ! command -v shellcheck >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq shellcheck >/dev/null || echo "warning: shellcheck not installed; its test is skipped" >&2
  fi
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]" "torch==2.13.0"
else
  .venv/bin/python -m pip install -q -e . "torch==2.13.0"
fi
