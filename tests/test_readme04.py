"""The 0.4 README's code samples, run as written, with their values checked.

The samples are not copied here: they are extracted from
tests/data/upstream-0.4-README.md, upstream infinite-tensor 0.4.0's README
saved verbatim (the long description of its wheel), so an edit there shows
up here.  Samples that build on earlier ones run in one namespace, in README
order, as a reader would paste them.  torchvision is not a dependency: its
gaussian_blur is replaced, as in tests/test_readme.py, by the same blur built
on torch.nn.functional.conv2d.  The HDF5 samples run in a temporary folder.
"""

import os
import re
import sys
import types

import pytest
import torch

import infinite_tensor as it
from reference import RefTensor, Win
from test_readme import gaussian_blur, valid_blur

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "upstream-0.4-README.md")

with open(README, encoding="utf-8") as _fh:
    _TEXT = _fh.read()

FENCES = re.findall(r"^```(\w*)\n(.*?)^```", _TEXT, re.S | re.M)
BLOCKS = [code for lang, code in FENCES if lang == "python"]

# the first line of every python block, in README order: each is run by a test below
MARKERS = {
    "create": "tile_store = MemoryTileStore()\n\n\ndef your_processing_function(ctx):",
    "slice": "result = tensor[0:1024, 0:1024]",
    "regions": "a, b = tensor[[sl[0:512, 0:512], sl[4096:4608, 0:512]]]",
    "iter": "for chunk in tensor.iter_regions(",
    "cache": "cache_size_windows=None,",
    "clear": "tensor.clear_cache()\ntile_store.clear_tensor(",
    "chain": "def blur(ctx, padded_input):",
    "batch": "def blur_batched(ctxs, padded_inputs):",
    "dimmap": "dimension_map=(None, 1, 2),",
    "blend": "blend=torch.maximum,",
    "hdf5": '# leaving the `with` block saves pending cached data and closes the file',
    "hdf5-limits": "cache_size_tiles=None,  # no tile-count limit",
    "reconnect": "# served from disk; f is only called for new windows",
    "persistent": "from infinite_tensor.tilestore.persistent import PersistentTileStore",
}


def block(name):
    found = [b for b in BLOCKS if MARKERS[name] in b]
    assert len(found) == 1, (name, len(found))
    return found[0]


def run(ns, *names):
    for name in names:
        exec(compile(block(name), f"<README 0.4: {name}>", "exec"), ns)
    return ns


@pytest.fixture
def torchvision_shim(monkeypatch):
    """import torchvision.transforms.v2.functional as F -> a module whose
    gaussian_blur is tests/test_readme.py's."""
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.v2",
             "torchvision.transforms.v2.functional"]
    mods = [types.ModuleType(n) for n in names]
    for parent, child, n in zip(mods, mods[1:], names[1:]):
        setattr(parent, n.rsplit(".", 1)[1], child)
    mods[-1].gaussian_blur = gaussian_blur
    for n, m in zip(names, mods):
        monkeypatch.setitem(sys.modules, n, m)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_python_block_is_run_by_a_test():
    assert len(BLOCKS) == 14
    assert sorted(BLOCKS.index(block(n)) for n in MARKERS) == list(range(len(BLOCKS)))
    assert [lang for lang, _ in FENCES] == ["bash", "bash"] + ["python"] * 14


def test_creating_slicing_and_region_lists():
    ns = run({}, "create", "slice")
    assert torch.equal(ns["result"], torch.ones(1024, 1024))
    run(ns, "regions")
    assert repr(ns["sl"]) == "sl" and ns["sl"] is it.sl
    assert torch.equal(ns["a"], torch.ones(512, 512)) and torch.equal(ns["b"], torch.ones(512, 512))


def test_iter_regions_sample():
    calls = []
    ns = run({}, "create", "regions")  # the loop uses sl, imported by the region-list sample
    tensor = ns["tensor"]
    # the same tensor, with f spied on, for the loop to iterate over
    ns["tensor"] = it.InfiniteTensor(shape=(None, None), f=lambda c: calls.append(c) or torch.ones(512, 512),
                                     output_window=it.TensorWindow((512, 512)))
    run(ns, "iter")
    # the loop ran to the end: its last chunk held the last region
    assert torch.equal(ns["result"], torch.ones(512, 512))
    assert len(calls) == 16 and len(set(calls)) == 16
    assert sorted(calls) == [(i, 0) for i in range(16)]
    # "With no batch_size you get a single chunk" and "concatenating the chunks gives tensor[regions]"
    sl = it.sl
    regions = [sl[i:i + 512, 0:512] for i in range(0, 8192, 512)]
    chunks = list(tensor.iter_regions(r for r in regions))
    assert len(chunks) == 1 and len(chunks[0]) == 16
    listed = tensor[regions]
    assert all(torch.equal(x, y) and torch.equal(x, torch.ones(512, 512)) for x, y in zip(chunks[0], listed))


