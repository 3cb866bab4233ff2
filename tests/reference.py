"""A plain-torch reference for infinite_tensor, independent of the library.

Nothing here imports infinite_tensor.  It restates the documented semantics
(README 0.3, spec/reference-behaviour.md, docs/decisions-draft.md) in the most
direct way we could think of, trading speed for obviousness:

* A window with index ``ctx`` covers, along dim d, the pixels
  ``[ctx[m] * stride[d] + offset[d], ... + size[d])`` where ``m`` is
  ``dimension_map[d]`` (``d`` without a map).  A map entry of None means the
  dim does not slide: it covers ``[offset[d], offset[d] + size[d])``.  A
  coordinate that no dim follows is always 0.
* A tensor's value over a box is: start from ``blend_init`` (0 when None),
  then fold, in lexicographic window-index order, every window whose bounds
  intersect the box and lie wholly inside every finite dim, with ``+`` (the
  default) or ``blend(existing, incoming)``.
* A window's output is ``f(ctx, *arg_regions)`` where ``arg_regions[i]`` is
  upstream ``args[i]`` evaluated (recursively, the same way) over
  ``args_windows[i].bounds(ctx)``: raw coordinates, so past a finite dim it
  reads the upstream's fill value and never wraps around.
* Indexing: finite dims follow Python/torch (negative ints wrap once, slices
  clamp); infinite dims take literal coordinates.  Ints squeeze their dim.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import torch

__all__ = ["Win", "RefTensor", "normalize_index", "fill_value"]


def _floordiv(a: int, b: int) -> int:
    return a // b  # Python's // is an exact floor for ints, negatives included


def _ceildiv(a: int, b: int) -> int:
    return -((-a) // b)


class Win:
    """A window description: size, stride, offset, dimension_map (normalised)."""

    def __init__(self, size, stride=None, offset=None, dimension_map=None):
        size = tuple(int(s) for s in size)
        n = len(size)
        if isinstance(stride, int):
            stride = (stride,) * n
        if isinstance(offset, int):
            offset = (offset,) * n
        self.size = size
        self.stride = tuple(int(s) for s in stride) if stride else size
        self.offset = tuple(int(o) for o in offset) if offset else (0,) * n
        self.dimension_map = None if dimension_map is None else tuple(dimension_map)
        assert len(self.stride) == n and len(self.offset) == n
        assert self.dimension_map is None or len(self.dimension_map) == n

    @property
    def ndim(self) -> int:
        return len(self.size)

    def coord_of(self, d: int):
        """The window-index coordinate dim d follows (None: fixed dim)."""
        return d if self.dimension_map is None else self.dimension_map[d]

    def lib(self):
        """The same window as an infinite_tensor.TensorWindow, every field explicit."""
        import infinite_tensor

        return infinite_tensor.TensorWindow(
            size=self.size,
            stride=self.stride,
            offset=self.offset,
            dimension_map=self.dimension_map,
        )

    def bounds(self, ctx: Sequence[int]):
        """[(start, stop)] per dim of the window with index ctx."""
        out = []
        for d in range(self.ndim):
            c = self.coord_of(d)
            start = self.offset[d] if c is None else ctx[c] * self.stride[d] + self.offset[d]
            out.append((start, start + self.size[d]))
        return out

    def windows(self, box, shape=None, ncoords=None):
        """Window indices whose bounds intersect box ([(start, stop)] per dim),
        lexicographic order; with shape, only windows lying wholly inside
        every finite dim of shape."""
        if ncoords is None:
            ncoords = self.ndim
        ranges = []
        for c in range(ncoords):
            dims = [d for d in range(self.ndim) if self.coord_of(d) == c]
            if not dims:
                ranges.append(range(0, 1))
                continue
            lo, hi = -math.inf, math.inf
            for d in dims:
                start, stop = box[d]
                # intersect: i*st + off < stop  and  i*st + off + size > start
                lo = max(lo, _floordiv(start - self.offset[d] - self.size[d], self.stride[d]) + 1)
                hi = min(hi, _ceildiv(stop - self.offset[d], self.stride[d]) - 1)
            ranges.append(range(lo, hi + 1) if lo <= hi else range(0))
        for ctx in itertools.product(*ranges):
            b = self.bounds(ctx)
            ok = True
            for d in range(self.ndim):
                (ws, we), (bs, be) = b[d], box[d]
                if not max(ws, bs) < min(we, be):
                    ok = False
                    break
                if shape is not None and shape[d] is not None and (ws < 0 or we > shape[d]):
                    ok = False
                    break
            if ok:
                yield tuple(ctx)


def fill_value(dtype, blend_init):
    return 0 if blend_init is None else blend_init


def normalize_index(shape, index):
    """(box, squeeze) for t[index]: box is [(start, stop, step)] per dim.

    Only the valid forms; the error cases are tested against the library
    directly."""
    if not isinstance(index, tuple):
        index = tuple(index) if isinstance(index, list) else (index,)
    n = len(shape)
    if any(i is Ellipsis for i in index):
        k = index.index(Ellipsis)
        rest = n - (len(index) - 1)
        index = index[:k] + (slice(None),) * rest + index[k + 1:]
    index = index + (slice(None),) * (n - len(index))
    box, squeeze = [], []
    for d, (ix, ext) in enumerate(zip(index, shape)):
        if isinstance(ix, slice):
            step = 1 if ix.step is None else ix.step
            if ext is None:
                box.append((ix.start, ix.stop, step))
            else:
                box.append(ix.indices(ext))
        else:
            i = int(ix)
            if ext is not None and i < 0:
                i += ext
            box.append((i, i + 1, 1))
            squeeze.append(d)
    return box, squeeze


class RefTensor:
    """Plain evaluation of a tensor definition over finite boxes."""

    def __init__(
        self,
        shape,
        f: Callable,
        window: Win,
        args: Sequence["RefTensor"] = (),
        args_windows: Sequence[Win] = (),
        dtype=torch.float32,
        blend: Optional[Callable] = None,
        blend_init=None,
    ):
        self.shape = tuple(shape)
        self.f = f
        self.window = window
        self.args = list(args)
        self.args_windows = list(args_windows)
        self.dtype = dtype
        self.blend = blend
        self.blend_init = blend_init
        self._outputs = {}

    def window_output(self, ctx):
        """f's output for window ctx (memoised: f is deterministic)."""
        if ctx not in self._outputs:
            arg_vals = [
                a.region(aw.bounds(ctx)) for a, aw in zip(self.args, self.args_windows)
            ]
            out = self.f(ctx, *arg_vals)
            assert tuple(out.shape) == self.window.size, (out.shape, self.window.size)
            self._outputs[ctx] = out.to(self.dtype)
        return self._outputs[ctx]

    def region(self, box):
        """Dense values over box = [(start, stop)] per dim (step 1)."""
        ext = [max(stop - start, 0) for start, stop in box]
        out = torch.full(ext, fill_value(self.dtype, self.blend_init), dtype=self.dtype)
        if any(e == 0 for e in ext):
            return out
        for ctx in self.window.windows(box, self.shape):
            w = self.window_output(ctx)
            dst, src = [], []
            for (ws, we), (bs, be) in zip(self.window.bounds(ctx), box):
                lo, hi = max(ws, bs), min(we, be)
                dst.append(slice(lo - bs, hi - bs))
                src.append(slice(lo - ws, hi - ws))
            dst, src = tuple(dst), tuple(src)
            if self.blend is None:
                out[dst] = out[dst] + w[src]
            else:
                out[dst] = self.blend(out[dst], w[src])
        return out

    def read(self, index):
        """The value of t[index] (valid index forms only)."""
        box, squeeze = normalize_index(self.shape, index)
        dense = self.region([(start, max(stop, start)) for start, stop, _ in box])
        sl = tuple(slice(None, None, step) for _, _, step in box)
        out = dense[sl]
        if squeeze:
            out = out.reshape([s for d, s in enumerate(out.shape) if d not in squeeze])
        return out.contiguous()

    def __getitem__(self, index):
        return self.read(index)

    def windows_for(self, index):
        """Window indices the library may need for t[index] (steps ignored)."""
        box, _ = normalize_index(self.shape, index)
        return list(self.window.windows([(a, b) for a, b, _ in box], self.shape))
