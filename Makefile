# bert_pretrain: build, test, sanitizer build, bench, demo.
#
#   make            build ./bert_pretrain (installs missing Debian packages first)
#   make test       build and run every test (unit tests in C with cmocka, CLI tests in bash)
#   make asan       AddressSanitizer + UBSan build in build-asan/
#   make test-asan  the whole suite against the sanitizer build
#   make soak       the crash-consistency test with 200 kill -9 instead of make test's 6 (minutes)
#   make demo       fetch the Brown corpus, build a vocab, prepare shards, train the demo BERT
#   make bench      speed table (ours vs PyTorch vs the sgemm rate)
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS each (tests/fuzz, docs/fuzzing.md)

# Open MPI (ompi-c) for data-parallel training: the one binary runs alone or under mpirun (dist.h).
# clang-14 + its runtime and libomp for the libFuzzer targets (tests/fuzz/, make fuzz).
PKGS      := openblas yaml-0.1 zlib ompi-c
DEB_PKGS  := libopenblas-dev libyaml-dev zlib1g-dev libcmocka-dev pkg-config libopenmpi-dev openmpi-bin \
             clang-14 libclang-rt-14-dev libomp-14-dev
# oneDNN (libdnnl) for the bf16 matrix products (src/gemm_dnnl.c, docs/performance.md). `make DNNL=0`
# builds without it: bf16 products then run on our own kernels (src/gemm_bf16.c) only. Switching
# DNNL rebuilds gemm_dnnl.o (the stamp below); the rest does not depend on it.
DNNL      ?= 1
ifeq ($(DNNL),1)
DEB_PKGS  += libdnnl-dev
DNNL_DEF  := -DBP_HAVE_DNNL=1
DNNL_LIB  := -ldnnl
endif
CC        := gcc
# -O3 without fast-math: erf/GELU and softmax need IEEE semantics (style.md). -fno-math-errno only
# drops errno bookkeeping around sqrtf & co. (results are unchanged), which lets gcc vectorise the
# optimizer and LayerNorm loops: LAMB at bert-base size went from ~12-26% to ~83% of memcpy speed.
# Baseline x86-64, so that the binary runs on every x86-64 CPU (one build for a cluster of mixed
# machines); what needs wider vectors is chosen at run time: src/kernels_math.c and optim_math.c are
# built once per level below (kernels_isa.h), the bf16 kernels carry target attributes, OpenBLAS and oneDNN
# dispatch by themselves. `make OPT="-O3 -march=native -fno-math-errno"` builds for this CPU only.
OPT       ?= -O3 -march=x86-64 -mtune=generic -fno-math-errno
# Recursively expanded on purpose: pkg-config runs when a recipe runs, after `deps` installed it.
CFLAGS     = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -fopenmp -MMD -MP $(DNNL_DEF) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
BASE_LIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDLIBS     = $(BASE_LIBS) $(DNNL_LIB)
ASAN_OPT  := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