def test_cache_limits_and_clearing_in_readme_order():
    ns = run({}, "create", "slice")
    tensor, first_store = ns["tensor"], ns["tile_store"]
    run(ns, "cache")
    assert isinstance(ns["tile_store"], it.MemoryTileStore) and ns["tile_store"] is not first_store
    t = it.InfiniteTensor(shape=(None,), f=lambda c: torch.ones(8), output_window=it.TensorWindow((8,)),
                          tile_store=ns["tile_store"])
    assert torch.equal(t[0:16], torch.ones(16))
    # pasted in order, clear_tensor goes to the new store, where the id is unknown
    run(ns, "clear")
    assert torch.equal(tensor[100:200, -50:50], torch.ones(100, 100))


def test_clearing_state_on_the_tensors_store():
    ns = run({}, "create", "slice", "clear")
    # clear_tensor deleted the tensor's state: upstream raises KeyError here,
    # this package TileAccessError
    with pytest.raises((KeyError, it.TileAccessError)):
        ns["tensor"][0:1, 0:1]


def test_dependency_chaining_and_batching(torchvision_shim):
    ns = run({}, "chain")
    base, blurred = ns["base"], ns["blurred"]
    out = ns["out"]
    assert out.shape == (3, 1024, 1024)
    p = ns["PADDING"]
    region = base[:, -p:1024 + p, -p:1024 + p]
    torch.testing.assert_close(out, valid_blur(region), rtol=1e-5, atol=1e-5)
    assert torch.equal(blurred[:, 0:1024, 0:1024], out)  # cached: random base, nothing recomputed
    run(ns, "batch")
    batched = ns["blurred"]
    assert batched is not blurred and batched.batch_size == 4 and batched.uuid == "blurred_batched"
    torch.testing.assert_close(batched[:, 0:1024, 0:1024], out, rtol=1e-5, atol=1e-5)
    # the batched blur's regions, one list read, against the unbatched tensor
    sl = it.sl
    regions = [sl[:, 0:512, 512:1024], sl[1, 700, 3:900], sl[:, 1000:1030, 0:5]]
    for got, exp in zip(batched[regions], blurred[regions]):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)


def test_dimension_map_sample():
    ns = run({}, "create", "dimmap")  # the sample uses the imports of the first one
    window = ns["window"]
    t = it.InfiniteTensor(shape=(1, None, None), f=lambda c: torch.full((1, 64, 64), float(c[1] * 10 + c[2])),
                          output_window=window)
    exp = torch.tensor([[-1.0, 0.0], [9.0, 10.0]]).repeat_interleave(64, 0).repeat_interleave(64, 1)[None]
    assert torch.equal(t[:, 0:128, -64:64], exp)
    assert window.get_bounds((0, 1, -1)) == (slice(0, 1, None), slice(64, 128, None), slice(-64, 0, None))


def test_custom_blending_sample():
    ns = run({}, "blend")
    result = ns["result"]
    ref = RefTensor((None, None), ns["f"], Win((64, 64), (32, 32)), blend=torch.maximum, blend_init=float("-inf"))
    assert torch.equal(result, ref.region([(0, 128), (0, 128)]))
    y = torch.arange(128) // 32
    assert torch.equal(result, (y[:, None] + y[None, :]).float())  # the max over windows is y // 32 + x // 32
    tensor = ns["tensor"]
    assert tensor.blend is torch.maximum and tensor.blend_init == float("-inf")


def test_hdf5_samples(in_tmp):
    ns = run({}, "create", "hdf5")
    assert torch.equal(ns["result"], torch.ones(2048, 2048))
    assert (in_tmp / "tensor_data.h5").exists()
    run(ns, "hdf5-limits")
    calls = []
    ns["your_processing_function"] = lambda ctx: calls.append(ctx) or torch.ones(512, 512)
    run(ns, "reconnect")
    assert torch.equal(ns["result"], torch.ones(2048, 2048))
    assert calls == []  # served from disk
    with it.HDF5TileStore("tensor_data.h5", tile_size=512) as store:
        t = it.InfiniteTensor(shape=(None, None), f=ns["your_processing_function"],
                              output_window=it.TensorWindow((512, 512)), tile_store=store,
                              tensor_id="my_infinite_tensor")
        a, b = t[[it.sl[0:512, 0:512], it.sl[2048:2560, 0:512]]]
        assert torch.equal(a, torch.ones(512, 512)) and torch.equal(b, torch.ones(512, 512))
        assert calls == [(4, 0)]


def test_persistent_import_sample():
    ns = run({}, "persistent")
    from infinite_tensor.tilestore import TileStore

    assert issubclass(ns["PersistentTileStore"], TileStore)
    assert issubclass(it.HDF5TileStore, ns["PersistentTileStore"])
