"""Overlapping windows combined by a blend instead of a sum.

The first tensor keeps, per pixel, the maximum over the windows covering it
(torch.maximum runs as a built-in kernel of the core); the second lets the
last window in lexicographic order win, with an arbitrary Python blend.  The
third shows the weighted-average pattern by hand: each window writes its
values times a ramp weight plus the weight itself, and the reader divides
(blend="mean" does this in the core: examples/seamless.py).

    python examples/blending.py
"""
import importlib.util
import os
import sys

import torch

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import InfiniteTensor, MemoryTileStore, TensorWindow  # noqa: E402


def level(ctx):
    wy, wx = ctx
    return torch.full((64, 64), float(wy + wx))


def main(argv=None):
    store = MemoryTileStore()
    maxed = InfiniteTensor(shape=(None, None), f=level, output_window=TensorWindow((64, 64), stride=(32, 32)),
                           tile_store=store, tensor_id="max_blend_example", blend=torch.maximum,
                           blend_init=float("-inf"))
    result = maxed[0:128, 0:128]  # per-pixel max over every covering window
    print("max blend, corners:", result[0, 0].item(), result[127, 127].item())

    last = InfiniteTensor(shape=(None, None), f=level, output_window=TensorWindow((64, 64), stride=(32, 32)),
                          tile_store=store, tensor_id="last_wins", blend=lambda old, new: new)
    print("last wins, row 40:", last[40, 0:128:16].tolist())

    # weighted average: channel 0 holds value * weight, channel 1 the weight
    ramp = torch.minimum(torch.arange(64) + 0.5, 64 - torch.arange(64) - 0.5) / 32
    weight = ramp[:, None] * ramp[None, :]

    def weighted(ctx):
        _, wy, wx = ctx
        value = torch.full((64, 64), float(wy * 10 + wx))
        return torch.stack([value * weight, weight])

    acc = InfiniteTensor(shape=(2, None, None), f=weighted,
                         output_window=TensorWindow((2, 64, 64), stride=(2, 32, 32)), tile_store=store)
    region = acc[:, 0:96, 0:96]
    smooth = region[0] / region[1]
    print("weighted average, a smooth ramp between window values:", smooth[48, ::16].tolist())
    return result, last, smooth


if __name__ == "__main__":
    main()
