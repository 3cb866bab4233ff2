"""Seam-free tiles with blend="mean": windows that disagree, averaged.

A tiled generator (a diffusion model, a tiled VAE decoder, a network run on
crops) gives each window its own slight offset, so adjacent windows disagree
where they overlap.  Summed or averaged with equal weights, each window's
edge shows as a step in the result.  With weight="linear" (the tent
MultiDiffusion and tiled decoders blend with) a window fades out toward its
edges, and the steps become ramps: the largest jump between neighbouring
pixels falls from the offsets' whole difference to that difference spread
over the overlap (a tenth of it here).

    python examples/seamless.py
"""
import importlib.util
import os
import sys

import torch

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import InfiniteTensor, TensorWindow  # noqa: E402

WINDOW, STRIDE = 64, 32


def tile(ctx):
    """A smooth ramp (the "true" image) plus an offset of this window's own."""
    wy, wx = ctx
    y = torch.arange(WINDOW, dtype=torch.float64)[:, None] + wy * STRIDE
    x = torch.arange(WINDOW, dtype=torch.float64)[None, :] + wx * STRIDE
    g = torch.Generator().manual_seed((wy * 7919 + wx) & 0x7FFFFFFF)
    offset = torch.rand((), generator=g, dtype=torch.float64) - 0.5
    return (y + x) / 256 + offset


def largest_step(img):
    """The largest difference between neighbouring pixels."""
    return max(img.diff(dim=0).abs().max().item(), img.diff(dim=1).abs().max().item())


def main(argv=None):
    window = TensorWindow((WINDOW, WINDOW), stride=(STRIDE, STRIDE))
    results = {}
    for weight in ("constant", "linear", "gaussian"):
        t = InfiniteTensor((None, None), tile, window, dtype=torch.float64, blend="mean", weight=weight)
        img = t[0:256, 0:256]
        results[weight] = img
        print(f"{weight:>8} weights: largest step between neighbours {largest_step(img):.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
