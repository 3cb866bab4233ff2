"""Code written for infinite-tensor 0.2 keeps running (with DeprecationWarning).

The 0.2 README created tensors through TileStore.get_or_create with
cache_method / cache_limit / tile_size; those keywords are accepted and
mapped onto the 0.3 store.

    python examples/legacy_api.py
"""
import importlib.util
import os
import sys
import warnings

import torch

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import MemoryTileStore, TensorWindow  # noqa: E402


def main(argv=None):
    warnings.simplefilter("default", DeprecationWarning)
    tile_store = MemoryTileStore()

    def zeros_tensor_func(ctx):
        return torch.zeros(10, 512, 512)

    base = tile_store.get_or_create("my_tensor", (10, None, None), zeros_tensor_func, TensorWindow((10, 512, 512)))
    offset_window = TensorWindow((10, 512, 512), offset=(0, -256, -256))

    def inc_func(ctx, prev):
        prev_stack = torch.stack(prev)
        return [p for p in (prev_stack + 1)]

    dep = tile_store.get_or_create("my_second_tensor", (10, None, None), inc_func, offset_window,
                                   args=(base,), args_windows=(offset_window,), batch_size=4,
                                   cache_method="direct", cache_limit=None)
    out = dep[:, 0:512, 0:512]
    print("0.2-style pipeline:", tuple(out.shape), "all ones:", bool((out == 1).all()))
    tile_store.clear_direct_caches()
    return out


if __name__ == "__main__":
    main()
