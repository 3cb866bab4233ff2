"""Write a training set of random crops with DataLoader workers.

A world of smooth noise (random values on a coarse grid, blurred by a
pipeline of two infinite tensors) is cropped at random places by
infinite_tensor.data.RandomCrops; two DataLoader worker processes compute
the crops, each in its own cache, and the main process writes them, in
batches, to one .pt file, with a progress bar when tqdm is installed.  The
crops of an epoch depend only on the seed, not on the number of workers.

    python examples/crops_dataset.py --count 256 --out crops.pt
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import InfiniteTensor, TensorWindow  # noqa: E402
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


def world():
    noise = InfiniteTensor((None, None), coarse, TensorWindow((WINDOW, WINDOW)))
    return InfiniteTensor((None, None), blur, TensorWindow((WINDOW, WINDOW)), args=[noise],
                          args_windows=[TensorWindow((WINDOW + 8, WINDOW + 8), stride=(WINDOW, WINDOW),
                                                     offset=(-4, -4))])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=256, help="crops to write")
    ap.add_argument("--size", type=int, default=48, help="crop side")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="crops.pt")
    args = ap.parse_args(argv)
    crops = RandomCrops(world(), (args.size, args.size), region=[(-4096, 4096), (-4096, 4096)],
                        length=args.count, seed=args.seed)
    # the platform's start method: fork on Linux, spawn on macOS and Windows
    loader = torch.utils.data.DataLoader(crops, batch_size=32, num_workers=args.workers)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        def tqdm(iterable, **kwargs):
            return iterable
    batches = [batch for batch in tqdm(loader, desc="crops", unit="batch", disable=None)]
    data = torch.cat(batches)
    torch.save(data, args.out)
    print(f"wrote {tuple(data.shape)} crops to {args.out}")
    return data, crops


if __name__ == "__main__":
    main(sys.argv[1:])
