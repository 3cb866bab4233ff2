"""Workload 12 (issue 22, "Memory churn"): two chained 5x5 depthwise blurs
over random noise, in 3x256x256 windows, read b2[:, 0:1024, 0:1024] from a
fresh pipeline each run (torch on one thread), side by side with

- a hand-written plain-torch loop making exactly the same f calls (the same
  64 noise windows, the same 36 blur1 windows on the same 3x260x260 inputs,
  the same 16 blur2 windows) and assembling the result in preallocated
  buffers;
- the upstream pure-Python package infinite-tensor (0.3.0, 0.4.0), when
  INFINITE_TENSOR_BENCH_UPSTREAM names interpreters that import it (a comma-
  separated list of python executables sharing this torch; `make
  bench-upstream` makes two): each runs this file as a script, which builds
  the same pipeline with the `infinite_tensor` it imports and prints its
  measurements as JSON on its last line.

This file imports nothing of infinite_tensor at the top (the script runs
under upstream): the pipeline takes the package as an argument.
"""
import argparse
import json
import os
import subprocess

import torch
import torch.nn.functional as F

import measure as m

CHANNELS, WINDOW, PAD = 3, 256, 2
SIDE = 1024                      # the read: b2[:, 0:SIDE, 0:SIDE]
KERNEL = torch.full((CHANNELS, 1, 2 * PAD + 1, 2 * PAD + 1), 1 / (2 * PAD + 1) ** 2)
UPSTREAM_ENV = "INFINITE_TENSOR_BENCH_UPSTREAM"
SPEED_TARGET = m.Target(1.05, "x hand loop")
FAULTS_TARGET = m.Target(1.2, "x hand loop faults")
PAIRS = 3                        # ours and the hand loop run this many times repeat, interleaved
HERE = os.path.dirname(os.path.abspath(__file__))


# -- the window functions ---------------------------------------------------------

def noise(ctx):
    """3x256x256 Gaussian noise, seeded by the window index (0, i, j)."""
    gen = torch.Generator().manual_seed((ctx[1] * 1_000_003 + ctx[2]) % 2**63)
    return torch.randn(CHANNELS, WINDOW, WINDOW, generator=gen)


def blur(ctx, x):
    """5x5 depthwise box blur, valid padding: 3x260x260 in, 3x256x256 out."""
    return F.conv2d(x[None], KERNEL, groups=CHANNELS)[0]


def new_stages():
    return [m.Calls("noise"), m.Calls("blur1"), m.Calls("blur2")]


# -- the pipeline (ours or upstream: `it` is the package) ---------------------------

def pipeline(it, stages):
    """noise -> blur1 -> blur2 as the issue writes it: the noise tensor with
    its own (default) store, both blurs in one MemoryTileStore.  Returns b2."""
    window = it.TensorWindow((CHANNELS, WINDOW, WINDOW))
    padded = it.TensorWindow((CHANNELS, WINDOW + 2 * PAD, WINDOW + 2 * PAD), stride=(CHANNELS, WINDOW, WINDOW),
                             offset=(0, -PAD, -PAD))
    store = it.MemoryTileStore()
    t = it.InfiniteTensor((CHANNELS, None, None), m.timed_calls(noise, stages[0]), window)
    for stage in stages[1:]:
        t = it.InfiniteTensor((CHANNELS, None, None), m.timed_calls(blur, stage), window, args=(t,),
                              args_windows=(padded,), tile_store=store)
    return t


def read_pipeline(it, keep=None):
    """A fresh pipeline and one read of b2[:, 0:1024, 0:1024]: returns (the
    read's Sample, seconds inside every f, the stages).  The result is
    appended to keep, if given, else dropped with the pipeline."""
    stages = new_stages()
    top = pipeline(it, stages)
    with m.Sample(record=False) as sample:
        result = top[:, 0:SIDE, 0:SIDE]
    if keep is not None:
        keep.append(result)
    return sample, sum(s.seconds for s in stages), stages


# -- the hand-written loop ------------------------------------------------------------

def paste(buf, origin, tile, y0, x0):
    """Copy the part of tile (its [0, 0] at (y0, x0)) that falls inside buf
    (its [0, 0] at (origin, origin)) into buf."""
    h, w = buf.shape[1:]
    ya, yb = max(y0, origin), min(y0 + tile.shape[1], origin + h)
    xa, xb = max(x0, origin), min(x0 + tile.shape[2], origin + w)
    buf[:, ya - origin:yb - origin, xa - origin:xb - origin] = tile[:, ya - y0:yb - y0, xa - x0:xb - x0]


