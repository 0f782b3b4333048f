#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml, including the one lazy-import rule: heavy libraries
# only inside functions) and the house size limits (scripts/check_sizes.py): the CI step after the tests.
# Fix what it reports with `ruff check --fix .` (import order and the like) and `ruff format .`.
# VENV overrides the venv path (default .venv); ruff is installed into it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/ruff" ]; then
  "$VENV/bin/pip" install -q "ruff>=0.6" 2>&1 | grep -v -E "^WARNING: Location|ignored: it is neither" >&2 || true
fi
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" scripts/check_sizes.py  # modules under 400 lines, functions under 60 (toolchain, runtime, calibration)
