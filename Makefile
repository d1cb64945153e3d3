# The README's commands. Each target works alone on a fresh machine: it installs what it
# needs (scripts/setup.sh, apt-get only) and builds before it runs.
BUILD ?= build
JOBS ?= $(shell nproc)
# Reliability runs (docs/reliability.md), both called by .ci/run after `make test`.
SANITIZE_BUILD ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 30

.PHONY: setup build test quickstart bench clean format test-sanitize fuzz

setup:
	bash scripts/setup.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole GoogleTest suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc), but for
# the two tests that train long enough to measure learning (three minutes of the sanitized
# suite): they run in `make test`, and their code runs sanitized in the shorter trainer tests.
SANITIZE_EXCLUDE ?= LearnsRealText
test-sanitize: setup
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHAINLM_SANITIZE=address,undefined
	cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	bash scripts/sanitize_env.sh ctest --test-dir $(SANITIZE_BUILD) --output-on-failure -j $(JOBS) \
	  -E '$(SANITIZE_EXCLUDE)'

# libFuzzer targets (clang, with ASan + UBSan), each run FUZZ_SECONDS from a seed corpus of
# valid files the project writes itself.
fuzz: setup
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DCHAINLM_FUZZ=ON -DCHAINLM_SANITIZE=address,undefined -DCHAINLM_BUILD_TESTS=OFF
	cmake --build $(FUZZ_BUILD) --target fuzzers -j $(JOBS)
	bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

quickstart: build
	bash scripts/quickstart.sh

bench: build
	bash bench/run.sh

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD) $(FUZZ_BUILD)
