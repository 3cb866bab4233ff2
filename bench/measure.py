"""Measuring tools for the benchmarks: timers, floors, memory, machine facts,
targets and formatting.  Nothing here asserts: the suite only prints."""
import collections
import ctypes
import ctypes.util
import datetime
import gc
import math
import os
import platform
import resource
import statistics
import subprocess
import time

import torch

# the upstream pure-Python package (bench/rgb_blur.py runs under it) has no _core
try:
    from infinite_tensor import _core
except ImportError:
    _core = None

MiB = 2**20
# the recycling pool's default limit (DEFAULT_POOL_BYTES in csrc/python/module.c)
POOL_LIMIT = 256 * MiB
# copies larger than this are timed in chunks of this size (both are bound
# by memory bandwidth, so the time is the same, without allocating 2x the bytes)
COPY_CHUNK = 64 * MiB


# -- timing -------------------------------------------------------------------

def timed_runs(run, repeat, warmup=0):
    """Call run() warmup times (results dropped, and the samples their reads
    recorded too), then repeat times; returns the results of the repeat calls
    (each what run measured: seconds, or a tuple of measurements)."""
    mark = len(_SAMPLES)
    for _ in range(warmup):
        run()
    del _SAMPLES[mark:]
    return [run() for _ in range(repeat)]


def stopwatch(fn, record=True):
    """Seconds one call of fn() takes (its result is freed after the clock
    stops).  Its page faults and system time are recorded for take_usage()
    unless record is False."""
    with Sample(record) as s:
        result = fn()
    del result
    return s.seconds


# -- usage: page faults and system time of the timed reads ----------------------

# the Samples recorded since the last take_usage(): every m.stopwatch, and
# every `with Sample()` a workload times a read with
_SAMPLES = []


def _rusage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_stime


class Sample:
    """`with m.Sample() as s:` times the block: s.seconds (wall clock),
    s.faults (minor page faults: first touches of fresh memory) and s.sys
    (system CPU seconds), both of every thread of the process.  Recorded for
    take_usage() unless record is False."""

    def __init__(self, record=True):
        self.record = record

    def __enter__(self):
        self.faults, self.sys = _rusage()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        faults, sys_seconds = _rusage()
        self.faults, self.sys = faults - self.faults, sys_seconds - self.sys
        if self.record and exc[0] is None:
            _SAMPLES.append(self)
        return False


class Usage:
    """The median minor page faults and system seconds of some samples (each
    a Sample, or anything with .faults and .sys), or of none (n == 0)."""

    def __init__(self, samples):
        self.n = len(samples)
        self.faults = median([s.faults for s in samples]) if samples else None
        self.sys = median([s.sys for s in samples]) if samples else None

    def faults_text(self):
        return "" if self.faults is None else f"{self.faults:,.0f}"

    def sys_text(self):
        return "" if self.sys is None else fmt_seconds(self.sys)

    def describe(self):
        """'N faults, sys T' (medians), for notes."""
        return "n/a" if self.n == 0 else f"{self.faults_text()} faults, sys {self.sys_text()}"


# faults and system seconds measured elsewhere (by a child process), as Usage takes them
Counts = collections.namedtuple("Counts", "faults sys")


def take_usage():
    """The Usage of the samples recorded since the last call (and forget them)."""
    usage = Usage(list(_SAMPLES))
    _SAMPLES.clear()
    return usage


median = statistics.median


class Calls:
    """Counts the calls of an f (windows, for a batched f) and the seconds spent in it."""

    def __init__(self, name=""):
        self.name, self.n, self.batches, self.seconds = name, 0, 0, 0.0

    def reset(self):
        self.n, self.batches, self.seconds = 0, 0, 0.0


def trivial_f(shape, calls, batched=False):
    """An f returning one preallocated tensor of ones (a list of it when
    batched), counting its windows (and batches) in calls."""
    out = torch.ones(shape)
    if batched:
        def f(ctxs):
            calls.n += len(ctxs)
            calls.batches += 1
            return [out] * len(ctxs)
    else:
        def f(ctx):
            calls.n += 1
            return out
    return f


def same_values(got, want):
    """(torch.allclose at the suite's tolerance, the largest difference)."""
    return torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max().item()


