#!/usr/bin/env bash
# infra/openapi.yaml against the running functions: Schemathesis generates
# requests from the document for every operation of ingest, access, amend
# and admin (not the directory's SCIM routes, nor the signed webhooks
# /stripe and /crm) and checks each answer:
#   not_a_server_error, status_code_conformance, response_schema_conformance,
#   positive_data_acceptance (a request the document calls valid is never
#   refused 400 or 422: 2xx, or 404 and 409 as documented),
#   negative_data_rejection (one it calls invalid is refused: a 4xx).
# The coverage phase sends the valid boundary cases of every parameter and
# field, the fuzzing phase OPENAPI_EXAMPLES (5) random requests per
# operation, valid and invalid, from the fixed seed OPENAPI_SEED (so that a
# run that passed passes again; another seed explores further, as does
# OPENAPI_COVERAGE_MODE=all, the invalid boundary cases too, four times the
# requests). Arguments go to `st run` (--include-path /contracts, ...).
# dev/openapi_hooks.py keeps what a schema cannot say (see there).
# dev/test.sh runs it on its stack after the end-to-end tests; by hand, on a
# running stack: STACK_DIR=.local/stack dev/check-openapi.sh
# The requests change the stack: in the fuzzing phase the tenant routes
# work in a tenant created here (openapi-check-<time>-<random>, a name no
# test uses); the other requests act on what their generated ids name
# (random ones, which exist nowhere), except `POST /dead-letters/redrive`
# (every dead letter of the stack) and rollouts and previews of `all`
# tenants (to versions that are not registered: 404).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "check-openapi: $*" >&2; exit 1; }

STACK_DIR=${STACK_DIR:-.local/stack}
ST=.venv/bin/st
PINNED=$(sed -n 's/^schemathesis==//p' dev/requirements.txt)
[ -x "$ST" ] || die "schemathesis is missing from .venv (dev/requirements.txt pins schemathesis==$PINNED): run 'make bootstrap'"
version=$("$ST" --version 2>&1) || die "$ST does not run ($version): run 'make bootstrap'"
[[ "$version" == *"version $PINNED"* ]] || die "$ST is not schemathesis $PINNED (dev/requirements.txt) but '$version': run 'make bootstrap'"
[ -f "$STACK_DIR/stack.env" ] || die "no stack is running from $STACK_DIR ($STACK_DIR/stack.env is missing)"
access_url=$(sed -n 's/^ENTITLE_ACCESS_URL=//p' "$STACK_DIR/stack.env")
origin=${access_url%%/lambda-url/*}
base="$origin/lambda-url"
curl -s -o /dev/null -m 10 "$base/access/.well-known/jwks.json" || die "the functions do not answer at $origin"

# The tenant the tenant routes act on: licensed by a contract of 5 seats,
# with a member (u1) and a directory connection.
tenant="openapi-check-$(date +%s)-$(openssl rand -hex 3)"
post() { # url, body: the answer's body, or exit naming the answer
  local out status
  out=$(curl -s -m 30 -w '\n%{http_code}' -X POST -H 'content-type: application/json' "$1" -d "$2")
  status=${out##*$'\n'}
  [[ "$status" == 20? ]] || die "seeding: POST $1 answered $status: ${out%$'\n'*}"
  printf '%s' "${out%$'\n'*}"
}
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)
post "$base/amend/contracts" "{\"contract_id\":\"$tenant\",\"tenant_id\":\"$tenant\",\"term\":{\"start\":\"$start\",\"end\":\"$end\"},\"tier\":\"business\",\"seats\":5}" > /dev/null
post "$base/ingest/tenants/$tenant/members" '{"user_id":"u1","email":"u1@openapi-check.test","groups":["admins"]}' > /dev/null
directory=$(post "$base/ingest/tenants/$tenant/directories" '{"name":"openapi-check"}' | jq -r .directory_id)

config="$STACK_DIR/openapi-check.toml"
cat > "$config" <<EOF
# Written by dev/check-openapi.sh for one run.
color = false
seed = ${OPENAPI_SEED:-30}
hooks = "dev/openapi_hooks.py"
workers = 2
# Most ids name nothing (404: missing_test_data), each operation has the
# base URL of its function (dev/openapi_hooks.py: base_url_mismatch is the
# stack's origin); a pattern Schemathesis cannot generate from is an error.
warnings = { display = ["missing_auth", "validation_mismatch", "missing_deserializer", "unused_openapi_auth", "unsupported_regex", "method_not_allowed", "unmatched_filter", "unresolvable_reference", "low_valid_rate", "rate_limited", "timeout_units"], fail-on = ["unsupported_regex", "unresolvable_reference"] }

[cache]
enabled = false

[generation]
max-examples = ${OPENAPI_EXAMPLES:-5}
no-shrink = true
database = "none"

[phases.examples]
enabled = false
[phases.coverage]
unexpected-methods = []
[phases.coverage.generation]
mode = "${OPENAPI_COVERAGE_MODE:-positive}"
[phases.stateful]
enabled = false

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
response_schema_conformance.enabled = true
positive_data_acceptance = { enabled = true, expected-statuses = ["2XX", "404", "409"] }
negative_data_rejection = { enabled = true, expected-statuses = ["4XX"] }
EOF

echo "check-openapi: infra/openapi.yaml against $base (tenant $tenant)"
log="$STACK_DIR/functions.log"
log_start=$(stat -c %s "$log" 2> /dev/null || echo 0)
status=0
OPENAPI_CHECK_TENANT=$tenant OPENAPI_CHECK_USER=u1 OPENAPI_CHECK_DIRECTORY=$directory \
  "$ST" --config-file "$config" run infra/openapi.yaml --url "$origin" \
  --exclude-tag directory --exclude-path /stripe --exclude-path /crm "$@" || status=$?
# A function that panicked answered through the emulator's own 500, which
# dev/openapi_hooks.py asks again: the log says whether one did.
if [ -f "$log" ] && tail -c +"$((log_start + 1))" "$log" | grep -a -m 5 "panicked at"; then
  die "a function panicked during the run (above; the whole log: $log)"
fi
exit "$status"
