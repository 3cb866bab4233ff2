"""Write a training set of random crops with DataLoader workers.

A world of smooth noise (random values on a coarse grid, blurred by a
pipeline of two infinite tensors) is cropped at random places by
infinite_tensor.data.RandomCrops; two DataLoader worker processes compute
the crops, and the main process writes them, in batches, to one .pt file,
with a progress bar when tqdm is installed.  The crops of an epoch depend
only on the seed, not on the number of workers.

By default each worker computes into its own memory cache.  With --world
FILE the world lives in an HDF5 file that the main process holds and serves
to the workers: every window a worker computes is saved there once, and a
later run (more crops, another seed) reads what earlier runs computed.

    python examples/crops_dataset.py --count 256 --out crops.pt
    python examples/crops_dataset.py --count 256 --out crops.pt --world world.h5
"""
import argparse
import importlib.util
import os
import sys

import torch

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import HDF5TileStore, InfiniteTensor, TensorWindow  # noqa: E402
from infinite_tensor.data import RandomCrops  # noqa: E402

WINDOW = 64


def coarse(ctx):
    """Random values, one per 8x8 block of the window (a module-level
    function: spawned workers receive the tensor pickled, f included)."""
    g = torch.Generator().manual_seed((ctx[0] * 1_000_003 + ctx[1] * 7_919) & 0x7FFFFFFF)
    blocks = torch.rand(WINDOW // 8, WINDOW // 8, generator=g)
    return blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)


def blur(ctx, x):
    """A 9x9 box blur of the coarse noise (x: the window padded by 4)."""
    return torch.nn.functional.avg_pool2d(x[None, None], 9, stride=1)[0, 0]


def world(store=None):
    """The blurred noise; in store (both tensors) when one is given."""
    noise = InfiniteTensor((None, None), coarse, TensorWindow((WINDOW, WINDOW)), tile_store=store,
                           tensor_id="noise" if store is not None else None)
    return InfiniteTensor((None, None), blur, TensorWindow((WINDOW, WINDOW)), args=[noise],
                          args_windows=[TensorWindow((WINDOW + 8, WINDOW + 8), stride=(WINDOW, WINDOW),
                                                     offset=(-4, -4))],
                          tile_store=store, tensor_id="blur" if store is not None else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=256, help="crops to write")
    ap.add_argument("--size", type=int, default=48, help="crop side")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="crops.pt")
    ap.add_argument("--world", help="an HDF5 file that keeps the world's windows (the workers fill it)")
    args = ap.parse_args(argv)
    store = HDF5TileStore(args.world, mode="a", tile_size=WINDOW) if args.world else None
    crops = RandomCrops(world(store), (args.size, args.size), region=[(-4096, 4096), (-4096, 4096)],
                        length=args.count, seed=args.seed)
    # the platform's start method: fork on Linux, spawn on macOS and Windows
    loader = torch.utils.data.DataLoader(crops, batch_size=32, num_workers=args.workers)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        def tqdm(iterable, **kwargs):
            return iterable
    batches = [batch for batch in tqdm(loader, desc="crops", unit="batch", disable=None)]
    if store is not None:
        store.close()  # saves what the workers handed over
    data = torch.cat(batches)
    torch.save(data, args.out)
    print(f"wrote {tuple(data.shape)} crops to {args.out}")
    return data, crops


if __name__ == "__main__":
    main(sys.argv[1:])
