"""Dependencies (args / args_windows): values against tests/reference.py at
depth 1..3, padded/offset/strided args windows, dimension_map on args
windows, args in other stores, fill past finite dims, and how often f runs."""

import collections

import pytest
import torch

import infinite_tensor as it
from pairs import Win, assert_same, make, pattern

S = slice


def base_pure(size, dtype=torch.float64):
    return lambda ctx: pattern(ctx, size, dtype)


def crop_pure(out_size, lo, k=1):
    """f(ctx, a) = k * a[lo : lo + out_size] + a pattern: needs a padded arg."""

    def pure(ctx, a):
        sl = tuple(S(l, l + s) for l, s in zip(lo, out_size))
        return a[sl] * k + pattern(ctx, out_size, a.dtype) + a.sum() % 7

    return pure


def no_dupes(calls):
    c = collections.Counter(calls)
    dup = [k for k, v in c.items() if v > 1]
    assert not dup, f"windows computed more than once: {dup}"


def needed_upstream(down, arg_i, down_ctxs):
    """Upstream windows the library must have for the given downstream windows."""
    up = down.ref.args[arg_i]
    aw = down.ref.args_windows[arg_i]
    out = set()
    for ctx in down_ctxs:
        out.update(up.window.windows(aw.bounds(ctx), up.shape))
    return out


# ---------------------------------------------------------------- depth 1


def test_padded_args_window(store):
    up = make((None, None), base_pure((4, 4)), Win((4, 4)), store=store, dtype=torch.float64)
    aw = Win((6, 6), stride=(4, 4), offset=(-1, -1))
    down = make((None, None), crop_pure((4, 4), (1, 1)), Win((4, 4)), [up], [aw],
                store=store, dtype=torch.float64)
    down.check((S(0, 8), S(0, 8)))
    down_first = set(down.calls)
    assert down_first == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert set(up.calls) == needed_upstream(down, 0, down_first)
    assert len(set(up.calls)) == 16  # windows -1..2 squared
    no_dupes(up.calls)
    no_dupes(down.calls)
    down.check((S(-5, 13, 2), S(3, 11)))
    down.check((S(2, 3), S(-20, -3, 3)))
    no_dupes(up.calls)
    no_dupes(down.calls)
    # the upstream itself is unaffected and already computed where read
    n = len(up.calls)
    up.check((S(-4, 12), S(-4, 12)))
    assert len(up.calls) == n


def test_arg_has_window_shape_and_upstream_dtype(store):
    seen = []
    up = make((None, 5), lambda c: pattern(c, (3, 5), torch.int64), Win((3, 5), stride=(2, 5)),
              store=store, dtype=torch.int64)

    def pure(ctx, a):
        seen.append((tuple(a.shape), a.dtype, a.device))
        return a[1:3, 0:2].to(torch.float32) + 0.5

    down = make((None, 2), pure, Win((2, 2)), [up], [Win((4, 5), stride=(2, 2), offset=(-1, 0))],
                store=store, dtype=torch.float32)
    down.check((S(-3, 9), S(0, 2)))
    assert seen and all(s == ((4, 5), torch.int64, torch.device("cpu")) for s in seen)


def test_offset_args_window_0_2_example(store):
    # README 0.2: both windows offset by -256 (here -4): out = prev + 1 = ones
    base = make((3, None, None), lambda c: torch.zeros(3, 8, 8), Win((3, 8, 8)), store=store)
    ow = Win((3, 8, 8), offset=(0, -4, -4))
    dep = make((3, None, None), lambda c, prev: prev + 1, ow, [base], [ow], store=store)
    got = dep.check((S(None), S(0, 8), S(0, 8)))
    assert torch.equal(got, torch.ones(3, 8, 8))
    dep.check((S(None), S(-13, 21, 3), S(5, 6)))


