"""Build an infinite_tensor.InfiniteTensor and its reference twin together.

``make(...)`` takes a *pure* per-window function ``pure(ctx, *arg_regions)``
and hands the library a wrapper that logs every call (non-batched, or batched
per the batch_size contract), while the reference (tests/reference.py) calls
``pure`` directly.  ``Pair.check(index)`` reads the library and compares to
the reference exactly (dtype, shape and every value).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

import infinite_tensor as it
from reference import RefTensor, Win

__all__ = ["Pair", "make", "assert_same", "pattern", "Win"]


def assert_same(got, expected):
    assert isinstance(got, torch.Tensor), type(got)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert tuple(got.shape) == tuple(expected.shape), (tuple(got.shape), tuple(expected.shape))
    if got.dtype == torch.bool:
        assert torch.equal(got, expected), (got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def pattern(ctx, size, dtype=torch.float64, base=0):
    """A deterministic, integer-valued window output that differs between
    windows and between positions inside a window."""
    key = 0
    for k, c in enumerate(ctx):
        key = key * 31 + (c + 7) * (k + 3)
    n = 1
    for s in size:
        n *= s
    vals = (torch.arange(n, dtype=torch.int64) * 3 + key * 5 + base) % 97 - 40
    return vals.reshape(tuple(size)).to(dtype)


class Pair:
    def __init__(self, lib, ref, calls, batches):
        self.lib = lib
        self.ref = ref
        self.calls = calls  # every ctx the library asked f for, in call order
        self.batches = batches  # batched f: the ctx list of each call

    def check(self, index):
        got = self.lib[index]
        assert_same(got, self.ref[index])
        return got

    def reset_calls(self):
        del self.calls[:]
        del self.batches[:]


def make(
    shape,
    pure: Callable,
    win: Win,
    args: Sequence[Pair] = (),
    args_windows: Sequence[Win] = (),
    *,
    store=None,
    dtype=torch.float32,
    blend=None,
    blend_init=None,
    batch_size: Optional[int] = None,
    tensor_id=None,
) -> Pair:
    calls: list = []
    batches: list = []
    if batch_size is None:

        def f(ctx, *arg_vals):
            calls.append(ctx)
            return pure(ctx, *arg_vals)

    else:

        def f(ctxs, *arg_lists):
            assert isinstance(ctxs, list), type(ctxs)
            batches.append(list(ctxs))
            outs = []
            for i, ctx in enumerate(ctxs):
                calls.append(ctx)
                outs.append(pure(ctx, *[lst[i] for lst in arg_lists]))
            return outs

    kwargs = {}
    if args:
        kwargs["args"] = tuple(a.lib for a in args)
        kwargs["args_windows"] = tuple(w.lib() for w in args_windows)
    lib = it.InfiniteTensor(
        shape=tuple(shape),
        f=f,
        output_window=win.lib(),
        dtype=dtype,
        tile_store=store,
        tensor_id=tensor_id,
        batch_size=batch_size,
        blend=blend,
        blend_init=blend_init,
        **kwargs,
    )
    ref = RefTensor(
        shape,
        pure,
        win,
        [a.ref for a in args],
        list(args_windows),
        dtype=dtype,
        blend=blend,
        blend_init=blend_init,
    )
    return Pair(lib, ref, calls, batches)
