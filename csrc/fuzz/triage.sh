#!/bin/sh
# Sort the crash artifacts of one fuzz run (make fuzz calls this):
#
#   sh csrc/fuzz/triage.sh HARNESS_BINARY ARTIFACT_DIR
#
# Replays each crash-* / leak-* / oom-* file and names the first stack frame
# that is neither the C library, the sanitizers nor libFuzzer (nor a frame of
# the harness binary without a source line: the sanitizers' interceptors,
# such as strdup called by libhdf5; our code is built with -g, so its frames
# name their file and line).  The replay unwinds with DWARF unwind tables
# (fast_unwind_on_*=0): the default frame-pointer unwinder stops inside
# libc and libhdf5, which are built without frame pointers, and would hide
# who called them.
#
# A crash whose first such frame is inside libhdf5 is a libhdf5 bug on a
# damaged file (csrc/fuzz/README.md): it is listed, and tolerated; so is
# running out of memory inside libhdf5 (a huge length read from a damaged
# file).  Anything else - a frame of ours, a broken invariant (abort in a
# harness), a leak, running out of memory in our code - fails, and the
# replay's report is printed.  Timeouts (libhdf5 hangs) are listed only.
#
# An empty crash artifact (crash-da39a3ee..., the SHA-1 of nothing) is what
# libFuzzer writes when a process dies outside any input: between two
# inputs, or while exiting (libhdf5's atexit clean-up running over state a
# damaged file left).  Replaying it proves nothing, and neither does a crash
# that does not happen again when replayed alone (it needed what earlier
# inputs left in libhdf5's global state), so both are judged by the
# sanitizer reports the fuzzing processes wrote (make fuzz sets log_path to
# ARTIFACT_DIR/report): tolerated when every report's first frame is inside
# libhdf5, a failure otherwise, and a failure when there is no report.
bin=$1
dir=$2
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The first stack frame of a sanitizer report (file $1) that is neither the C
# library, the sanitizers, libFuzzer nor a harness frame without a source line.
first_frame() {
    grep -E '^ *#[0-9]+ 0x' "$1" |
        grep -v -E 'sanitizer|fuzzer::|libc\.so|__libc|_start|__interceptor|sysdeps|/nptl/|abort\.c|raise\.c|in malloc|in calloc|in realloc' |
        grep -v -E '/fuzz_[a-z0-9]+\+0x[0-9a-f]+\)' |
        head -n 1
}

# Judge a crash artifact ($1) that replaying cannot: what ($2) says why.
# By every error report in $dir: 0 when all lie in libhdf5.
judge_reports() {
    found=0
    verdict=0
    for r in "$dir"/report.*; do
        # a process's file may hold only LeakSanitizer's notes on suppressions
        [ -f "$r" ] && grep -q -E 'ERROR:|runtime error:' "$r" || continue
        found=1
        frame=$(first_frame "$r")
        case "$frame" in
        *libhdf5*) ;;
        *)
            echo "FAILURE ($2, with a report not inside libhdf5): $1"
            echo "  report $r, first frame of ours or unknown: ${frame:-(none)}"
            grep -E 'ERROR|runtime error|SUMMARY|^ *#[0-9]+ 0x' "$r" | head -n 40 | sed 's/^/    /'
            verdict=1 ;;
        esac
    done
    if [ $found = 0 ]; then
        echo "FAILURE ($2, and no sanitizer report to judge it by): $1"
        return 1
    fi
    [ $verdict = 0 ] && echo "$2, every sanitizer report inside libhdf5 (tolerated): $1"
    return $verdict
}

for a in "$dir"/*; do
    [ -f "$a" ] || continue
    case "$(basename "$a")" in
    timeout-*) echo "timeout (a hang; see csrc/fuzz/README.md): $a"; continue ;;
    crash-* | leak-* | oom-*) ;;
    *) continue ;;
    esac
    if [ ! -s "$a" ] && [ "${a##*/crash-}" != "$a" ]; then
        judge_reports "$a" "a crash outside any input" || status=1
        continue
    fi
    ASAN_OPTIONS="fast_unwind_on_malloc=0:fast_unwind_on_fatal=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
        "$bin" -runs=1 -timeout=60 "$a" >"$log" 2>&1
    if [ $? = 0 ]; then
        # it needed what earlier inputs of its process left behind (libhdf5
        # keeps global state across files): judged by the reports, as above
        judge_reports "$a" "a crash that does not happen again when replayed alone" || status=1
        continue
    fi
    first=$(first_frame "$log")
    case "$(basename "$a")" in
    crash-* | oom-*)
        case "$first" in
        *libhdf5*) echo "libhdf5 crash or allocation on a damaged file (tolerated): $a"; echo "  $first"; continue ;;
        esac ;;
    esac
    echo "FAILURE: $a"
    echo "  first frame of ours or unknown: ${first:-(none)}"
    echo "  the replay's report:"
    grep -E 'ERROR|runtime error|SUMMARY|^ *#[0-9]+ 0x' "$log" | head -n 40 | sed 's/^/    /'
    status=1
done
exit $status
