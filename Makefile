# Everything a user or CI runs. Each target installs what it needs (scripts/setup-venv.sh is
# idempotent), so `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build venv tools test lint image image-test demo bench bench-overhead bench-scheduler bench-sim bench-scrape fuzz-bodies clean

all: build

venv:
	@scripts/setup-venv.sh

# System tools the tests use beyond .venv (kubectl for deploy/kubernetes), from Debian if missing.
tools:
	@scripts/setup-tools.sh

# One release build serves the module, the simulator and the tests (no second debug build).
build:
	$(CARGO) build --release --workspace --bins --lib

test: venv tools build
	$(CARGO) test --release --workspace

# Style gates CI runs before the tests: formatting, and clippy with every warning an error.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Container images from the Dockerfile (gateway, module, simulator), built offline with podman
# from local bases (scripts/image-bases.sh, reused when present); needs root.
image: venv build
	scripts/image.sh

# The gateway image against simulator pods: ready, prefix affinity, the module's metrics, drain.
image-test: image
	scripts/image-test.sh

demo: venv build
	scripts/demo.sh

# The routing comparison against every peer (see bench/README.md); writes bench/results/.
bench: venv build
	scripts/bench.sh

bench-overhead: venv build
	scripts/bench-overhead.sh

bench-scheduler:
	scripts/bench-scheduler.sh

bench-scrape: build
	scripts/bench-scrape.sh

bench-sim: build
	scripts/bench-sim.sh

# A million generated and mutated request bodies through the parser (COUNT, SEED to change);
# prints the count of each outcome and any panic with its body; fails if anything panicked.
fuzz-bodies:
	$(CARGO) run --release -q -p scheduler --example fuzz-bodies -- --count $(or $(COUNT),1000000) $(if $(SEED),--seed $(SEED))

clean:
	$(CARGO) clean
