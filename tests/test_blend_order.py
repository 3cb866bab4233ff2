"""Order-dependent blends give the lexicographic fold whatever the read order.

The answer of 0.3's memory store for a blend callable is, per pixel, the fold
of blend over the windows covering it in lexicographic window order, starting
from blend_init.  These tests read random regions in random orders (2-D,
overlapping and gapped windows, offsets, batching) with a blend that is
neither commutative nor associative, and compare every read with that fold
computed by plain torch; each window must be computed once.
"""
import collections
import random

import pytest
import torch

import infinite_tensor as it


def window_value(ctx, size):
    g = torch.Generator().manual_seed(hash(ctx) & 0x7FFFFFFF)
    return torch.randint(-9, 10, size, generator=g).to(torch.float64)


def blend(a, b):
    return a * 0.5 + b  # order matters


def reference(box, size, stride, offset, init):
    """The lexicographic fold over every window meeting box (plain torch)."""
    (y0, y1), (x0, x1) = box
    out = torch.full((y1 - y0, x1 - x0), float(init), dtype=torch.float64)
    lo = [-((o + z - 1 - b0) // s) - 1 for b0, z, s, o in zip((y0, x0), size, stride, offset)]
    hi = [(b1 - 1 - o) // s for b1, s, o in zip((y1, x1), stride, offset)]
    for i in range(lo[0] - 1, hi[0] + 1):
        for j in range(lo[1] - 1, hi[1] + 1):
            ys, xs = i * stride[0] + offset[0], j * stride[1] + offset[1]
            a0, a1 = max(ys, y0), min(ys + size[0], y1)
            b0, b1 = max(xs, x0), min(xs + size[1], x1)
            if a0 >= a1 or b0 >= b1:
                continue
            v = window_value((i, j), size)[a0 - ys:a1 - ys, b0 - xs:b1 - xs]
            region = out[a0 - y0:a1 - y0, b0 - x0:b1 - x0]
            out[a0 - y0:a1 - y0, b0 - x0:b1 - x0] = blend(region, v)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_reads_in_random_order(seed):
    rng = random.Random(seed)
    size = (rng.randint(1, 6), rng.randint(1, 6))
    stride = (rng.randint(1, 7), rng.randint(1, 7))
    offset = (rng.randint(-5, 5), rng.randint(-5, 5))
    init = rng.choice([0, -1, 3])
    batch = rng.choice([None, 1, 3])
    calls = collections.Counter()

    def f(ctx):
        calls[ctx] += 1
        return window_value(ctx, size)

    def fb(ctxs):
        return [f(c) for c in ctxs]

    t = it.InfiniteTensor((None, None), fb if batch else f, it.TensorWindow(size, stride, offset),
                          dtype=torch.float64, blend=blend, blend_init=init, batch_size=batch)
    for _ in range(8):
        y0, x0 = rng.randint(-20, 20), rng.randint(-20, 20)
        box = ((y0, y0 + rng.randint(1, 15)), (x0, x0 + rng.randint(1, 15)))
        got = t[box[0][0]:box[0][1], box[1][0]:box[1][1]]
        torch.testing.assert_close(got, reference(box, size, stride, offset, init), rtol=0, atol=1e-12)
    assert max(calls.values()) == 1, [c for c, n in calls.items() if n > 1]


def test_last_wins_matches_0_3_example():
    # spec §4.5: read [4:8] first, then [0:8], with overwrite: [10,10,9,9,8,8,7,7]
    t = it.InfiniteTensor((None,), lambda c: torch.full((4,), float(10 - c[0])),
                          it.TensorWindow((4,), stride=(2,)), blend=lambda a, b: b)
    t[4:8]
    assert t[0:8].tolist() == [10, 10, 9, 9, 8, 8, 7, 7]
