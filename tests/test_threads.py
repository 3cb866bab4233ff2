"""Several Python threads reading one pipeline get the single-threaded values.

f calls torch ops, which release the GIL, so the threads really interleave
inside reads (and inside the core between callbacks).  Window values are
integers, so sums are exact whatever order the windows were added in (float
sums of overlapping windows follow the order windows were computed, which
depends on the history of reads, and may differ in the last bit)."""
import threading

import torch

import infinite_tensor as it


def build(store):
    def noise(ctx):
        g = torch.Generator().manual_seed((ctx[0] * 7919 + ctx[1]) & 0x7FFFFFFF)
        x = torch.randint(-8, 8, (16, 16), generator=g).to(torch.float64)
        return x @ x.T  # a torch op that releases the GIL; exact integers

    base = it.InfiniteTensor((None, None), noise, it.TensorWindow((16, 16), stride=(8, 8)),
                             dtype=torch.float64, tile_store=store)
    smooth = it.InfiniteTensor(
        (None, None), lambda c, x: x[:-2, :-2] + x[2:, 2:] - x[1:-1, 1:-1],
        it.TensorWindow((16, 16)), args=(base,),
        args_windows=(it.TensorWindow((18, 18), stride=(16, 16), offset=(-1, -1)),),
        dtype=torch.float64, tile_store=store)
    return smooth


def test_threads_reading_overlapping_regions_agree_with_one_thread():
    boxes = [(y, x) for y in range(-40, 40, 13) for x in range(-40, 40, 17)]
    expected = {}
    serial = build(it.MemoryTileStore())
    for y, x in boxes:
        expected[(y, x)] = serial[y:y + 30, x:x + 30]

    for limit in (None, 200_000):  # unbounded, and with eviction pressure
        shared = build(it.MemoryTileStore(cache_size_bytes=limit))
        errors = []

        def worker(k):
            try:
                for y, x in boxes[k::4] + boxes[::-1][k::4]:
                    got = shared[y:y + 30, x:x + 30]
                    if not torch.equal(got, expected[(y, x)]):
                        errors.append(((y, x), (got - expected[(y, x)]).abs().max().item()))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        shared._store._cache.check()
        assert shared._store.cache_info()["pinned"] == 0
