#!/usr/bin/env bash
# Browser tests of the JupyterLab extension (galata + Playwright, system Chromium).
#
#   scripts/browser-tests.sh [playwright args...]     e.g. -g highlighting
#
# Steps: Chromium from apt when missing; .venv with the project and JupyterLab
# (scripts/bootstrap.sh "lab,test"); a fresh development build of labextension/,
# served from a private JUPYTER_PATH so the test always sees the current
# sources; then `jlpm playwright test` in labextension/ui-tests, whose global
# setup starts a small demo consortium (three real site agents, 2,000 patients
# per hospital) and whose teardown stops it (ui-tests/consortium.js).
# Artifacts (screenshots, traces, HTML report, consortium log):
# labextension/ui-tests/test-results/.
# Environment: PYTHON (for bootstrap), MPC_CHROMIUM (browser binary),
# MPC_UI_PORT (server port, default 8888), MPC_UI_CONSORTIUM=0 (no consortium:
# its tests are skipped), MPC_UI_CONSORTIUM_DIR, MPC_UI_PATIENTS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SECONDS=0

chromium="${MPC_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "== installing chromium (apt-get)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
[ -x "$chromium" ] || { echo "no Chromium at $chromium" >&2; exit 1; }
export MPC_CHROMIUM="$chromium"

# shellcheck source=bootstrap.sh
source scripts/bootstrap.sh "test,bench,lab"   # the extras of scripts/test.sh: one install
command -v jlpm >/dev/null || { echo "jlpm not found: is jupyterlab installed in .venv?" >&2; exit 1; }
command -v node >/dev/null || { echo "Node.js is needed for the browser tests" >&2; exit 1; }

echo "== building the extension (labextension/)"
(cd labextension && jlpm install && jlpm build)

# Serve the build we just made, ahead of the copy the editable install put in .venv.
jupyter_path="$(mktemp -d)"
state="$root/labextension/ui-tests/test-results/consortium.json"
cleanup() {
  rm -rf "$jupyter_path"
  # Global teardown stops the consortium; this is for a runner that died before it.
  if [ -f "$state" ]; then
    pid="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' "$state" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "== stopping the demo consortium left running (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  fi
}
trap cleanup EXIT
mkdir -p "$jupyter_path/labextensions"
ln -s "$root/mpc_jupyter/labextension" "$jupyter_path/labextensions/mpc-jupyter-labextension"
export JUPYTER_PATH="$jupyter_path${JUPYTER_PATH:+:$JUPYTER_PATH}"
jupyter labextension list 2>&1 | grep -E "mpc-jupyter-labextension .*enabled" \
  || { echo "mpc-jupyter-labextension is not enabled" >&2; jupyter labextension list >&2; exit 1; }

echo "== the wheel carries the prebuilt extension (no jupyter lab build)"
wheel_dir="$(mktemp -d)"
pip wheel --no-deps -q -w "$wheel_dir" "$root"
pip install --no-deps -q --target "$wheel_dir/site" "$wheel_dir"/mpc_jupyter-*.whl
wheel_ext="$wheel_dir/site/share/jupyter/labextensions"
# The listing names each folder it searched, then the extensions found there: require ours under the wheel's.
JUPYTER_PATH="$wheel_dir/site/share/jupyter" jupyter labextension list 2>&1 \
  | awk -v d="$wheel_ext" '$1 == d {f = 1; next} /^[^ \t]/ {f = 0} f && /mpc-jupyter-labextension .*enabled/ {ok = 1} END {exit !ok}' \
  || { echo "the wheel's extension is not found enabled under $wheel_ext" >&2; exit 1; }
echo "   found enabled in $wheel_ext"
rm -rf "$wheel_dir"

echo "== browser tests (labextension/ui-tests)"
cd labextension/ui-tests
jlpm install
export MPC_PYTHON="${MPC_PYTHON:-$root/.venv/bin/python}"
status=0
jlpm playwright test "$@" || status=$?
echo "== browser tests: exit $status in ${SECONDS}s (artifacts: labextension/ui-tests/test-results/)"
exit "$status"
