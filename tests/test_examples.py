"""Every example runs (on a small size) and computes what it claims."""
import importlib.util
import os
import struct
import warnings
import zlib

import pytest
import torch

import infinite_tensor as it

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_png(path):
    """Decode the 8-bit RGB, filter-0 PNG that demo.write_png writes."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size  # IHDR: width, then height
    raw = zlib.decompress(idat)
    rows = [raw[y * (3 * w + 1) + 1:(y + 1) * (3 * w + 1)] for y in range(h)]
    return torch.tensor(list(b"".join(rows)), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)


def test_demo_writes_the_region_it_read(tmp_path, capsys):
    demo = load("demo")
    out = tmp_path / "demo.png"
    image, calls = demo.main(["--size", "160", "--out", str(out)])
    assert image.shape == (3, 160, 160) and image.dtype == torch.uint8
    assert torch.equal(read_png(out), image)
    # rows -80:80 and cols -53:107 meet 2 x 2 terrain windows of 128 (covering
    # cols -128:128); their args windows reach one column further west (-129),
    # into a third column of height windows
    assert calls["terrain"] == 4 and calls["height"] == 6
    text = capsys.readouterr().out
    assert "identical: True" in text


def test_demo_terrain_is_seamless_and_deterministic(tmp_path):
    demo = load("demo")
    store = demo.MemoryTileStore()
    terrain, _ = demo.build(store)
    a = terrain[:, 100:140, -20:20]
    # a fresh pipeline gives the same pixels (f is deterministic)
    terrain2, _ = demo.build(demo.MemoryTileStore())
    assert torch.equal(terrain2[:, 100:140, -20:20], a)
    # reading a big region and cropping equals reading the crop
    big = terrain2[:, 0:256, -128:128]
    assert torch.equal(big[:, 100:140, 108:148], a)


def test_blur_example_matches_plain_torch():
    blur = load("blur")
    out, ref = blur.main(["--window", "32", "--size", "80"])
    assert out.shape == (3, 80, 80)
    torch.testing.assert_close(out, ref)


def test_blending_example():
    blending = load("blending")
    result, last, smooth = blending.main([])
    assert result[0, 0] == 0 and result[127, 127] == 6
    assert result[40, 40] == 2
    assert last[40, 0:128:16].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    # the weighted average lies between the values of the windows covering a pixel
    assert float(smooth.min()) >= -11 and float(smooth.max()) <= 22


def test_seamless_example_turns_steps_into_ramps():
    results = load("seamless").main([])
    steps = {k: max(v.diff(dim=0).abs().max().item(), v.diff(dim=1).abs().max().item()) for k, v in results.items()}
    # equal weights leave steps of up to the offsets' spread (1.0); the tent
    # spreads them over the 32-pixel overlap
    assert steps["constant"] > 0.2 and steps["linear"] < steps["constant"] / 5 and steps["linear"] < 1 / 16
    assert steps["gaussian"] < steps["constant"]


def test_legacy_example_warns_and_works():
    legacy = load("legacy_api")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = legacy.main([])
    assert (out == 1).all()
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_crops_dataset_example_writes_the_crops_of_one_process(tmp_path):
    out = tmp_path / "crops.pt"
    data, crops = load("crops_dataset").main(["--count", "40", "--size", "24", "--out", str(out)])
    assert data.shape == (40, 24, 24)
    assert torch.equal(torch.load(out), data)
    # each worker batches its own share (worker k takes crops k, k + 2, ...):
    # 20 each, so one batch from worker 0, then one from worker 1
    one = crops.tensor
    order = list(range(0, 40, 2)) + list(range(1, 40, 2))
    for k, i in enumerate(order):
        assert torch.equal(data[k], one[crops.box(i)])


def test_crops_dataset_example_fills_one_world(tmp_path):
    world = tmp_path / "world.h5"
    example = load("crops_dataset")
    data, crops = example.main(["--count", "24", "--size", "40", "--out", str(tmp_path / "a.pt"),
                                "--world", str(world)])
    plain, _ = example.main(["--count", "24", "--size", "40", "--out", str(tmp_path / "b.pt")])
    assert torch.equal(data, plain)
    # the workers' windows are in the file: read back with an f that refuses to run
    with it.HDF5TileStore(world, mode="r", tile_size=example.WINDOW) as store:
        t = example.world(store)
        t._f = t.args[0]._f = _refuse
        order = list(range(0, 24, 2)) + list(range(1, 24, 2))
        for k, i in enumerate(order):
            assert torch.equal(data[k], t[crops.box(i)])


def _refuse(*args):
    raise AssertionError("this window should have come from the file")


@pytest.mark.parametrize("name", ["demo", "blur", "blending", "legacy_api", "persistent", "custom_backend", "seamless",
                                  "crops_dataset", "exact_network"])
def test_examples_have_docstrings(name):
    assert load(name).__doc__.strip()


def test_readme_quick_start_runs_and_is_right(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the persistence sample writes world.h5 here
    readme = open(os.path.join(EXAMPLES, "..", "README.md")).read()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python")[1:]]
    assert blocks, "the README has a Python quick start"
    scope = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)
    patch, base = scope["patch"], scope["base"]
    assert patch.shape == (3, 600, 400)
    # the 3x3 box blur of the base, computed by plain torch on a finite crop
    ref = torch.nn.functional.avg_pool2d(base[:, -301:301, 999:1401][None], 3, stride=1)[0]
    torch.testing.assert_close(patch, ref)
    # the HDF5 sample saved the noise tiles: a new store reads them without f
    from infinite_tensor import HDF5TileStore, InfiniteTensor, TensorWindow

    def never(ctx):
        raise AssertionError("f called for a stored window")
    with HDF5TileStore(tmp_path / "world.h5", mode="r", tile_size=512) as disk:
        again = InfiniteTensor((3, None, None), never, TensorWindow((3, 256, 256)), tile_store=disk,
                               tensor_id="terrain")[:, 0:2048, 0:2048]
    assert torch.equal(again, base[:, 0:2048, 0:2048])


def test_persistent_example_reopens_without_computing(tmp_path):
    ex = load("persistent")
    first, more, again = ex.main(str(tmp_path / "ripples.h5"))
    assert torch.equal(first, again)
    # the plain-torch value of the overlap of both regions, from f directly
    ref = torch.zeros(3, 1024, 1024)
    for wy in range(-1, 12):
        for wx in range(-1, 12):
            y0, x0 = wy * 64 + 128, wx * 64 + 128  # shifted by 128 so negatives fit
            if 0 <= y0 and y0 + 128 <= 1024 and 0 <= x0 and x0 + 128 <= 1024:
                ref[:, y0:y0 + 128, x0:x0 + 128] += ex.ripples((wy, wx))
    assert torch.allclose(first, ref[:, 128:640, 128:640], atol=1e-5)
    assert torch.allclose(more, ref[:, 384:896, 384:896], atol=1e-5)
    # a second run in the same file computes nothing
    ex.CALLS[0] = 0
    ex.main(str(tmp_path / "ripples.h5"))
    assert ex.CALLS[0] == 0


def test_custom_backend_example():
    ex = load("custom_backend")
    first, again, calls = ex.main()
    assert calls == 0
    assert torch.equal(first, again)
    ref = torch.zeros(96, 96)
    for i in range(-1, 8):
        for j in range(-1, 8):
            y0, x0 = i * 8 + 16, j * 8 + 16
            if y0 >= 0 and x0 >= 0 and y0 + 16 <= 96 and x0 + 16 <= 96:
                ref[y0:y0 + 16, x0:x0 + 16] += float(i - j)
    assert torch.equal(first, ref[16:80, 16:80])


def test_exact_network_has_no_seams(tmp_path):
    ex = load("exact_network")
    out = tmp_path / "seams.png"
    errors, picture = ex.main(["--size", "128", "--out", str(out)])
    assert errors["exact"] < 1e-12  # every pixel: the network on the whole image
    assert errors["tiles"] > 1e-2  # tiles padded at their own edges: seams
    assert errors["exact"] < errors["blended"] < errors["tiles"]  # blending hides seams, it does not remove them
    assert torch.equal(read_png(out), picture)
    assert picture.shape == (3, 256, 3 * 128 + 8)