def test_strided_args_window(store):
    # a 2x downsampler: each downstream pixel reads 2 upstream pixels
    up = make((None,), base_pure((5,)), Win((5,), stride=(3,), offset=(1,)), store=store, dtype=torch.float64)
    down = make((None,), lambda c, a: a[0::2] + a[1::2], Win((3,)), [up], [Win((6,), stride=(6,))],
                store=store, dtype=torch.float64)
    down.check((S(-9, 12),))
    down.check((S(-30, 30, 4),))
    no_dupes(up.calls)


def test_args_window_past_finite_dim_reads_fill_never_wraps(store):
    # upstream finite dim of 4; downstream windows read rows [-2, 2) and [2, 6)
    up = make((4, None), lambda c: torch.arange(8.0).reshape(4, 2) + 1, Win((4, 2)),
              store=store, blend=torch.maximum, blend_init=-5.0)
    seen = []

    def pure(ctx, a):
        seen.append(a.clone())
        return a.sum(0, keepdim=True)

    aw = Win((4, 2), stride=(4, 2), offset=(-2, 0), dimension_map=(0, 1))
    down = make((None, None), pure, Win((1, 2)), [up], [aw], store=store)
    down.check((S(0, 3), S(0, 2)))
    assert all(tuple(a.shape) == (4, 2) for a in seen)
    by_ctx = dict(zip(down.calls, seen))
    assert torch.equal(by_ctx[(0, 0)], torch.tensor([[-5.0, -5.0], [-5.0, -5.0], [1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(by_ctx[(1, 0)], torch.tensor([[5.0, 6.0], [7.0, 8.0], [-5.0, -5.0], [-5.0, -5.0]]))
    assert torch.equal(by_ctx[(2, 0)], torch.full((4, 2), -5.0))


def test_args_region_across_tiles_with_gapped_upstream(store):
    # the upstream covers [-3, 0) with window 0 and [1, 4) with window 1; the
    # arg region [-2, 1) must be [2, 3, fill], never all fill
    up = make((None,), lambda c: torch.arange(3, dtype=torch.float64) + 10 * c[0] + 1,
              Win((3,), stride=(4,), offset=(-3,)), store=store, dtype=torch.float64)
    seen = []

    def pure(ctx, a):
        seen.append(a.tolist())
        return a.clone()

    down = make((None,), pure, Win((3,), stride=(4,)), [up], [Win((3,), stride=(4,), offset=(2,))],
                store=store, dtype=torch.float64)
    down.check((S(-4, 0),))
    assert seen[0] == [2.0, 3.0, 0.0]


def test_negative_offset_on_finite_dim_of_upstream(store):
    # spec 7.1: offset -4 on a finite dim of size 8: the arg must be (8, 4), rows -4..3
    up = make((8, None), lambda c: pattern(c, (8, 4)), Win((8, 4)), store=store, dtype=torch.float64)
    shapes = []

    def pure(ctx, a):
        shapes.append(tuple(a.shape))
        return a[4:8] * 2

    down = make((4, None), pure, Win((4, 4)), [up], [Win((8, 4), stride=(4, 4), offset=(-4, 0))],
                store=store, dtype=torch.float64)
    down.check((S(None), S(-4, 8)))
    assert shapes and set(shapes) == {(8, 4)}


# ---------------------------------------------------------------- dimension_map on args windows


def test_fixed_dim_args_window(store):
    # upstream (3, None, None); downstream 2-D window reads all 3 channels
    up = make((3, None, None), base_pure((3, 4, 4)), Win((3, 4, 4), stride=(3, 2, 2)),
              store=store, dtype=torch.float64)
    shapes = []

    def pure(ctx, a):
        shapes.append(tuple(a.shape))
        return a.sum(0)

    aw = Win((3, 4, 4), stride=(3, 4, 4), dimension_map=(None, 0, 1))
    down = make((None, None), pure, Win((4, 4)), [up], [aw], store=store, dtype=torch.float64)
    down.check((S(-4, 8), S(0, 12)))
    down.check((S(-3, 9, 2), 5))
    assert set(shapes) == {(3, 4, 4)}


def test_fixed_dim_with_offset_and_transposed_map(store):
    up = make((None, 6, None), base_pure((2, 3, 2)), Win((2, 3, 2), stride=(2, 3, 1)),
              store=store, dtype=torch.float64)
    # dim 0 follows downstream coordinate 1, dim 2 coordinate 0, dim 1 fixed at rows [2, 5)
    aw = Win((2, 3, 2), stride=(2, 1, 2), offset=(0, 2, -1), dimension_map=(1, None, 0))
    down = make((None, None), lambda c, a: a.sum(1).T.contiguous(), Win((2, 2)), [up], [aw],
                store=store, dtype=torch.float64)
    down.check((S(-4, 6), S(-3, 5)))
    down.check((S(-4, 6, 3), S(-3, 5, 2)))


def test_args_window_with_more_dims_than_downstream(store):
    # 1-D downstream reads a (2, k) slab of a 2-D upstream; dim 1 follows coordinate 0
    up = make((2, None), base_pure((2, 3)), Win((2, 3), stride=(2, 2)), store=store, dtype=torch.float64)
    aw = Win((2, 5), stride=(1, 5), offset=(0, -1), dimension_map=(None, 0))
    down = make((None,), lambda c, a: a[0] - a[1], Win((5,)), [up], [aw], store=store, dtype=torch.float64)
    down.check((S(-7, 13),))


# ---------------------------------------------------------------- deeper chains


def test_depth_3_chain(store):
    a = make((None, None), base_pure((3, 3)), Win((3, 3), stride=(2, 2)), store=store, dtype=torch.float64)
    b = make((None, None), crop_pure((3, 3), (1, 1)), Win((3, 3)), [a], [Win((5, 5), stride=(3, 3), offset=(-1, -1))],
             store=store, dtype=torch.float64)
    c = make((None, None), crop_pure((2, 4), (0, 1), k=2), Win((2, 4), stride=(2, 3), offset=(1, 0)),
             [b], [Win((2, 6), stride=(2, 3), offset=(1, -1))], store=store, dtype=torch.float64)
    d = make((None, None), crop_pure((4, 4), (2, 0)), Win((4, 4), stride=(3, 3)),
             [c], [Win((7, 4), stride=(3, 3), offset=(-2, 0))], store=store, dtype=torch.float64)
    d.check((S(-5, 9), S(-6, 8)))
    for p in (a, b, c, d):
        no_dupes(p.calls)
    assert set(c.calls) == needed_upstream(d, 0, set(d.calls))
    assert set(b.calls) == needed_upstream(c, 0, set(c.calls))
    assert set(a.calls) == needed_upstream(b, 0, set(b.calls))
    d.check((S(0, 20, 3), S(-1, 2)))
    c.check((S(-8, 8), S(-8, 8)))
    b.check((S(-8, 8), S(-8, 8)))
    for p in (a, b, c, d):
        no_dupes(p.calls)


def test_multiple_args_and_diamond(store):
    base = make((None,), base_pure((4,)), Win((4,), stride=(3,)), store=store, dtype=torch.float64)
    left = make((None,), crop_pure((3,), (1,)), Win((3,)), [base], [Win((5,), stride=(3,), offset=(-1,))],
                store=store, dtype=torch.float64)
    right = make((None,), lambda c, x: x * 3 - 1, Win((2,), stride=(2,)), [base], [Win((2,), stride=(2,))],
                 store=store, dtype=torch.float64)

    def join(ctx, l, r, b):
        return l[:4] + r[1:5] * 2 + b[::2]

    top = make((None,), join, Win((4,), stride=(3,)), [left, right, base],
               [Win((5,), stride=(3,), offset=(-1,)), Win((6,), stride=(3,)), Win((8,), stride=(3,), offset=(-2,))],
               store=store, dtype=torch.float64)
    top.check((S(-10, 17),))
    top.check((S(-20, 30, 7),))
    for p in (base, left, right, top):
        no_dupes(p.calls)


def test_same_upstream_twice(store):
    up = make((None,), base_pure((3,)), Win((3,)), store=store, dtype=torch.float64)
    down = make((None,), lambda c, a, b: a - b[1:4], Win((3,)), [up, up],
                [Win((3,)), Win((5,), stride=(3,), offset=(-2,))], store=store, dtype=torch.float64)
    down.check((S(-6, 9),))
    no_dupes(up.calls)


def test_args_in_other_stores():
    s1, s2, s3 = it.MemoryTileStore(), it.MemoryTileStore(), it.MemoryTileStore(cache_size_bytes=0)
    a = make((None, 2), base_pure((3, 2)), Win((3, 2), stride=(2, 2)), store=s1, dtype=torch.float64)
    b = make((None, 2), crop_pure((2, 2), (1, 0)), Win((2, 2)), [a], [Win((4, 2), stride=(2, 2), offset=(-1, 0))],
             store=s2, dtype=torch.float64)
    c = make((None, 2), crop_pure((2, 2), (0, 0)), Win((2, 2), stride=(1, 2)), [b], [Win((3, 2), stride=(1, 2))],
             store=s3, dtype=torch.float64)
    c.check((S(-5, 7), S(None)))
    c.check((S(-5, 7, 2), 1))
    no_dupes(a.calls)
    no_dupes(b.calls)


# ---------------------------------------------------------------- counting


def test_each_window_once_per_read_with_empty_cache():
    store = it.MemoryTileStore(cache_size_bytes=0)
    up = make((None, None), base_pure((4, 4)), Win((4, 4), stride=(2, 2)), store=store, dtype=torch.float64)
    mid = make((None, None), crop_pure((4, 4), (1, 1)), Win((4, 4), stride=(2, 2)),
               [up], [Win((6, 6), stride=(2, 2), offset=(-1, -1))], store=store, dtype=torch.float64)
    top = make((None, None), crop_pure((3, 3), (1, 1)), Win((3, 3), stride=(2, 2)),
               [mid], [Win((5, 5), stride=(2, 2), offset=(-1, -1))], store=store, dtype=torch.float64)
    for rep in range(2):
        for p in (up, mid, top):
            p.reset_calls()
        top.check((S(0, 9), S(-3, 6)))
        for p in (up, mid, top):
            no_dupes(p.calls)
        assert set(top.calls) == set(top.ref.windows_for((S(0, 9), S(-3, 6))))
        assert set(mid.calls) == needed_upstream(top, 0, set(top.calls))
        assert set(up.calls) == needed_upstream(mid, 0, set(mid.calls))
        assert store.cache_info()["bytes"] == 0


def test_once_ever_with_unbounded_cache(store):
    up = make((None, None), base_pure((4, 4)), Win((4, 4), stride=(3, 3)), store=store, dtype=torch.float64)
    down = make((None, None), crop_pure((3, 3), (1, 1)), Win((3, 3), stride=(2, 2)),
                [up], [Win((5, 5), stride=(2, 2), offset=(-1, -1))], store=store, dtype=torch.float64)
    boxes = [(S(0, 9), S(0, 9)), (S(4, 15), S(-6, 2)), (S(-10, 20, 3), S(-10, 20, 4)), (S(0, 9), S(0, 9))]
    for b in boxes:
        down.check(b)
        up.check(b)
    no_dupes(up.calls)
    no_dupes(down.calls)
    n_up, n_down = len(up.calls), len(down.calls)
    for b in boxes:
        down.check(b)
    assert (len(up.calls), len(down.calls)) == (n_up, n_down)


def test_f_can_mutate_its_args(store):
    up = make((None,), base_pure((4,)), Win((4,), stride=(2,)), store=store, dtype=torch.float64)

    def pure(ctx, a):
        out = a[1:3].clone()
        a.mul_(0)  # must not corrupt the upstream cache nor other windows' args
        return out

    down = make((None,), pure, Win((2,)), [up], [Win((4,), stride=(2,), offset=(-1,))],
                store=store, dtype=torch.float64)
    down.check((S(-6, 10),))
    up.check((S(-8, 12),))
