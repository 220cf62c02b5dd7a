# Entitle: the two commands a newcomer needs are `make demo` and `make test`.
.PHONY: demo test bootstrap build up down bench bench-sweep bench-e2e bench-tenant bench-rollout bench-init sweep billing-sync model-tick

demo: build          ## run the demo scenario end to end on a local stack
	dev/demo.sh

test: build          ## everything: unit, property, IaC, emulator and end-to-end tests
	dev/test.sh

bootstrap:           ## Python virtual environment with the pinned emulator packages
	dev/bootstrap.sh

build: bootstrap     ## the function binaries and the dev tool (one shared target dir)
	cargo build --workspace --bins

up: build            ## start the local stack (moto, cargo lambda watch, event source mapping)
	dev/stack.sh up

down:                ## stop exactly what `make up` started
	dev/stack.sh down

bench:               ## criterion benchmark of the pure core (release build, no AWS SDK)
	cargo bench -p entitle-shared --no-default-features --bench desired_access --bench contract_diff

sweep:               ## fire the expiry sweep's schedule on the running stack (TIME=... to sweep as of another instant)
	env $$(grep -v '^#' $${STACK_DIR:-.local/stack}/stack.env | xargs) target/debug/entitle-dev sweep $(TIME)

billing-sync:        ## fire the billing reconciliation's schedule on the running stack (every tenant against Stripe)
	env $$(grep -v '^#' $${STACK_DIR:-.local/stack}/stack.env | xargs) target/debug/entitle-dev billing-sync

bench-e2e: bootstrap  ## end to end on a stack of its own (release): latency, creations/s in one tenant vs ten, requests per change, cold starts
	dev/bench-e2e.sh

bench-tenant: bootstrap  ## one tenant at production size (release): SIZE (100000) members, single changes vs a tenant of 10, a tier change, a seat cut of SIZE/2, a first sync of SYNC (20000)
	dev/bench-tenant.sh

bench-rollout: bootstrap  ## licensing model rollouts (release): a preview and a rollout of TENANTS (10000) small tenants and of one tenant of SIZE (100000) members
	dev/bench-rollout.sh

model-tick:          ## fire the model tick's schedule on the running stack (registers the deployed model, hands out rollouts' tenants)
	env $$(grep -v '^#' $${STACK_DIR:-.local/stack}/stack.env | xargs) target/debug/entitle-dev model-tick

bench-init: bootstrap  ## each function's Init (release): process start to its first invocation/next, RUNS (20) starts each, and its memory
	cargo build --release --workspace --bins
	target/release/init_bench $(or $(RUNS),20)

bench-sweep: build    ## the expiry sweep at scale: reads per due item with 100,000 licenses, 1 % due
	cargo build -p entitle-tests --bin sweep_scale
	dev/bench-sweep.sh
