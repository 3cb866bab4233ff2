"""Exact neural networks over infinite tensors.

``apply(net, x)`` returns an InfiniteTensor holding ``net`` applied to the
whole unbounded input ``x``: each window of the result is computed from a
crop of ``x`` just large enough (the window plus the network's halo), so
the values are those of ``net`` run on any finite crop large enough, away
from that crop's edges.  No blending, no seams.

How it works.  Along each spatial axis a layer is an *index map*: the
outputs ``[lo, hi)`` need the inputs ``need(lo, hi)``.  With
``r = (k - 1) * dilation + 1``:

- convolution and pooling (stride s, padding p): ``[s*lo - p, s*(hi-1) - p + r)``;
- transposed convolution: ``[floor((lo + p - q) / s), floor((hi - 1 + p) / s) + 1)``
  with ``q = max(0, (k-1)*d - s + 1)`` (this is ``ceil((lo + p - (k-1)*d) / s)`` when
  every output has an input; otherwise the outputs no input reaches, the
  bias alone, need a crop that starts early enough to produce them);
- nearest upsampling by f: ``[floor(lo / f), floor((hi - 1) / f) + 1)``; linear
  ones one input more on each side (two on the right for cubic);
- pointwise layers (activations, eval-mode BatchNorm, Dropout in eval):
  the identity.

A chain composes the maps from the last layer back.  The result's windows
are tiles of T outputs per axis, T a multiple of every upsampling factor
in the chain, so the input window of tile n starts at ``n * stride + offset``
with a fixed size: an ordinary TensorWindow, and ``x`` supplies it like
any upstream tensor (cached, batched, persisted as usual).

Each window then runs the layers in *valid* mode on its crop, tracking the
coordinate of the first element per axis: a convolution runs without
padding (padding only decides which coordinates line up; an infinite input
has no edge to pad), starting at the first input that begins an output; a
transposed convolution runs whole and keeps the outputs every input of
which lies in the crop; an upsampling keeps those its interpolation reads
wholly inside the crop.  The last layer's output is cut to the tile.

Residual blocks: wrap the branch, ``Residual(body)`` computes ``x + body(x)``
(the skip cut to the branch's exact range).  Other modules: register a rule
(``register_window_rule``), or a module type as pointwise.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F

from .errors import NotWindowableError, ValidationError
from .infinite_tensor import InfiniteTensor
from .tensor_window import TensorWindow

__all__ = ["apply", "window_spec", "WindowSpec", "Residual", "register_window_rule", "WindowRule"]

AUTO_TILE = 256  # outputs per axis of a window when tile="auto" (rounded up to the chain's period)


def _floordiv(a: int, b: int) -> int:
    return a // b


def _ceildiv(a: int, b: int) -> int:
    return -((-a) // b)


def _per_axis(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    return value if len(value) == n else (value[0],) * n


class WindowRule:
    """How one layer maps output coordinates to input coordinates, and how
    it runs on a crop.  Subclass it for ``register_window_rule``.

    ``need(axis, lo, hi)`` returns the input range ``(ilo, ihi)`` the
    outputs ``[lo, hi)`` along spatial axis ``axis`` need.  ``period(axis)``
    is how many outputs make the input start move by a whole number (the
    upsampling factor; 1 for the rest).  ``run(x, starts)`` runs the layer
    on ``x`` (batch and channel dims first, then the spatial axes) whose
    axis a begins at input coordinate ``starts[a]``, and returns
    ``(y, out_starts)``: outputs every element of which is exact, and the
    coordinate of y's first element per axis.
    """

    def need(self, axis: int, lo: int, hi: int) -> tuple[int, int]:
        raise NotImplementedError

    def period(self, axis: int) -> int:
        return 1

    def run(self, x: torch.Tensor, starts: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        raise NotImplementedError


class _Pointwise(WindowRule):
    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor]):
        self.module = module

    def need(self, axis, lo, hi):
        return lo, hi

    def run(self, x, starts):
        return self.module(x), list(starts)


class _Window(WindowRule):
    """Convolutions and pools: output o reads inputs [s*o - p, s*o - p + r)."""

    def __init__(self, nd, kernel, stride, padding, dilation, op):
        self.k = _per_axis(kernel, nd)
        self.s = _per_axis(stride, nd)
        self.p = _per_axis(padding, nd)
        self.d = _per_axis(dilation, nd)
        self.op = op  # op(x) over a crop, without padding

    def need(self, a, lo, hi):
        r = (self.k[a] - 1) * self.d[a] + 1
        return self.s[a] * lo - self.p[a], self.s[a] * (hi - 1) - self.p[a] + r

    def run(self, x, starts):
        cut, out = [], []
        for a, start in enumerate(starts):
            first = _ceildiv(start + self.p[a], self.s[a])  # the first output whose inputs begin in the crop
            cut.append(self.s[a] * first - self.p[a] - start)
            out.append(first)
        idx = (slice(None), slice(None)) + tuple(slice(c, None) for c in cut)
        return self.op(x[idx]), out


class _Transposed(WindowRule):
    """Transposed convolutions: output o gets inputs i with s*i - p + j*d = o."""

    def __init__(self, m, nd):
        self.m, self.nd = m, nd
        self.k, self.s = _per_axis(m.kernel_size, nd), _per_axis(m.stride, nd)
        self.p, self.d = _per_axis(m.padding, nd), _per_axis(m.dilation, nd)
        self.fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]

    def need(self, a, lo, hi):
        # the crop [c, e) makes outputs s*c - p + skip .. s*e - p complete
        # (run below), skip = max(0, (k-1)d - s + 1): those no input reaches
        # (bias alone) included, so the crop may have to start before the
        # first input that reaches lo
        skip = max(0, (self.k[a] - 1) * self.d[a] - self.s[a] + 1)
        return _floordiv(lo + self.p[a] - skip, self.s[a]), _floordiv(hi - 1 + self.p[a], self.s[a]) + 1

    def period(self, a):
        return self.s[a]

    def run(self, x, starts):
        # torch stops after the last output an input reaches; outputs up to
        # s * n that none reaches hold the bias alone: output_padding adds them
        extra = tuple(max(0, s - 1 - (k - 1) * d) for s, k, d in zip(self.s, self.k, self.d))
        y = self.fn(x, self.m.weight, self.m.bias, self.m.stride, 0, extra, self.m.groups, self.m.dilation)
        idx, out = [slice(None), slice(None)], []
        for a, start in enumerate(starts):
            n, s = x.shape[2 + a], self.s[a]
            # raw output r sits at s*start + r - p; it is complete when its
            # lowest input, ceil((r - (k-1)d) / s) from the crop's start, is >= 0
            # (r >= (k-1)d - s + 1), and its highest, floor(r / s), is < n
            lo = max(0, (self.k[a] - 1) * self.d[a] - s + 1)
            idx.append(slice(lo, s * n))
            out.append(s * start + lo - self.p[a])
        return y[tuple(idx)], out


class _Upsample(WindowRule):
    """Upsampling by an integer factor: nearest, or (bi/tri)linear and cubic
    with align_corners=False, which read floor(src) - left .. floor(src) + right
    where src = (o + 0.5) / f - 0.5."""

    REACH = {"nearest": (0, 0), "linear": (0, 1), "bilinear": (0, 1), "trilinear": (0, 1), "bicubic": (1, 2)}

    def __init__(self, m, nd):
        mode = m.mode
        factor = m.scale_factor
        if m.size is not None or factor is None:
            raise NotWindowableError(f"{m!r}: an Upsample over an infinite tensor needs scale_factor, not size")
        factors = tuple(factor) if isinstance(factor, (tuple, list)) else (factor,) * nd
        if len(factors) != nd or any(float(f) != int(f) or int(f) < 1 for f in factors):
            raise NotWindowableError(f"{m!r}: only whole scale factors have a fixed index map")
        if mode not in self.REACH or (mode != "nearest" and m.align_corners):
            raise NotWindowableError(f"{m!r}: mode {mode!r}"
                                     f"{' with align_corners=True' if m.align_corners else ''} depends on the "
                                     "input's size; use nearest, or (bi/tri)linear/bicubic with align_corners=False")
        self.f = tuple(int(f) for f in factors)
        self.mode = mode
        self.left, self.right = self.REACH[mode]

    def _src(self, a, o):
        return _floordiv(2 * o + 1 - self.f[a], 2 * self.f[a])  # floor((o + 0.5) / f - 0.5), exactly

    def need(self, a, lo, hi):
        if self.mode == "nearest":
            return _floordiv(lo, self.f[a]), _floordiv(hi - 1, self.f[a]) + 1
        return self._src(a, lo) - self.left, self._src(a, hi - 1) + self.right + 1

    def period(self, a):
        return self.f[a]

    def run(self, x, starts):
        kw = {} if self.mode == "nearest" else {"align_corners": False}
        y = F.interpolate(x, scale_factor=self.f, mode=self.mode, **kw)
        if self.mode == "nearest":
            return y, [f * s for f, s in zip(self.f, starts)]
        idx, out = [slice(None), slice(None)], []
        for a, start in enumerate(starts):
            n, f = x.shape[2 + a], self.f[a]
            lo = f * start
            # keep outputs whose reads lie in [start, start + n): clamped reads at the edges are not exact
            first = next(o for o in range(lo, lo + 4 * f + 1) if self._src(a, o) - self.left >= start)
            last = max(o for o in range(f * (start + n) - 4 * f - 1, f * (start + n))
                       if self._src(a, o) + self.right <= start + n - 1)
            idx.append(slice(first - lo, last - lo + 1))
            out.append(first)
        return y[tuple(idx)], out


class _Chain(WindowRule):
    def __init__(self, rules: list[WindowRule]):
        self.rules = rules

    def need(self, a, lo, hi):
        for r in reversed(self.rules):
            lo, hi = r.need(a, lo, hi)
        return lo, hi

    def period(self, a):
        return math.prod(r.period(a) for r in self.rules)

    def run(self, x, starts):
        for r in self.rules:
            x, starts = r.run(x, starts)
        return x, starts


class Residual(tnn.Module):
    """``x + body(x)``, a residual block whose branch keeps the shape
    (stride 1, padding that keeps the size).  ``apply`` cuts the skip to
    the range the branch computes exactly."""

    def __init__(self, body: tnn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Residual(WindowRule):
    def __init__(self, body: WindowRule):
        self.body = body

    def need(self, a, lo, hi):
        blo, bhi = self.body.need(a, lo, hi)
        return min(lo, blo), max(hi, bhi)

    def period(self, a):
        return self.body.period(a)

    def run(self, x, starts):
        y, ys = self.body.run(x, starts)
        idx = (slice(None), slice(None)) + tuple(
            slice(o - s, o - s + n) for o, s, n in zip(ys, starts, y.shape[2:]))
        skip = x[idx]
        if skip.shape != y.shape:
            raise ValidationError(f"Residual: the branch changes the shape ({tuple(skip.shape)} in, "
                                  f"{tuple(y.shape)} out); x + body(x) needs the same")
        return skip + y, ys


# -- which rule a module gets ------------------------------------------------------
_RULES: dict[type, Callable[[tnn.Module, int], WindowRule]] = {}
_POINTWISE = (tnn.ReLU, tnn.ReLU6, tnn.LeakyReLU, tnn.PReLU, tnn.ELU, tnn.SELU, tnn.CELU, tnn.GELU, tnn.SiLU,
              tnn.Mish, tnn.Sigmoid, tnn.Tanh, tnn.Hardtanh, tnn.Hardsigmoid, tnn.Hardswish, tnn.Softplus,
              tnn.Softsign, tnn.Tanhshrink, tnn.Threshold, tnn.LogSigmoid, tnn.Identity)


def register_window_rule(module_type: type, rule: Callable[[Any, int], WindowRule] | str) -> None:
    """Teach ``apply`` a module type: ``rule(module, ndim)`` returns a
    WindowRule for an instance over ndim spatial axes, or ``"pointwise"``
    for modules that act on each position alone.  The most specific
    registered type wins over its base classes."""
    if rule == "pointwise":
        _RULES[module_type] = lambda m, nd: _Pointwise(m)
    elif callable(rule):
        _RULES[module_type] = rule
    else:
        raise ValidationError(f"a window rule is a callable rule(module, ndim) or 'pointwise', got {rule!r}")


def _conv(m, nd):
    # padding, of any mode, only decides which coordinates line up: an
    # infinite input has no edge to pad
    padding = m.padding
    if isinstance(padding, str):  # "valid": 0; "same": half the reach (the left part, as torch pads)
        padding = tuple(0 if padding == "valid" else ((k - 1) * d) // 2
                        for k, d in zip(_per_axis(m.kernel_size, nd), _per_axis(m.dilation, nd)))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return _Window(nd, m.kernel_size, m.stride, padding, m.dilation,
                   lambda x: fn(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups))


def _max_pool(m, nd):
    if m.return_indices:
        raise NotWindowableError(f"{m!r}: return_indices gives positions within a crop")
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    stride = m.stride if m.stride is not None else m.kernel_size
    return _Window(nd, m.kernel_size, stride, m.padding, m.dilation,
                   lambda x: fn(x, m.kernel_size, stride, 0, m.dilation))


def _avg_pool(m, nd):
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    stride = m.stride if m.stride is not None else m.kernel_size
    kw = {} if nd == 1 else {"divisor_override": m.divisor_override}
    return _Window(nd, m.kernel_size, stride, m.padding, 1, lambda x: fn(x, m.kernel_size, stride, 0, **kw))


def _batch_norm(m, nd):
    if m.training or not m.track_running_stats:
        raise NotWindowableError(f"{m!r} in training mode (or without running stats) normalises over the whole "
                                 "input: call net.eval() first")
    return _Pointwise(m)


def _dropout(m, nd):
    if m.training and m.p > 0:
        raise NotWindowableError(f"{m!r} in training mode is random: call net.eval() first")
    return _Pointwise(lambda x: x)


for _t in _POINTWISE:
    register_window_rule(_t, "pointwise")
for _t in (tnn.Conv1d, tnn.Conv2d, tnn.Conv3d):
    register_window_rule(_t, _conv)
for _t in (tnn.ConvTranspose1d, tnn.ConvTranspose2d, tnn.ConvTranspose3d):
    register_window_rule(_t, lambda m, nd: _Transposed(m, nd))
for _t in (tnn.MaxPool1d, tnn.MaxPool2d, tnn.MaxPool3d):
    register_window_rule(_t, _max_pool)
for _t in (tnn.AvgPool1d, tnn.AvgPool2d, tnn.AvgPool3d):
    register_window_rule(_t, _avg_pool)
for _t in (tnn.BatchNorm1d, tnn.BatchNorm2d, tnn.BatchNorm3d):
    register_window_rule(_t, _batch_norm)
for _t in (tnn.Dropout, tnn.Dropout1d, tnn.Dropout2d, tnn.Dropout3d, tnn.AlphaDropout):
    register_window_rule(_t, _dropout)
register_window_rule(tnn.Upsample, lambda m, nd: _Upsample(m, nd))
register_window_rule(tnn.Sequential, lambda m, nd: _Chain([rule_for(c, nd) for c in m]))
register_window_rule(Residual, lambda m, nd: _Residual(rule_for(m.body, nd)))

_NOT_WINDOWABLE = {
    "global pooling": (tnn.AdaptiveAvgPool1d, tnn.AdaptiveAvgPool2d, tnn.AdaptiveAvgPool3d, tnn.AdaptiveMaxPool1d,
                       tnn.AdaptiveMaxPool2d, tnn.AdaptiveMaxPool3d),
    "a Linear over the last (spatial) dim": (tnn.Linear, tnn.Bilinear, tnn.LazyLinear),
    "normalisation over the whole input": (tnn.InstanceNorm1d, tnn.InstanceNorm2d, tnn.InstanceNorm3d,
                                          tnn.LayerNorm, tnn.GroupNorm, tnn.LocalResponseNorm),
    "attention": (tnn.MultiheadAttention, tnn.Transformer, tnn.TransformerEncoder, tnn.TransformerDecoder),
    "flattening": (tnn.Flatten, tnn.Unflatten),
}


def _check_ndim(module: Any, ndim: int) -> None:
    """torch's Conv2d, MaxPool3d, BatchNorm1d, ... take that many spatial dims."""
    name = type(module).__name__
    if type(module).__module__.startswith("torch.nn") and name[-2:] in ("1d", "2d", "3d"):
        k = int(name[-2])
        if k != ndim:
            raise ValidationError(f"{name} works over {k} spatial dim{'s' if k > 1 else ''}, but the input "
                                  f"has {ndim}: x must be (C, {', '.join(['None'] * k)})")


