#!/usr/bin/env bash
# `make demo`: runs the demo scenario through the local stack. Uses the stack
# `make up` started if there is one; otherwise starts one and stops it at the
# end (KEEP_STACK=1 keeps it running).
set -euo pipefail
cd "$(dirname "$0")/.."
export STACK_DIR=${STACK_DIR:-.local/stack}
if [ ! -f "$STACK_DIR/functions.pid" ]; then
  dev/stack.sh up
  if [ "${KEEP_STACK:-0}" != 1 ]; then trap 'dev/stack.sh down' EXIT; fi
fi
env $(grep -v '^#' "$STACK_DIR/stack.env" | xargs) target/debug/entitle-dev demo
