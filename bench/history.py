"""Workload 15 (issue 15): reads in any order give the bits of one read.

Float sums fold each pixel's windows in window order (docs/architecture.md),
so a region read in blocks, in any order, equals one read of it bit for
bit.  The price is the parts of windows kept along the edges of the blocks
read so far, until the windows before them arrive.  This workload reads
4096x4096 from 64x64 float32 windows at stride 32 (four windows on every
pixel), f trivial:

- once, as one read;
- as 256 blocks of 256x256 in raster order;
- as the same blocks in a random order (the worst case for kept parts);

and reports each one's time beyond f and its peak of kept bytes.  A small
check with random window values compares the block reads with the one read
(torch.equal).  Target for the block reads: within 10% of the same reads
without the ordering (measured with the previous build, docs/benchmarks.md);
here their framework time is shown against the single read's.
"""
import random

import torch

import infinite_tensor as it
import measure as m

SIZE, BLOCK, WINDOW, STRIDE = 4096, 256, 64, 32
SEED = 1234
WARMUP = 1


def blocks(order):
    out = [(y, x) for y in range(0, SIZE, BLOCK) for x in range(0, SIZE, BLOCK)]
    if order == "random":
        random.Random(SEED).shuffle(out)
    return out


def _check_bits():
    """Random values: blocks in random order == one read, bit for bit."""
    def f(ctx):
        g = torch.Generator().manual_seed(hash(ctx) & 0xFFFFFFFF)
        return torch.randn(WINDOW, WINDOW, generator=g) * 10.0 ** torch.randint(-3, 4, (1,), generator=g).item()

    window = it.TensorWindow((WINDOW, WINDOW), stride=(STRIDE, STRIDE))
    side = 1024
    whole = it.InfiniteTensor((None, None), f, window)[0:side, 0:side]
    t = it.InfiniteTensor((None, None), f, window)
    order = [(y, x) for y in range(0, side, BLOCK) for x in range(0, side, BLOCK)]
    random.Random(SEED).shuffle(order)
    parts = {(y, x): t[y:y + BLOCK, x:x + BLOCK] for y, x in order}
    joined = torch.cat([torch.cat([parts[(y, x)] for x in range(0, side, BLOCK)], 1)
                        for y in range(0, side, BLOCK)], 0)
    return torch.equal(joined, whole)


def w15_read_history(repeat):
    """One read vs raster and random block reads of 4096x4096."""
    calls = m.Calls()
    f = m.trivial_f((WINDOW, WINDOW), calls)

    window = it.TensorWindow((WINDOW, WINDOW), stride=(STRIDE, STRIDE))
    ctxs = list(window.intersecting_windows((slice(0, SIZE), slice(0, SIZE))))
    f_floor = m.call_floor(f, ctxs, repeat)
    same = _check_bits()

    def run_one():
        calls.reset()
        t = it.InfiniteTensor((None, None), f, window)
        return m.stopwatch(lambda: t[0:SIZE, 0:SIZE])

    def run_blocks(order):
        def run():
            calls.reset()
            t = it.InfiniteTensor((None, None), f, window)
            seq = blocks(order)

            def body():
                for y, x in seq:
                    t[y:y + BLOCK, x:x + BLOCK]
            return m.stopwatch(body)
        return run

    rows = []
    base = None
    for name, run in (("one read", run_one), ("256 blocks, raster order", run_blocks("raster")),
                      ("256 blocks, random order", run_blocks("random"))):
        with m.PeakRSS() as rss:
            seconds = m.median(m.timed_runs(run, repeat, WARMUP))
        n = calls.n
        frame = seconds - f_floor * n / len(ctxs)
        if base is None:
            base = frame
        note = f"{n:,} windows; beyond f {m.fmt_seconds(frame)} ({frame / base:.2f}x the one read's)"
        if name != "one read":
            note += f"; blocks == one read, bit for bit (random values, 1024x1024): {same}"
        rows.append(m.Row(f"{SIZE}x{SIZE}, {WINDOW}x{WINDOW} windows stride {STRIDE}: {name}", time=seconds,
                          floor=f_floor, runs=repeat, warmup=WARMUP, rss=rss, usage=m.take_usage(),
                          text=f"{frame / n * 1e6:.2f} us/window beyond f", note=note))
    return rows
