#!/usr/bin/env bash
# GPU acceptance for the 1.5B recipe: throughput and MFU vs stock litgpt, peak memory vs the recipe's estimate,
# bf16-true vs bf16-mixed, SIGKILL + resume, evaluate on GPU vs CPU, DDP and FSDP -> one markdown report.
#   bash scripts/gpu_check.sh [--report out/gpu_check/report.md] [--dry-run] [--help]
# Without CUDA it says so and exits 0; --dry-run runs every stage on the CPU at toy scale (what the tests run).
# Uses .venv (scripts/setup.sh) when it exists, else $PYTHON or python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
