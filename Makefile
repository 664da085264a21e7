# fsfleet: common entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
FLEET ?= fsfleet
HOSTS ?= 5

.PHONY: setup build test lint testbed testbed-down testbed-status demo bench

setup:
	scripts/setup

build:
	cargo build --workspace

# The end-to-end tests bring the container fleet up themselves (docker/testbed up is idempotent).
test: setup
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

testbed: setup
	docker/testbed up --hosts $(HOSTS) --name $(FLEET)

testbed-down:
	docker/testbed down --name $(FLEET)

testbed-status:
	docker/testbed status

# The main job on a local testbed: facts, harden --check, harden, an idempotent re-run, the vault.
demo: setup
	scripts/demo


# fsfleet against a tuned Ansible on fleets of 1..50 hosts (not part of `make test`; about an
# hour on 2 cores). BENCH_SIZES / BENCH_REPS narrow it. Writes docs/performance.md and .png.
bench: setup
	bench/run
