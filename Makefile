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

# Placeholder until the CLI lands: bring the fleet up and gather facts from it.
demo: testbed
	cargo run -- facts target/testbed/$(FLEET)/inventory.toml

bench:
	@echo "make bench arrives with issue 7 (benchmarks and the side-by-side with other tools)"
