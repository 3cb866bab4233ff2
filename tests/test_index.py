"""t[...]: every index form the decisions allow, the values they give
(against tests/reference.py), and the error class of every bad index."""

import numpy as np
import pytest
import torch

import infinite_tensor as it
from pairs import Win, assert_same, make, pattern


def pure_for(size, dtype=torch.float64):
    return lambda ctx, *a: pattern(ctx, size, dtype)


@pytest.fixture
def t3(store):
    """shape (6, None, None); overlapping on dim 1, gapped on dim 2."""
    win = Win((6, 4, 2), stride=(6, 3, 3), offset=(0, -1, 1))
    return make((6, None, None), pure_for(win.size), win, store=store, dtype=torch.float64)


S = slice
VALID = [
    (0, S(0, 4), S(0, 4)),
    (-1, S(0, 4), S(0, 4)),
    (S(2, 5), S(-3, 7), S(1, 9)),
    (S(None, None, 2), S(0, 10, 3), S(-5, 5, 2)),
    (S(1, None), S(-7, -1), S(-9, -2, 4)),
    (Ellipsis, S(0, 4), S(0, 4)),
    (S(0, 20), S(0, 2), S(0, 2)),       # clamps to 6 rows
    (S(-20, None), S(0, 2), S(0, 2)),   # clamps to 6 rows
    (S(-20, 3), S(0, 2), S(0, 2)),
    (S(3, 100, 4), S(0, 2), S(0, 2)),
    (S(-2, None, 5), S(0, 2), S(0, 2)),
    (2, 5, -7),                         # 0-d result
    (S(0, 6), 3, S(-4, 4)),
    (S(4, 2), S(0, 3), S(0, 3)),        # reversed finite slice: size 0
    (S(0, 6), S(5, 5), S(0, 3)),        # empty infinite slice
    (S(0, 6), S(0, 3), S(4, 1)),        # reversed infinite slice
    (S(10, 20), S(0, 3), S(0, 3)),      # past the finite extent: size 0
    (S(1, 5, 2), S(-100, -90, 7), S(1000, 1013, 4)),
]


@pytest.mark.parametrize("index", VALID, ids=[str(i) for i in range(len(VALID))])
def test_values(t3, index):
    got = t3.check(index)
    assert got.is_contiguous()


def test_ellipsis_forms(t3):
    a = t3.lib[0, 0:4, 0:4]
    assert_same(t3.lib[..., 0:4, 0:4][0], a)
    assert_same(t3.lib[0, ..., 0:4, 0:4], a)
    assert_same(t3.lib[0, 0:4, 0:4, ...], a)


def test_single_non_tuple_index(store):
    p = make((None, 3), pure_for((4, 3)), Win((4, 3), stride=(3, 3)), store=store, dtype=torch.float64)
    p.check(S(0, 8))          # fewer indices: finite dim padded with a full slice
    p.check(5)                # int on the infinite dim, finite dim full
    p.check((S(-3, 9, 2),))


def test_a_list_is_a_list_of_regions(t3):
    # 0.4: any list passed to [] is a list of regions (0.3 read it as a
    # tuple); each region as if read alone, strided, squeezed and empty ones too
    got = t3.lib[list(VALID)]
    assert isinstance(got, list) and len(got) == len(VALID)
    for index, value in zip(VALID, got):
        assert_same(value, t3.ref[index])
    assert t3.lib[[]] == []


def test_a_list_inside_a_list_of_regions_is_refused(t3):
    with pytest.raises(TypeError, match="region 1 of a list of regions is itself a list"):
        t3.lib[[(0, S(0, 1), S(0, 1)), [0, S(0, 1), S(0, 1)]]]
    with pytest.raises(IndexError, match="region 0 of the list: Index 7 is out of bounds"):
        t3.lib[[(7, S(0, 1), S(0, 1))]]


def test_int_likes(t3):
    expected = t3.ref[2, 0:4, 0:4]
    assert_same(t3.lib[np.int64(2), 0:4, 0:4], expected)
    assert_same(t3.lib[torch.tensor(2), 0:4, 0:4], expected)
    assert_same(t3.lib[2, np.int32(0):np.int64(4), torch.tensor(0):4], expected)
    assert_same(t3.lib[0, 0:4, np.int64(3)], t3.ref[0, 0:4, 3])


