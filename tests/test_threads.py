"""Several Python threads reading one pipeline get the single-threaded values.

f calls torch ops, which release the GIL, so the threads really interleave
inside reads (and inside the core between callbacks).  Window values are
integers, so sums are exact whatever order the windows were added in (float
sums of overlapping windows follow the order windows were computed, which
depends on the history of reads, and may differ in the last bit)."""
import threading

import pytest
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


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2", None])
def test_set_num_threads_rejects_bad_counts(bad):
    before = it.get_num_threads()
    with pytest.raises(it.ValidationError):
        it.set_num_threads(bad)
    assert it.get_num_threads() == before


def test_large_reads_agree_whatever_the_thread_count():
    """A read big enough to go to the pool (1 MiB float32), with steps and an
    unaligned start, equals plain torch with 1, 2 and 4 threads."""
    g = torch.Generator().manual_seed(3)
    win = torch.randn(40, 24, generator=g)

    def f(ctx):
        return win * (ctx[0] - 2 * ctx[1])

    ref = torch.zeros(620, 620)
    for i in range(-7, 40):
        for j in range(-8, 60):
            y, x = i * 16 - 5, j * 11 - 3
            ys, xs = max(y, -50), max(x, -50)
            ye, xe = min(y + 40, 570), min(x + 24, 570)
            if ys < ye and xs < xe:
                ref[ys + 50:ye + 50, xs + 50:xe + 50] += f((i, j))[ys - y:ye - y, xs - x:xe - x]
    old = it.get_num_threads()
    try:
        for n in (1, 2, 4):
            it.set_num_threads(n)
            t = it.InfiniteTensor((None, None), f, it.TensorWindow((40, 24), stride=(16, 11), offset=(-5, -3)))
            torch.testing.assert_close(t[-50:570, -50:570], ref)
            torch.testing.assert_close(t[-49:570:3, -50:569:2], ref[1::3, 0:619:2])
    finally:
        it.set_num_threads(old)


def _large_read_sum(_):
    t = it.InfiniteTensor((None, None), lambda c: torch.ones(64, 64) * (c[0] + 1), it.TensorWindow((64, 64)))
    r = t[0:512, 0:512]  # 1 MiB: assembled by the copy threads
    # summed in Python: a torch reduction this large would use OpenMP, whose
    # threads GNU libgomp does not support across fork (a torch limit, not ours)
    return sum(map(sum, r.tolist()))


def test_a_forked_child_gets_working_copy_threads():
    """The parent's copy workers exist when it forks; the child must start
    its own (none of the parent's threads or locks carry over)."""
    import multiprocessing

    old = it.set_num_threads(2)
    try:
        expected = _large_read_sum(None)  # workers running in the parent now
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(_large_read_sum, range(4)) == [expected] * 4
    finally:
        it.set_num_threads(old)
    assert expected == 64 * 512 * sum(range(1, 9))


