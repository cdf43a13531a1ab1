#!/usr/bin/env bash
# Creates the project's virtual environment from nothing, pinned by requirements/lock.txt, and installs the package.
# Re-running reuses what is installed: the pinned set is installed again only when the lock file changes.
# Usage: bash scripts/setup.sh   (VENV=path to use another folder; PYTHON=python3.11 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.lock.sha256"
want=$(sha256sum requirements/lock.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned dependencies (requirements/lock.txt); the first time takes several minutes"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # pip compiles every file to bytecode here (55 of the 116 s on a 2-core CPU); keep it: with PYTHONDONTWRITEBYTECODE
  # set, as on some machines, Python would otherwise compile every module it imports again in every process
  "$VENV/bin/python" -m pip install -q -r requirements/lock.txt
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall .
"$VENV/bin/python" -m pip check
