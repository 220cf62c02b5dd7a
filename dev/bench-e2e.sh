#!/usr/bin/env bash
# `make bench-e2e`: Entitle end to end on a stack of its own, release builds,
# every function's DynamoDB requests through a counter (see
# tests/src/bin/bench_e2e.rs); prints a table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=.local/bench-e2e-stack MOTO_PORT=${BENCH_MOTO_PORT:-5189} FN_PORT=${BENCH_FN_PORT:-9189} SCIM_PORT=${BENCH_SCIM_PORT:-5188} \
  DDB_PORT=${BENCH_DDB_PORT:-5187} STRIPE_PORT=${BENCH_STRIPE_PORT:-5186} SCIMMY_PORT=${BENCH_SCIMMY_PORT:-5184}
COUNTER_PORT=${BENCH_COUNTER_PORT:-5185} KMS_COUNTER_PORT=${BENCH_KMS_COUNTER_PORT:-5183}
cargo build --release --workspace --bins
dev/stack.sh down > /dev/null
mkdir -p "$STACK_DIR"
# The counter: the functions reach DynamoDB Local through it.
setsid target/release/bench_e2e proxy "$COUNTER_PORT" "http://127.0.0.1:$DDB_PORT" > "$STACK_DIR/counter.log" 2>&1 < /dev/null &
counter=$!
# And their KMS requests through another (the token signatures).
setsid target/release/bench_e2e proxy "$KMS_COUNTER_PORT" "http://127.0.0.1:$MOTO_PORT" > "$STACK_DIR/kms-counter.log" 2>&1 < /dev/null &
kms_counter=$!
trap 'dev/stack.sh down; kill -- -$counter -$kms_counter 2> /dev/null || true' EXIT
FN_RELEASE=1 FUNCTIONS_DDB_ENDPOINT="http://127.0.0.1:$COUNTER_PORT" FUNCTIONS_KMS_ENDPOINT="http://127.0.0.1:$KMS_COUNTER_PORT" dev/stack.sh up > /dev/null
# BENCH_ONLY=latency,creations,directory,requests,tokens: those sections alone (Init: make bench-init).
ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env" target/release/bench_e2e run "http://127.0.0.1:$COUNTER_PORT" "http://127.0.0.1:$KMS_COUNTER_PORT"
