# infinite_tensor developer entry points.
#
#   make demo    set up (system packages, .venv, build) and run the demo
#   make test    set up, then run the C unit tests and the Python tests
#   make bench   set up, then run the benchmarks (prints numbers)
#   make ctest   C unit tests only (CMocka)
#   make sanitize  the C unit tests under AddressSanitizer and UBSan
#
# Set-up is idempotent: missing Debian packages are installed with apt-get
# (as root, or through sudo), the virtual environment is created once with
# the pinned CPU build of torch, and the extension is rebuilt when a C file
# changes.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
PY_DEPS := $(TORCH_PIN) pytest hypothesis h5py setuptools wheel
DEB_PKGS := libhdf5-dev libcmocka-dev pkg-config
BUILD := build
CC ?= cc
CFLAGS_CORE := -std=c11 -O3 -g -Wall -Wextra -Werror -Wno-unused-parameter -Icsrc/include
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

.PHONY: demo test ctest pytest bench build sysdeps venv clean sanitize

demo: build
	$(VPY) examples/demo.py

test: ctest pytest

pytest: build
	$(VPY) -m pytest tests -q

bench: build
	$(VPY) bench/run.py

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

$(VENV)/.deps-stamp: | $(BUILD)/.sysdeps-stamp
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check $(PY_DEPS)
	@touch $@

$(EXT_STAMP): $(VENV)/.deps-stamp $(CORE_SRC) $(CORE_HDR) $(BIND_SRC) setup.py setup.cfg
	$(VPY) setup.py -q build_ext --inplace
	@touch $@

# a test_X_device.c includes test_X.c: any test source may be part of any binary
$(BUILD)/test_%: csrc/tests/test_%.c $(CTEST_SRC) $(CTEST_HDR) $(CORE_SRC) $(CORE_HDR) | $(BUILD)/.sysdeps-stamp
	$(CC) $(CFLAGS_CORE) $(H5_CFLAGS) $< $(CORE_SRC) -lcmocka $(H5_LIBS) -lm -pthread -o $@

ctest: $(CTEST_BIN)
	@set -e; for t in $(CTEST_BIN); do echo "== $$t"; ./$$t; done

sanitize: $(BUILD)/.sysdeps-stamp
	SANITIZE=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	  sh csrc/tests/run.sh

clean:
	rm -rf $(BUILD) infinite_tensor/*.so
