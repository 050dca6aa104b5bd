#!/usr/bin/env bash
# The main command: bootstraps .venv and runs the demo (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "lab"
exec mpc-jupyter demo "$@"
