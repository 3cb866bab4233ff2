"""Workload 13 (issue 15): t.iter_regions over a 16384x16384 strip, band by
band through a bounded cache, against one big read of the strip, and a list
read t[[...]] of the same bands.

f is batched (batch_size=16) and trivial (returns one preallocated window
per index), so nearly all of each read's time is outside f; the time inside
f is measured by a plain loop calling f once per batch (measure.call_floor)
and taken off both sides.  Targets: streaming within 5% of the big read's
time outside f, and a peak RSS growth of a few batches plus the cache,
far from the strip's 1 GiB.
"""
import torch

import infinite_tensor as it
from infinite_tensor import sl
import measure as m

STRIP = 16384          # the strip is STRIP x STRIP float32 (1 GiB)
BAND = 64              # rows per region
WINDOW = 64            # square windows, stride = size
BATCH = 16
STREAM_CACHE = 16 * m.MiB
WARMUP = 1
OUTSIDE_TARGET = m.Target(1.05, "x the big read's time outside f")
FLOAT = 4


def w13_iter_regions(repeat):
    """Bands of a 16384x16384 strip: iter_regions (16 MiB cache) vs one read."""
    calls = m.Calls()
    out = torch.ones(WINDOW, WINDOW)

    def f(ctxs):
        calls.n += len(ctxs)
        calls.batches += 1
        return [out] * len(ctxs)

    window = it.TensorWindow((WINDOW, WINDOW))
    bands = [sl[k * BAND:(k + 1) * BAND, 0:STRIP] for k in range(STRIP // BAND)]
    peak = {"cache": 0, "chunk": 0}

    def stream():
        calls.reset()
        store = it.MemoryTileStore(cache_size_bytes=STREAM_CACHE)
        t = it.InfiniteTensor((None, None), f, window, tile_store=store, batch_size=BATCH)

        def walk():
            n = 0
            for chunk in t.iter_regions(iter(bands)):
                n += len(chunk)
                peak["cache"] = max(peak["cache"], store.cache_info()["bytes"])
                peak["chunk"] = max(peak["chunk"], sum(x.numel() * FLOAT for x in chunk))
                del chunk
            return n

        return m.stopwatch(walk)

    def big():
        calls.reset()
        t = it.InfiniteTensor((None, None), f, window, batch_size=BATCH)
        return m.stopwatch(lambda: t[0:STRIP, 0:STRIP])

    def listed():
        calls.reset()
        t = it.InfiniteTensor((None, None), f, window, batch_size=BATCH)
        return m.stopwatch(lambda: t[bands])

    with m.PeakRSS() as stream_rss:
        stream_s = m.median(m.timed_runs(stream, repeat, WARMUP))
    stream_usage = m.take_usage()
    n, batches = calls.n, calls.batches
    with m.PeakRSS() as big_rss:
        big_s = m.median(m.timed_runs(big, repeat, WARMUP))
    big_usage = m.take_usage()
    with m.PeakRSS() as list_rss:
        list_s = m.median(m.timed_runs(listed, repeat, WARMUP))
    list_usage = m.take_usage()

    ctxs = [(i, j) for i in range(STRIP // WINDOW) for j in range(STRIP // WINDOW)]
    f_floor = m.call_floor(f, [ctxs[k:k + BATCH] for k in range(0, len(ctxs), BATCH)], repeat)
    big_out, stream_out, list_out = big_s - f_floor, stream_s - f_floor, list_s - f_floor
    note = (f"{n:,} windows in {batches:,} batches of {BATCH} per pass; time in f (a plain loop of the same "
            f"batches) {m.fmt_seconds(f_floor)}; outside f: big read {m.fmt_seconds(big_out)}, iter_regions "
            f"{m.fmt_seconds(stream_out)}, list read {m.fmt_seconds(list_out)}")
    return [
        m.Row(f"one read of {STRIP}x{STRIP} (unbounded cache)", time=big_s, floor=f_floor, runs=repeat,
              warmup=WARMUP, rss=big_rss, usage=big_usage, text=f"{big_out * 1e9 / n:.0f} ns/window outside f"),
        m.Row(f"iter_regions over {len(bands)} bands of {BAND}x{STRIP}, 16 MiB cache", time=stream_s,
              floor=f_floor, runs=repeat, warmup=WARMUP, rss=stream_rss, usage=stream_usage,
              value=stream_out / big_out, target=OUTSIDE_TARGET, note=note),
        m.Row(f"t[list of the {len(bands)} bands] (unbounded cache)", time=list_s, floor=f_floor, runs=repeat,
              warmup=WARMUP, rss=list_rss, usage=list_usage, value=list_out / big_out, target=OUTSIDE_TARGET),
        m.Row("iter_regions: peak RSS growth", value=(stream_rss.growth or 0) / m.MiB,
              target=m.Target((STREAM_CACHE + 4 * peak["chunk"]) / m.MiB, " MiB"),
              note=f"bound = the 16 MiB cache + 4 chunks of {m.fmt_bytes(peak['chunk'])}; peak cached bytes "
                   f"{m.fmt_bytes(peak['cache'])}; the strip itself is {m.fmt_bytes(STRIP * STRIP * FLOAT)}"),
    ]
