#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