def test_bool_counts_as_int(t3):
    assert_same(t3.lib[True, 0:4, 0:4], t3.ref[1, 0:4, 0:4])
    assert_same(t3.lib[False, 0:4, 0:4], t3.ref[0, 0:4, 0:4])


def test_zero_d_result(t3):
    r = t3.lib[2, 5, -7]
    assert r.dim() == 0
    assert r.item() == t3.ref[2, 5, -7].item()


def test_result_is_fresh(t3):
    a = t3.lib[0:6, 0:4, 0:4]
    b = t3.lib[0:6, 0:4, 0:4]
    assert a.data_ptr() != b.data_ptr()
    a.fill_(12345)
    assert_same(t3.lib[0:6, 0:4, 0:4], t3.ref[0:6, 0:4, 0:4])
    assert a.requires_grad is False


def test_empty_slices_compute_nothing(t3):
    for index in [(S(0, 6), S(5, 5), S(0, 3)), (S(0, 6), S(0, 3), S(4, 1)), (S(4, 2), S(0, 3), S(0, 3)),
                  (S(10, 20), S(0, 3), S(0, 3)), (S(0, 6), S(3, 3), S(0, 30))]:
        r = t3.lib[index]
        assert 0 in r.shape
        assert_same(r, t3.ref[index])
    assert t3.calls == []


@pytest.mark.parametrize("offset", [-3, 1, 0])
@pytest.mark.parametrize("box", [(-2, 1), (-3, 1), (-6, 2), (-1, 1)])
def test_gapped_windows_read_across_tiles(store, offset, box):
    # windows of 3 every 4 pixels: a read around 0 may need a tile that no
    # window of the read touches; the covered pixels must still be right
    win = Win((3,), stride=(4,), offset=(offset,))
    p = make((None,), lambda c: torch.arange(3, dtype=torch.float64) + 10 * c[0] + 1, win, store=store,
             dtype=torch.float64)
    p.check((S(*box),))
    p.check((S(-40, 40),))


def test_gapped_windows_read_across_tiles_2d(store):
    win = Win((2, 3), stride=(3, 4), offset=(-2, -3))
    p = make((None, None), lambda c: pattern(c, win.size), win, store=store, dtype=torch.float64, blend_init=-1)
    p.check((S(-2, 2), S(-2, 1)))
    p.check((S(-7, 5), S(-9, 9)))


def test_steps_dont_change_values(t3):
    full = t3.lib[0:6, -7:11, -5:13]
    for s0 in (1, 2, 3):
        for s1 in (1, 2, 5):
            for s2 in (1, 4):
                assert_same(t3.lib[0:6:s0, -7:11:s1, -5:13:s2], full[::s0, ::s1, ::s2].contiguous())


# ---------------------------------------------------------------- mixed finite / infinite


@pytest.mark.parametrize(
    "shape,win",
    [
        ((None,), Win((3,), stride=(2,), offset=(-1,))),
        ((5, None), Win((2, 3), stride=(1, 2))),
        ((None, 4), Win((3, 2), stride=(3, 1), offset=(1, 0))),
        ((None, 3, None, 2), Win((2, 3, 2, 2), stride=(1, 3, 3, 2), offset=(0, 0, -1, 0))),
        ((2, 3, 4), Win((2, 2, 2), stride=(1, 1, 2))),   # all finite
    ],
)
def test_mixed_dims(store, shape, win):
    p = make(shape, pure_for(win.size), win, store=store, dtype=torch.float64)
    boxes = []
    for k in range(3):
        idx = []
        for d, ext in enumerate(shape):
            if ext is None:
                a = -5 + 3 * k + d
                idx.append(S(a, a + 7, 1 + (k + d) % 3))
            else:
                idx.append(S(None, None, 1 + k % 2) if k != 1 else -1)
        boxes.append(tuple(idx))
    for b in boxes:
        p.check(b)


# ---------------------------------------------------------------- dtypes

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool]


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d) for d in DTYPES])
def test_dtypes_with_overlap(store, dtype):
    win = Win((3, 4), stride=(2, 3), offset=(0, -1))

    def pure(ctx):
        v = pattern(ctx, win.size, torch.int64)
        if dtype == torch.bool:
            return (v % 3 == 0)
        if dtype == torch.uint8:
            return (v % 50 + 50).to(dtype)
        if dtype == torch.int8:
            return (v % 120).to(dtype)  # sums may wrap around, like torch
        return v.to(dtype)

    p = make((None, None), pure, win, store=store, dtype=dtype)
    got = p.check((S(-3, 9), S(-5, 10)))
    assert got.dtype == dtype
    p.check((S(-3, 9, 2), 4))
    p.check((1, S(-5, 10, 3)))


