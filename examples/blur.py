"""The 0.3 README's pipeline: random images blurred twice by chained tensors.

`base` is random noise; `blurred` and `blurred_twice` each read a window of
their upstream padded by 2 pixels and apply a 5x5 Gaussian blur (with
torch.nn.functional, so no torchvision is needed).  A batched variant of the
second stage computes 4 windows per call.

    python examples/blur.py [--window 512] [--size 1024]
"""
import argparse
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import InfiniteTensor, MemoryTileStore, TensorWindow  # noqa: E402

PADDING = 2


def gaussian_blur(x, sigma=1.0):
    """5x5 Gaussian blur of (..., C, H, W), 'valid' (the result is 4 pixels smaller)."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k1 = torch.exp(-r * r / (2 * sigma * sigma))
    k1 = k1 / k1.sum()
    k = (k1[:, None] * k1[None, :]).expand(x.shape[-3], 1, 5, 5)
    batched = x if x.dim() == 4 else x[None]
    out = F.conv2d(batched, k, groups=x.shape[-3])
    return out if x.dim() == 4 else out[0]


def build(window, store=None):
    store = store or MemoryTileStore()
    padded = window + 2 * PADDING

    def random_image(ctx):
        g = torch.Generator().manual_seed(hash(ctx) & 0x7FFFFFFF)
        return torch.rand(3, window, window, generator=g)

    base = InfiniteTensor(shape=(3, None, None), f=random_image, output_window=TensorWindow((3, window, window)),
                          tile_store=store, tensor_id="base")
    padded_window = TensorWindow(size=(3, padded, padded), stride=(3, window, window),
                                 offset=(0, -PADDING, -PADDING))

    def blur(ctx, padded_input):
        return gaussian_blur(padded_input)

    blurred = InfiniteTensor(shape=(3, None, None), f=blur, output_window=TensorWindow((3, window, window)),
                             args=(base,), args_windows=(padded_window,), tile_store=store,
                             tensor_id="blurred")

    def blur_batched(ctxs, padded_inputs):
        return list(gaussian_blur(torch.stack(padded_inputs)))

    blurred_twice = InfiniteTensor(shape=(3, None, None), f=blur_batched,
                                   output_window=TensorWindow((3, window, window)), args=(blurred,),
                                   args_windows=(padded_window,), tile_store=store,
                                   tensor_id="blurred_twice", batch_size=4)
    return base, blurred, blurred_twice


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--size", type=int, default=1024)
    opts = ap.parse_args(argv)
    base, blurred, blurred_twice = build(opts.window)
    out = blurred_twice[:, 0:opts.size, 0:opts.size]
    # check against plain torch on a finite crop of the base
    ref = gaussian_blur(gaussian_blur(base[:, -4:opts.size + 4, -4:opts.size + 4]))
    err = (out - ref).abs().max().item()
    print(f"blurred_twice[:, 0:{opts.size}, 0:{opts.size}] -> {tuple(out.shape)}, "
          f"max difference from plain torch: {err:.2e}")
    return out, ref


if __name__ == "__main__":
    main()
