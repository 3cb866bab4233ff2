"""The workloads of the benchmark suite (workload 7, HDF5, is in hdf5_bench.py;
workload 12, the RGB blurs of issue 22 against a hand loop and upstream, in
rgb_blur.py; workload 13, iter_regions against one big read, in regions.py;
workload 14, the weighted mean against the sum, in mean.py; workload 15, a
region read in blocks in any order against one read, in history.py;
workloads 16 and 17, DataLoader workers and a dask cluster, in training.py).

Each workload is a function taking `repeat` (7, or 3 with --quick) and
returning a list of measure.Row.  f is trivial (returns a preallocated
tensor) unless a workload says otherwise; then every call of f is timed.
Workloads of under a second per run do one untimed warm-up run first: on a
fresh tensor like the others, so the reads stay cold, but the process's
memory (malloc, the core's buffer pool, emptied before each workload) is
warm, as in a long-running program.
"""
import random
import threading
import time

import torch
import torch.nn.functional as F

import infinite_tensor as it
import measure as m
from hdf5_bench import hdf5_rows
from history import w15_read_history
from training import w16_dataloader_workers, w17_dask_cluster
from mean import w14_mean_blend
from regions import w13_iter_regions
from rgb_blur import w12_rgb_blurs

SIZE = 2048            # side of the square regions of workloads 1-4 and 9
SEED = 1234            # every random position in the suite comes from here
FLOAT = 4              # bytes of a float32
WARMUP = 1             # untimed runs before the timed ones (not for the slow workloads 7 and 10)
RATIO_TARGET = m.Target(1.5, "x floor")
TIGHT_RATIO_TARGET = m.Target(1.3, "x floor")   # workloads 1 and 3 (issue 14)
OVERHEAD_TARGET = m.Target(5, "% of f time", strict=True)
MICRO_TARGET_CROP = m.Target(10, " us", strict=True)
MICRO_TARGET_ELEMENT = m.Target(5, " us", strict=True)


# -- window functions -------------------------------------------------------------

trivial_f = m.trivial_f


BLUR_WINDOW = 256
BLUR_PAD = 2
BLUR_KERNEL = torch.full((1, 1, 2 * BLUR_PAD + 1, 2 * BLUR_PAD + 1), 1 / (2 * BLUR_PAD + 1) ** 2)


def noise_window(ctx):
    """Gaussian noise for one window, seeded by its index (deterministic)."""
    gen = torch.Generator().manual_seed(hash(ctx) & (2**63 - 1))
    return torch.randn(BLUR_WINDOW, BLUR_WINDOW, generator=gen)


def box_blur(ctx, x):
    """5x5 box blur, valid padding: a 260x260 region gives 256x256."""
    return F.conv2d(x[None, None], BLUR_KERNEL)[0, 0]


def blur_pipeline():
    """noise -> blur -> blur in one memory store, every f timed.  Returns the
    last tensor and the Calls of each stage."""
    store = it.MemoryTileStore()
    window = it.TensorWindow((BLUR_WINDOW, BLUR_WINDOW))
    padded = it.TensorWindow((BLUR_WINDOW + 2 * BLUR_PAD,) * 2, stride=(BLUR_WINDOW, BLUR_WINDOW),
                             offset=(-BLUR_PAD, -BLUR_PAD))
    stages = [m.Calls("noise"), m.Calls("blur1"), m.Calls("blur2")]
    t = it.InfiniteTensor((None, None), m.timed_calls(noise_window, stages[0]), window, tile_store=store)
    for calls in stages[1:]:
        t = it.InfiniteTensor((None, None), m.timed_calls(box_blur, calls), window, args=(t,),
                              args_windows=(padded,), tile_store=store)
    return t, stages


def reference_blur2(y0, y1, x0, x1):
    """blur(blur(noise))[y0:y1, x0:x1] in plain torch: the noise windows are
    assembled into one image, then convolved twice."""
    margin = 2 * BLUR_PAD
    wy0, wy1 = (y0 - margin) // BLUR_WINDOW, (y1 + margin - 1) // BLUR_WINDOW
    wx0, wx1 = (x0 - margin) // BLUR_WINDOW, (x1 + margin - 1) // BLUR_WINDOW
    image = torch.cat([torch.cat([noise_window((wy, wx)) for wx in range(wx0, wx1 + 1)], dim=1)
                       for wy in range(wy0, wy1 + 1)], dim=0)
    top, left = y0 - margin - wy0 * BLUR_WINDOW, x0 - margin - wx0 * BLUR_WINDOW
    x = image[top:top + y1 - y0 + 2 * margin, left:left + x1 - x0 + 2 * margin]
    for _ in range(2):
        x = box_blur(None, x)
    return x


