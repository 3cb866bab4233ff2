"""TensorWindow: normalisation, validation, serialisation, bounds and the
windows intersecting a region, against tests/reference.py."""

import random

import numpy as np
import pytest

from infinite_tensor import TensorWindow, ValidationError
from reference import Win


def tup(x):
    return None if x is None else tuple(x)


# ---------------------------------------------------------------- construction


def test_defaults():
    w = TensorWindow((4, 5))
    assert tup(w.size) == (4, 5)
    assert tup(w.stride) == (4, 5)
    assert tup(w.offset) == (0, 0)
    assert w.dimension_map is None


def test_list_size_accepted():
    w = TensorWindow([4, 5], stride=[2, 3], offset=[1, -1])
    assert tup(w.size) == (4, 5)
    assert tup(w.stride) == (2, 3)
    assert tup(w.offset) == (1, -1)


def test_int_stride_and_offset_broadcast():
    w = TensorWindow((4, 5, 6), stride=2, offset=-3)
    assert tup(w.stride) == (2, 2, 2)
    assert tup(w.offset) == (-3, -3, -3)


@pytest.mark.parametrize("stride", [None, (), []])
def test_falsy_stride_means_size(stride):
    assert tup(TensorWindow((4, 5), stride=stride).stride) == (4, 5)


@pytest.mark.parametrize("offset", [None, (), [], 0])
def test_falsy_offset_means_zeros(offset):
    assert tup(TensorWindow((4, 5), offset=offset).offset) == (0, 0)


def test_int_size_rejected():
    with pytest.raises(ValidationError):
        TensorWindow(4)


@pytest.mark.parametrize("size", [(0, 4), (4, -1)])
def test_sizes_must_be_positive(size):
    with pytest.raises(ValidationError):
        TensorWindow(size)


@pytest.mark.parametrize("stride", [(0, 4), (4, -2)])
def test_strides_must_be_positive(stride):
    with pytest.raises(ValidationError):
        TensorWindow((4, 4), stride=stride)


def test_length_mismatches():
    with pytest.raises(ValidationError, match=r"stride length \(3\) must match size length \(2\)"):
        TensorWindow((4, 4), stride=(1, 1, 1))
    with pytest.raises(ValidationError, match=r"offset length \(1\) must match size length \(2\)"):
        TensorWindow((4, 4), offset=(1,))
    with pytest.raises(ValidationError, match=r"dimension_map length \(3\) must match size length \(2\)"):
        TensorWindow((4, 4), dimension_map=(0, 1, None))
    # ValidationError is a ValueError, as the reference's ValueError was
    with pytest.raises(ValueError):
        TensorWindow((4, 4), stride=(1,))


def test_attributes_are_public():
    w = TensorWindow((2, 3), stride=(1, 1), offset=(0, 1), dimension_map=(None, 0))
    assert tup(w.dimension_map) == (None, 0)


def test_repr():
    w = TensorWindow((4, 4), stride=(2, 2), offset=(1, -1))
    assert repr(w) == "TensorWindow(size=(4, 4), stride=(2, 2), offset=(1, -1), map=None)"
    w = TensorWindow((1, 4), stride=(1, 4), offset=(0, 0), dimension_map=(None, 1))
    assert repr(w) == "TensorWindow(size=(1, 4), stride=(1, 4), offset=(0, 0), map=(None, 1))"


# ---------------------------------------------------------------- dict round trip


def test_to_dict():
    d = TensorWindow((4, 4), stride=(2, 3), offset=(1, -1)).to_dict()
    assert d == {"size": [4, 4], "stride": [2, 3], "offset": [1, -1], "dimension_map": None}
    assert all(type(d[k]) is list for k in ("size", "stride", "offset"))
    d = TensorWindow((1, 4, 4), dimension_map=(None, 0, 1)).to_dict()
    assert d["dimension_map"] == [None, 0, 1] and type(d["dimension_map"]) is list


def test_from_dict_round_trip():
    for w in [
        TensorWindow((4, 4)),
        TensorWindow((4, 5), stride=(2, 3), offset=(-1, 7)),
        TensorWindow((1, 4, 4), stride=(1, 2, 2), offset=(0, 1, 1), dimension_map=(None, 1, 0)),
    ]:
        w2 = TensorWindow.from_dict(w.to_dict())
        assert isinstance(w2, TensorWindow)
        assert w2.to_dict() == w.to_dict()


