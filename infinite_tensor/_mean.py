"""blend="mean": the window weights and the sum of the weights covering a
pixel, which the C core (csrc/core/mean.c) multiplies windows by and
divides reads by.

Weights: "constant" (1 everywhere), "linear" (a tent along every dim where
windows overlap, as MultiDiffusion and tiled VAE decoders blend), "gaussian"
(MONAI's convention: sigma = 0.125 x the window's extent along each
overlapping dim, peak 1, zeros raised to the smallest positive value), or a
tensor of the window's shape (positive where it should count).

The norm: windows lie on a product lattice (no dimension_map), so the sum
of the weights covering a pixel factors dim by dim.  Along an infinite dim
it repeats with the stride: entry q (a pixel at offset + q modulo the
stride) sums the weights at q, q + stride, q + 2 stride, ... of the window.
Along a finite dim it is the sum, over the windows lying wholly inside it,
of their weights at each position of the extent.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .errors import ValidationError

WEIGHTS = ("constant", "linear", "gaussian")
GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's sliding_window_inference default


def _profile(kind: str, n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    if kind == "linear":
        p = torch.minimum(i + 1, n - i)
    else:
        sigma = GAUSSIAN_SIGMA_SCALE * n
        p = torch.exp(-((i - (n - 1) / 2) ** 2) / (2 * sigma * sigma))
    return p / p.max()


def weight_window(weight: Any, window: Any) -> torch.Tensor:
    """The window's weights as a float64 CPU tensor of its shape."""
    size = tuple(window.size)
    if isinstance(weight, torch.Tensor):
        if tuple(weight.shape) != size:
            raise ValidationError(f"weight must have the output window's shape {size}, got {tuple(weight.shape)}")
        if weight.dtype.is_complex or weight.dtype == torch.bool:
            raise ValidationError(f"weight must be real numbers, got {weight.dtype}")
        w = weight.detach().to("cpu", torch.float64)
        if not torch.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
            raise ValidationError("weight must be finite and >= 0, with some entry > 0")
        return w.contiguous()
    if weight not in WEIGHTS:
        raise ValidationError(f"weight must be one of {list(WEIGHTS)} or a tensor of the window's shape, "
                              f"got {weight!r}")
    w = torch.ones(size, dtype=torch.float64)
    if weight == "constant":
        return w
    for d, (n, s) in enumerate(zip(size, window.stride)):
        if s < n:  # windows overlap along d: taper there
            shape = [1] * len(size)
            shape[d] = n
            w = w * _profile(weight, n).reshape(shape)
    if weight == "gaussian":
        w = torch.where(w > 0, w, w[w > 0].min())
    return w.contiguous()


def norm(w: torch.Tensor, shape: tuple, window: Any) -> torch.Tensor:
    """The sum of the weights covering a pixel (see the module docstring)."""
    out = w
    for d, extent in enumerate(shape):
        z, s, o = window.size[d], window.stride[d], window.offset[d]
        moved = out.movedim(d, 0)
        if extent is None:
            j = -(-z // s)
            padded = torch.zeros((j * s,) + moved.shape[1:], dtype=torch.float64)
            padded[:z] = moved
            folded = padded.reshape((j, s) + moved.shape[1:]).sum(0)
        else:
            folded = torch.zeros((extent,) + moved.shape[1:], dtype=torch.float64)
            first, last = math.ceil(-o / s), math.floor((extent - z - o) / s)
            for k in range(first, last + 1):
                start = o + k * s
                folded[start:start + z] += moved
        out = folded.movedim(0, d)
    return out.contiguous()


def core_mean(weight: Any, shape: tuple, window: Any, dtype: torch.dtype, empty: Any) -> tuple:
    """What NodeSpec.mean carries: (weights, norm, norm shape, empty value)."""
    from ._bridge import fill_tensor
    w = weight_window(weight, window)
    n = norm(w, shape, window)
    return (w.numpy().tobytes(), n.numpy().tobytes(), tuple(n.shape), fill_tensor(empty, dtype))
