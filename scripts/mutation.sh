#!/usr/bin/env bash
# Mutation testing with mutmut: a separate command, not part of scripts/test.sh (it takes
# tens of minutes). See docs/testing.md for the scopes, the time budget, the last scores and
# the surviving mutants.
#
#   bash scripts/mutation.sh                       # the engine's core (scope "engine")
#   bash scripts/mutation.sh release               # the release rule (scope "release")
#   MUTATION_MODULES="mpc/ring mpc/party" bash scripts/mutation.sh
#   MUTATION_PYTHON=/path/to/venv/bin/python bash scripts/mutation.sh   # an existing env
#
# It works in a scratch copy (MUTATION_DIR, default $TMPDIR/mpc-jupyter-mutation) so the
# repository gets no mutants/ folder and no mutmut configuration, and ends by printing the
# surviving mutants and one line: "== mutation: K killed of N (S survived, T timeouts) ...".
# `mutmut show NAME` in the scratch copy's folder shows one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [ -n "${MUTATION_PYTHON:-}" ]; then
  bin="$(dirname "$MUTATION_PYTHON")"
else
  source scripts/bootstrap.sh "test,mutation"
  bin="$root/.venv/bin"
fi

scope="${1:-engine}"
case "$scope" in
  engine)
    # The engine's core, in dependency order: the ring, correlated randomness, shares and
    # sharing, the party machine, the arithmetic protocols (inputs, opening, products,
    # truncation). boolean.py and the numeric layers above it can be added here; each module
    # adds several hundred mutants (docs/testing.md has the counts). The view tests
    # (tests/mpc/test_views.py, about 20 s per run) are left out: they are tested by their
    # own planted leaks.
    default_modules="mpc/ring mpc/randomness mpc/shares mpc/sharing mpc/party mpc/arithmetic"
    default_tests="tests/mpc/test_ring.py tests/mpc/test_randomness.py tests/mpc/test_shares.py tests/mpc/test_sharing.py tests/mpc/test_party.py tests/mpc/test_arithmetic.py tests/mpc/test_boolean.py tests/mpc/test_fixed.py"
    ;;
  release)
    # The release rule: what may be opened (site_agent/privacy/) and the secondary
    # suppression on shares (query/disclosure.py), against the tests that run in one
    # process (the real-agent attack tests take minutes per run).
    default_modules="privacy/contributions privacy/persons privacy/release privacy/checks privacy/ledger privacy/rounding query/disclosure"
    default_tests="tests/privacy/test_stopped.py tests/privacy/test_membership.py tests/privacy/test_branches.py tests/privacy/test_approval_stops.py tests/privacy/test_persons.py tests/privacy/test_contributions.py tests/privacy/test_release_rule.py tests/privacy/test_rule_reference.py tests/privacy/test_ledger.py tests/privacy/test_options.py tests/query/test_suppression.py tests/query/test_other_cell.py tests/query/test_failsafe.py tests/query/test_plan.py"
    ;;
  *) echo "unknown scope $scope (engine or release)" >&2; exit 2 ;;
esac
modules="${MUTATION_MODULES:-$default_modules}"
tests="${MUTATION_TESTS:-$default_tests}"

work="${MUTATION_DIR:-${TMPDIR:-/tmp}/mpc-jupyter-mutation}"
rm -rf "$work"
mkdir -p "$work/tests"
cp -r site_agent mpc_jupyter docs "$work/"
cp tests/__init__.py tests/conftest.py tests/lung.py tests/gbsg2.py "$work/tests/"
for d in mpc query privacy integration data; do cp -r "tests/$d" "$work/tests/"; done
find "$work" -name __pycache__ -prune -exec rm -rf {} +

{
  echo "[mutmut]"
  echo "source_paths = site_agent"
  echo "also_copy ="
  echo "    mpc_jupyter"
  echo "    docs"
  echo "only_mutate ="
  for m in $modules; do echo "    site_agent/$m.py"; done
  echo "pytest_add_cli_args_test_selection ="
  for t in $tests; do echo "    $t"; done
  # A mutant that loops forever is stopped at 5x its tests' normal time (mutmut's default 15x
  # makes each such mutant cost minutes here).
  echo "timeout_multiplier = 5.0"
  echo "pytest_add_cli_args ="
  echo "    -p"
  echo "    no:cacheprovider"
  echo "    -q"
} >"$work/setup.cfg"

cd "$work"
started=$(date +%s)
# One child: the machine has two cores shared with everything else.
env -u PYTHONPATH "$bin/mutmut" run --max-children 1 >"$work/run.log" 2>&1 || true
env -u PYTHONPATH "$bin/mutmut" export-cicd-stats >/dev/null
echo "== surviving mutants"
env -u PYTHONPATH "$bin/mutmut" results
"$bin/python" - "$started" <<'EOF'
import json, sys, time
s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"]
score = 100 * (s["killed"] + s["timeout"]) / tested if tested else 0.0
print(
    f"== mutation: {s['killed']} killed of {s['total']} ({s['survived']} survived, {s['timeout']} timeouts, "
    f"{s['no_tests']} without tests, {s['skipped']} skipped): score {score:.1f}% "
    f"in {(time.time() - float(sys.argv[1])) / 60:.0f} min"
)
EOF
