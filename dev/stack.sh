#!/usr/bin/env bash
# The local stack: AWS's DynamoDB Local with the template's tables, moto (SQS,
# EventBridge, Secrets Manager) with its queues and bus, the real function
# binaries under `cargo lambda watch`, the event source mapping stand-in
# (entitle-dev esm, for the reconcile and the billing queue), the EventBridge
# Pipe stand-in (entitle-dev pipe: the table's stream to the bus), scim2-server as
# the example SCIM target, SCIMMY as targets behaving as their vendors
# document (dev/scimmy), and localstripe as Stripe (its API, and its signed
# webhooks to ingest). Everything binds to 127.0.0.1.
#
#   dev/stack.sh up     start, print endpoints and local secrets
#   dev/stack.sh down   stop exactly what `up` started (by process group id)
#
# Settings: STACK_DIR (.local/stack), MOTO_PORT (5055), FN_PORT (9000),
# SCIM_PORT (5056), DDB_PORT (5057), STRIPE_PORT (5058), SCIMMY_PORT (5059), ESM_VISIBILITY_TIMEOUT
# (queue default), FN_RELEASE (1: release builds), FUNCTIONS_DDB_ENDPOINT (the
# functions' way to DynamoDB, default DynamoDB Local itself), the SCIM retry
# policy SCIM_QUARANTINE_AFTER (3), SCIM_RETRY_BASE_SECS (1),
# SCIM_RETRY_MAX_SECS (4), SCIM_QUARANTINE_RETRY_SECS (5): seconds locally, so
# that a quarantine and its recovery can be watched (production defaults:
# 5 runs, 30 s doubling to 15 min, hourly while quarantined), a target's time
# budget per run SCIM_TARGET_BUDGET_SECS (5; production 15), and
# SWEEP_ALLOW_FUTURE (1: the demo and the tests run the sweep as of future
# instants; set SWEEP_ALLOW_FUTURE=0 to refuse them as production does).
set -euo pipefail
cd "$(dirname "$0")/.."

STACK_DIR=${STACK_DIR:-.local/stack}
MOTO_PORT=${MOTO_PORT:-5055}
FN_PORT=${FN_PORT:-9000}
SCIM_PORT=${SCIM_PORT:-5056}
DDB_PORT=${DDB_PORT:-5057}
STRIPE_PORT=${STRIPE_PORT:-5058}
SCIMMY_PORT=${SCIMMY_PORT:-5059}
VENV=.venv
# The dev tool of the build the functions run (FN_RELEASE=1: release).
if [ "${FN_RELEASE:-0}" = 1 ]; then TOOL=target/release/entitle-dev; else TOOL=target/debug/entitle-dev; fi
STRIPE_SECRET=whsec_entitle_local
CRM_SECRET=crm_entitle_local
STRIPE_SECRET_ID=entitle-local/stripe-webhook-secrets
CRM_SECRET_ID=entitle-local/crm-signing-secrets
# localstripe takes any key that starts with sk_; the functions read this
# one from Secrets Manager, as they read the restricted key in production.
STRIPE_API_KEY=sk_test_entitle_local
STRIPE_API_KEY_SECRET_ID=entitle-local/stripe-api-key
# The keys that sign the admin portal's session cookies (a rotation set).
PORTAL_SECRET=portal_entitle_local_key
PORTAL_SECRET_ID=entitle-local/portal-session-keys
# The Stripe prices (localstripe: plans) the example licensing model maps by id.
STRIPE_PLANS="team_monthly:team:1500:month business_monthly:business:4500:month enterprise_annual:enterprise:90000:year sso_addon:sso:500:month"
# Bearer tokens scim2-server accepts (any of them, on every SCIM tenant path).
SCIM_TOKEN=scim_entitle_local
SCIM_TOKEN_2=scim_entitle_local_2
# Bearer token of the SCIMMY targets (every profile, every account).
SCIMMY_TOKEN=scimmy_entitle_local

