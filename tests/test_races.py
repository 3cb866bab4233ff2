"""Regressions for races and re-entrancy found in review: each used to crash
the interpreter or return wrong values; now each either works or raises
TileAccessError (and a later read gives the right values)."""
import threading
import time

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import TensorWindow


def test_f_replacing_its_own_f_while_running():
    def g(ctx):
        return torch.full((8,), 2.0)

    def f(ctx):
        t._f = g  # re-registration from inside f: the running call keeps its state
        junk = [bytearray(64) for _ in range(2000)]  # reuse freed memory if any
        del junk
        return torch.ones(8)

    t = it.InfiniteTensor((None,), f, TensorWindow((8,)))
    r = t[0:64]
    assert r[:8].tolist() == [1.0] * 8 and r[8:].eq(2).all()


def test_dtype_change_converts_values_waiting_for_a_custom_blend():
    def blend(a, b):
        return a * 0.5 + b

    def f(ctx):
        return torch.full((8,), float(ctx[0] + 1), dtype=t.dtype)

    t = it.InfiniteTensor((None,), f, TensorWindow((8,), (4,)), blend=blend)
    t[0:8]  # leaves parts of straddling windows waiting on neighbouring tiles
    t.to(torch.float64)
    fresh = it.InfiniteTensor((None,), lambda c: torch.full((8,), float(c[0] + 1), dtype=torch.float64),
                              TensorWindow((8,), (4,)), dtype=torch.float64, blend=blend)
    assert torch.equal(t[8:16], fresh[8:16])


def test_upstream_cleared_while_another_upstream_computes():
    w = TensorWindow((8,))
    a0 = it.InfiniteTensor((None,), lambda c: torch.ones(8), w)
    cleared = []

    def fa1(ctx):
        if not cleared:
            cleared.append(1)
            a0.clear_cache()
        return torch.ones(8)

    a1 = it.InfiniteTensor((None,), fa1, w)
    t = it.InfiniteTensor((None,), lambda c, x, y: x + y, w, args=(a0, a1), args_windows=(w, w))
    with pytest.raises(it.TileAccessError, match="cleared during the read"):
        t[0:8]
    assert t[0:8].tolist() == [2.0] * 8  # nothing wrong was cached


def test_two_threads_completing_the_same_custom_blend_tiles():
    def f(ctx):
        time.sleep(0.002)
        return torch.full((8,), float(ctx[0] + 1))

    def blend(a, b):
        time.sleep(0.01)  # releases the GIL in the middle of combining
        return a * 0.5 + b

    ref = it.InfiniteTensor((None,), f, TensorWindow((8,), (4,)), blend=blend)[8:16]
    for _ in range(4):
        t = it.InfiniteTensor((None,), f, TensorWindow((8,), (4,)), blend=blend)
        t[0:8]
        results, errors = [], []

        def read():
            try:
                results.append(t[8:16])
            except it.TileAccessError as e:
                errors.append(e)

        threads = [threading.Thread(target=read) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []  # the second reader waits for the first to complete the tiles
        assert len(results) == 2 and all(torch.equal(r, ref) for r in results)
        assert torch.equal(t[8:16], ref)  # a read after the race is right
        t._store._cache.check()


def test_dtype_change_while_another_thread_reads():
    def f(ctx):
        time.sleep(0.001)
        return torch.ones(16, 16, dtype=t.dtype)

    t = it.InfiniteTensor((None, None), f, TensorWindow((16, 16)))
    t[0:64, 0:64]
    stop = []

    def reader():
        while not stop:
            try:
                t[0:96, 0:96]
            except (it.TileAccessError, it.DtypeMismatchError):
                pass

    th = threading.Thread(target=reader)
    th.start()
    try:
        for dtype in (torch.float64, torch.float32, torch.float64):
            try:
                t.to(dtype)
            except it.TileAccessError:
                pass
    finally:
        stop.append(1)
        th.join()
    t._store._cache.check()
    assert t[0:32, 0:32].eq(1).all()
