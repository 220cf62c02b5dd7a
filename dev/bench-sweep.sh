#!/usr/bin/env bash
# `make bench-sweep`: a stack of its own, 100,000 licenses (1 % due) on
# DynamoDB Local, every transition applied; the sweep's reads per due item.
# LICENSES and DUE_PERCENT adjust it.
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=.local/bench-stack MOTO_PORT=${BENCH_MOTO_PORT:-5199} FN_PORT=${BENCH_FN_PORT:-9199} SCIM_PORT=${BENCH_SCIM_PORT:-5198} DDB_PORT=${BENCH_DDB_PORT:-5197} STRIPE_PORT=${BENCH_STRIPE_PORT:-5196}
dev/stack.sh down > /dev/null
trap 'dev/stack.sh down' EXIT
dev/stack.sh up > /dev/null
ENTITLE_STACK_ENV="$PWD/$STACK_DIR/stack.env" target/debug/sweep_scale "${LICENSES:-100000}" "${DUE_PERCENT:-1}"
