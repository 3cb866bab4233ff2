"""Float sums fold in window order: every read gives the same bits whatever
was read before (issue 15, "values independent of read history").

The reference is the 0.3/0.4 memory store's own algorithm in plain torch:
start from zeros (or blend_init) and add each window covering the region in
lexicographic window order.  Reads must equal it with torch.equal (bit for
bit, signed zeros aside), after any history of reads, on every store.
"""
import os
import random
import threading

import pytest
import torch

import infinite_tensor as it

W, S = 8, 4  # 2-D windows at half overlap: four windows on every pixel


def window_values(idx, dtype=torch.float32, channels=2):
    """Deterministic values with a wide spread of magnitudes, so that the
    order of additions shows in the last bits."""
    g = torch.Generator().manual_seed(hash(idx) & 0xFFFFFFFF)
    scale = 10.0 ** torch.randint(-3, 4, (1,), generator=g).item()
    v = torch.randn(channels, W, W, generator=g, dtype=torch.float64) * scale
    if dtype.is_complex:
        v = torch.complex(v, torch.randn(channels, W, W, generator=g, dtype=torch.float64))
    return v.to(dtype)


def lex_fold(box, dtype=torch.float32, init=0.0, fn=window_values):
    """Plain torch: the windows covering box added in lexicographic order."""
    (r0, r1), (c0, c1) = box
    out = torch.full((2, r1 - r0, c1 - c0), init, dtype=dtype)
    for i in range((r0 - W) // S, r1 // S + 1):
        for j in range((c0 - W) // S, c1 // S + 1):
            y, x = i * S, j * S
            a0, a1, b0, b1 = max(y, r0), min(y + W, r1), max(x, c0), min(x + W, c1)
            if a0 < a1 and b0 < b1:
                out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += fn((0, i, j), dtype)[:, a0 - y:a1 - y, b0 - x:b1 - x]
    return out


def make(store=None, dtype=torch.float32, tid="t", calls=None, **kw):
    def f(ctx):
        if calls is not None:
            calls.append(ctx)
        return window_values(ctx, dtype)

    extra = {} if store is None else {"tile_store": store, "tensor_id": tid}
    return it.InfiniteTensor((2, None, None), f, it.TensorWindow((2, W, W), stride=(2, S, S)), dtype=dtype,
                             **extra, **kw)


def random_boxes(rng, n, span=40, size=24):
    out = []
    for _ in range(n):
        r0, c0 = rng.randrange(-span, span), rng.randrange(-span, span)
        out.append(((r0, r0 + rng.randrange(1, size)), (c0, c0 + rng.randrange(1, size))))
    return out


def read(t, box):
    (r0, r1), (c0, c1) = box
    return t[:, r0:r1, c0:c1]


@pytest.mark.parametrize("seed", range(6))
def test_any_history_gives_the_lexicographic_fold_bit_for_bit(seed):
    rng = random.Random(seed)
    t = make()
    for box in random_boxes(rng, 10):
        assert torch.equal(read(t, box), lex_fold(box)), box


def test_the_order_of_additions_shows_in_these_values():
    """The checks here can fail: adding the same values in another order
    changes the last bits of some sums."""
    differ = 0
    for k in range(100):
        v = [window_values((0, k, j))[0, 0] for j in range(4)]
        differ += not torch.equal(((v[0] + v[1]) + v[2]) + v[3], ((v[3] + v[1]) + v[0]) + v[2])
    assert differ > 0


@pytest.mark.parametrize("kind", ["memory-evicting", "hdf5-evicting", "hdf5-reopened"])
@pytest.mark.parametrize("seed", range(3))
def test_stores_eviction_and_reopening_keep_the_order(tmp_path, kind, seed):
    rng = random.Random(100 + seed)
    path = os.path.join(tmp_path, "w.h5")

    def open_store():
        if kind == "memory-evicting":
            return it.MemoryTileStore(cache_size_bytes=3000)
        if kind == "hdf5-evicting":
            return it.HDF5TileStore(path, tile_size=12, cache_size_bytes=3000)
        return it.HDF5TileStore(path, tile_size=10)

    store = open_store()
    t = make(store)
    for k, box in enumerate(random_boxes(rng, 12)):
        assert torch.equal(read(t, box), lex_fold(box)), (k, box)
        if kind == "hdf5-reopened" and k % 3 == 2:
            store.close()
            store = open_store()
            t = make(store)
    if kind != "memory-evicting":
        store.close()


def test_a_reopened_file_computes_no_window_twice_where_none_waited(tmp_path):
    """Windows waiting for earlier ones are not written; every other window
    is folded into the file and never computed again."""
    path = os.path.join(tmp_path, "w.h5")
    calls = []
    with it.HDF5TileStore(path, tile_size=16) as store:
        t = make(store, calls=calls)
        first = read(t, ((0, 32), (0, 32)))
    n = len(calls)
    with it.HDF5TileStore(path, tile_size=16) as store:
        t = make(store, calls=calls)
        assert torch.equal(read(t, ((0, 32), (0, 32))), first)
        assert len(calls) == n
        assert torch.equal(read(t, ((-8, 40), (-8, 40))), lex_fold(((-8, 40), (-8, 40))))
    # the second read computed each window at most once more (those whose
    # parts waited on the edge tiles) and never one inside the first read
    inside = {(0, i, j) for i in range(-1, 8) for j in range(-1, 8)}
    again = [c for c in calls[n:] if c in set(calls[:n])]
    assert len(again) == len(set(again))
    assert not [c for c in again if c in inside and all(1 <= x <= 6 for x in c[1:])]


def test_batched_list_reads_and_iter_regions_match():
    boxes = random_boxes(random.Random(7), 8)
    batched = it.InfiniteTensor((2, None, None), lambda cs: [window_values(c) for c in cs],
                                it.TensorWindow((2, W, W), stride=(2, S, S)), batch_size=5)
    got = batched[[(slice(None), slice(*r), slice(*c)) for r, c in boxes]]
    for box, g in zip(boxes, got):
        assert torch.equal(g, lex_fold(box))
    stream = it.InfiniteTensor((2, None, None), lambda cs: [window_values(c) for c in cs],
                               it.TensorWindow((2, W, W), stride=(2, S, S)), batch_size=3)
    regions = [(slice(None), slice(*r), slice(*c)) for r, c in boxes[::-1]]
    got = [g for batch in stream.iter_regions(regions) for g in batch]
    assert len(got) == len(boxes)
    for box, g in zip(boxes[::-1], got):
        assert torch.equal(g, lex_fold(box))


def test_threads_reading_overlapping_regions_get_the_same_bits():
    boxes = random_boxes(random.Random(11), 40, span=30)
    t = make()
    errors = []

    def worker(k):
        try:
            for box in boxes[k::4]:
                if not torch.equal(read(t, box), lex_fold(box)):
                    errors.append(box)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.complex64])
