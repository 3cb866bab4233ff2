"""Benchmarks for infinite_tensor: prints numbers, never asserts on them.

    make bench                                  # or: .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick       # 3 runs per workload instead of 7
    .venv/bin/python bench/run.py --only 2,4    # selected workloads

Each workload prints the median of several runs (cheap ones after one
untimed warm-up run), its floor (what any implementation must spend on the
same work: calling the Python f once per window, or per batch, plus one
memcpy of the bytes f produced; with a real f, the time inside f plus that
memcpy; for warm reads, one memcpy of the bytes read), the measure its
target judges with PASS or MISS, and the growth of the process's peak RSS.
A markdown summary (with a line of machine facts) follows.

Layout: measure.py (timers, floors, memory, targets, formatting),
workloads.py (the workloads), hdf5_bench.py (workload 7 and the raw HDF5
writer raw_h5write.c it compares with).
"""
import argparse
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import infinite_tensor as it  # noqa: E402
import measure as m  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs per workload instead of 7")
    ap.add_argument("--only", metavar="N[,M]", help="run only these workloads (numbers 1-%d)" % len(WORKLOADS))
    opts = ap.parse_args()
    if opts.only:
        try:
            opts.only = sorted({int(n) for n in opts.only.split(",") if n.strip()})
        except ValueError:
            ap.error(f"--only takes workload numbers separated by commas, got {opts.only!r}")
        unknown = [n for n in opts.only if n not in WORKLOADS]
        if unknown or not opts.only:
            ap.error(f"unknown workload {unknown}; choose from {sorted(WORKLOADS)}")
    else:
        opts.only = sorted(WORKLOADS)
    return opts


def source_version():
    """infinite_tensor's version and the git commit of the tree, marked when
    the tree has local changes (read-only git commands)."""
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


def print_summary(facts, results):
    """The markdown table of every row, under one line of machine facts."""
    print("\n## Summary\n")
    print(facts + "\n")
    header = ["#"] + m.TABLE_HEADER
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for number, rows in results:
        for row in rows:
            print("| " + " | ".join([str(number)] + row.table_cells()) + " |")
    verdicts = [row.verdict() for _, rows in results for row in rows if row.verdict()]
    print(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS")


def main():
    opts = parse_args()
    repeat = 3 if opts.quick else 7
    torch.set_num_threads(1)
    facts = f"{source_version()}; {m.machine_facts()}"
    print(facts)
    print(f"{repeat} runs per measurement unless a line says otherwise; times are medians\n")
    results = []
    start = time.perf_counter()
    for number in opts.only:
        title, workload = WORKLOADS[number]
        print(f"[{number}] {title}")
        t0 = time.perf_counter()
        rows = workload(repeat)
        for row in rows:
            row.print()
        print(f"  ({time.perf_counter() - t0:.1f} s)\n")
        results.append((number, rows))
    print(f"total {time.perf_counter() - start:.1f} s")
    print_summary(facts, results)


if __name__ == "__main__":
    main()