def hand_loop(keep=None):
    """b2[:, 0:1024, 0:1024] as a user would write it in plain torch, with the
    same f calls: blur2 windows 0..3 (per axis) read blur1 rows [-2, 1026),
    which blur1 windows -1..4 make from noise rows [-258, 1282), which noise
    windows -2..5 cover.  Each stage's windows are pasted into a preallocated
    buffer covering just the rows the next stage reads; each blur input is a
    contiguous copy of its slice, as ours hands f (conv2d on the strided
    slice itself took ~25% longer here).  Returns (Sample, seconds inside
    every f, stages); the result goes to keep, if given."""
    stages = new_stages()
    f_noise, f_blur1, f_blur2 = (m.timed_calls(body, s) for body, s in zip((noise, blur, blur), stages))
    n = SIDE // WINDOW
    size = WINDOW + 2 * PAD
    with m.Sample(record=False) as sample:
        lo0 = -WINDOW - PAD                         # noise rows [lo0, -lo0 + SIDE)
        noise_buf = torch.empty(CHANNELS, SIDE - 2 * lo0, SIDE - 2 * lo0)
        for i in range(-2, n + 2):
            for j in range(-2, n + 2):
                paste(noise_buf, lo0, f_noise((0, i, j)), i * WINDOW, j * WINDOW)
        lo1 = -PAD                                  # blur1 rows [lo1, -lo1 + SIDE)
        blur1_buf = torch.empty(CHANNELS, SIDE - 2 * lo1, SIDE - 2 * lo1)
        for i in range(-1, n + 1):
            for j in range(-1, n + 1):
                y, x = i * WINDOW - PAD - lo0, j * WINDOW - PAD - lo0
                paste(blur1_buf, lo1, f_blur1((0, i, j), noise_buf[:, y:y + size, x:x + size].contiguous()),
                      i * WINDOW, j * WINDOW)
        result = torch.empty(CHANNELS, SIDE, SIDE)
        for i in range(n):
            for j in range(n):
                y, x = i * WINDOW - PAD - lo1, j * WINDOW - PAD - lo1
                result[:, i * WINDOW:(i + 1) * WINDOW, j * WINDOW:(j + 1) * WINDOW] = \
                    f_blur2((0, i, j), blur1_buf[:, y:y + size, x:x + size].contiguous())
        del noise_buf, blur1_buf
    if keep is not None:
        keep.append(result)
    return sample, sum(s.seconds for s in stages), stages


# -- the workload (ours) ----------------------------------------------------------------

def ratio(a, b):
    """a / b, with 0 / 0 = 1 (no faults on either side: the same)."""
    if b == 0:
        return 1.0 if a == 0 else float("inf")
    return a / b


def calls_text(stages):
    return ", ".join(f"{s.name} {s.n}" for s in stages)


def w12_rgb_blurs(repeat):
    """Ours and the hand loop, interleaved (PAIRS * repeat pairs after one
    warm-up pair), then the upstream packages, if given."""
    import infinite_tensor as it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = m.timed_runs(lambda: (read_pipeline(it), hand_loop()), PAIRS * repeat, warmup=1)
        ours, hand = [p[0] for p in pairs], [p[1] for p in pairs]
        got, want = [], []
        ours_stages, hand_stages = read_pipeline(it, got)[2], hand_loop(want)[2]
    finally:
        torch.set_num_threads(threads)
    match, diff = m.same_values(got[0], want[0])
    runs = len(pairs)
    o_time, h_time = (m.median([r[0].seconds for r in rs]) for rs in (ours, hand))
    o_f, h_f = (m.median([r[1] for r in rs]) for rs in (ours, hand))
    o_use, h_use = m.Usage([r[0] for r in ours]), m.Usage([r[0] for r in hand])
    same_calls = calls_text(ours_stages) == calls_text(hand_stages)
    rows = [
        m.Row("ours: b2[:, 0:1024, 0:1024], fresh pipeline", time=o_time, floor=h_time, runs=runs, warmup=1,
              usage=o_use, value=o_time / h_time, target=SPEED_TARGET,
              note=f"floor: the hand loop {m.fmt_seconds(h_time)}, {h_use.describe()}; time inside f: ours "
                   f"{m.fmt_seconds(o_f)}, hand loop {m.fmt_seconds(h_f)}; beyond f: ours "
                   f"{m.fmt_seconds(o_time - o_f)}, hand loop {m.fmt_seconds(h_time - h_f)}; f calls "
                   f"{calls_text(ours_stages)}"
                   + ("" if same_calls else f" (hand loop: {calls_text(hand_stages)})")),
        m.Row("hand-written plain-torch loop, same f calls", time=h_time, runs=runs, warmup=1, usage=h_use,
              text=f"{'allclose to ours' if match else 'DIFFERS from ours'} (max abs diff {diff:.1e})",
              note=f"preallocated padded buffers filled by slicing; {h_use.describe()} per read; time inside f "
                   f"{m.fmt_seconds(h_f)}"),
        m.Row("faults per steady-state read: ours / hand loop", value=ratio(o_use.faults, h_use.faults),
              target=FAULTS_TARGET,
              note=f"ours {o_use.describe()}, hand loop {h_use.describe()} (medians of the {runs} runs)"),
    ]
    return rows + upstream_rows(repeat, o_time)


