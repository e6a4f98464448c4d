# AuxPS build. `make` builds build/auxps; `make test` builds and runs the Criterion suite.
# SANITIZE=address,undefined builds everything with those sanitizers (in build-san/ by default).

CC       ?= cc
SANITIZE ?=
BUILD    ?= $(if $(SANITIZE),build-san,build)
PKGS     := libzmq msgpack openblas libuv zlib inih jansson
CFLAGS   ?= -O3 -g
CFLAGS   += $(EXTRA_CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -MMD -MP -Icommon -Ips -Iworker -Ilaunch \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -march=x86-64-v2 -mtune=native -fno-math-errno -fno-trapping-math
LDLIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -lpthread
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

LIB_SRC  := $(wildcard common/*.c ps/*.c worker/*.c) $(filter-out launch/main.c,$(wildcard launch/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/launch/main.o
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test deps clean bench build-all run-tests train test-compose test-swarm test-load fuzz fuzz-build \
        fuzz-seeds valgrind test-clones
CONFIG ?= configs/fmnist-resnet8-w2a2-aux.ini
# The public targets first install missing Debian packages, then build in a fresh make so that
# pkg-config sees the newly installed libraries.
all: deps
	@$(MAKE) --no-print-directory build-all

test: deps
	@$(MAKE) --no-print-directory run-tests

# The benchmark suite (bench/run, README "Performance"): JSON lines and a table. BENCH_QUICK=1
# checks that it works in a few minutes, BENCH_OUT=FILE keeps the JSON, BENCH_ACC=1 adds the
# time-to-accuracy runs. Also installs PyTorch (python3-torch), which it compares against.
bench:
	@sh launch/install-deps bench
	@$(MAKE) --no-print-directory build-all
	AUXPS_BIN=$(BUILD)/auxps sh bench/run

# Trains CONFIG in one process; the trainer evaluates the exported model from the file alone.
train: deps
	@$(MAKE) --no-print-directory build-all
	$(BUILD)/auxps train $(CONFIG) $(ARGS)

deps:
	@sh launch/install-deps

build-all: $(BUILD)/auxps

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/auxps: $(MAIN_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# tests/util.c holds the helpers every test binary shares; it is not a test itself.
TEST_UTIL := $(BUILD)/tests/util.o
.SECONDARY: $(TEST_UTIL)
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_UTIL) $(LIB_OBJ)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcriterion

# Tests run from the project root so they find configs/ and tests/golden/; AUXPS_BIN lets the
# process-level tests start the real program.
run-tests: $(BUILD)/auxps $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; \
	  AUXPS_BIN=$(BUILD)/auxps OPENBLAS_NUM_THREADS=1 $$t --jobs 1 $(TESTFLAGS); done

# Load: 32 workers push to 2 nodes for LOAD_SECONDS (tests/test_load.c); no update may be lost and
# the nodes' resident memory must stay flat. `make test` runs the same test for 15 s.
LOAD_SECONDS ?= 120
test-load: $(BUILD)/auxps $(BUILD)/tests/test_load
	AUXPS_BIN=$(BUILD)/auxps OPENBLAS_NUM_THREADS=1 LOAD_SECONDS=$(LOAD_SECONDS) $(BUILD)/tests/test_load --jobs 1 --verbose

# The docker-compose cluster on a real Docker engine: build, scale workers 2 -> 4 -> 1 while
# training runs, kill a worker, crash a node, check /status, the record and the exported model
# (tests/compose/run, docs/DOCKER.md). Needs Docker and docker-compose; no registry.
test-compose:
	sh tests/compose/run

# The same compose file as a Docker Swarm stack on a single-node swarm made from this engine
# (tests/compose/swarm, docs/DOCKER.md "Docker Swarm"); refuses an engine already in a swarm.
test-swarm:
	sh tests/compose/swarm

# ---- fuzzing (tests/fuzz, docs/TESTING.md) ----
# One libFuzzer harness per reader of outside input. `make fuzz` installs clang and libFuzzer's
# runtime, builds the harnesses and the library with clang under ASan and UBSan in build-fuzz/,
# and runs each for FUZZ_TIME seconds from a scratch copy of its committed corpus; any crash,
# leak or sanitizer report fails it and leaves the input in build-fuzz/artifacts/.
FUZZ_TIME    ?= 300
FUZZ_TARGETS := wire config idx ckpt export
FUZZ_FLAGS   := CC=clang BUILD=build-fuzz SANITIZE=fuzzer-no-link,address,undefined

fuzz: deps
	@sh launch/install-deps clang libclang-rt-14-dev
	@$(MAKE) --no-print-directory fuzz-build
	sh tests/fuzz/run $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-build:
	@$(MAKE) --no-print-directory $(FUZZ_FLAGS) $(FUZZ_TARGETS:%=build-fuzz/fuzz/fuzz_%)

.SECONDARY: $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/fuzz_%.o) $(BUILD)/tests/fuzz/fuzz_util.o
$(BUILD)/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/fuzz_util.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

# Regenerates the binary seeds with the project's own writers, and copies configs/ as the config
# seeds. Hand-written edge cases and regression inputs in tests/fuzz/corpus stay as they are.
fuzz-seeds: $(BUILD)/tests/fuzz/seeds
	$< tests/fuzz/corpus
	mkdir -p tests/fuzz/corpus/config && cp configs/*.ini tests/fuzz/corpus/config/

$(BUILD)/tests/fuzz/seeds: $(BUILD)/tests/fuzz/seeds.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# The elementwise kernels' AVX2 clones (common/hot.h) against a build without them
# (build-noclones/, -DAUXPS_NO_CLONES): the same trainings must export the same bytes.
test-clones: deps
	@$(MAKE) --no-print-directory build-all
	@$(MAKE) --no-print-directory BUILD=build-noclones EXTRA_CFLAGS=-DAUXPS_NO_CLONES build-noclones/auxps
	sh tests/clones/run $(BUILD)/auxps build-noclones/auxps

# ---- valgrind (tests/valgrind/run, docs/TESTING.md) ----
# Memcheck on the normal build: two short trainings, an evaluation and a distributed run (a
# coordinator, a node and a worker), failing on any error or definite leak.
valgrind: deps
	@sh launch/install-deps valgrind
	@$(MAKE) --no-print-directory build-all
	sh tests/valgrind/run $(BUILD)/auxps

clean:
	rm -rf build build-san build-*

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_BIN:%=%.d) $(TEST_UTIL:.o=.d) \
         $(wildcard $(BUILD)/tests/fuzz/*.d)
