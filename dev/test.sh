#!/usr/bin/env bash
# The whole test suite (`make test`): unit and property tests of the pure
# core, the IaC checks, then a fresh local stack on its own ports for the
# emulator and end-to-end tests, and a check of the logs they produced.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it starts (seconds since the command began), so that a
# slow step shows in the log.
step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

step "the browser the portal's tests drive (Debian's chromium and chromium-driver)"
dev/bootstrap-browser.sh
step "layers of the common crate"
python3 dev/check_layers.py
step "format (cargo fmt --check; rustfmt.toml)"
cargo fmt --all --check
step "links of the README and docs/ (and the checker's own test)"
python3 dev/test_check_links.py
python3 dev/check_links.py

# Every cargo command below selects the whole workspace, as `make build`
# does: one feature resolution, so that the tests reuse the build of the
# function binaries instead of compiling the AWS SDK a second time. Every
# test target is compiled by one cargo run (cargo builds them side by side),
# which also names the end-to-end binaries (cargo runs them from the
# package's folder, as below).
step "build every test target"
mkdir -p .local
cargo test --workspace --lib --bins --benches --tests --no-run --message-format=json-render-diagnostics > .local/test-artifacts.json
declare -A exe
while read -r name path; do exe[$name]=$path; done < <(
  jq -r 'select(.reason == "compiler-artifact" and .executable != null and .target.kind == ["test"]) | "\(.target.name) \(.executable)"' .local/test-artifacts.json)
[ -n "${exe[e2e]:-}" ] || { echo "no end-to-end test binary (e2e) was built" >&2; exit 1; }

step "local stack for the end-to-end tests (starting while the unit tests and IaC checks run)"
export STACK_DIR=.local/test-stack MOTO_PORT=${TEST_MOTO_PORT:-5177} FN_PORT=${TEST_FN_PORT:-9177} SCIM_PORT=${TEST_SCIM_PORT:-5178} DDB_PORT=${TEST_DDB_PORT:-5179} STRIPE_PORT=${TEST_STRIPE_PORT:-5180} SCIMMY_PORT=${TEST_SCIMMY_PORT:-5181}
# Short visibility timeout so that retries and the dead-letter path take seconds.
export ESM_VISIBILITY_TIMEOUT=2
dev/stack.sh down > /dev/null # leftovers of an interrupted run
up_log=.local/test-stack-up.log
dev/stack.sh up > "$up_log" 2>&1 &
up=$!
# On the way out, even when a unit test fails meanwhile, the stack is
# stopped once it has finished starting (so that nothing it starts is left).
clippy=
# (Each step of the trap may fail without stopping the next: the stack is
# always stopped.)
trap '[ -z "$clippy" ] || kill "$clippy" 2> /dev/null || true; wait "$up" 2> /dev/null || true; dev/stack.sh down' EXIT

step "unit and property tests"
cargo test --workspace --lib --bins --benches

step "infrastructure as code: cfn-lint and checkov on infra/template.yaml"
.venv/bin/cfn-lint infra/template.yaml
.venv/bin/checkov --file infra/template.yaml --framework cloudformation --quiet --compact --skip-download

# Clippy type-checks every dependency once more (about 90 s of CPU): it
# runs beside the end-to-end tests, which leave CPU idle while they wait on
# the stack (they hold on a loaded machine), and its verdict is read after them.
step "lints (cargo clippy on every target, warnings are errors): started, beside the end-to-end tests"
cargo clippy --workspace --all-targets --quiet -- -D warnings > .local/clippy.log 2>&1 &
clippy=$!

step "waiting for the local stack"
wait "$up" || { cat "$up_log" >&2; echo "the local stack did not start (see above)" >&2; exit 1; }
cat "$up_log"

