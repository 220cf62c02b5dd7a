#!/usr/bin/env bash
# `make demo`: runs the demo scenario through the local stack. Uses the stack
# `make up` started if there is one; otherwise starts one and stops it at the
# end (KEEP_STACK=1 keeps it running). One line per step; each step's details
# go to .local/demo-details.log (DEMO_DETAILS=1 prints them too).
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=${STACK_DIR:-.local/stack}
if [ ! -f "$STACK_DIR/functions.pid" ]; then
  # Stop what was started even when the start fails half way.
  if [ "${KEEP_STACK:-0}" != 1 ]; then trap 'dev/stack.sh down' EXIT; fi
  mkdir -p .local
  echo "Starting the local stack in $STACK_DIR (the first start builds the functions: a few minutes; its endpoints and local secrets: .local/demo-stack.log)"
  if ! dev/stack.sh up > .local/demo-stack.log 2>&1; then
    tail -n 20 .local/demo-stack.log >&2
    if [ "${KEEP_STACK:-0}" = 1 ]; then dev/stack.sh down; fi
    exit 1
  fi
fi
env $(grep -v '^#' "$STACK_DIR/stack.env" | xargs) target/debug/entitle-dev demo