def rule_for(module: Any, ndim: int) -> WindowRule:
    """The WindowRule of a module (the most specific registered type)."""
    _check_ndim(module, ndim)
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls](module, ndim)
    for why, types in _NOT_WINDOWABLE.items():
        if isinstance(module, types):
            raise NotWindowableError(f"{type(module).__name__} ({why}) has no window over an infinite tensor: each "
                                     "output depends on the whole input")
    raise NotWindowableError(
        f"no window rule for {type(module).__name__}: infinite_tensor.nn knows convolutions, transposed "
        "convolutions, pooling, Upsample, pointwise layers, eval-mode BatchNorm and Dropout, Sequential and "
        "Residual; register one with infinite_tensor.nn.register_window_rule("
        f"{type(module).__name__}, rule) (or 'pointwise' if it acts on each position alone)")


# -- the window of a network -------------------------------------------------------
class WindowSpec:
    """The windows ``apply`` uses for a network: per spatial axis the tile
    (outputs per window), and the input window's size, stride and offset
    (``need`` of tile n is ``[n * stride + offset, ... + size)``)."""

    def __init__(self, tile: tuple[int, ...], size: tuple[int, ...], stride: tuple[int, ...],
                 offset: tuple[int, ...]):
        self.tile, self.size, self.stride, self.offset = tile, size, stride, offset

    def __repr__(self) -> str:
        return (f"WindowSpec(tile={self.tile}, input size={self.size}, stride={self.stride}, "
                f"offset={self.offset})")

    @property
    def overhead(self) -> float:
        """Input read per output position beyond a plain stride (the halo's cost)."""
        return math.prod(s / st for s, st in zip(self.size, self.stride)) - 1.0


