# The commands users type. CMake does the real work; see docs/development.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 30
JOBS       ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all build deps test test-unit test-asan bench bench-gateway bench-mesh bench-services fuzz fuzz-smoke up down clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The whole suite, with the real servers it needs started (and stopped) by the harness.
test: deps build
	STRATA_BUILD_DIR=$(CURDIR)/$(BUILD) scripts/with-servers ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -L unit $(CTEST_ARGS)

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  STRATA_BUILD_DIR=$(CURDIR)/$(ASAN_BUILD) scripts/with-servers ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

$(FUZZ_BUILD)/build.ninja: | deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_FUZZ=ON

# Every libFuzzer target for FUZZ_TIME seconds each, starting from its seed corpus.
fuzz: $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	scripts/fuzz-all $(FUZZ_BUILD) $(FUZZ_TIME)

bench: build
	bench/run $(BUILD)
	bench/gateway $(BUILD)

# The gateway alone against NGINX and HAProxy (ROUNDS, DURATION, SCENARIOS: see bench/gateway).
bench-gateway: build
	bench/gateway $(BUILD)

# The mesh hop (app → sidecar → mTLS → sidecar → app) against NGINX and HAProxy (bench/mesh).
bench-mesh: build
	bench/mesh $(BUILD)

# The reference services on real PostgreSQL/Redis/NATS (docs/benchmarks.md).
bench-services: deps build
	STRATA_BUILD_DIR=$(CURDIR)/$(BUILD) scripts/with-servers bench/services $(BUILD)

# The whole platform from deploy/, in the background; prints the URLs (docs/runtime.md).
# STATE (default ~/.local/state/strata) and UP_ARGS (e.g. --foreground) are passed on.
STATE ?=
UP_ARGS ?=
up: deps build
	$(BUILD)/strata up -f deploy $(if $(STATE),--state $(STATE)) $(UP_ARGS)

down:
	$(BUILD)/strata down $(if $(STATE),--state $(STATE))

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
