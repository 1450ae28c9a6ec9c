# Everything a user or CI runs. Each target installs what it needs (scripts/setup-venv.sh is
# idempotent), so `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build venv test demo bench bench-overhead bench-scheduler bench-sim bench-scrape fuzz-bodies clean

all: build

venv:
	@scripts/setup-venv.sh

# One release build serves the module, the simulator and the tests (no second debug build).
build:
	$(CARGO) build --release --workspace --bins --lib

test: venv build
	$(CARGO) test --release --workspace

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
