"""Limits: reads far from the origin, huge regions, zero-size reads.

* Coordinates are int64 inside, and documented to lie within +-2**62
  (docs/architecture.md).  Reads well inside that range give the reference's
  values; anything past it raises IndexError naming the limit, before f is
  called, and never wraps around.
* A region too large to hold raises MemoryError at once: nothing computed,
  no memory taken.
* Zero-size reads return an empty tensor of the right shape and dtype
  without calling f.
After each failure the store is checked (tests/_health.py).
"""

from __future__ import annotations


import pytest
import torch

import infinite_tensor as it
from _health import BOX, StoreEnv
from infinite_tensor import InfiniteTensor, TensorWindow
from pairs import Win, assert_same, make

S = slice
E62 = 2**62


@pytest.fixture(params=["memory", "hdf5"])
def env(request, tmp_path):
    e = StoreEnv(request.param, tmp_path)
    yield e
    e.close()


def _far_pure(ctx):
    # values from ctx modulo a prime: exact in float64 wherever ctx lies
    return (torch.full((6, 5), float(ctx[0] % 1009 - 3 * (ctx[1] % 13)), dtype=torch.float64)
            + torch.arange(30, dtype=torch.float64).reshape(6, 5))


FAR_WIN = Win((6, 5), (4, 3), (-1, 2))


def _far(env, tensor_id="far"):
    return make((None, None), _far_pure, FAR_WIN, store=env.store, dtype=torch.float64, tensor_id=tensor_id)


# ---------------------------------------------------------------- far reads
@pytest.mark.parametrize("base", [E62 - 10**6, -E62 + 10**6, 2**61 + 12345, -(2**61) - 777, 2**48 + 3, -(2**53) - 1])
def test_far_reads_are_exact(env, base):
    p = _far(env)
    p.check((S(base - 7, base + 9), S(-3, 8)))
    p.check((S(-4, 5), S(base - 3, base + 11)))                 # far along the other dim
    p.check((S(base, base + 40, 7), S(base + 1, base + 9, 2)))  # far on both, with steps
    assert_same(p.lib[base + 2, base - 5], p.ref[base + 2, base - 5])
    if env.persistent:  # far tile coordinates survive the file
        env.store.close()
        env.store = env._open()
        again = _far(env)
        again.check((S(base - 7, base + 9), S(-3, 8)))
        assert again.calls == []
        env.good = env.new_pair("good")
    env.check()


# (index, message fragment): past the documented range, refused up front
OVERFLOWS = [
    ((E62 + 1, S(0, 4)), "outside the supported range +-2**62"),
    ((-E62 - 1, S(0, 4)), "outside the supported range +-2**62"),
    ((S(E62 - 8, E62 + 8), S(0, 4)), "outside the supported range +-2**62"),
    ((S(0, 4), S(-E62 - 8, -E62 + 8)), "outside the supported range +-2**62"),
    ((S(2**63 - 8, 2**63 - 1), S(0, 4)), "outside the supported range +-2**62"),
    ((S(-(2**63), -(2**63) + 4), S(0, 4)), "outside the supported range +-2**62"),
    ((2**63, S(0, 4)), "outside the supported range"),
    ((2**64 + 3, S(0, 4)), "outside the supported range"),
    ((S(0, 4), -(2**100)), "outside the supported range"),
    ((S(2**64, 2**64 + 4), S(0, 4)), "outside the supported range"),
    ((S(0, 4), S(0, 4, 2**64)), "outside the supported range"),
]


@pytest.mark.parametrize("index, fragment", OVERFLOWS, ids=[repr(i)[:60] for i, _ in OVERFLOWS])
def test_overflowing_coordinates_raise(env, index, fragment):
    p = _far(env)
    with pytest.raises(IndexError) as ei:
        p.lib[index]
    assert fragment in str(ei.value), str(ei.value)
    assert p.calls == [], "f ran for a refused read"
    env.check()


