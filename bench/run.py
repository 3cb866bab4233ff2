"""Benchmarks for infinite_tensor: prints numbers, never asserts on them.

    make bench                                  # in one process, then --isolated
    .venv/bin/python bench/run.py               # every workload, one after another in this process
    .venv/bin/python bench/run.py --quick       # 3 runs per workload instead of 7
    .venv/bin/python bench/run.py --only 2,4    # selected workloads
    .venv/bin/python bench/run.py --isolated    # each workload in its own fresh Python process
    make bench-upstream                         # workload 12 against upstream infinite-tensor 0.3.0, 0.4.0

Each workload prints the median of several runs (cheap ones after one
untimed warm-up run), its floor (what any implementation must spend on the
same work: calling the Python f once per window, or per batch, plus one
memcpy of the bytes f produced; with a real f, the time inside f plus that
memcpy; for warm reads, one memcpy of the bytes read), the measure its
target judges with PASS or MISS, the growth of the process's peak RSS, and
beside each time the median minor page faults and system CPU time of the
timed reads per run (faults/run, sys/run).  A markdown summary (with a line
of machine facts) follows.

In one process the workloads run after one another, as a program would
meet them (what earlier ones left in malloc and the core's buffer pool is
part of what the later ones see); --isolated starts a fresh Python process
per workload (run.py --only N --json, which prints its rows as JSON on its
last line) and gathers the same summary.

Layout: measure.py (timers, floors, memory, targets, formatting),
workloads.py (the workloads), hdf5_bench.py (workload 7 and the raw HDF5
writer raw_h5write.c it compares with), rgb_blur.py (workload 12: the
RGB blurs of issue 22 against a hand-written loop and upstream), regions.py
(workload 13: iter_regions and a list read against one big read).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import infinite_tensor as it  # noqa: E402

it.set_progress(False)  # no bars between the measured lines (nor their cost in the times)
import measure as m  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

# the line a --json run prints last: this, then its rows as JSON
JSON_MARK = "BENCH-ROWS "


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs per workload instead of 7")
    ap.add_argument("--only", metavar="N[,M]", help="run only these workloads (numbers 1-%d)" % len(WORKLOADS))
    ap.add_argument("--isolated", action="store_true", help="run each workload in its own fresh Python process")
    ap.add_argument("--json", action="store_true",
                    help="no header and no summary; print the rows as JSON on the last line (what --isolated reads)")
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


def run_here(numbers, repeat):
    """The workloads, one after another in this process: [(number, rows)]."""
    results = []
    for number in numbers:
        title, workload = WORKLOADS[number]
        print(f"[{number}] {title}")
        t0 = time.perf_counter()
        m.take_usage()  # no samples left over from before
        rows = workload(repeat)
        for row in rows:
            row.print()
        print(f"  ({time.perf_counter() - t0:.1f} s)\n", flush=True)
        results.append((number, rows))
    return results


def run_isolated(numbers, quick):
    """Each workload in a fresh process (run.py --only N --json), its output
    passed through: [(number, rows)], the rows rebuilt from the JSON line."""
    results = []
    for number in numbers:
        cmd = [sys.executable, os.path.abspath(__file__), "--only", str(number), "--json"]
        cmd += ["--quick"] if quick else []
        rows = None
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                if line.startswith(JSON_MARK):
                    rows = [m.TableRow(r) for r in json.loads(line[len(JSON_MARK):])]
                else:
                    print(line, end="", flush=True)
        if proc.returncode != 0 or rows is None:
            failed = m.Row(f"workload {number} failed in its process (exit {proc.returncode})", text="no rows")
            rows = [m.TableRow(failed.to_json())]
        results.append((number, rows))
    return results


def main():
    opts = parse_args()
    repeat = 3 if opts.quick else 7
    torch.set_num_threads(1)
    facts = f"{m.source_version(it)}; {m.machine_facts()}"
    if opts.isolated:
        facts += "; each workload in its own process (--isolated)"
    if not opts.json:
        print(facts)
        print(f"{repeat} runs per measurement unless a line says otherwise; times are medians\n")
    start = time.perf_counter()
    results = run_isolated(opts.only, opts.quick) if opts.isolated else run_here(opts.only, repeat)
    if opts.json:
        print(JSON_MARK + json.dumps([row.to_json() for _, rows in results for row in rows]))
        return
    print(f"total {time.perf_counter() - start:.1f} s")
    print_summary(facts, results)


if __name__ == "__main__":
    main()
