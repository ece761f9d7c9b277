# Murmuration: every entry point a person or CI uses.
#   make demo   install what is missing, build, run the demo
#   make test   install what is missing, build, run every test, the wire-format check and a short fuzzing pass
#   make bench  release build, run the benchmarks (figures + baselines, appended to bench-results.jsonl)
#   make fuzz   run every fuzz target for FUZZ_SECONDS each

SWIFT        ?= swift
# One optimised build, with testing enabled, serves the tests, the demo and the tools:
# numeric and simulation tests are far too slow in debug builds.
BUILD_FLAGS  := -c release -Xswiftc -enable-testing
BIN          := .build/release
FUZZ_SECONDS ?= 60
# Total time box for fuzzing inside `make test`.
FUZZ_SMOKE_SECONDS ?= 48

DEBIAN_PACKAGES := libsodium-dev libuv1-dev libopenblas-dev zlib1g-dev libdnnl-dev pkg-config \
                   dataset-fashion-mnist iproute2 nftables python3-pip python3-venv time

.PHONY: deps build test demo bench fuzz clean

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run as root:  apt-get update && apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# The tests are built together with the tools in one pass, then run without a rebuild.
test: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build
	scripts/wire-check.sh
	scripts/fuzz.sh --total $(FUZZ_SMOKE_SECONDS)

demo: build
	scripts/demo.sh

bench: build
	scripts/bench.sh

fuzz: deps
	scripts/fuzz.sh --each $(FUZZ_SECONDS)

clean:
	rm -rf .build fuzz/bin
