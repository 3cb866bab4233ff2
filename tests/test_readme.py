"""The 0.3 README's code samples that use MemoryTileStore, run as written
(torchvision's gaussian_blur replaced by the same blur built on
torch.nn.functional.conv2d), with their values checked."""

import pytest
import torch
import torch.nn.functional as TF

import infinite_tensor as it
from infinite_tensor import InfiniteTensor, MemoryTileStore, TensorWindow
from pairs import Win, make


def gaussian_kernel1d(kernel_size, sigma):
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(img, kernel_size=5, sigma=1.0):
    """torchvision.transforms.v2.functional.gaussian_blur for (C,H,W) or (B,C,H,W) float input."""
    squeeze = img.dim() == 3
    x = img[None] if squeeze else img
    k1 = gaussian_kernel1d(kernel_size, sigma).to(x.dtype)
    k2 = torch.outer(k1, k1)
    c = x.shape[1]
    weight = k2.expand(c, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    x = TF.pad(x, [pad, pad, pad, pad], mode="reflect")
    out = TF.conv2d(x, weight, groups=c)
    return out[0] if squeeze else out


def valid_blur(img, kernel_size=5, sigma=1.0):
    """The blur without padding: the reference for what the cropped windows hold."""
    k1 = gaussian_kernel1d(kernel_size, sigma).to(img.dtype)
    k2 = torch.outer(k1, k1)
    c = img.shape[0]
    return TF.conv2d(img[None], k2.expand(c, 1, kernel_size, kernel_size), groups=c)[0]


def test_quickstart():
    tile_store = MemoryTileStore()

    def your_processing_function(ctx):
        # ctx is the window index (e.g. (wy, wx) for 2D), NOT pixel coordinates.
        return torch.ones(512, 512)

    tensor = InfiniteTensor(
        shape=(None, None),
        f=your_processing_function,
        output_window=TensorWindow((512, 512)),
        tile_store=tile_store,
        tensor_id="my_infinite_tensor",
    )
    result = tensor[0:1024, 0:1024]
    assert result.shape == (1024, 1024) and result.dtype == torch.float32
    assert torch.equal(result, torch.ones(1024, 1024))

    tensor.clear_cache()
    assert torch.equal(tensor[100:200, -50:50], torch.ones(100, 100))
    tile_store.clear_tensor("my_infinite_tensor")
    with pytest.raises(it.TileAccessError):
        tensor[0:1, 0:1]


def test_cache_limits_sample():
    tile_store = MemoryTileStore(
        cache_size_bytes=200 * 1024 * 1024,  # 200 MB
        cache_size_windows=None,  # no window-count limit
    )
    t = InfiniteTensor(shape=(None,), f=lambda c: torch.ones(8), output_window=TensorWindow((8,)),
                       tile_store=tile_store)
    assert torch.equal(t[0:16], torch.ones(16))


WINDOW = 512
PADDING = 2
PADDED = WINDOW + 2 * PADDING


def _blur_pipeline(batched, tile_store, random_image):
    base = InfiniteTensor(
        shape=(3, None, None),
        f=random_image,
        output_window=TensorWindow((3, WINDOW, WINDOW)),
        tile_store=tile_store,
        tensor_id="base",
    )
    padded_input_window = TensorWindow(
        size=(3, PADDED, PADDED),
        stride=(3, WINDOW, WINDOW),
        offset=(0, -PADDING, -PADDING),
    )

    def blur(ctx, padded_input):
        blurred = gaussian_blur(padded_input, kernel_size=5, sigma=1.0)
        return blurred[:, PADDING:-PADDING, PADDING:-PADDING]

    def blur_batched(ctxs, padded_inputs):
        stack = torch.stack(padded_inputs)  # (B, 3, PADDED, PADDED)
        blurred = gaussian_blur(stack, kernel_size=5, sigma=1.0)
        cropped = blurred[:, :, PADDING:-PADDING, PADDING:-PADDING]
        return [cropped[i] for i in range(cropped.shape[0])]

    blurred = InfiniteTensor(
        shape=(3, None, None),
        f=blur_batched if batched else blur,
        output_window=TensorWindow((3, WINDOW, WINDOW)),
        args=(base,),
        args_windows=(padded_input_window,),
        tile_store=tile_store,
        tensor_id="blurred_batched" if batched else "blurred",
        batch_size=4 if batched else None,
    )
    return base, blurred


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "batched"])
def test_blur_pipeline_as_written(batched):
    tile_store = MemoryTileStore()

    def random_image(ctx):
        return torch.rand(3, WINDOW, WINDOW)

    base, blurred = _blur_pipeline(batched, tile_store, random_image)
    out = blurred[:, 0:1024, 0:1024]
    assert out.shape == (3, 1024, 1024)
    # the crop removes exactly the reflect-padded border: a plain 5x5 conv of base
    region = base[:, -PADDING:1024 + PADDING, -PADDING:1024 + PADDING]
    torch.testing.assert_close(out, valid_blur(region), rtol=1e-5, atol=1e-5)
    # repeat reads are served from the cache (random f: any recompute would differ)
    assert torch.equal(blurred[:, 0:1024, 0:1024], out)
    assert torch.equal(base[:, -PADDING:1024 + PADDING, -PADDING:1024 + PADDING], region)