step "emulator and end-to-end tests (real SDK clients, real function binaries)"
export ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env"
# A lane: its areas one after the other, each a run of the one end-to-end
# binary filtered to its module (`admin::`), its output in a log of its own,
# printed whole when it ends; a failed area is noted.
lane() {
  local name start
  for name in "$@"; do
    start=$SECONDS
    (cd tests && "${exe[e2e]}" "$name::") > "$STACK_DIR/test-$name.log" 2>&1 || echo "$name" >> "$STACK_DIR/tests-failed"
    # A filter that matches nothing passes: an area whose tests all vanished fails here.
    if grep -q '^running 0 tests' "$STACK_DIR/test-$name.log"; then echo "$name (no test ran)" >> "$STACK_DIR/tests-failed"; fi
    printf '\n--- %s (%ss) ---\n' "$name" "$((SECONDS - start))"
    cat "$STACK_DIR/test-$name.log"
  done
}
# Phases one after the other, the lanes of a phase at once ("|" between
# lanes). Every test waits on observable marks with deadlines that hold on a
# loaded machine and works in tenants of its own, but a few act on the whole
# stack and keep a phase to themselves:
# - sweep first and alone, on the fresh stack: its scenarios fire the sweep
#   as of the year 2101, which acts on everything due in the stack;
# - admin and scim fire the sweep now and an hour ahead (due deliveries,
#   drift repairs and checkpoints of every tenant), so nothing with a SCIM
#   target runs beside them; the binaries without one (none of their
#   licenses ends within the hour) do, tokens among them (a minute of its
#   time is waiting out a token's lifetime);
# - admin and provision_emulator both read the one dead-letter queue (a
#   receive of one hides a message from the other): different phases;
# - models last and alone: it deploys licensing models (dev/stack.sh
#   redeploy restarts the functions), and a `migrate` deploy moves every
#   tenant of the stack.
# A module not named here runs in the last lane of the phase before models.
phases=(
  "sweep"
  "admin scim|tokens|licenses_to_access seats billing amendments input_safety"
  "hardening|directory|profiles provision_emulator"
  "models"
)
named=" ${phases[*]//|/ } "
mapfile -t modules < <(sed -n 's/^mod \([a-z_0-9]*\);$/\1/p' tests/tests/main.rs)
for name in $named; do
  [[ " ${modules[*]} " == *" $name "* ]] || { echo "dev/test.sh names $name, which is no module of tests/tests/main.rs" >&2; exit 1; }
done
for file in tests/tests/*.rs; do
  name=$(basename "$file" .rs)
  [ "$name" = main ] && continue
  # A file main.rs does not declare would never be compiled nor run.
  [[ " ${modules[*]} " == *" $name "* ]] || { echo "$file is not declared in tests/tests/main.rs" >&2; exit 1; }
  [[ "$named" == *" $name "* ]] || phases[-2]+=" $name"
done
rm -f "$STACK_DIR/tests-failed"
for phase in "${phases[@]}"; do
  IFS='|' read -ra lanes <<< "$phase"
  pids=()
  for l in "${!lanes[@]}"; do
    # shellcheck disable=SC2086 # a lane is names separated by spaces
    lane ${lanes[l]} > "$STACK_DIR/lane-$l.log" 2>&1 &
    pids+=($!)
  done
  for l in "${!lanes[@]}"; do
    wait "${pids[l]}"
    cat "$STACK_DIR/lane-$l.log"
  done
done
failed=()
if [ -f "$STACK_DIR/tests-failed" ]; then mapfile -t failed < "$STACK_DIR/tests-failed"; fi
grep -h "^test result:" "$STACK_DIR"/test-*.log | sed 's/^/  /' || true
[ "${#failed[@]}" = 0 ] || { echo "end-to-end tests failed: ${failed[*]} (see above)" >&2; exit 1; }

step "lints: clippy's verdict"
if ! wait "$clippy"; then
  clippy=
  cat .local/clippy.log >&2
  echo "cargo clippy found problems (warnings are errors; see above)" >&2
  exit 1
fi
clippy=
cat .local/clippy.log

# Last on the stack: its requests act on tenants of their own, on random ids
# and on the whole stack's dead letters (see the script).
step "infra/openapi.yaml against the functions (Schemathesis)"
dev/check-openapi.sh

step "logs"
.venv/bin/python dev/check_logs.py "$STACK_DIR/functions.log" whsec_entitle_local crm_entitle_local scim_entitle_local sk_test_entitle_local portal_entitle_local_key
step "done in ${SECONDS}s"
