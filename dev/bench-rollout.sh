#!/usr/bin/env bash
# `make bench-rollout [TENANTS=10000] [SIZE=100000]`: licensing model
# rollouts at production size (see tests/src/bin/rollout_scale.rs: 10
# tenants, then TENANTS small tenants, previewed and rolled out; one tenant
# of SIZE members, previewed and rolled out) on a stack of its own, release
# builds, DynamoDB requests counted on the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=.local/bench-rollout-stack MOTO_PORT=${BENCH_MOTO_PORT:-5159} FN_PORT=${BENCH_FN_PORT:-9159} SCIM_PORT=${BENCH_SCIM_PORT:-5158} \
  DDB_PORT=${BENCH_DDB_PORT:-5157} STRIPE_PORT=${BENCH_STRIPE_PORT:-5156} SCIMMY_PORT=${BENCH_SCIMMY_PORT:-5154}
COUNTER_PORT=${BENCH_COUNTER_PORT:-5155}
cargo build --release --workspace --bins
dev/stack.sh down > /dev/null
mkdir -p "$STACK_DIR"
setsid target/release/bench_e2e proxy "$COUNTER_PORT" "http://127.0.0.1:$DDB_PORT" > "$STACK_DIR/counter.log" 2>&1 < /dev/null &
counter=$!
trap 'dev/stack.sh down; kill -- -$counter 2> /dev/null || true' EXIT
FN_RELEASE=1 FUNCTIONS_DDB_ENDPOINT="http://127.0.0.1:$COUNTER_PORT" dev/stack.sh up > /dev/null
ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env" target/release/rollout_scale "http://127.0.0.1:$COUNTER_PORT" "${TENANTS:-10000}" "${SIZE:-100000}"