def timed_calls(body, counter):
    """body(ctx, *args) wrapped to count its calls in counter.n and add up
    the seconds spent in it in counter.seconds (a Calls; how the pipelines
    time f)."""
    def f(ctx, *args):
        t0 = time.perf_counter()
        out = body(ctx, *args)
        counter.seconds += time.perf_counter() - t0
        counter.n += 1
        return out
    return f


def percentile(values, q):
    """The q-th percentile (0-100) of values, by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# -- floors -------------------------------------------------------------------

def call_floor(f, call_args, repeat):
    """Median seconds of a plain Python loop calling f once per prebuilt
    argument (a ctx tuple, or a list of them for a batched f)."""
    def loop():
        t0 = time.perf_counter()
        for a in call_args:
            f(a)
        return time.perf_counter() - t0
    return median(timed_runs(loop, repeat))


def memcpy_floor(nbytes, repeat):
    """Median seconds of copying nbytes with torch (dst.copy_(src)) into a
    preallocated, already touched buffer."""
    chunk = min(nbytes, COPY_CHUNK)
    src = torch.ones(max(1, chunk // 4))
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in before timing
    full, rest = divmod(nbytes, chunk)
    tail_src, tail_dst = src[:rest // 4], dst[:rest // 4]

    def copy():
        t0 = time.perf_counter()
        for _ in range(full):
            dst.copy_(src)
        if rest:
            tail_dst.copy_(tail_src)
        return time.perf_counter() - t0
    return median(timed_runs(copy, repeat))


# -- memory -------------------------------------------------------------------

def _proc_field(path, name):
    """The text after 'name:' on the first line of a /proc file that starts
    with name (None if there is none, or the file cannot be read)."""
    try:
        with open(path) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _status_kib(field):
    """A 'NNN kB' field of /proc/self/status (VmRSS, VmHWM) as an int, or None."""
    value = _proc_field("/proc/self/status", field)
    return None if value is None else int(value.split()[0])


def _reset_high_water_mark():
    """Reset VmHWM to the current RSS; False where the kernel does not let us."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """`with PeakRSS() as m:` ... then m.growth: bytes the process's peak RSS
    rose above its RSS at entry.  Entry first frees what earlier code left
    (fresh_memory), so each block counts the memory it needs itself.
    Without a resettable high-water mark, m.exact is False and m.growth is
    only an upper bound (or None)."""

    def __enter__(self):
        fresh_memory()
        self.exact = _reset_high_water_mark()
        self.hwm_before = _status_kib("VmHWM")
        self.rss_before = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        hwm = _status_kib("VmHWM")
        if hwm is None or self.rss_before is None:
            self.growth, self.exact = None, False
            return False
        # a high-water mark that rose during the block is a peak reached in it
        self.exact = self.exact or hwm > self.hwm_before
        self.growth = (hwm - self.rss_before) * 1024
        return False

    def describe(self):
        if self.growth is None:
            return "n/a"
        return fmt_bytes(self.growth) if self.exact else "<= " + fmt_bytes(self.growth)


def fresh_memory():
    """Free what earlier code left: garbage, the core's recycling pool of
    buffers (emptied, then given its default limit back) and the free memory
    malloc keeps (malloc_trim, where libc has it)."""
    gc.collect()
    pool = getattr(_core, "buffer_pool", None)
    if pool is not None:
        pool(0)
        pool(POOL_LIMIT)
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def pool_bytes():
    """Bytes the core's recycling pool holds now (None if not exposed)."""
    pool = getattr(_core, "buffer_pool", None)
    return None if pool is None else pool()


# -- machine ------------------------------------------------------------------

