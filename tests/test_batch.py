"""batch_size: the list contract, chunk sizes, the stacked-tensor return,
wrong counts, and values identical to the unbatched reference."""

import pytest
import torch

import infinite_tensor as it
from pairs import Win, assert_same, make, pattern

S = slice


def base_pure(size):
    return lambda ctx: pattern(ctx, size)


@pytest.mark.parametrize("bs", [1, 2, 3, 4, 100])
def test_batched_values_and_chunks(store, bs):
    win = Win((3, 3), stride=(2, 2))
    p = make((None, None), base_pure(win.size), win, store=store, dtype=torch.float64, batch_size=bs)
    p.check((S(-3, 7), S(0, 9)))
    expected = set(p.ref.windows_for((S(-3, 7), S(0, 9))))
    assert set(p.calls) == expected and len(p.calls) == len(expected)
    assert p.batches and all(1 <= len(b) <= bs for b in p.batches)
    for b in p.batches:
        assert all(type(c) is tuple and all(type(x) is int for x in c) for c in b)
    p.check((S(-3, 7, 2), 4))


def test_batched_with_args(store):
    up = make((3, None, None), lambda c: pattern(c, (3, 4, 4)), Win((3, 4, 4)), store=store, dtype=torch.float64)
    aw = Win((3, 6, 6), stride=(3, 4, 4), offset=(0, -1, -1))
    seen = []

    def pure(ctx, a):
        return a[:, 1:5, 1:5] * 2 + pattern(ctx, (3, 4, 4))

    down = make((3, None, None), pure, Win((3, 4, 4)), [up], [aw], store=store, dtype=torch.float64, batch_size=3)
    down.check((S(None), S(0, 12), S(-4, 8)))
    assert all(len(b) <= 3 for b in down.batches)
    assert len(down.calls) == 9


def test_batched_f_receives_lists(store):
    up = make((None,), lambda c: pattern(c, (2,)), Win((2,)), store=store, dtype=torch.float64)
    up2 = make((None,), lambda c: pattern(c, (3,)) + 1, Win((3,)), store=store, dtype=torch.float64)
    got = []

    def f(ctxs, a, b):
        got.append((ctxs, a, b))
        assert isinstance(ctxs, list) and isinstance(a, list) and isinstance(b, list)
        assert len(ctxs) == len(a) == len(b)
        return [x[:2] + y[1:3] for x, y in zip(a, b)]

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)),
                          args=(up.lib, up2.lib), args_windows=(it.TensorWindow((2,)), it.TensorWindow((3,), stride=(2,))),
                          dtype=torch.float64, tile_store=store, batch_size=2)
    r = t[0:8]
    assert [len(c) for c, _, _ in got] and all(len(c) <= 2 for c, _, _ in got)
    assert sorted(c for cs, _, _ in got for c in cs) == [(0,), (1,), (2,), (3,)]
    for cs, a, b in got:
        for ctx, x, y in zip(cs, a, b):
            assert torch.equal(x, up.ref[2 * ctx[0]: 2 * ctx[0] + 2])
            assert torch.equal(y, up2.ref[2 * ctx[0]: 2 * ctx[0] + 3])
    exp = torch.cat([up.ref[2 * i: 2 * i + 2] + up2.ref[2 * i + 1: 2 * i + 3] for i in range(4)])
    assert torch.equal(r, exp)


def test_batch_size_1_still_uses_lists(store):
    calls = []

    def f(ctxs):
        calls.append(ctxs)
        return [torch.ones(2) * c[0] for c in ctxs]

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)), tile_store=store, batch_size=1)
    assert torch.equal(t[0:6], torch.tensor([0.0, 0, 1, 1, 2, 2]))
    assert calls == [[(0,)], [(1,)], [(2,)]] or sorted(calls) == [[(0,)], [(1,)], [(2,)]]


def test_tuple_return_accepted(store):
    t = it.InfiniteTensor(shape=(None,), f=lambda cs: tuple(torch.full((2,), float(c[0])) for c in cs),
                          output_window=it.TensorWindow((2,)), tile_store=store, batch_size=3)
    assert torch.equal(t[0:6], torch.tensor([0.0, 0, 1, 1, 2, 2]))


