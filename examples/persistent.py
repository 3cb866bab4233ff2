"""Results that survive the process: an HDF5 tile store.

Run it twice: the first run computes a region of a slow procedural tensor
and saves it; the second run (a new process) reads it back from the file
without calling f, and only computes the windows of a region it has not
seen.

    python examples/persistent.py [path.h5]
"""
import sys

import torch

from infinite_tensor import HDF5TileStore, InfiniteTensor, TensorWindow

WINDOW = TensorWindow((3, 128, 128), stride=(3, 64, 64), dimension_map=(None, 0, 1))
CALLS = [0]


def ripples(ctx):
    """One 3x128x128 window of a colourful interference pattern, faded at the
    edges so overlapping windows (stride 64) sum to a seamless image."""
    CALLS[0] += 1
    y0, x0 = ctx[0] * 64, ctx[1] * 64
    y = torch.arange(y0, y0 + 128, dtype=torch.float32)[:, None]
    x = torch.arange(x0, x0 + 128, dtype=torch.float32)[None, :]
    ramp = torch.sin(torch.arange(128, dtype=torch.float32).add(0.5) * torch.pi / 128) ** 2
    fade = ramp[:, None] * ramp[None, :]  # sums to 1 where windows overlap
    waves = torch.stack([torch.sin(0.05 * x + 0.03 * y), torch.sin(0.04 * (x * x + y * y) ** 0.5),
                         torch.cos(0.02 * x - 0.05 * y)])
    return waves * fade


def open_tensor(store):
    return InfiniteTensor((3, None, None), ripples, WINDOW, tile_store=store, tensor_id="ripples")


def main(path="ripples.h5"):
    with HDF5TileStore(path, tile_size=256) as store:
        image = open_tensor(store)
        CALLS[0] = 0
        first = image[:, 0:512, 0:512]
        print(f"region [0:512, 0:512]: f called {CALLS[0]} times")
        CALLS[0] = 0
        more = image[:, 256:768, 256:768]
        print(f"region [256:768, 256:768]: f called {CALLS[0]} times (only its new windows)")
    # the with block flushed every tile and closed the file; open it again
    with HDF5TileStore(path, tile_size=256) as store:
        image = open_tensor(store)
        CALLS[0] = 0
        again = image[:, 0:512, 0:512]
        print(f"after reopening: f called {CALLS[0]} times, same values: {torch.equal(first, again)}")
    return first, more, again


if __name__ == "__main__":
    main(*sys.argv[1:])