die() { echo "stack: $*" >&2; exit 1; }

wait_for() { # url, what, seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    if curl -s -o /dev/null -m 2 "$1"; then return 0; fi
    sleep 0.25
  done
  die "$2 did not come up at $1 within $3 s (logs in $STACK_DIR)"
}

start() { # name, command...: runs in its own process group, records its id
  local name=$1; shift
  setsid "$@" >> "$STACK_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$STACK_DIR/$name.pid"
}

stop() { # name: stops the process group `start` recorded
  local pidfile="$STACK_DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  # Each part runs in its own process group (setsid): stop the group.
  kill -TERM -- "-$pid" 2> /dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2> /dev/null || true
  rm -f "$pidfile"
}

# The functions under cargo lambda watch, with functions.env (FN_RELEASE=1 at
# `up`: release builds, as make bench-e2e runs them).
start_functions() {
  local release=()
  if [ "$(cat "$STACK_DIR/fn_release" 2> /dev/null)" = 1 ]; then release=(--release); fi
  start functions "$VENV/bin/cargo-lambda" lambda watch -A 127.0.0.1 -P "$FN_PORT" \
    --ignore-changes --quiet --concurrency 8 --env-file "$STACK_DIR/functions.env" "${release[@]}"
  wait_for "http://127.0.0.1:$FN_PORT/lambda-url/access/" "cargo lambda watch" 120
}

# First calls start the function instances (cargo run): done here, not in a test.
warm_up() {
  local base="http://127.0.0.1:$FN_PORT"
  curl -s -o /dev/null -m 120 "$base/lambda-url/access/tenants/warm-up" || die "access did not start"
  curl -s -o /dev/null -m 120 -X POST "$base/lambda-url/ingest/stripe" || die "ingest did not start"
  curl -s -o /dev/null -m 120 "$base/lambda-url/amend/contracts/warm-up" || die "amend did not start"
  curl -s -o /dev/null -m 120 "$base/lambda-url/admin/audit/public-key" || die "admin did not start"
  curl -s -o /dev/null -m 120 "$base/lambda-url/directory/scim/v2/tenants/warm-up/ServiceProviderConfig" || die "directory did not start"
  curl -s -o /dev/null -m 120 "$base/lambda-url/portal/assets/portal.css" || die "portal did not start"
  # A sweep as of 2000-01-01 finds nothing due: it only starts the function.
  curl -s -o /dev/null -m 120 -X POST -d '{"id":"warm-up","time":"2000-01-01T00:00:00Z"}' "$base/2015-03-31/functions/expiry-sweep/invocations" || die "expiry-sweep did not start"
  curl -s -o /dev/null -m 120 -X POST -d '{"Records":[]}' "$base/2015-03-31/functions/provision/invocations" || die "provision did not start"
  curl -s -o /dev/null -m 120 -X POST -d '{"Records":[]}' "$base/2015-03-31/functions/billing/invocations" || die "billing did not start"
}

# A deploy, locally: the functions stopped and started afresh (cold starts),
# reading functions.env and the licensing model ($STACK_DIR/licensing-model.toml,
# ENTITLE_MODEL_PATH) anew. The queues' pollers and the Pipe go on.
redeploy() {
  [ -f "$STACK_DIR/functions.pid" ] || die "no stack is running from $STACK_DIR"
  FN_PORT=$(cat "$STACK_DIR/fn_port")
  stop functions
  start_functions
  warm_up
  # The deploy starts the model tick: the new model is registered (or
  # refused) now, and a `migrate` rule's rollout begins.
  local tick
  tick=$(env ENTITLE_SWEEP_INVOKE_URL="http://127.0.0.1:$FN_PORT/2015-03-31/functions/expiry-sweep/invocations" "$TOOL" model-tick) || die "the model tick after the deploy failed (see $STACK_DIR/functions.log)"
  echo "stack: functions redeployed with the model at $STACK_DIR/licensing-model.toml"
  echo "stack: model tick: $tick"
}

