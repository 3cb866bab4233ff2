"""Benchmark of the device path: a cold read of a (4, None, None) float16
tensor with 256x256 windows at stride 128, over SIZE x SIZE pixels.

    .venv/bin/python bench/device.py                 # CUDA if there is a GPU
    .venv/bin/python bench/device.py --size 2048     # a smaller region

The target (issue 5) is for CUDA over 8192 x 8192: the read should spend
under 10% beyond f itself.  "f itself" is measured by calling f for exactly
the windows the read computes, in the same order, on a fresh process-warm
device, then synchronising; the read is timed the same way (cold: a fresh
tensor each run).  Medians of --repeat runs.

Without a GPU the script still runs, on the CPU: once on the device path
(tiles in torch allocations, every copy and combine a torch op, as for CUDA)
and once on the host path, with a smaller default region.  Those numbers say
what the device path's bookkeeping costs per operation; they say nothing
about a GPU.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import infinite_tensor as it  # noqa: E402
from infinite_tensor import _bridge  # noqa: E402

CHANNELS, WINDOW, STRIDE = 4, 256, 128


def noise_f(device, calls):
    """A smooth pseudo-random field per window: a few elementwise kernels."""
    ys = torch.arange(WINDOW, device=device, dtype=torch.float32).view(WINDOW, 1)
    xs = torch.arange(WINDOW, device=device, dtype=torch.float32).view(1, WINDOW)
    phases = torch.arange(CHANNELS, device=device, dtype=torch.float32).view(CHANNELS, 1, 1)

    def f(ctx):
        calls.append(ctx)
        _, wy, wx = ctx
        fy, fx = 0.013 + 0.001 * (wy % 7), 0.017 + 0.001 * (wx % 5)
        field = torch.sin((ys + wy * STRIDE) * fy + (xs + wx * STRIDE) * fx + phases)
        return field.to(torch.float16)
    return f


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_run(device, size, device_path):
    calls = []
    f = noise_f(device, calls)
    with _bridge.device_ops_on_cpu(device_path):
        t = it.InfiniteTensor((CHANNELS, None, None), f,
                              it.TensorWindow((CHANNELS, WINDOW, WINDOW), (CHANNELS, STRIDE, STRIDE)),
                              dtype=torch.float16, device=device)
    sync(device)
    start = time.perf_counter()
    out = t[:, 0:size, 0:size]
    sync(device)
    read_s = time.perf_counter() - start
    # f alone, for the same windows
    windows = list(calls)
    g = noise_f(device, [])
    sync(device)
    start = time.perf_counter()
    for ctx in windows:
        g(ctx)
    sync(device)
    f_s = time.perf_counter() - start
    assert out.shape == (CHANNELS, size, size) and out.device.type == device.type
    return read_s, f_s, len(windows)


def report(label, runs):
    read_s = statistics.median(r[0] for r in runs)
    f_s = statistics.median(r[1] for r in runs)
    n = runs[0][2]
    beyond = (read_s - f_s) / f_s * 100
    print(f"{label:<34} read {read_s * 1e3:9.1f} ms   f alone {f_s * 1e3:9.1f} ms   "
          f"{n} windows   beyond f: {beyond:6.1f}%   ({(read_s - f_s) / n * 1e6:.1f} us/window)")
    return beyond


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=None, help="side of the region read (8192 on CUDA, 2048 on CPU)")
    ap.add_argument("--repeat", type=int, default=5)
    opts = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    size = opts.size or (8192 if cuda else 2048)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda else " (no GPU: CPU paths only)")
          + f", torch {torch.__version__}, region {CHANNELS}x{size}x{size} float16, "
          f"windows {WINDOW}x{WINDOW} stride {STRIDE}, median of {opts.repeat}")
    paths = [("cuda", False)] if cuda else [("cpu, device path (torch ops)", True), ("cpu, host path (C kernels)", False)]
    for label, device_path in paths:
        one_run(device, min(size, 1024), device_path)  # warm-up: allocator, kernels
        runs = [one_run(device, size, device_path) for _ in range(opts.repeat)]
        beyond = report(label, runs)
        if cuda:
            print(f"target: under 10% beyond f: {'PASS' if beyond < 10 else 'MISS'}")


if __name__ == "__main__":
    main()