# The command layer (dispatch, the one argument parser, one thin adapter per command) links against
# libbert.a, which holds everything else; test programs link the library only, never a command.
SRC       := $(wildcard src/*.c)
CLI_SRC   := src/main.c src/cli.c $(wildcard src/cmd_*.c)
# the elementwise math, built once per x86-64 level (-march=x86-64-v4 ...) as build/<file>.<level>.o
MATH_SRC  := src/kernels_math.c src/optim_math.c
MATH_LEVELS := x86_64_v4 x86_64_v3 x86_64
LIB_SRC   := $(filter-out $(CLI_SRC) $(MATH_SRC),$(SRC))
TEST_SRC  := $(wildcard tests/test_*.c)

MATH_OBJ   = $(foreach f,$(MATH_SRC:src/%.c=%),$(MATH_LEVELS:%=$(1)/$(f).%.o))
OBJ       := $(SRC:src/%.c=build/%.o) $(call MATH_OBJ,build)
CLI_OBJ   := $(CLI_SRC:src/%.c=build/%.o)
LIB_OBJ   := $(LIB_SRC:src/%.c=build/%.o) $(call MATH_OBJ,build)
LIB       := build/libbert.a
TEST_BIN  := $(TEST_SRC:tests/%.c=build/tests/%)
AOBJ      := $(SRC:src/%.c=build-asan/%.o) $(call MATH_OBJ,build-asan)
ACLI_OBJ  := $(CLI_SRC:src/%.c=build-asan/%.o)
ALIB_OBJ  := $(LIB_SRC:src/%.c=build-asan/%.o) $(call MATH_OBJ,build-asan)
ALIB      := build-asan/libbert.a
ATEST_BIN := $(TEST_SRC:tests/%.c=build-asan/tests/%)
# the libFuzzer targets (see the fuzzing section below); defined here because `test` needs them and
# make expands a rule's prerequisites where it reads the rule
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)

.PHONY: all deps test asan test-asan soak demo bench bench-mpi clean fuzz fuzz-build
all: bert_pretrain

# Installs the Debian development packages the build needs when any is missing: apt-get as root,
# sudo otherwise. A fresh machine needs only `make`.
deps:
	@scripts/install-deps.sh $(DEB_PKGS)

bert_pretrain: $(CLI_OBJ) $(LIB) | deps
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(LIB): $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

build/%.o: src/%.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

# <file>.x86_64_v4.o: src/<file>.c with -march=x86-64-v4 -DBP_LEVEL=x86_64_v4 (the later -march wins).
# gcc's generic tuning keeps AVX-512 code to 256-bit vectors; v4 asks for 512: LAMB's sqrt and
# division per element are compute-bound on 2 threads (docs/performance.md).
.SECONDEXPANSION:
LEVEL_FLAGS = -march=$(subst _,-,$(subst .,,$(suffix $(1)))) -DBP_LEVEL=$(subst .,,$(suffix $(1))) \
              $(if $(filter %v4,$(1)),-mprefer-vector-width=512)
$(call MATH_OBJ,build): build/%.o: src/$$(basename $$*).c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(call LEVEL_FLAGS,$*) -c -o $@ $<

build/tests/%: tests/%.c $(LIB) | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Isrc -Itests -o $@ $< $(LIB) $(LDLIBS) -lcmocka

test: bert_pretrain $(TEST_BIN) $(FUZZ_BIN)
	@BP_BIN=$(CURDIR)/bert_pretrain BP_TEST_BUILD=build tests/run_tests.sh

asan: build-asan/bert_pretrain

build-asan/bert_pretrain: $(ACLI_OBJ) $(ALIB)
	$(CC) $(CFLAGS) $(ASAN_OPT) -o $@ $(ACLI_OBJ) $(ALIB) $(LDLIBS)

$(ALIB): $(ALIB_OBJ)
	rm -f $@ && ar rcs $@ $^

build-asan/%.o: src/%.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ASAN_OPT) -c -o $@ $<

$(call MATH_OBJ,build-asan): build-asan/%.o: src/$$(basename $$*).c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ASAN_OPT) $(call LEVEL_FLAGS,$*) -c -o $@ $<

build-asan/tests/%: tests/%.c $(ALIB) | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ASAN_OPT) -Isrc -Itests -o $@ $< $(ALIB) $(LDLIBS) -lcmocka

test-asan: build-asan/bert_pretrain $(ATEST_BIN)
	@BP_BIN=$(CURDIR)/build-asan/bert_pretrain BP_TEST_BUILD=build-asan \
	 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	 tests/run_tests.sh

soak: bert_pretrain
	BP_BIN=$(CURDIR)/bert_pretrain BP_CRASH_KILLS=$${BP_CRASH_KILLS:-200} bash tests/test_crash.sh

demo: bert_pretrain
	scripts/demo.sh

bench: bert_pretrain
	scripts/bench.sh

# data-parallel speed: 1 rank x all cores vs a rank per core, unsharded and sharded (docs/scaling.md)
bench-mpi: bert_pretrain
	scripts/bench_mpi.sh

# ---- fuzzing ----------------------------------------------------------------------------------
# libFuzzer targets (tests/fuzz/fuzz_*.c) for every parser of outside input, linked against the
# library built by clang with ASan + UBSan in build-fuzz/ (libFuzzer is clang's). `make test` runs
# tests/test_fuzz.sh: every committed corpus and regression input once, then each target for
# FUZZ_SMOKE_SECONDS. `make fuzz` runs each target for FUZZ_SECONDS, growing build-fuzz/corpus/T
# from tests/fuzz/corpus/T; crashes land in build-fuzz/crashes/T/ (commit them under
# tests/fuzz/regressions/T/ with the fix).
FUZZ_CC      := clang-14
# -Wno-pass-failed: with sanitizer instrumentation clang cannot vectorise some `omp simd`
# reductions and says so as a warning; a missed vectorisation in a fuzz build is no defect.
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -Wall -Wextra -Werror \
                -Wno-pass-failed -fopenmp -MMD -MP -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FLIB_OBJ     := $(LIB_SRC:src/%.c=build-fuzz/%.o) $(call MATH_OBJ,build-fuzz)
FLIB         := build-fuzz/libbert.a
FUZZ_SECONDS ?= 60

fuzz-build: $(FUZZ_BIN)

$(FLIB): $(FLIB_OBJ)
	rm -f $@ && ar rcs $@ $^

build-fuzz/%.o: src/%.c | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(call MATH_OBJ,build-fuzz): build-fuzz/%.o: src/$$(basename $$*).c | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(call LEVEL_FLAGS,$*) -c -o $@ $<

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FLIB) | deps
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Isrc -o $@ $< $(FLIB) $(BASE_LIBS)

fuzz: $(FUZZ_BIN)
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus/$$t build-fuzz/crashes/$$t; \
	    dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	    echo "=== fuzz_$$t for $(FUZZ_SECONDS) s (log: build-fuzz/fuzz_$$t.log)"; \
	    build-fuzz/fuzz_$$t build-fuzz/corpus/$$t tests/fuzz/corpus/$$t $$dict \
	        -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix=build-fuzz/crashes/$$t/ > build-fuzz/fuzz_$$t.log 2>&1; \
	    rc=$$?; \
	    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY)' build-fuzz/fuzz_$$t.log; \
	    [ $$rc -eq 0 ] || { echo "fuzz_$$t failed (exit $$rc): build-fuzz/fuzz_$$t.log, build-fuzz/crashes/$$t/"; exit 1; }; \
	done

clean:
	rm -rf build build-asan build-fuzz bert_pretrain

# gemm_dnnl.o of each build tree is rebuilt when DNNL changes. The fuzz targets never build with
# oneDNN: clang's OpenMP runtime (libomp) and the libgomp that libdnnl needs would both load.
DNNL_STAMP := .dnnl-$(DNNL)
build/gemm_dnnl.o: build/$(DNNL_STAMP)
build-asan/gemm_dnnl.o: build-asan/$(DNNL_STAMP)
%/$(DNNL_STAMP):
	@mkdir -p $(@D) && rm -f $(@D)/.dnnl-* && touch $@
# Every object is rebuilt when OPT changes (say, from an old -march=native build, whose objects
# would not run on other CPUs): a stamp named by OPT's checksum.
OPT_STAMP := .opt-$(shell printf '%s' '$(OPT)' | cksum | cut -d' ' -f1)
$(OBJ): build/$(OPT_STAMP)
$(AOBJ): build-asan/$(OPT_STAMP)
%/$(OPT_STAMP):
	@mkdir -p $(@D) && rm -f $(@D)/.opt-* && touch $@

-include $(OBJ:.o=.d) $(AOBJ:.o=.d) $(FLIB_OBJ:.o=.d) $(FUZZ_BIN:=.d) $(TEST_BIN:=.d) $(ATEST_BIN:=.d)
