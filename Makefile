# The README's commands. Each target works alone on a fresh machine: it installs what it
# needs (scripts/setup.sh, apt-get only) and builds before it runs.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build test quickstart bench clean format

setup:
	bash scripts/setup.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

quickstart: build
	bash scripts/quickstart.sh

bench: build
	bash bench/run.sh

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD)
