"""Allowed batch sizes: batch_size=[1, 2, 4, 8] pads each batch to the next
allowed size by repeating its last window, and drops the padding's
outputs.  Values against tests/reference.py; batch shapes against the
windows each read needs."""
import pytest
import torch

import infinite_tensor as it
from infinite_tensor import sl
from pairs import Win, assert_same, make, pattern

WIN = Win((4, 4), stride=(3, 3), offset=(-1, 0))
SIZES = [1, 2, 4, 8]


def pure(ctx, *args):
    return pattern(ctx, (4, 4), torch.float64)


def padded_len(n):
    return next(s for s in SIZES if s >= n)


@pytest.mark.parametrize("region", [sl[0:4, 0:4], sl[-7:20, 3:11], sl[0:1, 0:1], sl[-40:40:3, 0:30:7]])
def test_values_and_padded_batches(region, store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=SIZES)
    assert_same(p.lib[region], p.ref[region])
    needed = len(set(p.calls))
    sizes = [len(b) for b in p.batches]
    assert all(s in SIZES for s in sizes)
    # full batches of 8, the last padded up to an allowed size
    real = [8] * (needed // 8) + ([needed % 8] if needed % 8 else [])
    assert sizes == [padded_len(n) for n in real]
    for batch, n in zip(p.batches, real):
        assert batch[n:] == [batch[n - 1]] * (len(batch) - n)  # padding repeats the last window


def test_stacked_outputs_and_pipeline_args(store):
    up = make((None, None), pure, WIN, store=store, dtype=torch.float64)
    arg = Win((6, 6), stride=(3, 3), offset=(-2, -1))
    seen = []

    def down_f(ctxs, xs):
        seen.append(len(ctxs))
        assert len(xs) == len(ctxs)
        return torch.stack([x[1:5, 1:5] * 2 for x in xs])  # one stacked tensor

    lib = it.InfiniteTensor((None, None), down_f, WIN.lib(), args=(up.lib,), args_windows=(arg.lib(),),
                            dtype=torch.float64, tile_store=store, batch_size=(4, 3))
    ref = make((None, None), lambda ctx, x: x[1:5, 1:5] * 2, WIN, args=[up], args_windows=[arg],
               dtype=torch.float64, store=it.MemoryTileStore())
    assert lib.batch_size == (4, 3)
    assert_same(lib[0:10, -5:7], ref.ref[0:10, -5:7])
    assert all(n in (3, 4) for n in seen)


def test_a_wrong_count_is_reported_as_f_returned_it(store):
    lib = it.InfiniteTensor((None,), lambda ctxs: [torch.zeros(4)] * (len(ctxs) + 1), it.TensorWindow((4,)),
                            tile_store=store, batch_size=[2, 4])
    with pytest.raises(it.ShapeMismatchError):
        lib[0:12]


@pytest.mark.parametrize("bad", [[], [0, 2], [2, 2], [1.0], [True], [2**63]])
def test_bad_lists_are_refused(bad, store):
    with pytest.raises(it.ValidationError, match="batch_size as a list"):
        it.InfiniteTensor((None,), lambda c: torch.zeros(4), it.TensorWindow((4,)), tile_store=store, batch_size=bad)


def test_swapping_f_keeps_the_padding(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=SIZES)
    lens = []

    def other(ctxs):
        lens.append(len(ctxs))
        return [pure(c) for c in ctxs]

    p.lib._f = other
    assert p.lib.f is other
    assert_same(p.lib[0:7, 0:7], p.ref[0:7, 0:7])
    assert lens and all(n in SIZES for n in lens)
