#!/bin/sh
# Build and run the core's CMocka tests from the repository root.
#
#   sh csrc/tests/run.sh              all tests
#   sh csrc/tests/run.sh geom cache   some of them
#   SANITIZE=1 sh csrc/tests/run.sh   with AddressSanitizer + UBSan
#   IT_TEST_FILTER='test_fuzz*' sh csrc/tests/run.sh tensor   some test functions
#   (IT_TEST_SKIP skips those matching a pattern)
#
# The core is compiled once into a static library (build/lib, or
# build/sanitize/lib with SANITIZE=1: instrumented like the tests), then each
# test is built exactly as documented:
#   for c in csrc/core/*.c; do
#     cc -std=c11 -O1 -g -Wall -Wextra -Icsrc/include $(pkg-config --cflags hdf5) \
#        -c $c -o build/lib/core/$(basename $c .c).o
#   done
#   ar rcs build/lib/libitcore.a build/lib/core/*.o
#   cc -std=c11 -O1 -g -Wall -Wextra -Icsrc/include $(pkg-config --cflags hdf5) \
#      csrc/tests/test_X.c build/lib/libitcore.a -lcmocka $(pkg-config --libs hdf5) -lm -pthread \
#      -o build/test_X
# (every test links the core, and the core holds the HDF5 driver, so every
# test gets the HDF5 flags).  The Makefile's own libraries (build/libitcore.a
# and others, other flags) are not these.
# Exits non-zero if any build or test fails.
set -u
cd "$(dirname "$0")/../.." || exit 2
CC=${CC:-cc}
AR=${AR:-ar}
FLAGS="-std=c11 -O1 -g -Wall -Wextra"
OUT=build
if [ "${SANITIZE:-0}" = 1 ]; then
    FLAGS="$FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer"
    OUT=build/sanitize
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
fi
mkdir -p "$OUT"
if ! HDF5_CFLAGS=$(pkg-config --cflags hdf5) || ! HDF5_LIBS=$(pkg-config --libs hdf5); then
    echo "pkg-config cannot find hdf5 (install libhdf5-dev and pkg-config)"
    exit 2
fi
if [ $# -gt 0 ]; then
    TESTS="$*"
else
    TESTS=$(for f in csrc/tests/test_*.c; do basename "$f" .c | sed 's/^test_//'; done)
fi
LIB=$OUT/lib
rm -rf "$LIB"
mkdir -p "$LIB/core"
for c in csrc/core/*.c; do
    # shellcheck disable=SC2086 # the pkg-config flags are word lists
    if ! $CC $FLAGS -Icsrc/include $HDF5_CFLAGS -c "$c" -o "$LIB/core/$(basename "$c" .c).o"; then
        echo "BUILD FAILED: $c"
        exit 1
    fi
done
if ! $AR rcs "$LIB/libitcore.a" "$LIB"/core/*.o; then
    echo "BUILD FAILED: $LIB/libitcore.a"
    exit 1
fi
status=0
for t in $TESTS; do
    # shellcheck disable=SC2086 # the pkg-config flags are word lists
    if ! $CC $FLAGS -Icsrc/include $HDF5_CFLAGS "csrc/tests/test_$t.c" "$LIB/libitcore.a" -lcmocka \
        $HDF5_LIBS -lm -pthread -o "$OUT/test_$t"; then
        echo "BUILD FAILED: test_$t"
        status=1
        continue
    fi
    if ! "$OUT/test_$t"; then
        status=1
    fi
done
exit $status
