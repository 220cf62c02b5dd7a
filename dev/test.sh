#!/usr/bin/env bash
# The whole test suite (`make test`): unit and property tests of the pure
# core, the IaC checks, then a fresh local stack on its own ports for the
# emulator and end-to-end tests, and a check of the logs they produced.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it starts (seconds since the command began), so that a
# slow step shows in the log.
step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

step "layers of the common crate"
python3 dev/check_layers.py

# Every cargo command below selects the whole workspace, as `make build`
# does: one feature resolution, so that the tests reuse the build of the
# function binaries instead of compiling the AWS SDK a second time.
step "unit and property tests"
cargo test --workspace --lib --bins
cargo test --workspace --benches

step "infrastructure as code: cfn-lint and checkov on infra/template.yaml"
.venv/bin/cfn-lint infra/template.yaml
.venv/bin/checkov --file infra/template.yaml --framework cloudformation --quiet --compact --skip-download

step "local stack for the end-to-end tests"
export STACK_DIR=.local/test-stack MOTO_PORT=${TEST_MOTO_PORT:-5177} FN_PORT=${TEST_FN_PORT:-9177} SCIM_PORT=${TEST_SCIM_PORT:-5178} DDB_PORT=${TEST_DDB_PORT:-5179} STRIPE_PORT=${TEST_STRIPE_PORT:-5180} SCIMMY_PORT=${TEST_SCIMMY_PORT:-5181}
# Short visibility timeout so that retries and the dead-letter path take seconds.
export ESM_VISIBILITY_TIMEOUT=2
dev/stack.sh down > /dev/null # leftovers of an interrupted run
trap 'dev/stack.sh down' EXIT
dev/stack.sh up

step "emulator and end-to-end tests (real SDK clients, real function binaries)"
export ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env"
# The sweep's scenarios first, on the fresh stack: a sweep acts on everything
# due in the stack (as of the year 2101, every license the other tests leave
# behind), so run after them it would do their work too. Then the rest.
failed=0
cargo test --workspace --test sweep || failed=1
others=()
for file in tests/tests/*.rs; do
  name=$(basename "$file" .rs)
  [ "$name" = sweep ] || others+=(--test "$name")
done
cargo test --workspace --no-fail-fast "${others[@]}" || failed=1
[ "$failed" = 0 ] || { echo "end-to-end tests failed (see above)" >&2; exit 1; }

step "logs"
.venv/bin/python dev/check_logs.py "$STACK_DIR/functions.log" whsec_entitle_local crm_entitle_local scim_entitle_local sk_test_entitle_local
step "done in ${SECONDS}s"
