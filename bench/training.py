"""Workloads 16 and 17 (issue 16): training data from worker processes.

16. Random 256x256 crops of a world whose f does real work (a 256x256
    window of smoothed noise, about 1 ms), read in this process and by a
    DataLoader with 2 worker processes (fork, persistent): first into one
    writable HDF5 file that this process holds and serves (the workers
    compute what is missing and hand it over); then each worker computing
    into its own memory cache; then the same crops from an HDF5 file filled
    beforehand and opened read-only with a 16 MiB cache, where the workers
    only read.  A first epoch (the workers' start-up) is not timed.  Target: 2 workers give
    at least 1.7x one process's crops/s (issue 16, for a 2-core machine).
17. A to_dask compute of 8192x8192 of the same world on a dask.distributed
    LocalCluster of 2 worker processes, against one read in this process.
    Target: at most 1.3x the single read's time.  Skipped without
    dask.distributed.
"""
import os
import tempfile
import time

import torch
import torch.nn.functional as F

import infinite_tensor as it
import measure as m
from infinite_tensor.data import RandomCrops

WINDOW = 256
CROP = 256
CROPS = 192
BATCH = 8
REGION = [(-65536, 65536), (-65536, 65536)]  # large enough that crops rarely share windows
SCALE_TARGET = m.Target(1.7, "x one process", at_least=True)
DASK_TARGET = m.Target(1.3, "x one read")


def smooth_noise(ctx):
    """About a millisecond of work per window: noise, blurred."""
    g = torch.Generator().manual_seed((ctx[0] * 1_000_003 + ctx[1] * 7_919 + 17) & 0x7FFFFFFF)
    x = torch.rand(1, 1, WINDOW + 8, WINDOW + 8, generator=g)
    return F.avg_pool2d(x, 9, stride=1)[0, 0]


def world(store=None):
    return it.InfiniteTensor((None, None), smooth_noise, it.TensorWindow((WINDOW, WINDOW)), tile_store=store,
                             tensor_id="world")


def _crops_per_second(dataset, workers, epochs):
    """Crops per second over `epochs` epochs after an untimed first one (the
    workers' start-up: persistent workers keep going), each epoch new crops."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers,
                                         multiprocessing_context="fork" if workers else None,
                                         persistent_workers=workers > 0)
    dataset.set_epoch(0)
    for _ in loader:
        pass
    n, start = 0, time.perf_counter()
    for e in range(1, epochs + 1):
        dataset.set_epoch(e)
        n += sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - start)


def _world_rate(tmp, workers, repeat):
    """Crops/s into one writable HDF5 world: the workers compute the missing
    windows and hand them to this process, which stores them (a new file for
    each worker count, so that both runs compute the same windows)."""
    path = os.path.join(tmp, f"world{workers}.h5")
    with it.HDF5TileStore(path, mode="w", tile_size=WINDOW, compression=None, cache_size_bytes=64 << 20) as store:
        data = RandomCrops(world(store), (CROP, CROP), region=REGION, length=CROPS, seed=1)
        return _crops_per_second(data, workers, repeat)


def w16_dataloader_workers(repeat):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rates = {workers: _world_rate(tmp, workers, repeat) for workers in (0, 2)}
    ratio = rates[2] / rates[0]
    rows.append(m.Row(f"{CROPS} random {CROP}x{CROP} crops per epoch in batches of {BATCH}, one writable HDF5 "
                      "world (workers compute, this process stores): 2 workers vs 1 process", runs=repeat,
                      value=ratio, target=SCALE_TARGET,
                      note=f"{rates[0]:.1f} crops/s in one process, {rates[2]:.1f} with 2 workers (fork, "
                           f"persistent; {repeat} epochs after a first one)"))
    for label in ("memory store, workers compute", "HDF5 file read-only, workers read"):
        with tempfile.TemporaryDirectory() as tmp:
            store = None
            if label.startswith("HDF5"):
                path = os.path.join(tmp, "world.h5")
                with it.HDF5TileStore(path, mode="w", tile_size=512, compression=None) as filler:
                    crops = RandomCrops(world(filler), (CROP, CROP), region=REGION, length=CROPS, seed=1)
                    for e in range(repeat + 1):
                        crops.set_epoch(e)
                        for _ in crops:
                            pass
                # a cache far smaller than the world: crops are read from the file
                store = it.HDF5TileStore(path, mode="r", tile_size=512, cache_size_bytes=16 << 20)
            rates = {}
            for workers in (0, 2):
                data = RandomCrops(world(store), (CROP, CROP), region=REGION, length=CROPS, seed=1)
                rates[workers] = _crops_per_second(data, workers, repeat)
            if store is not None:
                store.close()
        ratio = rates[2] / rates[0]
        computing = label.startswith("memory")
        rows.append(m.Row(f"{CROPS} random {CROP}x{CROP} crops per epoch in batches of {BATCH}, {label}: "
                          "2 workers vs 1 process", runs=repeat, value=ratio,
                          # reading stored crops costs less than sending them to the main process
                          target=SCALE_TARGET if computing else None,
                          text=None if computing else f"{ratio:.2f}x one process",
                          note=f"{rates[0]:.1f} crops/s in one process, {rates[2]:.1f} with 2 workers (fork, "
                               f"persistent; {repeat} epochs after a first one)"))
    return rows


def w17_dask_cluster(repeat):
    try:
        import distributed
    except ImportError:
        return [m.Row("to_dask on a LocalCluster", text="skipped: dask.distributed is not installed")]
    side = 8192
    region = (slice(0, side), slice(0, side))

    def one_read():
        t = world()
        return m.stopwatch(lambda: t[region])

    single = m.median(m.timed_runs(one_read, repeat))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        def run():
            arr = world().to_dask(region, chunks=2048)
            start = time.perf_counter()
            client.compute(arr.sum()).result()
            return time.perf_counter() - start

        run()  # warm the workers (imports)
        cluster_time = m.median([run() for _ in range(repeat)])
    return [m.Row(f"to_dask {side}x{side}, chunks 2048, 2-process LocalCluster vs one read", time=cluster_time,
                  runs=repeat, value=cluster_time / single, target=DASK_TARGET,
                  note=f"one read in one process: {m.fmt_seconds(single)}")]