def compare_text(got, want):
    """'match' or 'MISMATCH' (torch.allclose), with the largest difference."""
    same, diff = m.same_values(got, want)
    return f"{'match' if same else 'MISMATCH'} (max abs diff {diff:.1e})"


def plane(f, window, stride, **kwargs):
    """A (None, None) float32 tensor with square windows."""
    return it.InfiniteTensor((None, None), f, it.TensorWindow((window, window), stride=(stride, stride)),
                             **kwargs)


def pipeline_overhead(total, f_seconds):
    """Seconds beyond the time inside f, in percent of the time inside f."""
    return 100 * (total - f_seconds) / f_seconds


# -- 1, 2, 3, 9: cold reads -----------------------------------------------------------

def cold_read(window, stride, repeat, batch=None, target=RATIO_TARGET):
    """Cold read of [0:2048, 0:2048] from a fresh tensor, against its floor:
    one f call per window (per batch) and one memcpy of f's output bytes."""
    calls = m.Calls()
    f = trivial_f((window, window), calls, batched=batch is not None)
    region = (slice(0, SIZE), slice(0, SIZE))

    def run():
        calls.reset()
        t = plane(f, window, stride, batch_size=batch)
        return m.stopwatch(lambda: t[region])

    with m.PeakRSS() as rss:
        seconds = m.median(m.timed_runs(run, repeat, WARMUP))
    n = calls.n
    ctxs = list(it.TensorWindow((window, window), stride=(stride, stride)).intersecting_windows(region))
    call_args = [ctxs[i:i + batch] for i in range(0, len(ctxs), batch)] if batch else ctxs
    f_floor = m.call_floor(f, call_args, repeat)
    copy_floor = m.memcpy_floor(n * window * window * FLOAT, repeat)
    floor = f_floor + copy_floor
    per = f"{len(call_args):,} batches of {batch}" if batch else f"{n:,} f calls"
    note = (f"{n:,} windows; floor = {per} {m.fmt_seconds(f_floor)} + memcpy of "
            f"{m.fmt_bytes(n * window * window * FLOAT)} {m.fmt_seconds(copy_floor)}; "
            f"beyond the f calls: {(seconds - f_floor) / n * 1e6:.2f} us/window")
    if len(ctxs) != n:
        note += f"; NOTE: f was called {n} times for {len(ctxs)} windows"
    label = f"cold {SIZE}x{SIZE}, {window}x{window} windows, stride {stride}" + (f", batch {batch}" if batch else "")
    return [m.Row(label, time=seconds, floor=floor, runs=repeat, warmup=WARMUP, value=seconds / floor,
                  target=target, rss=rss, note=note, usage=m.take_usage())]


def w1_cold_stride64(repeat):
    return cold_read(64, 64, repeat, target=TIGHT_RATIO_TARGET)


def w2_cold_stride32(repeat):
    return cold_read(64, 32, repeat)


def w3_cold_small_windows(repeat):
    return cold_read(16, 8, repeat, target=TIGHT_RATIO_TARGET)


def w9_cold_batched(repeat):
    return cold_read(64, 32, repeat, batch=32)


# -- 4: warm reads and cache size ---------------------------------------------------------

REREADS = 10
SMALL_READS = 2000