up() {
  [ -x "$VENV/bin/moto_server" ] || die "no $VENV: run 'make bootstrap' first"
  [ -x "$VENV/bin/cargo-lambda" ] || die "cargo-lambda is missing from $VENV: run 'make bootstrap'"
  [ -x "$VENV/bin/scim2-server" ] || die "scim2-server is missing from $VENV: run 'make bootstrap'"
  [ -x "$VENV/bin/localstripe" ] || die "localstripe is missing from $VENV: run 'make bootstrap'"
  [ -f "$VENV/dynamodb/lib" ] || die "DynamoDB Local is not installed: run 'make bootstrap'"
  local ddb_lib
  ddb_lib=$(cat "$VENV/dynamodb/lib")
  [ -x "$TOOL" ] || die "$TOOL is missing: run 'make build'"
  if ls "$STACK_DIR"/*.pid > /dev/null 2>&1; then
    die "a stack is already running from $STACK_DIR ('dev/stack.sh down' first)"
  fi
  for port in "$MOTO_PORT" "$FN_PORT" "$SCIM_PORT" "$DDB_PORT" "$STRIPE_PORT" "$SCIMMY_PORT"; do
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; then die "port $port is already in use"; fi
  done
  mkdir -p "$STACK_DIR"
  rm -f "$STACK_DIR"/*.log
  echo "${FN_RELEASE:-0}" > "$STACK_DIR/fn_release"
  # The functions' port, for `redeploy` (which may run without the variables `up` had).
  echo "$FN_PORT" > "$STACK_DIR/fn_port"
  # The licensing model the functions load (ENTITLE_MODEL_PATH): the shipped
  # one, copied; `dev/stack.sh redeploy` deploys a changed copy.
  cp infra/licensing-model.toml "$STACK_DIR/licensing-model.toml"

  # AWS's own DynamoDB Local, in memory, on 127.0.0.1 only (see dev/dynamodb).
  # Java runs the launcher from its source file (no JDK needed).
  start dynamodb java -Djava.library.path="$ddb_lib/DynamoDBLocal_lib" -cp "$ddb_lib/DynamoDBLocal.jar" \
    dev/dynamodb/LoopbackDynamoDB.java -inMemory -sharedDb -disableTelemetry -port "$DDB_PORT"
  start moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
  # The example SCIM target: every path prefix (/acme, /globex, ...) is a
  # separate SCIM service provider with its own users and groups.
  start scim "$VENV/bin/scim2-server" --hostname 127.0.0.1 --port "$SCIM_PORT" --dynamic-tenants \
    --bearer-token "$SCIM_TOKEN" --bearer-token "$SCIM_TOKEN_2"
  # The second SCIM engine: SCIMMY, each /<profile>/<name> a target account
  # behaving as that vendor documents (dev/scimmy/server.mjs).
  start scimmy env SCIMMY_TOKEN="$SCIMMY_TOKEN" node dev/scimmy/server.mjs "$SCIMMY_PORT"
  # Stripe: localstripe's API on 127.0.0.1, in memory (dev/localstripe_server.py).
  start stripe env TZ=UTC "$VENV/bin/python" dev/localstripe_server.py --port "$STRIPE_PORT"
  wait_for "http://127.0.0.1:$MOTO_PORT/moto-api/" "moto" 30
  wait_for "http://127.0.0.1:$DDB_PORT/" "DynamoDB Local" 60
  wait_for "http://127.0.0.1:$SCIM_PORT/" "scim2-server" 30
  wait_for "http://127.0.0.1:$SCIMMY_PORT/__store/generic/up" "SCIMMY" 30
  wait_for "http://127.0.0.1:$STRIPE_PORT/v1/plans" "localstripe" 30
  local stripe_api="http://127.0.0.1:$STRIPE_PORT" plan id product amount interval
  for plan in $STRIPE_PLANS; do
    IFS=: read -r id product amount interval <<< "$plan"
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -u "$STRIPE_API_KEY:" "$stripe_api/v1/plans/$id")" != 200 ]; then
      curl -sf -o /dev/null -u "$STRIPE_API_KEY:" "$stripe_api/v1/plans" -d id="$id" -d amount="$amount" -d currency=usd \
        -d interval="$interval" -d "product[name]=Entitle $product" || die "localstripe refused plan $id"
    fi
  done

  local endpoint="http://127.0.0.1:$MOTO_PORT" ddb_endpoint="http://127.0.0.1:$DDB_PORT"
  {
    # The webhook signing secrets and Stripe's API key live in Secrets
    # Manager, read at run time.
    "$VENV/bin/python" dev/resources.py infra/template.yaml "$endpoint" "$ddb_endpoint" \
      "$STRIPE_SECRET_ID=$STRIPE_SECRET" "$CRM_SECRET_ID=$CRM_SECRET" "$STRIPE_API_KEY_SECRET_ID=$STRIPE_API_KEY" "$PORTAL_SECRET_ID=$PORTAL_SECRET"
    echo "AWS_ENDPOINT_URL=$endpoint"
    # The functions' way to DynamoDB (FUNCTIONS_DDB_ENDPOINT: a request
    # counter in front of DynamoDB Local, for make bench-e2e).
    echo "AWS_ENDPOINT_URL_DYNAMODB=${FUNCTIONS_DDB_ENDPOINT:-$ddb_endpoint}"
    # (FUNCTIONS_KMS_ENDPOINT: a counter in front of moto's KMS, for the
    # signatures per change of make bench-e2e.)
    if [ -n "${FUNCTIONS_KMS_ENDPOINT:-}" ]; then echo "AWS_ENDPOINT_URL_KMS=$FUNCTIONS_KMS_ENDPOINT"; fi
    echo "AWS_REGION=us-east-1"
    echo "AWS_ACCESS_KEY_ID=local"
    echo "AWS_SECRET_ACCESS_KEY=local"
    echo "AWS_LAMBDA_LOG_FORMAT=JSON"
    echo "STRIPE_WEBHOOK_SECRET_ID=$STRIPE_SECRET_ID"
    echo "CRM_SIGNING_SECRET_ID=$CRM_SECRET_ID"
    echo "STRIPE_API_URL=$stripe_api"
    echo "STRIPE_API_KEY_SECRET_ID=$STRIPE_API_KEY_SECRET_ID"
    echo "PORTAL_SESSION_SECRET_ID=$PORTAL_SECRET_ID"
    # Where portal links point (the portal function's URL), and its brand
    # (one word: the queue pollers take these settings through xargs).
    echo "PORTAL_URL=http://127.0.0.1:$FN_PORT/lambda-url/portal/"
    echo "PORTAL_PRODUCT_NAME=\"${PORTAL_PRODUCT_NAME:-Acme}\""
    echo "PORTAL_ACCENT=\"${PORTAL_ACCENT:-#0b6e4f}\""
    echo "TARGET_SECRET_PREFIX=entitle-local/targets"
    echo "SCIM_ALLOW_HTTP=1"
    echo "SCIM_TARGET_BUDGET_SECS=${SCIM_TARGET_BUDGET_SECS:-5}"
    if [ "${SWEEP_ALLOW_FUTURE:-1}" = 0 ]; then echo "SWEEP_ALLOW_FUTURE=0"; else echo "SWEEP_ALLOW_FUTURE=1"; fi
    echo "SCIM_QUARANTINE_AFTER=${SCIM_QUARANTINE_AFTER:-3}"
    echo "SCIM_RETRY_BASE_SECS=${SCIM_RETRY_BASE_SECS:-1}"
    echo "SCIM_RETRY_MAX_SECS=${SCIM_RETRY_MAX_SECS:-4}"
    echo "SCIM_QUARANTINE_RETRY_SECS=${SCIM_QUARANTINE_RETRY_SECS:-5}"
    echo "ENTITLE_MODEL_PATH=$PWD/$STACK_DIR/licensing-model.toml"
    # Where the tenants' identity providers push (the directory function's URL).
    echo "DIRECTORY_URL=http://127.0.0.1:$FN_PORT/lambda-url/directory/"
    # The issuer of member tokens and license files: the local access URL
    # (its /.well-known/jwks.json publishes the keys).
    echo "TOKEN_ISSUER=http://127.0.0.1:$FN_PORT/lambda-url/access/"
  } > "$STACK_DIR/functions.env"

  start_functions
  local base="http://127.0.0.1:$FN_PORT"

  # The event source mappings need the same AWS settings as the functions:
  # the reconcile queue to provision (batches of 10), the billing queue to
  # billing (one run part per invocation), as the template declares them.
  local queue name var fn batch
  for queue in "esm RECONCILE_QUEUE_URL provision 10" "esm-billing BILLING_QUEUE_URL billing 1" "esm-models MODEL_WORK_QUEUE_URL provision 1"; do
    read -r name var fn batch <<< "$queue"
    start "$name" env $(grep -v '^#' "$STACK_DIR/functions.env" | xargs) \
      ESM_QUEUE_URL="$(grep "^$var=" "$STACK_DIR/functions.env" | cut -d= -f2-)" \
      ESM_INVOKE_URL="$base/2015-03-31/functions/$fn/invocations" ESM_BATCH_SIZE="$batch" \
      ESM_VISIBILITY_TIMEOUT="${ESM_VISIBILITY_TIMEOUT:-}" \
      "$TOOL" esm
  done
  # The template's EventBridge Pipe: the state table's stream to the bus.
  rm -f "$STACK_DIR/pipe.checkpoint"
  start pipe env $(grep -v '^#' "$STACK_DIR/functions.env" | xargs) STACK_DIR="$STACK_DIR" "$TOOL" pipe
  sleep 0.5
  for name in esm esm-billing esm-models pipe; do
    kill -0 "$(cat "$STACK_DIR/$name.pid")" 2> /dev/null || die "entitle-dev $name exited at start (see $STACK_DIR/$name.log)"
  done

  # localstripe's webhooks go to ingest, signed with the local secret.
  curl -sf -o /dev/null "$stripe_api/_config/webhooks/entitle" -d url="$base/lambda-url/ingest/stripe" -d secret="$STRIPE_SECRET" \
    -d "events[]=customer.subscription.created" -d "events[]=customer.subscription.updated" \
    -d "events[]=customer.subscription.deleted" -d "events[]=invoice.payment_failed" || die "localstripe refused the webhook"

  {
    echo "ENTITLE_INGEST_URL=$base/lambda-url/ingest"
    echo "ENTITLE_ACCESS_URL=$base/lambda-url/access"
    echo "ENTITLE_AMEND_URL=$base/lambda-url/amend"
    echo "ENTITLE_ADMIN_URL=$base/lambda-url/admin"
    echo "ENTITLE_DIRECTORY_URL=$base/lambda-url/directory"
    echo "ENTITLE_PORTAL_URL=$base/lambda-url/portal"
    echo "ENTITLE_PROVISION_INVOKE_URL=$base/2015-03-31/functions/provision/invocations"
    echo "ENTITLE_SWEEP_INVOKE_URL=$base/2015-03-31/functions/expiry-sweep/invocations"
    echo "ENTITLE_BILLING_INVOKE_URL=$base/2015-03-31/functions/billing/invocations"
    echo "ENTITLE_STRIPE_API_URL=$stripe_api"
    echo "ENTITLE_STRIPE_API_KEY=$STRIPE_API_KEY"
    echo "ENTITLE_DDB_DIRECT=$ddb_endpoint"
    echo "ENTITLE_STRIPE_SECRET=$STRIPE_SECRET"
    echo "ENTITLE_CRM_SECRET=$CRM_SECRET"
    echo "ENTITLE_SCIM_URL=http://127.0.0.1:$SCIM_PORT"
    echo "ENTITLE_SCIM_TOKEN=$SCIM_TOKEN"
    echo "ENTITLE_SCIM_TOKEN_2=$SCIM_TOKEN_2"
    echo "ENTITLE_SCIMMY_URL=http://127.0.0.1:$SCIMMY_PORT"
    echo "ENTITLE_SCIMMY_TOKEN=$SCIMMY_TOKEN"
    echo "ENTITLE_FUNCTIONS_LOG=$PWD/$STACK_DIR/functions.log"
    grep -v '^AWS_LAMBDA_LOG_FORMAT' "$STACK_DIR/functions.env"
  } > "$STACK_DIR/stack.env"

  warm_up
  # The model tick's schedule (a minute in the template; MODEL_TICK_SECS,
  # 3, here): registers the deployed model, hands rollouts' and previews'
  # tenants to provision. The first tick runs now, as a deploy's would.
  env ENTITLE_SWEEP_INVOKE_URL="$base/2015-03-31/functions/expiry-sweep/invocations" "$TOOL" model-tick > /dev/null || die "the first model tick failed (see $STACK_DIR/functions.log)"
  start tick env ENTITLE_SWEEP_INVOKE_URL="$base/2015-03-31/functions/expiry-sweep/invocations" "$TOOL" model-tick "${MODEL_TICK_SECS:-3}"

  cat <<MSG
Entitle local stack is up (state in $STACK_DIR; logs: *.log there).
  ingest   $base/lambda-url/ingest    POST /stripe, POST /crm, POST|DELETE /tenants/{tenant}/members[/{user}],
                                     PUT|GET /tenants/{tenant}/targets[/{target}], POST .../targets/{target}/repair,
                                     POST /tenants/{tenant}/billing/sync
  access   $base/lambda-url/access    GET /tenants/{tenant}[/members/{user}|/audit|/audit/verify]
  amend    $base/lambda-url/amend     POST /contracts, GET /contracts/{id}, POST /contracts/{id}/amendments[/{aid}/approve|reject|reverse]
  provision  fed from the reconcile FIFO queue by entitle-dev esm
  events   the state table's stream to the bus (entitle-dev pipe, as the template's EventsPipe)
  expiry-sweep  fire its schedule with: make sweep [TIME=2027-01-01T00:00:00Z]
  billing  fed from the billing queue by entitle-dev esm; its schedule: make billing-sync
  Stripe (localstripe)  $stripe_api   key $STRIPE_API_KEY; plans $(echo "$STRIPE_PLANS" | sed 's/:[^ ]*//g'); webhooks to ingest
  DynamoDB Local  $ddb_endpoint   (AWS_ENDPOINT_URL_DYNAMODB; tables StateTable, AuditTable)
  moto (SQS, EventBridge, Secrets Manager)  $endpoint   (AWS_ENDPOINT_URL)
  SCIM target (scim2-server)  http://127.0.0.1:$SCIM_PORT/<any-name>   bearer token $SCIM_TOKEN
  SCIM targets as vendors document them (SCIMMY)  http://127.0.0.1:$SCIMMY_PORT/<profile>/<any-name>   bearer token $SCIMMY_TOKEN
  local secrets: Stripe webhooks $STRIPE_SECRET, Stripe API $STRIPE_API_KEY, CRM records $CRM_SECRET, SCIM $SCIM_TOKEN
  settings for scripts and tests: $STACK_DIR/stack.env
Stop it with: make down
MSG
}

down() {
  local stopped=0 name
  for name in tick esm esm-billing esm-models pipe functions stripe scimmy scim moto dynamodb; do
    if stop "$name"; then stopped=$((stopped + 1)); fi
  done
  echo "stack: stopped $stopped process group(s) from $STACK_DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  redeploy) redeploy ;;
  *) die "usage: dev/stack.sh up|down|redeploy" ;;
esac
