"""A convolutional network over an infinite image, three ways.

1. Tiles run through the network one by one, each padded at its own edges:
   every tile edge is a seam (the network saw zeros where its neighbour's
   pixels were).
2. Overlapping tiles blended with blend="mean", weight="linear" (what tiled
   decoders do): the seams fade into ramps, but no pixel near a tile edge is
   right.
3. infinite_tensor.nn.apply: each tile is computed from a crop with the
   network's halo, so every pixel equals the network run on the whole image.

The reference is the network run by torch on one crop larger than the
region (its interior is exact).  The picture shows the three results and
their errors against it (amplified), side by side.

    python examples/exact_network.py            # writes out/exact_network.png
    python examples/exact_network.py --out docs/img/nn-seams.png
"""
import argparse
import importlib.util
import math
import os
import sys

import torch
import torch.nn as tnn

HERE = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from demo import write_png  # noqa: E402
from infinite_tensor import InfiniteTensor, TensorWindow  # noqa: E402
from infinite_tensor import nn as inn  # noqa: E402

TILE, HALO = 64, 16


def image(ctx):
    """A deterministic picture, one 64x64 window at a time: waves and grain."""
    _, wy, wx = ctx
    y = torch.arange(TILE, dtype=torch.float64)[:, None] + wy * TILE
    x = torch.arange(TILE, dtype=torch.float64)[None, :] + wx * TILE
    g = torch.Generator().manual_seed((wy * 1_000_003 + wx) & 0xFFFFFFFF)
    grain = torch.rand(TILE, TILE, generator=g, dtype=torch.float64)
    return (torch.sin(x / 9.0) * torch.cos(y / 13.0) + 0.3 * grain)[None]


def network():
    """Three 5x5 convolutions (a receptive field of 13 pixels), fixed weights."""
    torch.manual_seed(7)
    net = tnn.Sequential(tnn.Conv2d(1, 4, 5, padding=2), tnn.Tanh(), tnn.Conv2d(4, 4, 5, padding=2), tnn.Tanh(),
                         tnn.Conv2d(4, 1, 5, padding=2))
    return net.double().eval()


def gray(t, lo, hi):
    """A (H, W) tensor as a (3, H, W) uint8 image, lo..hi mapped to black..white."""
    v = ((t - lo) / (hi - lo)).clamp(0, 1) * 255
    return v.round().to(torch.uint8).expand(3, *t.shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="side of the region (default 256)")
    ap.add_argument("--out", default=os.path.join("out", "exact_network.png"))
    opts = ap.parse_args(argv)
    n = opts.size
    x = InfiniteTensor((1, None, None), image, TensorWindow((1, TILE, TILE)), dtype=torch.float64)
    net = network()

    def run(crop):
        with torch.no_grad():
            return net(crop[None])[0]

    # 1. each tile alone, padded by the network at its own edges
    naive = InfiniteTensor((1, None, None), lambda ctx, crop: run(crop), TensorWindow((1, TILE, TILE)), args=[x],
                           args_windows=[TensorWindow((1, TILE, TILE))], dtype=torch.float64)
    # 2. overlapping tiles (a halo of 16 each side) blended by a tent
    big = TILE + 2 * HALO
    window = TensorWindow((1, big, big), (1, TILE, TILE), (0, -HALO, -HALO))
    blended = InfiniteTensor((1, None, None), lambda ctx, crop: run(crop), window, args=[x], args_windows=[window],
                             dtype=torch.float64, blend="mean", weight="linear")
    # 3. exact
    exact = inn.apply(net, x, tile=TILE)

    region = (slice(None), slice(0, n), slice(0, n))
    truth = run(x[:, -32:n + 32, -32:n + 32])[:, 32:n + 32, 32:n + 32]
    results = {"tiles": naive[region], "blended": blended[region], "exact": exact[region]}
    errors = {k: (v - truth).abs().max().item() for k, v in results.items()}
    for k, e in errors.items():
        print(f"{k:8s} largest error against the whole-image network: {e:.3g}")

    lo, hi = truth.min().item(), truth.max().item()
    gain = 8.0 / max(hi - lo, 1e-9)
    panels = []
    for k in ("tiles", "blended", "exact"):
        v = results[k][0]
        panels.append(torch.cat([gray(v, lo, hi), gray((v - truth[0]).abs() * gain, 0, 1)], dim=1))
    gap = torch.full((3, 2 * n, 4), 255, dtype=torch.uint8)
    picture = torch.cat([panels[0], gap, panels[1], gap, panels[2]], dim=2)
    write_png(opts.out, picture)
    print(f"wrote {opts.out}: top, tiles / blended / exact; below, their errors x{math.ceil(gain)} (white: 1/8 "
          "of the range)")
    return errors, picture


if __name__ == "__main__":
    main()