def test_large_copies_with_the_gil_released_meet_clears_trims_and_conversions():
    """Reads of 2 MiB copy out of their pinned tiles with the GIL released
    (assemble.c): other threads read, clear the cache, trim it under a small
    budget and convert the dtype meanwhile, and every read still returns the
    values plain torch computes."""
    W = 64

    def f(ctx):
        y, x = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                              indexing="ij")
        return (ctx[0] * 1000 + ctx[1]) + y * 0.5 + x * 0.25

    def expected(y0, x0, n):
        y, x = torch.meshgrid(torch.arange(y0, y0 + n), torch.arange(x0, x0 + n), indexing="ij")
        return ((y.div(W, rounding_mode="floor") * 1000 + x.div(W, rounding_mode="floor")).double()
                + (y % W) * 0.5 + (x % W) * 0.25)

    store = it.MemoryTileStore(cache_size_bytes=6 << 20)
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((W, W)), dtype=torch.float64, tile_store=store)
    n = 512  # 2 MiB of float64 per read: well above the size that releases the GIL
    errors, stop = [], threading.Event()

    def reader(k):
        try:
            for i in range(12):
                y0, x0 = (k * 37 + i * 101) % 900 - 450, (k * 53 + i * 29) % 700 - 350
                try:
                    got = t[y0:y0 + n, x0:x0 + n]
                except (it.TileAccessError, it.DtypeMismatchError):
                    continue  # a clear or a conversion met this read: documented, read again
                want = expected(y0, x0, n).to(got.dtype)
                if not torch.equal(got, want):
                    errors.append((k, y0, x0, (got.double() - want.double()).abs().max().item()))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def meddler():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    t.clear_cache()
                elif i % 3 == 1:
                    store._cache.trim()
                else:
                    t.to(torch.float32 if t.dtype == torch.float64 else torch.float64)
            except it.TileAccessError:
                pass  # a conversion while a read holds tiles is refused: documented

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    other = threading.Thread(target=meddler)
    other.start()
    for th in readers:
        th.start()
    for th in readers:
        th.join()
    stop.set()
    other.join()
    assert errors == []
    store._cache.check()
    assert store.cache_info()["pinned"] == 0
    t.to(torch.float64)
    assert torch.equal(t[-100:412, 30:542], expected(-100, 30, n))


def test_threads_reading_an_hdf5_store_while_another_writes_it(tmp_path):
    """HDF5 tiles load with the GIL released, under the store's own lock:
    readers of a reopened file over a 4-tile cache reload tiles all the
    time, while another thread computes and stores new windows of a second
    tensor of the same file.  Every value is the one plain torch computes,
    no stored window is computed again, and the second tensor's windows are
    in the file afterwards."""
    W = 16

    def f(ctx):
        y, x = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                              indexing="ij")
        return (ctx[0] * 100 + ctx[1]) + y * 0.5 + x * 0.25

    def expected(y0, x0, n):
        y, x = torch.meshgrid(torch.arange(y0, y0 + n), torch.arange(x0, x0 + n), indexing="ij")
        return ((y.div(W, rounding_mode="floor") * 100 + x.div(W, rounding_mode="floor")).double()
                + (y % W) * 0.5 + (x % W) * 0.25)

    path = tmp_path / "t.h5"
    with it.HDF5TileStore(path, tile_size=32) as store:
        t = it.InfiniteTensor((None, None), f, it.TensorWindow((W, W)), dtype=torch.float64, tile_store=store,
                              tensor_id="base")
        t[-128:128, -128:128]

    calls = []

    def counting(ctx):
        calls.append(ctx)
        return f(ctx)

    errors = []
    with it.HDF5TileStore(path, tile_size=32, cache_size_tiles=4) as store:
        t = it.InfiniteTensor((None, None), counting, it.TensorWindow((W, W)), dtype=torch.float64,
                              tile_store=store, tensor_id="base")
        other = it.InfiniteTensor((None, None), f, it.TensorWindow((W, W)), dtype=torch.float64,
                                  tile_store=store, tensor_id="other")

        def reader(k):
            try:
                for i in range(30):
                    y0, x0 = (k * 37 + i * 53) % 200 - 128, (k * 71 + i * 29) % 200 - 128
                    got = t[y0:y0 + 56, x0:x0 + 56]
                    if not torch.equal(got, expected(y0, x0, 56)):
                        errors.append((k, y0, x0))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        def writer():
            try:
                for i in range(20):
                    if not torch.equal(other[i * 40:i * 40 + 40, 0:40], expected(i * 40, 0, 40)):
                        errors.append(("other", i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)] + [threading.Thread(target=writer)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert calls == []  # every window of t came from the file
        store._cache.check()
    with it.HDF5TileStore(path, tile_size=32, mode="r") as store:
        other = it.InfiniteTensor((None, None), f, it.TensorWindow((W, W)), dtype=torch.float64, tile_store=store,
                                  tensor_id="other")
        assert torch.equal(other[0:800, 0:40], expected(0, 0, 800)[:, :40])