def w4_warm(repeat):
    """Warm re-reads of a cached region, warm crops and elements, and the
    bytes the cache holds per byte of region read."""
    region = (slice(0, SIZE), slice(0, SIZE))
    t = plane(trivial_f((64, 64), m.Calls()), 64, 32)
    t[region]
    with m.PeakRSS() as rss:
        rereads = [m.stopwatch(lambda: t[region]) for _ in range(REREADS)]
    reread, copy = m.median(rereads), m.memcpy_floor(SIZE * SIZE * FLOAT, REREADS)
    rows = [m.Row(f"warm re-read {SIZE}x{SIZE} (16 MiB)", time=reread, floor=copy, runs=REREADS,
                  value=reread / copy, target=m.Target(1.5, "x memcpy"), rss=rss, usage=m.take_usage(),
                  note="floor: one torch copy_ of the region's bytes into a preallocated buffer")]

    rng = random.Random(SEED)
    spots = [(rng.randrange(SIZE - 32), rng.randrange(SIZE - 32)) for _ in range(SMALL_READS)]
    crop = m.median([m.stopwatch(lambda: t[y:y + 32, x:x + 32]) for y, x in spots])
    crop_usage = m.take_usage()
    element = m.median([m.stopwatch(lambda: t[y, x]) for y, x in spots])
    timer_note = f"median of {SMALL_READS:,} random positions (each timing includes ~0.1 us of timer overhead)"
    rows.append(m.Row("warm random 32x32 crop", value=crop * 1e6, target=MICRO_TARGET_CROP, note=timer_note,
                      usage=crop_usage))
    rows.append(m.Row("warm single element t[i, j]", value=element * 1e6, target=MICRO_TARGET_ELEMENT,
                      usage=m.take_usage()))

    region_bytes = SIZE * SIZE * FLOAT
    for stride in (64, 32):
        for name, (y0, x0) in (("aligned [0:2048, 0:2048]", (0, 0)), ("unaligned [13:2061, 7:2055]", (13, 7))):
            store = it.MemoryTileStore()
            t = plane(trivial_f((64, 64), m.Calls()), 64, stride, tile_store=store)
            t[y0:y0 + SIZE, x0:x0 + SIZE]
            held = store.cache_info()["bytes"]
            rows.append(m.Row(f"cache bytes / region bytes, stride {stride}, {name}", value=held / region_bytes,
                              target=m.Target(1.2, "x region"),
                              note=f"{m.fmt_bytes(held)} cached for a {m.fmt_bytes(region_bytes)} region, "
                                   f"tiles {t._node.tile_shape}"))
    return rows


# -- 5: random crops of a (3, None, None) tensor ---------------------------------------------

CROPS = 2000
CROP = 32
CROP_AREA = 4096


