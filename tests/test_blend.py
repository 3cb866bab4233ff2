"""Combining overlapping windows: sum (default), torch.maximum, torch.minimum,
custom callables ("last wins"), blend_init; the answer is the fold in
lexicographic window order whatever the order of reads."""

import collections

import pytest
import torch

import infinite_tensor as it
from pairs import Win, assert_same, make, pattern

S = slice


def ident(ctx, size, dtype=torch.float64):
    """A window output that says which window it is."""
    v = 0
    for c in ctx:
        v = v * 100 + c
    return torch.full(size, float(v), dtype=torch.float64).to(dtype)


def test_readme_max_blend_sample():
    def f(ctx):
        wy, wx = ctx
        return torch.full((64, 64), float(wy + wx))

    tensor = it.InfiniteTensor(
        shape=(None, None),
        f=f,
        output_window=it.TensorWindow((64, 64), stride=(32, 32)),
        tile_store=it.MemoryTileStore(),
        tensor_id="max_blend_example",
        blend=torch.maximum,
        blend_init=float("-inf"),
    )
    result = tensor[0:128, 0:128]
    y = torch.arange(128) // 32
    assert torch.equal(result, (y[:, None] + y[None, :]).float())


@pytest.mark.parametrize(
    "blend,init",
    [(None, None), (None, 7), (None, -2.5), (torch.maximum, float("-inf")), (torch.maximum, None),
     (torch.minimum, float("inf")), (torch.minimum, 3), (lambda a, b: b, None), (lambda a, b: a * 0.5 + b, 1.0),
     (lambda a, b: torch.where(b > a, b, a), -100.0)],
    ids=["sum", "sum_init7", "sum_init_neg", "max", "max_init0", "min", "min_init3", "last", "decay", "where"],
)
def test_blends_match_reference(store, blend, init):
    win = Win((4, 3), stride=(2, 1), offset=(-1, 0))
    p = make((None, None), lambda c: pattern(c, win.size), win, store=store, dtype=torch.float64,
             blend=blend, blend_init=init)
    p.check((S(-3, 9), S(-2, 6)))
    p.check((S(-20, -13), S(-2, 6, 3)))
    p.check((S(2, 3), S(0, 20, 2)))


def test_blend_init_fills_gaps_and_finite_overshoot(store):
    # stride > size leaves gaps; the finite dim of 5 drops the window sticking out
    win = Win((2, 2), stride=(3, 3))
    p = make((5, None), lambda c: torch.ones(2, 2), win, store=store, blend_init=7)
    got = p.check((S(None), S(0, 6)))
    assert got[0, 0] == 8 and got[2, 0] == 7 and got[3, 0] == 8 and got[4, 0] == 8
    p.check((S(None), S(-7, 9, 2)))


def test_blend_init_with_sum_spec_example(store):
    p = make((None, None), lambda c: torch.ones(4, 4), Win((4, 4)), store=store, blend_init=7)
    assert torch.equal(p.lib[0:8, 0:8], torch.full((8, 8), 8.0))