def test_from_dict_defaults_and_casts():
    w = TensorWindow.from_dict({"size": [np.int64(4), 5]})
    assert w.to_dict() == {"size": [4, 5], "stride": [4, 5], "offset": [0, 0], "dimension_map": None}
    assert all(type(v) is int for v in w.to_dict()["size"])
    w = TensorWindow.from_dict({"size": [4, 5], "stride": None, "offset": None, "dimension_map": None})
    assert w.to_dict()["stride"] == [4, 5]
    w = TensorWindow.from_dict({"size": [4, 5], "stride": [np.int32(2), 2.0], "offset": [-1, 0],
                                "dimension_map": [1, None]})
    assert w.to_dict() == {"size": [4, 5], "stride": [2, 2], "offset": [-1, 0], "dimension_map": [1, None]}


# ---------------------------------------------------------------- get_bounds


def bounds(w, ctx):
    out = w.get_bounds(ctx)
    assert isinstance(out, tuple)
    for s in out:
        assert isinstance(s, slice) and s.step is None
    return [(s.start, s.stop) for s in out]


def test_get_bounds_plain():
    w = TensorWindow((4, 3), stride=(2, 5), offset=(1, -2))
    assert bounds(w, (0, 0)) == [(1, 5), (-2, 1)]
    assert bounds(w, (-3, 2)) == [(-5, -1), (8, 11)]


def test_get_bounds_dimension_map_args_window_example():
    # spec 3: arg window (3,4,4) map (None,0,1) applied to downstream window (0,1).
    # Our decision: a None entry covers [offset, offset + size), not [0, 1).
    w = TensorWindow((3, 4, 4), stride=(3, 4, 4), dimension_map=(None, 0, 1))
    assert bounds(w, (0, 1)) == [(0, 3), (0, 4), (4, 8)]
    w = TensorWindow((3, 4, 4), stride=(3, 4, 4), offset=(2, 0, 0), dimension_map=(None, 0, 1))
    assert bounds(w, (5, -1)) == [(2, 5), (20, 24), (-4, 0)]


def test_get_bounds_permuted_and_shared():
    w = TensorWindow((2, 3), stride=(2, 3), dimension_map=(1, 0))
    assert bounds(w, (1, 5)) == [(10, 12), (3, 6)]
    w = TensorWindow((2, 3), stride=(2, 3), offset=(0, 1), dimension_map=(0, 0))
    assert bounds(w, (4, 0)) == [(8, 10), (13, 16)]


def test_get_bounds_matches_reference_randomly():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 4)
        ncoords = rng.randint(1, 4)
        size = [rng.randint(1, 6) for _ in range(n)]
        stride = [rng.randint(1, 6) for _ in range(n)]
        offset = [rng.randint(-5, 5) for _ in range(n)]
        dmap = None
        if rng.random() < 0.6:
            dmap = [rng.choice([None] + list(range(ncoords))) for _ in range(n)]
        else:
            ncoords = n
        ctx = tuple(rng.randint(-9, 9) for _ in range(ncoords))
        w = TensorWindow(tuple(size), tuple(stride), tuple(offset), None if dmap is None else tuple(dmap))
        r = Win(size, stride, offset, dmap)
        assert bounds(w, ctx) == r.bounds(ctx), (size, stride, offset, dmap, ctx)


def test_get_bounds_is_the_cores_arithmetic_with_its_checks():
    """get_bounds asks the core (it_window_bounds), so it places windows
    exactly as reads do, and a window no read could place raises what a read
    would raise instead of returning slices past the engine's range."""
    w = TensorWindow((4, 3), stride=(2, 5), offset=(1, -2))
    assert bounds(w, (np.int64(3), np.int32(-1))) == [(7, 11), (-7, -4)]
    assert all(type(s.start) is int for s in w.get_bounds((np.int64(3), 0)))
    assert bounds(w, (1, 2, 3)) == [(3, 7), (8, 11)]  # coordinates no dim follows are ignored
    assert bounds(TensorWindow((3, 4), dimension_map=(None, None)), ()) == [(0, 3), (0, 4)]
    with pytest.raises(IndexError, match=r"window index 1180591620717411303424 is too far from the origin"):
        w.get_bounds((2**70, 0))
    with pytest.raises(IndexError, match=r"window reaches beyond \+-2\*\*62 on dim 0"):
        w.get_bounds((2**61, 0))
    with pytest.raises(ValidationError, match=r"window size\[0\] must be in \[1, 2\*\*48\], got 1125899906842624"):
        TensorWindow((2**50, 4)).get_bounds((0, 0))
    with pytest.raises(ValidationError, match=r"dimension_map\[1\] = 1 is not a valid window coordinate \(0..0\)"):
        w.get_bounds((1,))


