"""Reads of tensors whose windows never overlap write each window's pixels
into the result as the window is added, and skip those tiles when they
assemble the rest (assemble.c, "Writing through").  Every shape of read that
mixes written-through pixels with copied ones, fill values, cached windows
and other threads' windows must give what plain torch gives."""
import threading

import pytest
import torch

import infinite_tensor as it
from reference import RefTensor, Win


def window_values(size):
    def f(ctx):
        g = torch.Generator().manual_seed(hash(tuple(ctx)) & 0x7FFFFFFF)
        return torch.randint(-50, 50, size, generator=g).to(torch.float64)
    return f


# (shape, window size, stride, offset): disjoint windows, with and without gaps
GEOMETRIES = [
    ((None, None), (16, 16), (16, 16), (0, 0)),
    ((None, None), (16, 8), (20, 8), (3, -5)),      # gaps along dim 0
    ((3, None, None), (3, 8, 8), (3, 8, 8), (0, 0, 0)),
    ((40, None), (10, 12), (10, 12), (0, 2)),       # a finite dim: reads past it are filled
    ((None,), (7,), (9,), (1,)),
]

BOXES = [(-37, 41), (0, 64), (5, 6), (-100, -3), (13, 200)]


def pair(shape, size, stride, offset, **kw):
    f = window_values(size)
    t = it.InfiniteTensor(shape, f, it.TensorWindow(size, stride=stride, offset=offset), dtype=torch.float64, **kw)
    ref = RefTensor(shape, f, Win(size, stride=stride, offset=offset), dtype=torch.float64)
    return t, ref


def index_for(shape, lo, hi):
    return tuple(slice(None) if s is not None else slice(lo + 3 * d, hi + 5 * d) for d, s in enumerate(shape))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[1])) + f"s{g[2]}")
def test_cold_warm_and_partly_cached_reads_agree_with_plain_torch(geometry):
    t, ref = pair(*geometry)
    for lo, hi in BOXES:  # each read after the others: partly cached, partly cold
        index = index_for(geometry[0], lo, hi)
        torch.testing.assert_close(t[index], ref[index], rtol=0, atol=0)
    for lo, hi in BOXES:  # all warm now
        index = index_for(geometry[0], lo, hi)
        torch.testing.assert_close(t[index], ref[index], rtol=0, atol=0)


@pytest.mark.parametrize("step", [2, 3])
def test_strided_reads_of_disjoint_windows(step):
    t, ref = pair((None, None), (16, 16), (16, 16), (0, 0))
    index = (slice(-30, 70, step), slice(5, 90, 1))
    torch.testing.assert_close(t[index], ref[index], rtol=0, atol=0)


def test_a_bounded_cache_evicting_during_the_read():
    t, ref = pair((None, None), (16, 16), (16, 16), (0, 0), tile_store=it.MemoryTileStore(cache_size_bytes=8192))
    index = (slice(-64, 200), slice(-7, 150))
    torch.testing.assert_close(t[index], ref[index], rtol=0, atol=0)
    torch.testing.assert_close(t[index], ref[index], rtol=0, atol=0)


def test_threads_writing_through_the_same_tiles():
    t, ref = pair((None, None), (16, 16), (16, 16), (0, 0))
    boxes = [(y, x) for y in range(-64, 64, 24) for x in range(-64, 64, 40)]
    errors = []

    def worker(k):
        for y, x in boxes[k::3] + boxes[::-1][k::3]:
            index = (slice(y, y + 90), slice(x, x + 70))
            if not torch.equal(t[index], ref[index]):
                errors.append((y, x))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
