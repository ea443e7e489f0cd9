# Thin wrappers around scripts/ and CMake. `make run` and `make test` do all
# the set-up on a fresh Debian 12 machine (README).
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
ARGS       ?=

.PHONY: all deps build build-asan run test chaos bench fuzz format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DTALLY_SANITIZE=ON -DTALLY_WERROR=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

# Installs, builds and starts the embedded pipeline (tally serve).
run: build
	$(BUILD)/tally serve $(ARGS)

# Installs, builds and passes every test: unit, fuzz-corpus regression and
# integration tests under ASan+UBSan, then the integration suite again on the
# optimised build with the short chaos test (tests/chaos, ~2 min).
test:
	@scripts/deps.sh --test
	@$(MAKE) --no-print-directory build build-asan
	cd $(BUILD_ASAN) && ctest --output-on-failure -j 2 -LE slow
	cd $(BUILD) && ctest --output-on-failure -L 'integration|chaos'

chaos: build
	scripts/chaos.sh $(ARGS)

bench: build
	bench/run-all.sh

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'bench/*.c')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)

# Coverage-guided fuzzing with clang's libFuzzer (scripts/fuzz.sh TARGET SECONDS).
fuzz: deps
	scripts/fuzz.sh $(ARGS)
