"""Sanity checks of the plain-torch reference itself (no library involved).

Every other test trusts tests/reference.py, so here it is checked against
answers worked out by hand."""

import torch

from reference import RefTensor, Win, normalize_index


def ones(size):
    return lambda ctx, *a: torch.ones(size, dtype=torch.float64)


def test_window_defaults_and_bounds():
    w = Win((4, 3))
    assert w.stride == (4, 3) and w.offset == (0, 0)
    assert w.bounds((2, -1)) == [(8, 12), (-3, 0)]
    w = Win((4, 3), stride=2, offset=-1)
    assert w.stride == (2, 2) and w.offset == (-1, -1)
    assert w.bounds((1, 1)) == [(1, 5), (1, 4)]


def test_fixed_and_shared_coordinates():
    w = Win((3, 4, 4), stride=(3, 4, 4), dimension_map=(None, 0, 1))
    assert w.bounds((0, 1)) == [(0, 3), (0, 4), (4, 8)]
    w = Win((2, 2), stride=(2, 2), offset=(5, 0), dimension_map=(None, 0))
    assert w.bounds((3, 9)) == [(5, 7), (6, 8)]
    d = Win((2, 2), dimension_map=(0, 0))
    assert list(d.windows([(0, 6), (0, 6)])) == [(0, 0), (1, 0), (2, 0)]
    assert list(d.windows([(0, 2), (4, 6)])) == []


def test_windows_1d():
    w = Win((4,), stride=(2,), offset=(1,))
    # windows cover [2i+1, 2i+5)
    assert list(w.windows([(0, 3)])) == [(-2,), (-1,), (0,)]
    assert list(w.windows([(3, 3)])) == []
    # finite extent 8: windows lying in [0, 8) are i = 0, 1
    assert list(w.windows([(-100, 100)], shape=(8,))) == [(0,), (1,)]


def test_windows_lexicographic():
    w = Win((2, 2))
    assert list(w.windows([(0, 4), (0, 4)])) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_sum_overlap_counts():
    # size 4 stride 2: every pixel is covered by exactly 2 windows
    t = RefTensor((None,), ones((4,)), Win((4,), stride=(2,)), dtype=torch.float64)
    assert t[0:6].tolist() == [2.0] * 6
    t = RefTensor((None,), ones((4,)), Win((4,), stride=(2,)), dtype=torch.float64, blend_init=7)
    assert t[0:2].tolist() == [9.0, 9.0]


def test_gaps_read_fill():
    t = RefTensor((None,), ones((2,)), Win((2,), stride=(3,)), dtype=torch.float64, blend_init=-1)
    assert t[0:6].tolist() == [0, 0, -1, 0, 0, -1]  # -1 + 1 where covered


def test_finite_dim_drops_sticking_out_windows():
    t = RefTensor((10, None), ones((7, 2)), Win((7, 2)), dtype=torch.float64)
    r = t[:, 0:2]
    assert r.shape == (10, 2)
    assert r[:7].eq(1).all() and r[7:].eq(0).all()


def test_max_blend_readme_example():
    def f(ctx):
        wy, wx = ctx
        return torch.full((64, 64), float(wy + wx))

    t = RefTensor((None, None), f, Win((64, 64), stride=(32, 32)),
                  blend=torch.maximum, blend_init=float("-inf"))
    r = t[0:128, 0:128]
    y = torch.arange(128) // 32
    assert torch.equal(r, (y[:, None] + y[None, :]).float())


def test_last_wins_is_lexicographic():
    f = lambda ctx: torch.full((4,), float(ctx[0]))
    t = RefTensor((None,), f, Win((4,), stride=(2,)), blend=lambda a, b: b)
    assert t[0:8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_indexing_rules():
    shape = (10, None)
    assert normalize_index(shape, (slice(0, 20), slice(-3, 4, 2))) == ([(0, 10, 1), (-3, 4, 2)], [])
    assert normalize_index(shape, (-1, 5)) == ([(9, 10, 1), (5, 6, 1)], [0, 1])
    assert normalize_index(shape, (Ellipsis, slice(0, 1))) == ([(0, 10, 1), (0, 1, 1)], [])
    assert normalize_index((None, 3), slice(0, 2)) == ([(0, 2, 1), (0, 3, 1)], [])
    t = RefTensor(shape, lambda c: (torch.arange(2.0) + c[1] * 2).expand(10, 2).clone(), Win((10, 2)))
    assert t[3, -2:5:3].tolist() == [-2.0, 1.0, 4.0]
    assert t[-20:, 0:0].shape == (10, 0)


def test_args_read_fill_past_finite_dims():
    up = RefTensor((4,), lambda c: torch.arange(4.0) + 1, Win((4,)), blend=torch.maximum, blend_init=-5)
    seen = []

    def g(ctx, a):
        seen.append(a.tolist())
        return a[2:4].clone()

    down = RefTensor((None,), g, Win((2,)), [up], [Win((4,), stride=(2,), offset=(-2,))])
    assert down[0:2].tolist() == [1.0, 2.0]
    assert seen[0] == [-5.0, -5.0, 1.0, 2.0]  # no wrap-around