# ---------------------------------------------------------------- errors


def test_int_out_of_bounds_on_finite_dim(t3):
    with pytest.raises(IndexError, match=r"Index 6 is out of bounds for dimension 0 with size 6"):
        t3.lib[6, 0:1, 0:1]
    with pytest.raises(IndexError, match=r"Index -?\d+ is out of bounds for dimension 0 with size 6"):
        t3.lib[-7, 0:1, 0:1]


def test_int_out_of_bounds_names_the_dim(store):
    p = make((None, 3), lambda c: torch.zeros(2, 3), Win((2, 3)), store=store)
    with pytest.raises(IndexError, match=r"Index 3 is out of bounds for dimension 1 with size 3"):
        p.lib[0:2, 3]


@pytest.mark.parametrize(
    "index",
    [
        0,                              # dims 1, 2 padded with open slices
        (S(0, 6), S(None, 4), S(0, 4)),
        (S(0, 6), S(0, 4), S(0, None)),
        (S(0, 6), S(None, None), S(0, 4)),
        (Ellipsis, S(0, 4)),            # ellipsis covers an infinite dim
        (S(0, 4), S(0, 4), Ellipsis),
    ],
)
def test_open_slice_on_infinite_dim(t3, index):
    with pytest.raises(IndexError, match="infinite"):
        t3.lib[index]


@pytest.mark.parametrize("step", [0, -1, -3])
def test_bad_steps(t3, step):
    with pytest.raises(ValueError):
        t3.lib[0, 0:4:step, 0:4]
    with pytest.raises(ValueError):
        t3.lib[S(0, 6, step), 0:4, 0:4]


@pytest.mark.parametrize("bad", [None, 1.0, "a", torch.tensor([1, 2]), torch.tensor(1.5)])
def test_bad_index_types(t3, bad):
    with pytest.raises(TypeError):
        t3.lib[0, bad, 0:4]


@pytest.mark.parametrize("sl", [S(0.0, 4), S(0, 4.5), S(0, 4, 1.0), S("a", 4)])
def test_bad_slice_bounds(t3, sl):
    with pytest.raises(TypeError):
        t3.lib[0, sl, 0:4]


def test_too_many_indices(t3):
    with pytest.raises(IndexError, match="Too many indices for infinite tensor of dimension 3"):
        t3.lib[0, 0:1, 0:1, 0]
    with pytest.raises(IndexError, match="Too many indices for infinite tensor of dimension 3"):
        t3.lib[0, 0:1, 0:1, 0:1, ...]


def test_two_ellipses(t3):
    with pytest.raises(IndexError):
        t3.lib[..., 0:1, ...]


@pytest.mark.parametrize("big", [2**62 + 1, -(2**62) - 1, 2**70, -(2**80)])
def test_huge_coordinates(t3, big):
    with pytest.raises(IndexError):
        t3.lib[0, big, 0:1]
    with pytest.raises(IndexError):
        t3.lib[0, 0:1, S(big, big + 1) if big > 0 else S(big, 0)]


def test_errors_compute_nothing(t3):
    for index in [(6, S(0, 4), S(0, 4)), (0, S(0, 4, 0), S(0, 4)), (0, S(0, 4), S(0, None))]:
        with pytest.raises((IndexError, ValueError)):
            t3.lib[index]
    assert t3.calls == []


@pytest.mark.parametrize("base", [2**40, -(2**40), 2**61, -(2**61)])
def test_far_coordinates(store, base):
    def pure(ctx):
        return torch.full((4,), float(ctx[0] % 1009), dtype=torch.float64) + torch.arange(4.0, dtype=torch.float64)

    p = make((None,), pure, Win((4,), stride=(3,), offset=(1,)), store=store, dtype=torch.float64)
    p.check((S(base - 5, base + 9),))
    p.check((S(base, base + 30, 7),))
    assert_same(p.lib[base + 2], p.ref[base + 2])
