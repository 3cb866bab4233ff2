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
import subprocess
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


def build_raw_writer(tmpdir):
    exe = os.path.join(tmpdir, "raw_h5write")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "hdf5"], check=True, capture_output=True,
                           text=True).stdout.split()
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_h5write.c")
    subprocess.run(["cc", "-O2", "-o", exe, src] + flags, check=True)
    return exe


def hdf5_roundtrip(tmpdir, size=4096, window=256, tile=512, gzip=4, repeat=3):
    """Write size x size float32 through HDF5, close, reopen, read back.  The
    flush (close: write every tile, commit) is compared with a raw write of
    the same tiles' bytes into one chunked dataset with the same chunks and
    filter, through the same HDF5 library."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(window, window, generator=gen)
    ramp = torch.linspace(0, 1, window)
    out = (ramp[:, None] * 100).round() + (noise * 4).round() / 4  # compresses like real data, somewhat
    count = [0]

    def f(ctx):
        count[0] += 1
        return out

    path = os.path.join(tmpdir, "bench.h5")
    win = it.TensorWindow((window, window))
    compression = None if gzip is None else "gzip"
    computes, flushes = [], []
    for _ in range(repeat):
        count[0] = 0
        t0 = time.perf_counter()
        store = it.HDF5TileStore(path, mode="w", tile_size=tile, cache_size_bytes=1 << 30,
                                 compression=compression, compression_opts=gzip)
        t = it.InfiniteTensor((None, None), f, win, tile_store=store, tensor_id="bench")
        region = t[0:size, 0:size]
        t1 = time.perf_counter()
        store.close()
        t2 = time.perf_counter()
        computes.append(t1 - t0)
        flushes.append(t2 - t1)
    windows = count[0]
    file_bytes = os.path.getsize(path)
    count[0] = 0
    t3 = time.perf_counter()
    with it.HDF5TileStore(path, mode="r", tile_size=tile) as store2:
        t2r = it.InfiniteTensor((None, None), f, win, tile_store=store2, tensor_id="bench")
        back = t2r[0:size, 0:size]
    t4 = time.perf_counter()
    assert count[0] == 0 and torch.equal(back, region), "reopened values differ"

    # raw HDF5: the same 512x512 tiles into one chunked dataset with the same
    # filter, by a small C program on the HDF5 library the core links
    tiles = region.reshape(size // tile, tile, size // tile, tile).permute(0, 2, 1, 3).reshape(-1, tile, tile)
    raw_in, raw_out = os.path.join(tmpdir, "tiles.bin"), os.path.join(tmpdir, "raw.h5")
    tiles.contiguous().numpy().tofile(raw_in)
    exe = build_raw_writer(tmpdir)
    runs = [float(subprocess.run([exe, raw_in, raw_out, str(tiles.shape[0]), str(tile),
                                  str(-1 if gzip is None else gzip)],
                                 check=True, capture_output=True, text=True).stdout) for _ in range(repeat)]
    raw_seconds = statistics.median(runs)
    return dict(windows=windows, compute=statistics.median(computes), flush=statistics.median(flushes),
                reopen_read=t4 - t3, raw=raw_seconds, file_mb=file_bytes / 2**20)


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

    import tempfile
    for gzip in (4, None):
        with tempfile.TemporaryDirectory() as tmp:
            r = hdf5_roundtrip(tmp, gzip=gzip, repeat=repeat)
        n = r["windows"]
        print(f"HDF5 4096x4096 float32, tile 512, windows 256, {'gzip 4' if gzip else 'uncompressed'} "
              f"({n} windows, {r['file_mb']:.1f} MiB file): compute {r['compute'] * 1e3:.1f} ms; flush+close "
              f"{r['flush'] * 1e3:.1f} ms vs a raw HDF5 write of the same tiles {r['raw'] * 1e3:.1f} ms: "
              f"{(r['flush'] - r['raw']) / n * 1e6:+.1f} us/window beyond raw; reopen + read back "
              f"{r['reopen_read'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