def test_blur_pipeline_deterministic_vs_reference():
    """Same pipeline on a smaller window with a deterministic base, against the
    plain reference of tests/reference.py."""
    w, p = 16, 2

    def rand_image(ctx):
        g = torch.Generator().manual_seed(hash(ctx) & 0xFFFFFFFF)
        return torch.rand(3, w, w, generator=g, dtype=torch.float64)

    store = MemoryTileStore()
    base = make((3, None, None), rand_image, Win((3, w, w)), store=store, dtype=torch.float64)

    def blur(ctx, padded):
        return gaussian_blur(padded, 5, 1.0)[:, p:-p, p:-p]

    blurred = make((3, None, None), blur, Win((3, w, w)), [base],
                   [Win((3, w + 2 * p, w + 2 * p), stride=(3, w, w), offset=(0, -p, -p))], store=store,
                   dtype=torch.float64)
    got = blurred.lib[:, -w:2 * w, 5:40]
    exp = blurred.ref[:, -w:2 * w, 5:40]
    torch.testing.assert_close(got, exp, rtol=0, atol=1e-12)
    region = base.ref[:, -w - p:2 * w + p, 5 - p:40 + p]
    torch.testing.assert_close(got, valid_blur(region), rtol=1e-9, atol=1e-9)


def test_batched_blur_equals_unbatched():
    def random_image(ctx):
        g = torch.Generator().manual_seed((ctx[1] * 1000 + ctx[2]) & 0xFFFF)
        return torch.rand(3, WINDOW, WINDOW, generator=g)

    _, plain = _blur_pipeline(False, MemoryTileStore(), random_image)
    _, batched = _blur_pipeline(True, MemoryTileStore(), random_image)
    torch.testing.assert_close(batched[:, 500:1100, -30:530], plain[:, 500:1100, -30:530], rtol=1e-5, atol=1e-6)


def test_dimension_map_sample(store):
    # Fixed leading dim: the first dimension always stays at length 1.
    window = TensorWindow(
        size=(1, 64, 64),
        stride=(1, 64, 64),
        dimension_map=(None, 1, 2),
    )
    ctxs = []

    def f(ctx):
        ctxs.append(ctx)
        return torch.full((1, 64, 64), float(ctx[1] * 10 + ctx[2]))

    t = InfiniteTensor(shape=(1, None, None), f=f, output_window=window, tile_store=store)
    r = t[:, 0:128, -64:64]
    exp = torch.tensor([[-1.0, 0.0], [9.0, 10.0]]).repeat_interleave(64, 0).repeat_interleave(64, 1)[None]
    assert torch.equal(r, exp)
    assert sorted(ctxs) == [(0, 0, -1), (0, 0, 0), (0, 1, -1), (0, 1, 0)]
    assert window.get_bounds((0, 1, -1)) == (slice(0, 1, None), slice(64, 128, None), slice(-64, 0, None))


def test_dtype_device_sample():
    t = InfiniteTensor(shape=(None,), f=lambda c: torch.ones(4, dtype=torch.float64),
                       output_window=TensorWindow((4,)), dtype=torch.float64, device="cpu")
    assert t[0:4].dtype == torch.float64
    t2 = InfiniteTensor(shape=(None,), f=lambda c: torch.ones(4), output_window=TensorWindow((4,)),
                        dtype=torch.float64)
    with pytest.raises(it.DtypeMismatchError):
        t2[0:4]