def w5_random_crops(repeat):
    """2,000 random 32x32 crops, cold (fresh tensor) then warm (same crops)."""
    calls = m.Calls()
    window = (3, 128, 128)
    f = trivial_f(window, calls)
    rng = random.Random(SEED)
    spots = [(rng.randrange(CROP_AREA - CROP), rng.randrange(CROP_AREA - CROP)) for _ in range(CROPS)]

    def read_all(t):
        """One pass over the crops: its Sample (not recorded)."""
        with m.Sample(record=False) as s:
            for y, x in spots:
                t[:, y:y + CROP, x:x + CROP]
        return s

    def run():
        """A fresh tensor: the crops cold, then warm as one pass and one by one."""
        calls.reset()
        t = it.InfiniteTensor((3, None, None), f, it.TensorWindow(window, stride=(3, 64, 64)))
        cold, warm = read_all(t), read_all(t)
        crops = [m.stopwatch(lambda: t[:, y:y + CROP, x:x + CROP], record=False) for y, x in spots]
        return cold, warm, m.median(crops)

    with m.PeakRSS() as rss:
        passes = m.timed_runs(run, repeat, WARMUP)
    n = calls.n
    cold_time, warm_time = (m.median([p[i].seconds for p in passes]) for i in range(2))
    per_crop = m.median([p[2] for p in passes])
    window_bytes = 3 * 128 * 128 * FLOAT
    f_floor = m.call_floor(f, [(0, i // 64, i % 64) for i in range(n)], repeat)
    copy_floor = m.memcpy_floor(n * window_bytes, repeat)
    floor = f_floor + copy_floor
    return [
        m.Row(f"{CROPS:,} random {CROP}x{CROP} crops, cold", time=cold_time, floor=floor, runs=repeat, warmup=WARMUP,
              value=cold_time / floor, target=RATIO_TARGET, rss=rss, usage=m.Usage([p[0] for p in passes]),
              note=f"{n:,} windows computed (3x128x128, stride 64); floor = f calls {m.fmt_seconds(f_floor)} + "
                   f"memcpy of {m.fmt_bytes(n * window_bytes)} {m.fmt_seconds(copy_floor)}; "
                   f"{cold_time / CROPS * 1e6:.1f} us per crop"),
        m.Row(f"{CROPS:,} random {CROP}x{CROP} crops, warm (per crop)", time=warm_time, runs=repeat, warmup=WARMUP,
              value=per_crop * 1e6, target=MICRO_TARGET_CROP, usage=m.Usage([p[1] for p in passes]),
              note=f"per crop: median of single timed crops {per_crop * 1e6:.2f} us, "
                   f"mean over the whole pass {warm_time / CROPS * 1e6:.2f} us"),
    ]


# -- 6: two chained blurs over noise ------------------------------------------------------------

def timed_pipeline_read(read):
    """A fresh blur pipeline and read(top) on it: returns (seconds, seconds
    inside every f, the read's Sample (not recorded), the stages' Calls, what
    read returned).  The pipeline itself is dropped with its cache."""
    top, stages = blur_pipeline()
    with m.Sample(record=False) as sample:
        result = read(top)
    return sample.seconds, sum(s.seconds for s in stages), sample, stages, result


def pipeline_row(label, runs, repeat, rss, warmup=0):
    """The row of a pipeline workload: floor = time inside f + one memcpy of
    what f produced; the target judges the overhead beyond the f time."""
    total, f_time = m.median([r[0] for r in runs]), m.median([r[1] for r in runs])
    stages = runs[-1][3]
    out_bytes = sum(s.n for s in stages) * BLUR_WINDOW * BLUR_WINDOW * FLOAT
    copy = m.memcpy_floor(out_bytes, repeat)
    calls_text = ", ".join(f"{s.name} {s.n:,} windows" for s in stages)
    return m.Row(label, time=total, floor=f_time + copy, runs=repeat, warmup=warmup,
                 value=m.median([pipeline_overhead(r[0], r[1]) for r in runs]), target=OVERHEAD_TARGET, rss=rss,
                 usage=m.Usage([r[2] for r in runs]),
                 note=f"floor = time inside f {m.fmt_seconds(f_time)} ({calls_text}) + memcpy of f's output "
                      f"{m.fmt_bytes(out_bytes)} {m.fmt_seconds(copy)}: time / floor {total / (f_time + copy):.2f}; "
                      f"measured = (time - f time) / f time, median of runs")


def w6_chained_blurs(repeat):
    """blur2[0:1024, 0:1024] cold; overhead = read time - time inside every f."""
    def read(top):
        top[0:1024, 0:1024]
    with m.PeakRSS() as rss:
        runs = m.timed_runs(lambda: timed_pipeline_read(read), repeat, WARMUP)
    top, _ = blur_pipeline()
    check = compare_text(top[0:1024, 0:1024], reference_blur2(0, 1024, 0, 1024))
    return [pipeline_row("blur(blur(noise))[0:1024, 0:1024] cold", runs, repeat, rss, WARMUP),
            m.Row("blur2 values vs plain torch (allclose)", text=check)]


# -- 8: streaming through a bounded cache ----------------------------------------------------

STREAM_CACHE = 16 * m.MiB
BANDS = 64
BAND = 256
BAND_WIDTH = 4096


def band_working_set(window, tile_shape):
    """Bytes of the tiles one band read pins at most: every tile meeting the
    windows that meet the band (the band's tiles plus the overlap rows)."""
    worst = 0
    for k in range(BANDS):
        band = (slice(k * BAND, (k + 1) * BAND), slice(0, BAND_WIDTH))
        bounds = [window.get_bounds(w) for w in window.intersecting_windows(band)]
        tiles = 1
        for d in range(2):
            lo, hi = min(b[d].start for b in bounds), max(b[d].stop for b in bounds)
            tiles *= (hi - 1) // tile_shape[d] - lo // tile_shape[d] + 1
        worst = max(worst, tiles * tile_shape[0] * tile_shape[1] * FLOAT)
    return worst


STREAM_STEP = 128      # the windows' stride (their size is BAND)
STREAM_PLAIN_TARGET = m.Target(1.3, "x plain loop")


def stream_reference(f, keep=None):
    """What streaming the bands costs at least, as a plain loop: f called once
    per window (256x256, stride 128) meeting the bands, each window added into
    a preallocated buffer holding rows [256k - 128, 256k + 384) of band k
    (columns [-128, 4224)), whose lower half carries over to the next band.
    Returns the pass's Sample (not recorded); a copy of each band is appended
    to the list keep, if given (to check the loop)."""
    step = STREAM_STEP
    cols = range(-1, BAND_WIDTH // step)
    buf = torch.empty(BAND + 2 * step, BAND_WIDTH + 2 * step)
    with m.Sample(record=False) as sample:
        buf.zero_()
        for k in range(BANDS):
            for i in range(2 * k - (k == 0), 2 * k + 2):   # band 0 also needs window row -1
                y = step * i - BAND * k + step
                for j in cols:
                    x = step * j + step
                    buf[y:y + BAND, x:x + BAND] += f((i, j))
            if keep is not None:  # rows [step, step + BAND) hold band k now
                keep.append(buf[step:step + BAND, step:step + BAND_WIDTH].clone())
            buf[:BAND].copy_(buf[BAND:])
            buf[BAND:].zero_()
    return sample


def w8_streaming(repeat):
    """64 consecutive 256x4096 bands through a 16 MiB cache."""
    calls = m.Calls()
    f = trivial_f((256, 256), calls)
    window = it.TensorWindow((256, 256), stride=(128, 128))
    bands = [(slice(k * BAND, (k + 1) * BAND), slice(0, BAND_WIDTH)) for k in range(BANDS)]

    def stream(fn):
        """One pass over the bands; returns (its Sample, band seconds, peak
        cached bytes after a band, tile shape)."""
        store = it.MemoryTileStore(cache_size_bytes=STREAM_CACHE)
        t = it.InfiniteTensor((None, None), fn(store), window, tile_store=store)
        band_times, peak = [], 0
        with m.Sample(record=False) as sample:
            for band in bands:
                band_times.append(m.stopwatch(lambda: t[band], record=False))
                peak = max(peak, store.cache_info()["bytes"])
        return sample, band_times, peak, t._node.tile_shape

    def run():
        calls.reset()
        return stream(lambda store: f)

    with m.PeakRSS() as rss:
        passes = m.timed_runs(run, repeat, WARMUP)
    n = calls.n
    total = m.median([p[0].seconds for p in passes])
    per_band = m.median([s for p in passes for s in p[1]])
    after_band = max(p[2] for p in passes)

    inside = {"bytes": 0, "pinned": 0}

    def sampling(store):
        """An f that also samples the cache (bytes, pinned tiles) while a read is under way."""
        def sampling_f(ctx):
            info = store.cache_info()
            for key in inside:
                inside[key] = max(inside[key], info[key])
            return f(ctx)
        return sampling_f
    tile_shape = stream(sampling)[3]
    working_set = band_working_set(window, tile_shape)
    tile_bytes = tile_shape[0] * tile_shape[1] * FLOAT
    bound = STREAM_CACHE + working_set
    f_floor = m.call_floor(f, [(i // 64, i % 64) for i in range(n)], repeat)
    copy_floor = m.memcpy_floor(n * 256 * 256 * FLOAT, repeat)
    floor = f_floor + copy_floor
    pool = m.pool_bytes()
    calls.reset()
    plain = m.timed_runs(lambda: stream_reference(f), repeat, WARMUP)
    plain_time, plain_calls = m.median([s.seconds for s in plain]), calls.n // (repeat + WARMUP)
    stream_usage = m.Usage([p[0] for p in passes])
    return [
        m.Row(f"{BANDS} bands of {BAND}x{BAND_WIDTH}, 16 MiB cache", time=total, floor=floor, runs=repeat,
              warmup=WARMUP, usage=stream_usage,
              text=f"{total / floor:.2f}x floor", rss=rss,
              note=f"{n:,} windows computed per pass; per band {m.fmt_seconds(per_band)} (median); "
                   f"floor = f calls {m.fmt_seconds(f_floor)} + memcpy {m.fmt_seconds(copy_floor)}"),
        m.Row("streaming: peak cached bytes", value=max(after_band, inside["bytes"]) / m.MiB,
              target=m.Target(bound / m.MiB, " MiB"),
              note=f"bound = 16 MiB + one band's pinned working set {m.fmt_bytes(working_set)} "
                   f"({working_set // tile_bytes} tiles of {tile_shape}); peak after a band "
                   f"{m.fmt_bytes(after_band)}, inside reads (sampled in f) {m.fmt_bytes(inside['bytes'])} "
                   f"with up to {inside['pinned']} tiles pinned; core buffer pool holds "
                   f"{'n/a' if pool is None else m.fmt_bytes(pool)} afterwards"),
        m.Row("streaming vs a plain loop: f calls + accumulating each window once", time=total, floor=plain_time,
              runs=repeat, warmup=WARMUP, usage=stream_usage, value=total / plain_time,
              target=STREAM_PLAIN_TARGET,
              note=f"floor: the plain loop (stream_reference: {plain_calls:,} f calls, each window added once into a "
                   f"preallocated 512x4352 band buffer, the overlap rows carried to the next band; the bands are not "
                   f"copied out) {m.fmt_seconds(plain_time)}, {m.Usage(plain).describe()} per pass"
                   + ("" if plain_calls == n else f"; NOTE: the read computed {n:,} windows")),
    ]


# -- 10: random tiles of a three-stage pipeline -----------------------------------------------

TILES = 256
TILE = 512
TILE_AREA = 8192


def w10_pipeline_tiles(repeat):
    """256 random 512x512 reads of blur(blur(noise)), from a fresh pipeline."""
    rng = random.Random(SEED)
    spots = [(rng.randrange(TILE_AREA - TILE), rng.randrange(TILE_AREA - TILE)) for _ in range(TILES)]

    def read_tiles(top):
        """The Sample of each tile read (not recorded)."""
        samples = []
        for y, x in spots:
            with m.Sample(record=False) as s:
                top[y:y + TILE, x:x + TILE]
            samples.append(s)
        return samples

    with m.PeakRSS() as rss:
        runs = m.timed_runs(lambda: timed_pipeline_read(read_tiles), repeat)
    tiles = [s for r in runs for s in r[4]]
    tile_times = [s.seconds for s in tiles]
    p95 = m.percentile(tile_times, 95)
    y, x = spots[0]
    top, _ = blur_pipeline()
    check = compare_text(top[y:y + TILE, x:x + TILE], reference_blur2(y, y + TILE, x, x + TILE))
    return [
        pipeline_row(f"{TILES} random {TILE}x{TILE} tiles of blur(blur(noise))", runs, repeat, rss),
        m.Row("pipeline: time to the first tile", time=m.median([r[4][0].seconds for r in runs]), runs=repeat,
              usage=m.Usage([r[4][0] for r in runs])),
        m.Row("pipeline: per tile p50", time=m.percentile(tile_times, 50), usage=m.Usage(tiles),
              note=f"p50 and p95 over the {len(tile_times):,} tiles of all runs; faults and sys: medians per tile, "
                   f"of all tiles (p50) and of the tiles at or above p95 (p95)"),
        m.Row("pipeline: per tile p95", time=p95, usage=m.Usage([s for s in tiles if s.seconds >= p95])),
        m.Row("pipeline: first tile vs plain torch (allclose)", text=check),
    ]


# -- 11: threads reading disjoint cached regions ---------------------------------------------

THREAD_READS = 100     # reads per thread per run
THREAD_SIDES = (512, 1024)  # each read: a 512x512 (1 MiB) or 1024x1024 (4 MiB) float32 region
SCALING_TARGET = m.Target(1.7, "x one thread", at_least=True)


def _per_second(worker, nthreads, repeat):
    """Operations per second of nthreads threads, each running worker(k,
    barrier): THREAD_READS operations after barrier.wait().  Median of repeat
    runs, after one warm-up."""
    def run():
        barrier = threading.Barrier(nthreads + 1)
        threads = [threading.Thread(target=worker, args=(k, barrier)) for k in range(nthreads)]
        for th in threads:
            th.start()
        t0 = time.perf_counter()
        barrier.wait()
        for th in threads:
            th.join()
        return nthreads * THREAD_READS / (time.perf_counter() - t0)
    return m.median(m.timed_runs(run, repeat, warmup=1))


def _reads_per_second(t, side, nthreads, repeat):
    """Reads per second of nthreads threads, each re-reading its own four
    cached side x side regions (disjoint from the other threads')."""
    def worker(k, barrier):
        y0 = k * 4 * side
        barrier.wait()
        for i in range(THREAD_READS):
            y = y0 + (i % 4) * side
            t[y:y + side, 0:side]
    return _per_second(worker, nthreads, repeat)


def _copies_per_second(side, nthreads, repeat):
    """The same for plain torch: each thread copies its own four side x side
    tensors, in turn, into one buffer (torch releases the GIL while it
    copies): the scaling the machine allows such copies."""
    sources = [[torch.ones(side, side) for _ in range(4)] for _ in range(nthreads)]

    def worker(k, barrier):
        dst = torch.empty(side, side)
        barrier.wait()
        for i in range(THREAD_READS):
            dst.copy_(sources[k][i % 4])
    return _per_second(worker, nthreads, repeat)


def w11_thread_scaling(repeat):
    """Throughput of 2 threads re-reading disjoint cached regions against 1
    thread, with the core's copy pool off (one thread per read, so that each
    read's copy is the work the threads share out) and on (its default), for
    regions of 1 MiB (the tiles a thread re-reads stay in the shared L3) and
    4 MiB (they come from DRAM, whose bandwidth the two cores share)."""
    rows = []
    for side in THREAD_SIDES:
        t = plane(trivial_f((64, 64), m.Calls()), 64, 64)
        t[0:8 * side, 0:side]  # cache everything the threads read
        check = torch.equal(t[0:side, 0:side], torch.ones(side, side))
        for pool in (1, None):
            old = it._core.copy_threads(pool) if pool else None
            try:
                one = _reads_per_second(t, side, 1, repeat)
                two = _reads_per_second(t, side, 2, repeat)
            finally:
                if old is not None:
                    it._core.copy_threads(old)
            label = "copy pool off" if pool else f"copy pool on ({it._core.copy_threads()} threads)"
            rows.append(m.Row(f"2 threads / 1 thread, cached {side}x{side} reads, {label}", value=two / one,
                              target=SCALING_TARGET if pool else None, text=None if pool else f"{two / one:.2f}x",
                              note=f"{one:,.0f} reads/s with 1 thread, {two:,.0f} with 2"))
        one, two = _copies_per_second(side, 1, repeat), _copies_per_second(side, 2, repeat)
        rows.append(m.Row(f"2 threads / 1 thread, plain torch copies of {side}x{side} (the machine's ceiling)",
                          text=f"{two / one:.2f}x", note=f"{one:,.0f} copies/s with 1 thread, {two:,.0f} with 2"))
        rows.append(m.Row(f"{side}x{side} thread reads vs plain torch (equal)", text="equal" if check else "DIFFERENT"))
        del t
    return rows


# number -> (title, function)
WORKLOADS = {
    1: ("cold read, 64x64 windows, stride 64", w1_cold_stride64),
    2: ("cold read, 64x64 windows, stride 32 (summed)", w2_cold_stride32),
    3: ("cold read, 16x16 windows, stride 8", w3_cold_small_windows),
    4: ("warm reads and cache size", w4_warm),
    5: ("random crops of a (3, None, None) tensor", w5_random_crops),
    6: ("two chained 5x5 blurs over noise", w6_chained_blurs),
    7: ("HDF5 persistence, 4096x4096 float32", hdf5_rows),
    8: ("streaming bands through a bounded cache", w8_streaming),
    9: ("cold read, 64x64 windows, stride 32, batch_size=32", w9_cold_batched),
    10: ("random tiles of a three-stage pipeline", w10_pipeline_tiles),
    11: ("threads reading disjoint cached regions", w11_thread_scaling),
    12: ("two chained 3x5x5 depthwise blurs: ours, a hand loop, upstream", w12_rgb_blurs),
    13: ("iter_regions over a 16384x16384 strip vs one read", w13_iter_regions),
    14: ("blend='mean' (linear weights) vs the sum blend", w14_mean_blend),
    15: ("a region read in blocks, in raster and random order, vs one read", w15_read_history),
    16: ("random crops from DataLoader workers vs one process", w16_dataloader_workers),
    17: ("to_dask on a 2-process LocalCluster vs one read", w17_dask_cluster),
}
