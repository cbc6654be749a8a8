# Two commands do all set-up on a fresh machine:
#   make run    builds and runs the main job on the best backend present
#   make test   builds and runs every test
# Other targets: build, test-asan, test-gpu, bench, install PREFIX=..., clean.
BUILD ?= build
BUILD_ASAN ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all build run test test-asan test-gpu bench install clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/fp8gemm run $(RUN_ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The GPU tests (tests/cuda, label gpu); each exits 77 (skipped) without a
# Hopper GPU. bench/gpu_final.sh (on artifacts from bench/pack_gpu.sh) adds
# compute-sanitizer, the Python suite and the benchmark.
test-gpu: build
	cd $(BUILD) && ctest --output-on-failure -L gpu $(CTEST_ARGS)

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (CPU build).
test-asan:
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DFP8GEMM_SANITIZE=ON -DFP8GEMM_CUDA=OFF
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && FP8GEMM_TEST_QUICK=1 ctest --output-on-failure -j $(JOBS) -LE "install|python" $(CTEST_ARGS)

bench: build
	./$(BUILD)/fp8gemm bench --backend cpu --shapes ../shared/shapes.csv --json bench/results/cpu-latest.json

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