# -- upstream, in child processes ---------------------------------------------------------

def upstream_rows(repeat, ours_time):
    """A row per interpreter in INFINITE_TENSOR_BENCH_UPSTREAM (or rows saying
    they were not run)."""
    pythons = [p.strip() for p in os.environ.get(UPSTREAM_ENV, "").split(",") if p.strip()]
    if not pythons:
        return [m.Row(f"upstream infinite-tensor {v} (pure Python)", text=f"not run (set {UPSTREAM_ENV})")
                for v in ("0.3.0", "0.4.0")]
    return [upstream_row(python, repeat, ours_time) for python in pythons]


def upstream_row(python, repeat, ours_time):
    """Run this file under python (PYTHONPATH dropped, so that it imports the
    upstream package, not this repository) and make its row."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [python, os.path.join(HERE, "rgb_blur.py"), "--repeat", str(PAIRS * repeat)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return m.Row(f"upstream via {python}", text=f"not run ({type(exc).__name__}: {exc})")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return m.Row(f"upstream via {python}", text=f"failed (exit {proc.returncode}: {tail})")
    r = json.loads(lines[-1])
    label = f"upstream infinite-tensor {r['version']} (pure Python)"
    if os.path.dirname(os.path.realpath(r["file"])) == os.path.realpath(os.path.join(HERE, "..", "infinite_tensor")):
        return m.Row(label, text=f"not run ({python} imports this repository's infinite_tensor)")
    usage = m.Usage([m.Counts(f, s) for f, s in zip(r["faults"], r["sys"])])
    seconds = m.median(r["seconds"])
    return m.Row(label, time=seconds, runs=len(r["seconds"]), warmup=1, usage=usage,
                 text=f"{seconds / ours_time:.2f}x ours" + ("" if r["match"] else "; DIFFERS from the hand loop"),
                 note=f"{python}: {r['file']}, torch {r['torch']}; time inside f {m.fmt_seconds(m.median(r['f']))}; "
                      f"f calls {r['calls']}; {'allclose' if r['match'] else 'NOT allclose'} to the hand loop "
                      f"(max abs diff {r['diff']:.1e})")


def child_main():
    """Under an upstream interpreter: time repeat reads (after one warm-up)
    of the pipeline built with the `infinite_tensor` it imports, check one
    against the hand loop, print a JSON line."""
    ap = argparse.ArgumentParser(description="workload 12 under another infinite_tensor (prints JSON)")
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    import infinite_tensor as it
    torch.set_num_threads(1)
    runs = m.timed_runs(lambda: read_pipeline(it), opts.repeat, warmup=1)
    got, want = [], []
    stages = read_pipeline(it, got)[2]
    hand_loop(want)
    match, diff = m.same_values(got[0], want[0])
    print(json.dumps({"version": getattr(it, "__version__", "?"), "file": it.__file__, "torch": torch.__version__,
                      "seconds": [r[0].seconds for r in runs], "faults": [r[0].faults for r in runs],
                      "sys": [r[0].sys for r in runs], "f": [r[1] for r in runs], "calls": calls_text(stages),
                      "match": match, "diff": diff}))


if __name__ == "__main__":
    child_main()