def source_version(it):
    """infinite_tensor's version (of the module `it`) and the git commit of
    the tree, marked when the tree has local changes (read-only git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, cwd=here).returncode
    except OSError:
        commit, dirty = "", 0
    if commit and dirty == 1:
        commit += " + local changes"
    return f"infinite_tensor {it.__version__}" + (f" (commit {commit})" if commit else "")


def machine_facts():
    """One line: cpu model, cores, RAM, python, torch, date, load average
    (other work on the machine shows up in the timings)."""
    ram = _proc_field("/proc/meminfo", "MemTotal")
    ram_text = f"{int(ram.split()[0]) / 2**20:.1f} GiB RAM" if ram else "RAM unknown"
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "cpu unknown"
    cache = _proc_field("/proc/cpuinfo", "cache size")
    return (f"{cpu}{f' (cache {cache})' if cache else ''}, {os.cpu_count()} cores, {ram_text}, "
            f"Python {platform.python_version()}, torch {torch.__version__} (num_threads {torch.get_num_threads()}), "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}")


# -- targets and results --------------------------------------------------------

class Target:
    """A bound on a measured value: `value <= limit` (or `<`; with at_least,
    `value >= limit`), shown with unit."""

    def __init__(self, limit, unit, strict=False, at_least=False):
        self.limit, self.unit, self.strict, self.at_least = limit, unit, strict, at_least

    def met(self, value):
        if self.at_least:
            return value > self.limit if self.strict else value >= self.limit
        return value < self.limit if self.strict else value <= self.limit

    def describe(self):
        sign = (">" if self.strict else ">=") if self.at_least else ("<" if self.strict else "<=")
        return f"{sign} {self.limit:g}{self.unit}"

    def show(self, value):
        return f"{value:.2f}{self.unit}"


class Row:
    """One measured line of a workload.  `value` is what the target judges
    (a ratio, microseconds, a percentage, MiB); time and floor are seconds;
    `text` is shown as the measurement where there is no target; `note` is
    printed under the line (not in the summary table); `usage` (a Usage) is
    the median page faults and system time of the timed reads, per run."""

    def __init__(self, label, time=None, floor=None, runs=None, warmup=0, value=None, target=None, text=None,
                 rss=None, note=None, usage=None):
        self.label, self.time, self.floor, self.runs, self.warmup = label, time, floor, runs, warmup
        self.value, self.target, self.text = value, target, text
        self.rss, self.note, self.usage = rss, note, usage

    def verdict(self):
        if self.target is None or self.value is None:
            return ""
        return "PASS" if self.target.met(self.value) else "MISS"

    def measured(self):
        if self.target is not None and self.value is not None:
            return self.target.show(self.value)
        return self.text or ""

    def runs_text(self):
        if not self.runs:
            return ""
        return f" (median of {self.runs}" + (f" after {self.warmup} warm-up)" if self.warmup else ")")

    def print(self):
        parts = [f"  {self.label}:"]
        if self.time is not None:
            parts.append(f"time {fmt_seconds(self.time)}{self.runs_text()}")
        if self.usage is not None and self.usage.n:
            parts.append(f"faults/run {self.usage.faults_text()}  sys/run {self.usage.sys_text()}")
        if self.floor is not None:
            parts.append(f"floor {fmt_seconds(self.floor)}")
        if self.measured():
            parts.append(self.measured())
        if self.target is not None and self.value is not None:
            parts.append(f"target {self.target.describe()}  {self.verdict()}")
        if self.rss is not None:
            parts.append(f"peak RSS growth {self.rss.describe()}")
        print("  ".join(parts))
        if self.note:
            print(f"      {self.note}")

    def table_cells(self):
        return [self.label,
                "" if self.time is None else fmt_seconds(self.time),
                "" if self.usage is None else self.usage.faults_text(),
                "" if self.usage is None else self.usage.sys_text(),
                "" if self.floor is None else fmt_seconds(self.floor),
                self.measured(),
                "" if self.target is None else self.target.describe(),
                self.verdict(),
                "" if self.rss is None else self.rss.describe()]

    def to_json(self):
        """The row as the summary table needs it (for --isolated)."""
        return {"cells": self.table_cells(), "verdict": self.verdict()}


class TableRow:
    """A row read back from to_json(): table cells and verdict only."""

    def __init__(self, data):
        self.cells, self._verdict = data["cells"], data["verdict"]

    def table_cells(self):
        return self.cells

    def verdict(self):
        return self._verdict


TABLE_HEADER = ["measurement", "time", "faults/run", "sys/run", "floor", "measured", "target", "result",
                "peak RSS growth"]


# -- formatting -----------------------------------------------------------------

def fmt_seconds(s):
    if abs(s) >= 1:
        return f"{s:.2f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def fmt_bytes(b):
    if abs(b) >= MiB:
        return f"{b / MiB:.1f} MiB"
    if abs(b) >= 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b} B"