def _spec(rule: WindowRule, ndim: int, tile: Any) -> WindowSpec:
    tiles, sizes, strides, offsets = [], [], [], []
    for a in range(ndim):
        period = rule.period(a)
        want = AUTO_TILE if tile == "auto" else _per_axis(tile, ndim)[a]
        if isinstance(want, bool) or not isinstance(want, int) or want < 1:
            raise ValidationError(f"tile must be 'auto' or positive ints, got {tile!r}")
        T = _ceildiv(want, period) * period
        starts = [rule.need(a, n * T, (n + 1) * T) for n in range(-3, 4)]
        stride = starts[4][0] - starts[3][0]
        size = starts[3][1] - starts[3][0]
        for n, (lo, hi) in zip(range(-3, 4), starts):
            if lo != starts[3][0] + n * stride or hi - lo != size:
                raise NotWindowableError(f"the network's index map along spatial axis {a} is not periodic in "
                                         f"tiles of {T}: give tile= a multiple of its upsampling factors")
        tiles.append(T)
        sizes.append(size)
        strides.append(stride)
        offsets.append(starts[3][0])
    return WindowSpec(tuple(tiles), tuple(sizes), tuple(strides), tuple(offsets))


def window_spec(net: tnn.Module, ndim: int, tile: Any = "auto") -> WindowSpec:
    """The WindowSpec ``apply(net, x, tile=tile)`` would use over ndim
    spatial axes.  Raises NotWindowableError for a network without one."""
    return _spec(rule_for(net, ndim), ndim, tile)


