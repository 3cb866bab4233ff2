"""The main demo: a procedural landscape that goes on forever.

Three infinite tensors form a pipeline:

    noise    (1, None, None)  white noise, one seeded 128x128 window at a time
    height   (1, None, None)  a coarse and a fine Gaussian blur of the noise,
                              each window reading a padded window of noise
    terrain  (3, None, None)  height coloured as sea, sand, grass, rock, snow

Reading a region of `terrain` computes only the noise and height windows that
region needs.  The demo reads a region around the origin (negative
coordinates included), writes it as a PNG and prints what was computed.

    python examples/demo.py [--size 1024] [--out out/demo.png]
"""
import argparse
import importlib.util
import math
import os
import struct
import sys
import time
import zlib

import torch
import torch.nn.functional as F

if importlib.util.find_spec("infinite_tensor") is None:  # not installed: use the checkout's build
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from infinite_tensor import InfiniteTensor, MemoryTileStore, TensorWindow  # noqa: E402

WINDOW = 128
FINE_SIGMA, COARSE_SIGMA = 2.5, 10.0


def box_size(sigma):
    """Width of the box filter that, applied three times, blurs like a
    Gaussian of this sigma (three box passes have variance 3 (k^2 - 1) / 12)."""
    k = int(round(math.sqrt(4 * sigma * sigma + 1)))
    return k | 1


def blur_pad(sigma):
    """Pixels a 'valid' blur eats on each side."""
    return 3 * (box_size(sigma) // 2)


def box(x, k, dim):
    """Running mean of k samples along dim ('valid': the dim shrinks by k - 1)."""
    c = F.pad(x.cumsum(dim), (1, 0) if dim == -1 else (0, 0, 1, 0))
    n = c.shape[dim]
    return (c.narrow(dim, k, n - k) - c.narrow(dim, 0, n - k)) / k


def blur(x, sigma):
    """Approximate Gaussian blur of a (1, H, W) tensor, 'valid' on both axes:
    three passes of a separable box filter, each a difference of cumsums."""
    k = box_size(sigma)
    for _ in range(3):
        x = box(box(x, k, -1), k, -2)
    return x


def build(store):
    calls = {"noise": 0, "height": 0, "terrain": 0}

    def noise_f(ctx):
        calls["noise"] += 1
        # a deterministic seed per window: the same window always holds the same noise
        seed = ((ctx[1] * 73856093) ^ (ctx[2] * 19349663)) & 0x7FFFFFFF
        g = torch.Generator().manual_seed(seed)
        return torch.rand(1, WINDOW, WINDOW, generator=g)

    noise = InfiniteTensor((1, None, None), noise_f, TensorWindow((1, WINDOW, WINDOW)),
                           tile_store=store, tensor_id="noise")

    pad = blur_pad(COARSE_SIGMA)
    padded = TensorWindow((1, WINDOW + 2 * pad, WINDOW + 2 * pad), stride=(1, WINDOW, WINDOW),
                          offset=(0, -pad, -pad))
    fine_pad = blur_pad(FINE_SIGMA)
    # white noise of variance 1/12 blurred by a 2-D Gaussian has variance 1/(12 * 4 pi sigma^2)
    coarse_std = math.sqrt(1 / 12 / (4 * math.pi * COARSE_SIGMA ** 2))
    fine_std = math.sqrt(1 / 12 / (4 * math.pi * FINE_SIGMA ** 2))

    def height_f(ctx, x):
        calls["height"] += 1
        coarse = (blur(x, COARSE_SIGMA) - 0.5) / coarse_std
        inner = x[:, pad - fine_pad:pad + WINDOW + fine_pad, pad - fine_pad:pad + WINDOW + fine_pad]
        fine = (blur(inner, FINE_SIGMA) - 0.5) / fine_std
        return 0.8 * coarse + 0.25 * fine

    height = InfiniteTensor((1, None, None), height_f, TensorWindow((1, WINDOW, WINDOW)),
                            args=(noise,), args_windows=(padded,), tile_store=store, tensor_id="height")

    # sea, shallow, sand, grass, forest, rock, snow
    levels = torch.tensor([-0.6, -0.1, 0.0, 0.5, 1.1, 1.6])
    colours = torch.tensor([[20, 50, 120], [40, 100, 170], [220, 205, 150], [90, 160, 70],
                            [40, 110, 50], [120, 110, 100], [245, 245, 250]], dtype=torch.float32)

    def terrain_f(ctx, h):
        # h has one extra column on the left (see its args window): the slope
        # towards the west shades the relief without a seam between windows
        calls["terrain"] += 1
        here = h[0, :, 1:]
        band = torch.bucketize(here.contiguous(), levels)
        rgb = colours[band].permute(2, 0, 1)
        shade = 1 + 0.6 * torch.tanh(here - h[0, :, :-1])
        return (rgb * shade).clamp(0, 255).to(torch.uint8)

    west_padded = TensorWindow((1, WINDOW, WINDOW + 1), stride=(1, WINDOW, WINDOW), offset=(0, 0, -1))
    terrain = InfiniteTensor((3, None, None), terrain_f, TensorWindow((3, WINDOW, WINDOW)),
                             args=(height,), args_windows=(west_padded,),
                             dtype=torch.uint8, tile_store=store, tensor_id="terrain")
    return terrain, calls


def write_png(path, rgb):
    """Write a (3, H, W) uint8 tensor as an RGB PNG (no imaging library needed)."""
    _, h, w = rgb.shape
    pixels = bytes(rgb.permute(1, 2, 0).contiguous().untyped_storage())
    raw = b"".join(b"\x00" + pixels[y * w * 3:(y + 1) * w * 3] for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(png)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="side of the square region to render")
    ap.add_argument("--out", default=os.path.join("out", "demo.png"))
    opts = ap.parse_args(argv)
    store = MemoryTileStore(cache_size_bytes=256 * 1024 * 1024)
    terrain, calls = build(store)

    y0, x0 = -(opts.size // 2), -(opts.size // 3)
    region = (slice(None), slice(y0, y0 + opts.size), slice(x0, x0 + opts.size))
    t0 = time.perf_counter()
    image = terrain[region]
    elapsed = time.perf_counter() - t0
    write_png(opts.out, image)
    print(f"rendered terrain[:, {y0}:{y0 + opts.size}, {x0}:{x0 + opts.size}] "
          f"-> {tuple(image.shape)} {image.dtype} in {elapsed * 1e3:.1f} ms")
    print(f"windows computed: noise {calls['noise']}, height {calls['height']}, terrain {calls['terrain']}")
    info = store.cache_info()
    print(f"cache: {info['tiles']} tiles, {info['bytes'] / 2**20:.1f} MiB")

    t0 = time.perf_counter()
    again = terrain[region]
    print(f"second read served from the cache in {(time.perf_counter() - t0) * 1e3:.2f} ms, "
          f"identical: {torch.equal(again, image)}, windows computed again: 0 "
          f"(noise calls still {calls['noise']})")
    print(f"wrote {opts.out}")
    return image, calls


if __name__ == "__main__":
    main()
