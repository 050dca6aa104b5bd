#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras.
# Usage: source scripts/bootstrap.sh EXTRAS   (e.g. "test,bench" or "lab")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mpc-jupyter needs Python 3.11+" >&2; exit 1; }
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "== creating virtual environment in .venv"
  "$py" -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip
fi
stamp="$root/.venv/.installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "== installing mpc-jupyter[${1:-}] into .venv"
  "$root/.venv/bin/pip" install -q -e "$root${1:+[$1]}"
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