# ---------------------------------------------------------------- intersecting_windows


def iw(w, box, shape=None):
    sl = tuple(slice(a, b) for a, b in box)
    gen = w.intersecting_windows(sl) if shape is None else w.intersecting_windows(sl, tensor_shape=shape)
    out = list(gen)
    for ctx in out:
        assert type(ctx) is tuple and all(type(c) is int for c in ctx)
    return out


def test_intersecting_windows_is_iterable_and_lexicographic():
    w = TensorWindow((2, 2))
    it_ = w.intersecting_windows((slice(0, 4), slice(0, 4)))
    assert iter(it_) is it_ or hasattr(it_, "__iter__")
    assert iw(w, [(0, 4), (0, 4)]) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_intersecting_windows_examples():
    w = TensorWindow((4,), stride=(2,), offset=(1,))
    assert iw(w, [(0, 3)]) == [(-2,), (-1,), (0,)]
    assert iw(w, [(-100, 100)], shape=(8,)) == [(0,), (1,)]
    # spec 3 example: shape (10, None), window (7, 64): window 1 on dim 0 sticks out
    w = TensorWindow((7, 64))
    assert iw(w, [(0, 10), (0, 64)], shape=(10, None)) == [(0, 0)]
    # offset -4 on a finite dim of size 8 drops every window
    w = TensorWindow((8, 4), offset=(-4, 0))
    assert iw(w, [(0, 8), (0, 4)], shape=(8, None)) == []


def test_intersecting_windows_gap_and_empty():
    w = TensorWindow((2,), stride=(5,))
    assert iw(w, [(2, 5)]) == []
    assert iw(w, [(3, 3)]) == []
    assert iw(w, [(4, 6)]) == [(1,)]


def test_intersecting_windows_with_dimension_map():
    # dims 0 and 1 follow coordinate 0: a diagonal
    w = TensorWindow((2, 2), dimension_map=(0, 0))
    assert iw(w, [(0, 6), (0, 6)]) == [(0, 0), (1, 0), (2, 0)]
    assert iw(w, [(0, 2), (4, 6)]) == []
    # fixed first dim
    w = TensorWindow((1, 4, 4), dimension_map=(None, 1, 2))
    assert iw(w, [(0, 1), (0, 8), (4, 8)], shape=(1, None, None)) == [(0, 0, 1), (0, 1, 1)]
    assert iw(w, [(1, 2), (0, 8), (4, 8)]) == []


def test_intersecting_windows_match_reference_randomly():
    rng = random.Random(2)
    for _ in range(300):
        n = rng.randint(1, 3)
        size = [rng.randint(1, 5) for _ in range(n)]
        stride = [rng.randint(1, 6) for _ in range(n)]
        offset = [rng.randint(-6, 6) for _ in range(n)]
        dmap = None
        if rng.random() < 0.3:
            dmap = [rng.choice([None] + list(range(n))) for _ in range(n)]
        box = []
        for _ in range(n):
            a = rng.randint(-12, 12)
            box.append((a, a + rng.randint(-1, 9)))
        shape = None
        if rng.random() < 0.6:
            shape = tuple(rng.choice([None, rng.randint(1, 12)]) for _ in range(n))
        w = TensorWindow(tuple(size), tuple(stride), tuple(offset), None if dmap is None else tuple(dmap))
        expected = list(Win(size, stride, offset, dmap).windows(box, shape))
        assert iw(w, box, shape) == expected, (size, stride, offset, dmap, box, shape)
        for ctx in expected:  # consistency with get_bounds
            for (ws, we), (bs, be) in zip(bounds(w, ctx), box):
                assert max(ws, bs) < min(we, be)