@pytest.mark.parametrize("index", [
    (S(E62 - 8, E62), S(0, 4)),
    (E62 - 1, S(0, 4)),
    (S(-E62, -E62 + 4), S(0, 4)),
    (-E62, S(0, 4)),
    (S(0, 4), S(E62 - 3, E62)),
], ids=["slice-to-2**62", "int-2**62-1", "slice-from--2**62", "int--2**62", "dim1-to-2**62"])
def test_edge_of_range(env, index):
    """Within the documented range: the right values, or an IndexError
    before any window is computed."""
    p = _far(env)
    try:
        got = p.lib[index]
    except IndexError as e:
        assert "2**62" in str(e)
        assert p.calls == [], f"f ran {len(p.calls)} times before the read was refused"
    else:
        assert_same(got, p.ref[index])
    env.check()


def test_edge_of_range_leaves_store_healthy(env):
    """Whatever the edge reads do (see test_edge_of_range), they leave the
    store healthy and the tensor readable elsewhere."""
    p = _far(env)
    for index in [(S(E62 - 8, E62), S(0, 4)), (S(-E62, -E62 + 4), S(0, 4))]:
        try:
            p.lib[index]
        except IndexError as e:
            assert "2**62" in str(e)
        assert env.store.cache_info()["pinned"] == 0
    p.check((S(E62 - 10**4, E62 - 10**4 + 9), S(0, 4)))
    p.check(BOX)
    env.check()


def test_window_geometry_limits():
    f = lambda c: torch.zeros(4, 4)  # noqa: E731
    for win, frag in [
        (TensorWindow((4, 4), offset=(2**62, 0)), "window offset[0] must be within +-2**48"),
        (TensorWindow((4, 4), offset=(2**63, 0)), "window offset[0] must be within +-2**48"),
        (TensorWindow((4, 4), offset=(0, -(2**70))), "window offset[1] must be within +-2**48"),
        (TensorWindow((4, 4), stride=(2**49, 4)), "window stride[0] must be in [1, 2**48]"),
        (TensorWindow((2**49, 4)), "window size[0] must be in [1, 2**48]"),
        (TensorWindow((2**64, 4)), "window size[0]"),
    ]:
        with pytest.raises(it.ValidationError) as ei:
            InfiniteTensor((None, None), f, win)
        assert frag in str(ei.value), str(ei.value)
    for shape, frag in [((2**62, None), "dim 0 must be infinite or in [1, 2**48]"),
                        ((None, 2**63), "dim 1 must be infinite or in [1, 2**48]")]:
        with pytest.raises(it.ValidationError, match=frag.replace("*", r"\*").replace("[", r"\[")):
            InfiniteTensor(shape, f, TensorWindow((4, 4)))
    with pytest.raises(MemoryError, match="the finite dims hold too many elements"):
        InfiniteTensor((2**40, 2**40, None), f, TensorWindow((4, 4, 4)))
    w = TensorWindow((4, 4), stride=(3, 3))
    with pytest.raises(IndexError, match=r"beyond \+-2\*\*62"):
        list(w.intersecting_windows((S(2**70, 2**70 + 4), S(0, 4))))
    with pytest.raises(IndexError, match=r"beyond \+-2\*\*62"):
        list(w.intersecting_windows((S(E62 + 5, E62 + 6), S(0, 4))))


# ---------------------------------------------------------------- huge regions
def _rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


