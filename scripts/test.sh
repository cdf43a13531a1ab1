#!/usr/bin/env bash
# Sets everything up from nothing (scripts/setup.sh), lints (ruff, configured in pyproject.toml) and runs the test
# suite on TEST_WORKERS processes (pytest-xdist; default 2, one per core of the CI machine; each test file runs
# whole on one of them, so its module fixtures are made once). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${VENV:-.venv}/bin/ruff" check .
"${VENV:-.venv}/bin/ruff" format --check .
exec "${VENV:-.venv}/bin/python" -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