def test_stacked_tensor_return(store):
    def f(ctxs):
        return torch.stack([torch.full((2, 3), float(c[0] * 10 + c[1])) for c in ctxs])

    t = it.InfiniteTensor(shape=(None, None), f=f, output_window=it.TensorWindow((2, 3)), tile_store=store,
                          batch_size=4)
    r = t[0:4, 0:9]
    exp = torch.tensor([[float(i // 2 * 10 + j // 3) for j in range(9)] for i in range(4)])
    assert torch.equal(r, exp)


def test_stacked_views_with_any_strides(store):
    """The stacked tensor is imported once and cut into per-window views:
    a transposed, strided stack must give each window its own values."""
    def f(ctxs):
        base = torch.stack([torch.full((3, 2), float(c[0] * 10 + c[1])) for c in ctxs], dim=2)
        return base.permute(2, 1, 0)[:, :, ::1]  # (n, 2, 3), non-contiguous

    t = it.InfiniteTensor(shape=(None, None), f=f, output_window=it.TensorWindow((2, 3)), tile_store=store,
                          batch_size=3)
    exp = torch.tensor([[float(i // 2 * 10 + j // 3) for j in range(12)] for i in range(6)])
    assert torch.equal(t[0:6, 0:12], exp)


@pytest.mark.parametrize("bad", ["dtype", "window shape", "dims"])
def test_stacked_mismatch_messages(store, bad):
    def f(ctxs):
        n = len(ctxs)
        return {"dtype": torch.ones(n, 2, dtype=torch.float64), "window shape": torch.ones(n, 3),
                "dims": torch.ones(n, 2, 1)}[bad]

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)), tile_store=store, batch_size=2)
    err = it.DtypeMismatchError if bad == "dtype" else it.ShapeMismatchError
    with pytest.raises(err, match="float64" if bad == "dtype" else r"\(2,\)"):
        t[0:4]
    t2 = it.InfiniteTensor(shape=(None,), f=lambda cs: torch.ones(len(cs), 2), output_window=it.TensorWindow((2,)),
                           tile_store=store, batch_size=2, tensor_id="ok")
    assert torch.equal(t2[0:4], torch.ones(4))


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_count_list(store, delta):
    sizes = []

    def f(ctxs):
        sizes.append(len(ctxs))
        n = max(len(ctxs) + delta, 0)
        return [torch.ones(2) for _ in range(n)]

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)), tile_store=store, batch_size=3)
    with pytest.raises(it.ShapeMismatchError) as ei:
        t[0:6]
    msg = str(ei.value)
    n = sizes[-1]
    assert str(n) in msg and str(max(n + delta, 0)) in msg  # names both counts


def test_wrong_count_stacked(store):
    def f(ctxs):
        return torch.ones(len(ctxs) + 1, 2)

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)), tile_store=store, batch_size=2)
    with pytest.raises(it.ShapeMismatchError):
        t[0:4]


def test_short_batch_leaves_no_broken_state(store):
    # spec 7.3: a short list used to leave windows unprocessed (KeyError later)
    state = {"short": True}

    def f(ctxs):
        outs = [torch.full((2,), float(c[0])) for c in ctxs]
        return outs[:-1] if state["short"] else outs

    t = it.InfiniteTensor(shape=(None,), f=f, output_window=it.TensorWindow((2,)), tile_store=store, batch_size=2)
    with pytest.raises(it.ShapeMismatchError):
        t[0:4]
    state["short"] = False
    assert torch.equal(t[0:4], torch.tensor([0.0, 0, 1, 1]))


def test_wrong_window_shape_in_batch(store):
    t = it.InfiniteTensor(shape=(None,), f=lambda cs: [torch.ones(3) for _ in cs],
                          output_window=it.TensorWindow((2,)), tile_store=store, batch_size=2)
    with pytest.raises(it.ShapeMismatchError):
        t[0:4]


def test_non_list_return(store):
    t = it.InfiniteTensor(shape=(None,), f=lambda cs: 5, output_window=it.TensorWindow((2,)),
                          tile_store=store, batch_size=2)
    with pytest.raises((TypeError, it.ShapeMismatchError)):
        t[0:4]


def test_upstream_unbatched_downstream_batched(store):
    """README: batch size is per tensor; base (None) is still called one window at a time."""
    base_calls = []

    def base_f(ctx):
        base_calls.append(ctx)
        assert isinstance(ctx, tuple)
        return pattern(ctx, (2, 2))

    base = it.InfiniteTensor(shape=(None, None), f=base_f, output_window=it.TensorWindow((2, 2)),
                             dtype=torch.float64, tile_store=store)

    def f(ctxs, prevs):
        return [p * 2 for p in prevs]

    down = it.InfiniteTensor(shape=(None, None), f=f, output_window=it.TensorWindow((2, 2)), args=(base,),
                             args_windows=(it.TensorWindow((2, 2)),), dtype=torch.float64, tile_store=store,
                             batch_size=4)
    r = down[0:4, 0:6]
    assert torch.equal(r, base[0:4, 0:6] * 2)
    assert len(base_calls) == 6