HUGE = [
    ((S(0, 2**40), S(0, 2**40)), "the requested region has too many elements"),
    ((S(-E62, E62), S(0, 2)), "the requested region has too many elements"),
    ((S(0, 2**62), S(0, 2**62)), "the requested region has too many elements"),
    ((0, S(0, 2**60)), "the requested region has too many elements"),
    ((S(0, 2**50), S(0, 16)), "this read needs at least"),        # fits int64, not any machine
    ((S(-(2**50), 2**50, 2), S(0, 16)), "this read needs at least"),
]


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.parametrize("index, fragment", HUGE, ids=[repr(i)[:60] for i, _ in HUGE])
def test_huge_region_refused_at_once(env, index, fragment):
    p = _far(env)
    p.check(BOX)
    p.reset_calls()
    rss0 = _rss()
    with pytest.raises(MemoryError) as ei:
        p.lib[index]
    assert fragment in str(ei.value), str(ei.value)
    assert _rss() - rss0 < 64 << 20, "memory was taken for a refused read"
    assert p.calls == [], "f ran for a refused read"
    p.check(BOX)
    env.check()


# ---------------------------------------------------------------- zero-size reads
ZERO = [
    ((S(5, 5), S(0, 4)), (0, 4)),
    ((S(0, 4), S(7, 3)), (4, 0)),
    ((S(5, 5, 3), S(0, 4)), (0, 4)),
    ((S(5, 5), S(0, 2**40)), (0, 2**40)),
    ((S(E62, E62), S(0, 4)), (0, 4)),
    ((S(-E62, -E62), S(-3, 3)), (0, 6)),
    ((3, S(4, 4)), (0,)),
    ((S(10, 2), 7), (0,)),
]
DTYPES = [torch.float32, torch.int8, torch.bool, torch.float16, torch.complex64, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("index, shape", ZERO, ids=[repr(i)[:50] for i, _ in ZERO])
def test_zero_size_reads(env, index, shape, dtype):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(4, 4, dtype=dtype)

    t = InfiniteTensor((None, None), f, TensorWindow((4, 4), stride=(2, 2)), dtype=dtype, tile_store=env.store,
                       tensor_id="zero", blend_init=None)
    got = t[index]
    assert isinstance(got, torch.Tensor)
    assert tuple(got.shape) == shape and got.dtype == dtype and got.device == torch.device("cpu")
    assert got.numel() == 0
    assert calls == [], "f ran for an empty read"
    assert env.store.cache_info()["pinned"] == 0
    env.check()


@pytest.mark.parametrize("index, shape", [
    ((S(6, 6), S(0, 4), S(0, 4)), (0, 4, 4)),
    ((S(10, 20), S(0, 4), S(0, 4)), (0, 4, 4)),       # clamped to empty, like torch
    ((S(-20, -10), S(0, 4), S(0, 4)), (0, 4, 4)),
    ((S(0, 6), S(0, 4), S(2, 2)), (6, 4, 0)),
    ((2, S(3, 3), 0), (0,)),
])
def test_zero_size_reads_finite_dims(env, index, shape):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(6, 4, 4, dtype=torch.int16)

    t = InfiniteTensor((6, None, None), f, TensorWindow((6, 4, 4)), dtype=torch.int16, tile_store=env.store,
                       tensor_id="zero3")
    got = t[index]
    assert tuple(got.shape) == shape and got.dtype == torch.int16
    assert calls == []
    env.check()


def test_zero_size_read_on_read_only_store(tmp_path):
    """An empty read needs no window, so mode "r" does not refuse it."""
    path = tmp_path / "ro.h5"
    s = it.HDF5TileStore(path, tile_size=8)
    first = InfiniteTensor((None, None), lambda c: torch.ones(4, 4), TensorWindow((4, 4)), tile_store=s, tensor_id="t")
    first[0:4, 0:4]
    s.close()
    s = it.HDF5TileStore(path, mode="r", tile_size=8)
    t = InfiniteTensor((None, None), lambda c: torch.ones(4, 4), TensorWindow((4, 4)), tile_store=s, tensor_id="t")
    assert tuple(t[100:100, 0:4].shape) == (0, 4)
    with pytest.raises(it.TileAccessError):
        t[100:101, 0:4]
    assert torch.equal(t[0:4, 0:4], torch.ones(4, 4))
    s.close()
