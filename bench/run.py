"""Benchmarks for infinite_tensor (prints numbers; not a test).

    make bench                    # or: .venv/bin/python bench/run.py [--quick]

Each workload prints the median of several runs and the floor it is compared
with: what any implementation must spend on the same work (calling the
Python f once per window, plus one memcpy of the bytes f produced; for warm
reads, one memcpy of the bytes read).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import infinite_tensor as it  # noqa: E402


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cold_read(size, window, stride, repeat, batch_size=None):
    """Cold read of size x size; returns (seconds, windows, f seconds)."""
    out = torch.ones(window, window)
    count = [0]
    if batch_size:
        def f(ctxs):
            count[0] += len(ctxs)
            return [out] * len(ctxs)
    else:
        def f(ctx):
            count[0] += 1
            return out

    def run():
        count[0] = 0
        t = it.InfiniteTensor((None, None), f, it.TensorWindow((window, window), stride=(stride, stride)),
                              batch_size=batch_size)
        t[0:size, 0:size]
    seconds = median_time(run, repeat)
    n = count[0]
    # the floor: calling f n times (one Python call per window, or per batch)
    ctx = (0, 0)
    if batch_size:
        ctxs = [ctx] * batch_size
        f_seconds = median_time(lambda: [f(ctxs) for _ in range((n + batch_size - 1) // batch_size)], repeat)
    else:
        f_seconds = median_time(lambda: [f(ctx) for _ in range(n)], repeat)
    # ... plus one copy of the bytes f produced
    src, dst = torch.ones(n, window, window), torch.empty(n, window, window)
    copy_seconds = median_time(lambda: dst.copy_(src), repeat)
    return seconds, n, f_seconds, copy_seconds


def warm_read(size, repeat):
    t = it.InfiniteTensor((None, None), lambda c: torch.ones(64, 64), it.TensorWindow((64, 64), stride=(32, 32)))
    t[0:size, 0:size]
    seconds = median_time(lambda: t[0:size, 0:size], repeat)
    src = torch.ones(size, size)
    dst = torch.empty(size, size)
    copy_warm = median_time(lambda: dst.copy_(src), repeat)
    copy_fresh = median_time(lambda: torch.empty(size, size).copy_(src), repeat)
    crop = median_time(lambda: t[100:132, 200:232], repeat * 50)
    elem = median_time(lambda: t[100, 200], repeat * 50)
    return seconds, copy_warm, copy_fresh, crop, elem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    opts = ap.parse_args()
    repeat = 3 if opts.quick else 7
    torch.set_num_threads(1)
    print(f"infinite_tensor {it.__version__}, torch {torch.__version__}, {os.cpu_count()} cpus")

    for label, window, stride, bs in [("64x64 windows, stride 64", 64, 64, None),
                                      ("64x64 windows, stride 32", 64, 32, None),
                                      ("16x16 windows, stride 8", 16, 8, None),
                                      ("64x64 windows, stride 32, batch 32", 64, 32, 32)]:
        s, n, fs, cs = cold_read(2048, window, stride, repeat, bs)
        print(f"cold 2048x2048, {label}: {s * 1e3:7.2f} ms, {n} windows; floor {(fs + cs) * 1e3:.2f} ms "
              f"(f {fs * 1e3:.2f} + memcpy of f's output {cs * 1e3:.2f}); framework {(s - fs) / n * 1e6:.2f} us/window "
              f"beyond f; ratio to floor {s / (fs + cs):.2f}")
    s, cw, cf, crop, elem = warm_read(2048, repeat)
    print(f"warm re-read 2048x2048 float32: {s * 1e3:.2f} ms; memcpy into a reused buffer {cw * 1e3:.2f} ms "
          f"(ratio {s / cw:.2f}), into a fresh buffer {cf * 1e3:.2f} ms (ratio {s / cf:.2f})")
    print(f"warm 32x32 crop: {crop * 1e6:.2f} us; warm single element: {elem * 1e6:.2f} us")


if __name__ == "__main__":
    main()
