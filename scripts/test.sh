#!/usr/bin/env bash
# The test command: bootstraps .venv, lints, type-checks, runs the test suite, then the
# browser tests of the JupyterLab extension (scripts/browser-tests.sh: Chromium from
# apt-get when missing, a real demo consortium). Arguments go to pytest.
# MPC_BROWSER_TESTS=0 skips the browser tests.
# The last line sums up both: "== summary: pytest: ... | playwright: ...";
# the exit status is non-zero if either failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "test,bench,lab"
# The PostgreSQL data-source tests start a real server (tests/data/pgserver.py): install
# Debian's postgresql package when no initdb is on PATH or in /usr/lib/postgresql/*/bin.
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "== installing PostgreSQL (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql
fi
echo "== ruff"; ruff check .
echo "== mypy"; mypy site_agent mpc_jupyter

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

echo "== pytest"
pytest_status=0
python -m pytest "$@" 2>&1 | tee "$logs/pytest.log" || pytest_status=$?
pytest_summary="$(grep -E '[0-9]+ (passed|failed|error)|no tests ran' "$logs/pytest.log" | tail -n 1 | tr -d '=' | xargs)"

browser_status=0
if [ "${MPC_BROWSER_TESTS:-1}" = "0" ]; then
  playwright_summary="skipped (MPC_BROWSER_TESTS=0)"
else
  bash scripts/browser-tests.sh 2>&1 | tee "$logs/browser.log" || browser_status=$?
  # Playwright's list reporter ends with lines like "  5 passed (1.1m)", "  1 failed".
  playwright_summary="$(grep -E '^ +[0-9]+ (passed|failed|flaky|skipped|interrupted|did not run)' "$logs/browser.log" \
    | xargs | sed 's/) /), /g')"
  [ -n "$playwright_summary" ] || playwright_summary="no result (exit $browser_status)"
fi

echo "== summary: pytest: ${pytest_summary:-no result (exit $pytest_status)} | playwright: $playwright_summary"
[ "$pytest_status" -eq 0 ] && [ "$browser_status" -eq 0 ]
