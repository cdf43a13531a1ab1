#!/usr/bin/env bash
# Sets everything up from nothing (scripts/setup.sh), lints (ruff, configured in pyproject.toml) and runs the test
# suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${VENV:-.venv}/bin/ruff" check .
"${VENV:-.venv}/bin/ruff" format --check .
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
