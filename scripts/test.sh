#!/usr/bin/env bash
# The test command: bootstraps .venv, then lints, type-checks and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "test,bench"
echo "== ruff"; ruff check .
echo "== mypy"; mypy site_agent mpc_jupyter
echo "== pytest"; python -m pytest "$@"