def test_other_floating_dtypes(dtype):
    rng = random.Random(3)
    t = make(dtype=dtype)
    for box in random_boxes(rng, 8):
        assert torch.equal(read(t, box), lex_fold(box, dtype)), box


def test_a_nonzero_fill_with_two_windows_per_pixel():
    """(f + a) + b need not equal (f + b) + a: with a fill two windows
    already need the order.  1-D windows at half overlap."""
    def vals(i):
        g = torch.Generator().manual_seed(i + 1000)
        return torch.randn(8, generator=g) * 10.0 ** (i % 5 - 2)

    def ref(a, b):
        out = torch.full((b - a,), 0.7)
        for i in range((a - 8) // 4, b // 4 + 1):
            lo, hi = max(i * 4, a), min(i * 4 + 8, b)
            if lo < hi:
                out[lo - a:hi - a] += vals(i)[lo - i * 4:hi - i * 4]
        return out

    t = it.InfiniteTensor((None,), lambda c: vals(c[0]), it.TensorWindow((8,), stride=(4,)), blend_init=0.7)
    rng = random.Random(5)
    for _ in range(20):
        a = rng.randrange(-60, 60)
        b = a + rng.randrange(1, 30)
        assert torch.equal(t[a:b], ref(a, b)), (a, b)


def test_weighted_mean_reads_do_not_depend_on_history():
    win = it.TensorWindow((2, W, W), stride=(2, S, S))
    boxes = random_boxes(random.Random(9), 10)
    walked = it.InfiniteTensor((2, None, None), window_values, win, blend="mean", weight="linear")
    for box in boxes:
        fresh = it.InfiniteTensor((2, None, None), window_values, win, blend="mean", weight="linear")
        assert torch.equal(read(walked, box), read(fresh, box)), box


def test_format_1_files_still_read_and_extend(tmp_path):
    """A file written before the fold counts (format 1) opens; its tensor
    keeps adding windows in arrival order, and its values stay right."""
    import shutil
    src = os.path.join(os.path.dirname(__file__), "data", "format1", "sum2d.h5")
    path = os.path.join(tmp_path, "old.h5")
    shutil.copy(src, path)
    calls = []
    with it.HDF5TileStore(path, tile_size=10) as store:
        t = make(store, tid="sum2d", calls=calls)
        # written by the format-1 writer after reading [0, 20) x [0, 20)
        assert torch.allclose(read(t, ((0, 20), (0, 20))), lex_fold(((0, 20), (0, 20))), rtol=1e-5, atol=1e-3)
        assert calls == []
        box = ((-10, 30), (5, 35))
        assert torch.allclose(read(t, box), lex_fold(box), rtol=1e-5, atol=1e-3)


def test_waiting_parts_are_only_those_on_the_edge_of_what_was_read():
    """After reading a square in 16 blocks, in a scrambled order, the parts
    still waiting are exactly those one read of the square leaves: the ones
    on its edge, waiting for windows outside it."""
    one = make()
    read(one, ((0, 64), (0, 64)))
    edge = one.stats()["waiting_bytes"]
    assert 0 < edge <= one.stats()["cached_bytes"]
    blocks = [((y, y + 16), (x, x + 16)) for y in range(0, 64, 16) for x in range(0, 64, 16)]
    random.Random(4).shuffle(blocks)
    t = make()
    peak = 0
    for box in blocks:
        read(t, box)
        peak = max(peak, t.stats()["waiting_bytes"])
    assert t.stats()["waiting_bytes"] == edge
    assert peak >= edge
    assert torch.equal(read(t, ((0, 64), (0, 64))), read(one, ((0, 64), (0, 64))))


def test_hdf5_eviction_computes_no_window_twice(tmp_path):
    """Parts waiting on a tile the cache writes and evicts are parked, and
    rejoin it when it is loaded again."""
    calls = []
    boxes = random_boxes(random.Random(21), 30)
    with it.HDF5TileStore(os.path.join(tmp_path, "e.h5"), tile_size=8, cache_size_bytes=0) as store:
        t = make(store, calls=calls)
        for box in boxes:
            assert torch.equal(read(t, box), lex_fold(box)), box
        assert t.stats()["cached_bytes"] == 0
    assert len(calls) == len(set(calls))


@pytest.mark.parametrize("stride", [W, S], ids=["disjoint", "overlapping"])
def test_negative_zeros_read_as_adding_into_zeros_gives(stride):
    """0.0 + -0.0 is +0.0: a window copied into a fresh tile is added to
    zeros too, so the sign of a zero does not depend on the history."""
    def f(ctx):
        v = window_values(ctx)
        v[:, ::2] = -0.0
        return v

    def ref(box):
        (r0, r1), (c0, c1) = box
        out = torch.zeros(2, r1 - r0, c1 - c0)
        for i in range((r0 - W) // stride, r1 // stride + 1):
            for j in range((c0 - W) // stride, c1 // stride + 1):
                y, x = i * stride, j * stride
                a0, a1, b0, b1 = max(y, r0), min(y + W, r1), max(x, c0), min(x + W, c1)
                if a0 < a1 and b0 < b1:
                    out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += f((0, i, j))[:, a0 - y:a1 - y, b0 - x:b1 - x]
        return out

    t = it.InfiniteTensor((2, None, None), f, it.TensorWindow((2, W, W), stride=(2, stride, stride)))
    for box in random_boxes(random.Random(8), 8):
        got, want = read(t, box), ref(box)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), box
    x = read(t, ((0, 8), (0, 8)))
    assert (x == 0).any() and not torch.signbit(x[x == 0]).any()
