"""The engine sized from free memory (issue 19): cache_size_bytes="auto" and
fractions, batch_size="auto", the memory check before large reads, and
t.plan(region).  Memory figures are injected with
infinite_tensor.memory.override_info, so the numbers are known; values are
checked against the plain-torch reference (tests/reference.py)."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _sizing
from infinite_tensor.memory import override_info
from infinite_tensor.utils import sl
from reference import RefTensor, Win

GiB, MiB = 2**30, 2**20


def _f(ctx):
    """A window whose values depend on where it is."""
    y, x = ctx
    g = torch.arange(64 * 64, dtype=torch.float32).view(64, 64)
    return g * 0.001 + y * 7 + x * 3


def _tensor(store=None, **kw):
    return it.InfiniteTensor((None, None), _f, it.TensorWindow((64, 64), (32, 32)),
                             tile_store=store, **kw)


def _ref():
    return RefTensor((None, None), lambda ctx: _f(ctx), Win((64, 64), (32, 32)))


# -- cache_size_bytes ------------------------------------------------------------
@pytest.mark.parametrize("spec, want", [("auto", 1 * GiB), (0.5, 2 * GiB), (1.0, 4 * GiB), (0.1, int(0.4 * GiB)),
                                        (12345, 12345), (None, None), (0, 0)])
def test_memory_store_cache_size_from_free_memory(spec, want):
    with override_info(cpu=4 * GiB):
        store = it.MemoryTileStore(cache_size_bytes=spec)
    assert store._cache_size_bytes == want
    limit = store._cache.info()["byte_limit"]
    assert limit == (-1 if want is None else want)


def test_hdf5_store_cache_size_from_free_memory(tmp_path):
    with override_info(cpu=8 * GiB):
        store = it.HDF5TileStore(tmp_path / "a.h5", cache_size_bytes="auto")
    try:
        assert store._cache.info()["byte_limit"] == 2 * GiB
    finally:
        store.close()
    with override_info(cpu=8 * GiB):
        store = it.HDF5TileStore(tmp_path / "b.h5", cache_size_bytes=0.75)
    try:
        assert store._cache.info()["byte_limit"] == 6 * GiB
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["big", "AUTO", 1.5, 0.0, -0.25, -1, True, [1]])
def test_bad_cache_sizes_are_refused(bad, tmp_path):
    with pytest.raises(it.ValidationError, match="or 'auto', or a fraction"):
        it.MemoryTileStore(cache_size_bytes=bad)
    with pytest.raises(it.ValidationError):
        it.HDF5TileStore(tmp_path / "x.h5", cache_size_bytes=bad)


def test_pickled_auto_store_sizes_itself_where_it_lands():
    with override_info(cpu=4 * GiB):
        store = it.MemoryTileStore(cache_size_bytes="auto")
    data = pickle.dumps(store)
    with override_info(cpu=16 * GiB):
        copy = pickle.loads(data)
    assert copy._cache_size_bytes == 4 * GiB
    assert copy._cache.info()["byte_limit"] == 4 * GiB
    # a limit set by hand afterwards travels as that number
    store._cache_size_bytes = 1000
    with override_info(cpu=16 * GiB):
        assert pickle.loads(pickle.dumps(store))._cache_size_bytes == 1000


def test_auto_cache_evicts_to_its_size_and_reads_right():
    with override_info(cpu=4 * MiB):
        store = it.MemoryTileStore(cache_size_bytes="auto")  # 1 MiB
    t = _tensor(store)
    ref = _ref()
    for y0, x0 in [(0, 0), (512, -256), (-700, 300)]:
        key = sl[y0:y0 + 600, x0:x0 + 500]
        got = t[key]
        assert torch.allclose(got, ref[key], rtol=0, atol=1e-3)
        assert store._cache.info()["bytes"] <= 1 * MiB


# -- the check before large reads --------------------------------------------------
def test_a_read_that_cannot_fit_is_refused_before_f_runs():
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(64, 64)
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((64, 64), (32, 32)))
    key = sl[0:8192, 0:4096]  # 128 MiB of float32
    with override_info(cpu=100 * MiB):
        with pytest.raises(MemoryError, match=r"this read needs at least .* are available on cpu") as ei:
            t[key]
        est = t._node.read_estimate(key)
        assert f"{8192 * 4096 * 4} for the result" in str(ei.value)
        assert f"{est['needed']} bytes" in str(ei.value)
        with pytest.raises(MemoryError):
            t[[sl[0:16, 0:16], key]]  # in a list too
        plan = t.plan(key)
        assert plan.fits is False and plan.available_bytes == 100 * MiB
    assert calls == []
    # with the memory there, the same read runs (and a small one never asks)
    with override_info(cpu=64 * GiB):
        assert torch.equal(t[sl[0:2048, 0:2048]], torch.full((2048, 2048), 4.0))
    with override_info(cpu=1):
        assert torch.equal(t[0:64, 0:64], torch.full((64, 64), 4.0))  # below PROBE_MIN_BYTES


def test_the_check_can_be_turned_off(monkeypatch):
    t = _tensor()
    key = sl[0:4096, 0:4096]  # 64 MiB
    monkeypatch.setenv("INFINITE_TENSOR_MEMORY_CHECK", "0")
    _sizing.install()
    try:
        with override_info(cpu=1 * MiB):
            assert t[key].shape == (4096, 4096)
    finally:
        monkeypatch.delenv("INFINITE_TENSOR_MEMORY_CHECK")
        _sizing.install()
    with override_info(cpu=1 * MiB):
        with pytest.raises(MemoryError):
            t[sl[0:4096, 4096:8192]]


def _tiles_touched(start, stop, step, tile):
    """Tiles along one dim holding a sampled coordinate (brute force)."""
    return len({math.floor(c / tile) for c in range(start, stop, step)})


@pytest.mark.parametrize("key", [sl[0:100, 0:100], sl[-130:70, 5:6], sl[0:1000:300, -64:64:7],
                                 sl[3:4, -1000:1000:1], sl[10:10, 0:5]])
def test_read_estimate_against_brute_force(key):
    t = _tensor()
    node = t._node
    ty, tx = node.tile_shape
    est = node.read_estimate(key)
    (y, x) = key
    ny, nx = len(range(y.start, y.stop, y.step or 1)), len(range(x.start, x.stop, x.step or 1))
    assert est["result_bytes"] == ny * nx * 4
    tiles = _tiles_touched(y.start, y.stop, y.step or 1, ty) * _tiles_touched(x.start, x.stop, x.step or 1, tx)
    assert est["tiles"] == tiles
    assert est["tile_bytes"] == tiles * ty * tx * 4
    assert est["batch_bytes"] == 64 * 64 * 4 * min(1, len(_ref().windows_for(key)))  # unbatched: one window
    assert est["cached_bytes"] == 0
    assert est["needed"] == est["result_bytes"] + (est["tile_bytes"] + est["batch_bytes"] if tiles else 0)
    # reading it caches its tiles: then nothing beyond the result is needed
    if tiles:
        t[key]
        again = node.read_estimate(key)
        assert again["cached_bytes"] >= again["tile_bytes"]
        assert again["needed"] == again["result_bytes"]


def test_a_huge_batch_size_counts_only_the_windows_a_read_meets():
    def f(ctxs):
        return torch.stack([_f(c) for c in ctxs])
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((64, 64), (32, 32)), batch_size=2**62)
    est = t._node.read_estimate(sl[0:8, 0:8])  # 4 windows meet it
    assert est["batch_bytes"] == 4 * 64 * 64 * 4
    with override_info(cpu=1 * GiB):
        assert torch.allclose(t[0:8, 0:8], _ref()[0:8, 0:8], rtol=0, atol=1e-3)


# -- plan ----------------------------------------------------------------------
def _counting(fn, log):
    def f(ctx, *args):
        log.append(ctx)
        return fn(ctx, *args)
    return f


def test_plan_counts_what_the_read_computes_in_a_pipeline():
    log_a, log_b, log_c = [], [], []
    a = it.InfiniteTensor((None, None), _counting(_f, log_a), it.TensorWindow((64, 64), (32, 32)))
    b = it.InfiniteTensor((None, None), _counting(lambda ctx, x: x[16:32, 16:32] * 2, log_b), it.TensorWindow((16, 16)),
                          args=[a], args_windows=[it.TensorWindow((48, 48), (16, 16), (-16, -16))])
    # c reads a directly and through b (a diamond)
    c = it.InfiniteTensor((None, None), _counting(lambda ctx, x, y: x + y[:32, :32], log_c),
                          it.TensorWindow((32, 32)), args=[b, a],
                          args_windows=[it.TensorWindow((32, 32)), it.TensorWindow((64, 64), (32, 32))])
    key = sl[-40:100, 0:130]
    plan = c.plan(key)
    assert [p.tensor_id for p in plan.tensors] == [c.uuid, b.uuid, a.uuid]
    assert log_a == log_b == log_c == []  # planning computes nothing
    c[key]
    counts = {c.uuid: len(log_c), b.uuid: len(log_b), a.uuid: len(log_a)}
    assert {p.tensor_id: p.windows for p in plan.tensors} == counts
    assert plan.windows == sum(counts.values()) and plan.f_calls == plan.windows  # unbatched
    assert plan.result_bytes == 140 * 130 * 4
    assert str(plan).startswith(f"read plan: {plan.windows} windows in {plan.f_calls} f calls")
    after = c.plan(key)
    assert after.windows == 0 and after.f_calls == 0
    assert after.needed_bytes == after.result_bytes


def test_plan_counts_batches():
    seen = []

    def f(ctxs):
        seen.append(len(ctxs))
        return torch.stack([_f(c) for c in ctxs])
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((64, 64), (32, 32)), batch_size=7)
    plan = t.plan(sl[0:300, 0:200])
    t[0:300, 0:200]
    assert plan.windows == sum(seen) and plan.f_calls == len(seen) == math.ceil(sum(seen) / 7)
    assert plan.tensors[0].batch_bytes == 7 * 64 * 64 * 4


# -- batch_size="auto" -------------------------------------------------------------
@pytest.mark.parametrize("avail, want", [(4 * MiB, 21), (64 * MiB, 341), (64 * GiB, 4096), (100, 1)])
def test_auto_batch_size_from_free_memory(avail, want):
    # one window: a 64x64 float32 output (16 KiB) and a 64x64 float64 arg (32 KiB)
    src = it.InfiniteTensor((None, None), lambda ctx: torch.ones(64, 64, dtype=torch.float64),
                            it.TensorWindow((64, 64)), dtype=torch.float64)
    sizes = []

    def f(ctxs, xs):
        sizes.append(len(ctxs))
        return torch.stack([x.float() * 2 for x in xs])
    with override_info(cpu=avail):
        t = it.InfiniteTensor((None, None), f, it.TensorWindow((64, 64)), args=[src],
                              args_windows=[it.TensorWindow((64, 64))], batch_size="auto")
        assert t.batch_size == "auto"
        per = 64 * 64 * 4 + 64 * 64 * 8
        assert want == max(1, min(4096, int(avail * 0.25) // per))
        assert t._callbacks()[2] == want
        got = t[0:64 * 80, 0:64]  # 80 windows
    assert torch.equal(got, torch.full((64 * 80, 64), 2.0))
    assert max(sizes) == min(want, 80) and sum(sizes) == 80


def test_bad_batch_size_strings_are_refused():
    for bad in ("Auto", "max", ""):
        with pytest.raises(it.ValidationError, match="'auto'"):
            _tensor(batch_size=bad)


def test_auto_batch_reads_equal_the_reference():
    def f(ctxs):
        return torch.stack([_f(c) for c in ctxs])
    with override_info(cpu=2 * MiB):  # room for a batch of 32 windows
        t = it.InfiniteTensor((None, None), f, it.TensorWindow((64, 64), (32, 32)), batch_size="auto")
        assert t._callbacks()[2] == 32
        ref = _ref()
        for key in (sl[0:200, 0:300], sl[-333:-100, 17:50]):
            assert torch.allclose(t[key], ref[key], rtol=0, atol=1e-3)


def test_windows_of_the_plan_match_the_reference_windows():
    t = _tensor()
    ref = _ref()
    for key in (sl[0:64, 0:64], sl[-5:70, 3:200], sl[1000:1001, -7:-6]):
        assert t.plan(key).windows == len(ref.windows_for(key))