def apply(net: tnn.Module, x: InfiniteTensor, *, tile: Any = "auto", batch_size: Any = None,
          tile_store: Any = None, tensor_id: Any = None) -> InfiniteTensor:
    """``net`` over the whole of ``x``, exactly: an InfiniteTensor whose
    values equal ``net`` run on any finite crop of ``x`` large enough, away
    from the crop's edges.

    Args:
        net: A torch module over inputs shaped ``(N, C, *spatial)``: a
            Sequential (nested too) of convolutions, transposed
            convolutions, pooling, Upsample (whole factors), pointwise
            layers, eval-mode BatchNorm and Dropout, ``Residual`` blocks and
            registered modules.  It runs under ``torch.no_grad()`` on x's
            device; its parameters must be there.
        x: The input, shaped ``(C, None, ..., None)``: one finite channel
            dim, then the spatial dims, all infinite.
        tile: Outputs per window along each spatial axis (an int, one per
            axis, or "auto": 256), rounded up to a multiple of the
            network's upsampling factors.
        batch_size, tile_store, tensor_id: As for InfiniteTensor (a batch
            runs the network once on the stacked crops).

    Returns:
        An InfiniteTensor ``(C_out, None, ..., None)`` of net's output
        dtype.

    Raises:
        NotWindowableError: A module with no window (global pooling,
            attention, a Linear over space, train-mode BatchNorm, unknown
            modules: register a rule).
        ValidationError: x is not ``(C, None, ...)``, a layer for another
            number of spatial dims (a Conv1d over a 2-D input), or a bad
            tile.
    """
    if not isinstance(x, InfiniteTensor):
        raise ValidationError(f"apply takes an InfiniteTensor, got {type(x).__name__}")
    shape = x.shape
    if len(shape) < 2 or shape[0] is None or any(d is not None for d in shape[1:]):
        raise ValidationError(f"apply needs an input shaped (C, None, ..., None): one finite channel dim, then "
                              f"infinite spatial dims; got {shape}")
    nd = len(shape) - 1
    rule = rule_for(net, nd)
    spec = _spec(rule, nd, tile)
    channels = shape[0]
    # the output's channels and dtype: the network on the smallest window
    with torch.no_grad():
        probe = torch.zeros((1, channels) + spec.size, dtype=x.dtype, device=x.device)
        y, _ = rule.run(probe, spec.offset)
    out_channels, out_dtype = y.shape[1], y.dtype

    def crop_to_tile(y, starts, ctx):
        idx = (slice(None), slice(None)) + tuple(
            slice(c * T - s, c * T - s + T) for c, T, s in zip(ctx[1:], spec.tile, starts))
        return y[idx]

    def starts_of(ctx):
        return [c * st + off for c, st, off in zip(ctx[1:], spec.stride, spec.offset)]

    if batch_size is None:
        def f(ctx, crop):
            with torch.no_grad():
                y, ys = rule.run(crop[None], starts_of(ctx))
                return crop_to_tile(y, ys, ctx)[0]
    else:
        def f(ctxs, crops):
            # crops of tiles n and m differ by (m - n) * stride inputs, their
            # outputs by (m - n) * T: one run, in the first crop's coordinates
            first = ctxs[0]
            with torch.no_grad():
                y, ys = rule.run(torch.stack(crops), starts_of(first))
                outs = []
                for i, ctx in enumerate(ctxs):
                    idx = (i, slice(None)) + tuple(
                        slice(c0 * T - s, c0 * T - s + T) for c0, T, s in zip(first[1:], spec.tile, ys))
                    outs.append(y[idx])
                return torch.stack(outs)

    in_window = TensorWindow((channels,) + spec.size, (channels,) + spec.stride, (0,) + spec.offset)
    out_window = TensorWindow((out_channels,) + spec.tile, (out_channels,) + spec.tile)
    return InfiniteTensor((out_channels,) + (None,) * nd, f, out_window, args=[x], args_windows=[in_window],
                          dtype=out_dtype, device=x.device, tile_store=tile_store, tensor_id=tensor_id,
                          batch_size=batch_size)
