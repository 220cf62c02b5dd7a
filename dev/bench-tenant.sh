#!/usr/bin/env bash
# `make bench-tenant [SIZE=100000] [SYNC=20000]`: one tenant at production
# size (see tests/src/bin/tenant_scale.rs: single member changes in a
# tenant of 10 and of SIZE, a tier change and a seat cut of SIZE/2, a first
# sync of SYNC accounts) on a stack of its own, release builds, DynamoDB
# requests counted on the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=.local/bench-tenant-stack MOTO_PORT=${BENCH_MOTO_PORT:-5169} FN_PORT=${BENCH_FN_PORT:-9169} SCIM_PORT=${BENCH_SCIM_PORT:-5168} \
  DDB_PORT=${BENCH_DDB_PORT:-5167} STRIPE_PORT=${BENCH_STRIPE_PORT:-5166} SCIMMY_PORT=${BENCH_SCIMMY_PORT:-5164}
COUNTER_PORT=${BENCH_COUNTER_PORT:-5165}
# The production time budget of a SCIM target per delivery run.
export SCIM_TARGET_BUDGET_SECS=${SCIM_TARGET_BUDGET_SECS:-15}
cargo build --release --workspace --bins
dev/stack.sh down > /dev/null
mkdir -p "$STACK_DIR"
setsid target/release/bench_e2e proxy "$COUNTER_PORT" "http://127.0.0.1:$DDB_PORT" > "$STACK_DIR/counter.log" 2>&1 < /dev/null &
counter=$!
trap 'dev/stack.sh down; kill -- -$counter 2> /dev/null || true' EXIT
FN_RELEASE=1 FUNCTIONS_DDB_ENDPOINT="http://127.0.0.1:$COUNTER_PORT" dev/stack.sh up > /dev/null
ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env" target/release/tenant_scale "http://127.0.0.1:$COUNTER_PORT" "${SIZE:-${MEMBERS:-100000}}" "${SYNC:-20000}"