def test_max_over_covering_windows(store):
    win = Win((4, 4), stride=(2, 2))
    p = make((None, None), lambda c: pattern(c, (4, 4)), win, store=store, dtype=torch.float64,
             blend=torch.maximum, blend_init=float("-inf"))
    got = p.check((S(0, 8), S(0, 8)))
    # independent check: each pixel is the max of the 4 windows covering it
    for y in range(0, 8, 3):
        for x in range(0, 8, 3):
            vals = [pattern((i, j), (4, 4))[y - 2 * i, x - 2 * j]
                    for i in (y // 2 - 1, y // 2) for j in (x // 2 - 1, x // 2)]
            assert got[y, x] == max(vals)


@pytest.mark.parametrize(
    "reads",
    [
        [(4, 8), (0, 8)],
        [(0, 8)],
        [(6, 7), (2, 3), (0, 8)],
        [(-10, -2), (8, 12), (0, 8)],
        [(0, 1), (7, 8), (3, 5), (0, 8)],
    ],
)
def test_last_wins_is_lexicographic_whatever_the_read_order(store, reads):
    # spec 4.5 probe: read [4:8] first then [0:8]: Memory gave [10,10,9,9,8,8,7,7]
    win = Win((4,), stride=(2,))
    p = make((None,), lambda c: torch.full((4,), float(10 - c[0])), win, store=store, blend=lambda a, b: b)
    for a, b in reads:
        p.check((S(a, b),))
    got = p.lib[0:8]
    assert got.tolist() == [10, 10, 9, 9, 8, 8, 7, 7]


def test_last_wins_2d_different_orders():
    results = []
    for order in ([(S(0, 8), S(0, 8))], [(S(5, 8), S(5, 8)), (S(0, 3), S(4, 8)), (S(0, 8), S(0, 8))],
                  [(S(3, 4), S(3, 4)), (S(0, 8), S(0, 8))]):
        store = it.MemoryTileStore()
        win = Win((4, 4), stride=(2, 3), offset=(0, -1))
        p = make((None, None), lambda c: ident(c, (4, 4)), win, store=store, dtype=torch.float64,
                 blend=lambda a, b: b)
        for ix in order:
            p.check(ix)
        results.append(p.lib[0:8, 0:8])
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_last_wins_with_bounded_cache():
    # recomputation after eviction must not change the order-defined answer
    store = it.MemoryTileStore(cache_size_bytes=0)
    win = Win((4,), stride=(2,))
    p = make((None,), lambda c: torch.full((4,), float(10 - c[0])), win, store=store, blend=lambda a, b: b)
    for a, b in [(4, 8), (0, 8), (6, 7), (0, 8)]:
        p.check((S(a, b),))


def test_blend_receives_same_shaped_tensors(store):
    shapes = []

    def blend(a, b):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float64
        shapes.append(tuple(a.shape))
        return a + 2 * b

    win = Win((3, 3), stride=(2, 2))
    p = make((None, None), lambda c: pattern(c, (3, 3)), win, store=store, dtype=torch.float64,
             blend=blend, blend_init=1.0)
    p.check((S(0, 6), S(0, 6)))
    assert shapes


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("blend", [torch.maximum, torch.minimum], ids=["max", "min"])
def test_builtin_blends_on_other_dtypes(store, dtype, blend):
    win = Win((3, 2), stride=(2, 1))
    init = 0 if blend is torch.maximum else 100

    def pure(c):
        return (pattern(c, win.size, torch.int64) % 50 + 1).to(dtype)

    p = make((None, None), pure, win, store=store, dtype=dtype, blend=blend, blend_init=init)
    p.check((S(-3, 7), S(-2, 4)))


def test_bool_max_is_or(store):
    win = Win((3,), stride=(2,))
    p = make((None,), lambda c: (torch.arange(3) + c[0]) % 3 == 0, win, store=store, dtype=torch.bool,
             blend=torch.maximum)
    p.check((S(-4, 9),))


def test_nan_handling_in_builtin_max(store):
    # torch.maximum propagates NaN
    win = Win((2,), stride=(1,))
    p = make((None,), lambda c: torch.tensor([float("nan"), 1.0]) if c[0] == 0 else torch.tensor([2.0, 3.0]),
             win, store=store, blend=torch.maximum, blend_init=float("-inf"))
    p.check((S(-1, 3),))


def test_blend_and_init_not_part_of_metadata(store):
    a = it.InfiniteTensor(shape=(None,), f=lambda c: torch.ones(2), output_window=it.TensorWindow((2,)),
                          tile_store=store, tensor_id="x", blend=torch.maximum, blend_init=0)
    assert "blend" not in a.to_json() and "blend_init" not in a.to_json()


def test_custom_blend_computes_only_the_windows_a_read_needs(store):
    # decisions: each window at most once per read; README: only the windows you read
    win = Win((4,), stride=(2,))
    p = make((None,), lambda c: torch.full((4,), float(c[0])), win, store=store, blend=lambda a, b: b)
    p.check((S(0, 8),))
    assert sorted(p.calls) == [(-1,), (0,), (1,), (2,), (3,)]


def test_custom_blend_each_window_once_ever_with_unbounded_cache(store):
    # a window straddling the edge of a read keeps its values for the tiles
    # the read did not complete; a later read folds them in at their place in
    # the lexicographic order instead of computing the window again
    win = Win((4,), stride=(2,))
    p = make((None,), lambda c: torch.full((4,), float(c[0])), win, store=store, blend=lambda a, b: b)
    for box in [(0, 8), (-8, 0), (-4, 4), (100, 104), (96, 100), (0, 8), (5, 13), (-13, -5)]:
        p.check((S(*box),))
    dup = sorted(c for c, n in collections.Counter(p.calls).items() if n > 1)
    assert not dup, f"computed more than once: {dup}"

def test_custom_blend_upstream_windows_once_per_read(store):
    # "each upstream window is computed at most once per read" (docs/architecture.md),
    # custom blends included: one read, two args windows on the same custom-blend upstream
    up = make((None,), lambda c: torch.full((2,), float(c[0])), Win((2,), stride=(1,)), store=store,
              blend=lambda a, b: b)
    down = make((None,), lambda c, x, y: x[:1] + y[:1], Win((1,)), [up, up],
                [Win((4,), stride=(3,), offset=(-1,)), Win((2,), stride=(4,), offset=(3,))], store=store)
    down.check((S(0, 1),))
    dup = sorted(c for c, n in collections.Counter(up.calls).items() if n > 1)
    assert not dup, f"upstream windows computed twice in one read: {dup}"
