"""Stores and tensors pickle by what builds them again (issue 16): a tensor
as its definition, a memory store as its limits (never its tiles), an HDF5
store as its path and options, so DataLoader workers started with spawn or
forkserver get working tensors.  Values are compared with the original
tensor's reads."""
import multiprocessing
import os
import pickle

import pytest
import torch

import infinite_tensor as it
import loader_util as lu


def test_a_memory_store_pickles_its_limits_not_its_tiles():
    store = it.MemoryTileStore(cache_size_bytes=123_456, cache_size_windows=77)
    _, blur = lu.pipeline(store, store)
    blur[0:64, 0:64]
    assert store.cache_info()["bytes"] > 0
    copy = pickle.loads(pickle.dumps(store))
    assert copy._cache.info()["byte_limit"] == 123_456 and copy._cache.info()["weight_limit"] == 77
    assert copy.cache_info()["bytes"] == 0 and copy._tensor_store == {}


def test_a_pipeline_pickles_as_its_definition():
    noise, blur = lu.pipeline()
    want = blur[-40:70, 10:90]
    copy = pickle.loads(pickle.dumps(blur))
    assert copy is not blur and copy.args[0] is not noise
    assert copy._store is not blur._store  # its own (empty) cache
    assert copy.shape == blur.shape and vars(copy.output_window) == vars(blur.output_window)
    assert copy._uuid == blur._uuid and copy.args[0]._uuid == noise._uuid
    assert torch.equal(copy[-40:70, 10:90], want)


def test_blends_batch_sizes_and_weights_survive():
    win = it.TensorWindow((8, 8), stride=(4, 4))
    w = torch.rand(8, 8) + 0.5
    mean = it.InfiniteTensor((None, None), lu.noise_f8, win, blend="mean", weight=w, blend_init=-1.0)
    batched = it.InfiniteTensor((None, None), lu.noise_f8_batched, win, batch_size=[1, 2, 4], blend=torch.maximum,
                                dtype=torch.float64)
    for t in (mean, batched):
        copy = pickle.loads(pickle.dumps(t))
        assert torch.equal(copy[-9:20, 3:30], t[-9:20, 3:30])
        assert copy.to_json() == t.to_json()


@pytest.mark.parametrize("what", ["lambda f", "local f", "lambda blend"])
def test_an_unpicklable_f_or_blend_is_named_with_the_fix(what):
    def local(ctx):
        return torch.ones(4)

    f = {"lambda f": lambda ctx: torch.ones(4), "local f": local}.get(what, lu.ones4)
    blend = (lambda a, b: a + b) if what == "lambda blend" else None
    t = it.InfiniteTensor((None,), f, it.TensorWindow((4,)), blend=blend)
    with pytest.raises(pickle.PicklingError) as info:
        pickle.dumps(t)
    msg = str(info.value)
    name = "blend" if what == "lambda blend" else "f"
    assert f"its {name}" in msg and "module-level function" in msg and "spawn" in msg, msg


def test_an_hdf5_store_pickles_as_its_file(tmp_path):
    path = str(tmp_path / "w.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=64, cache_size_bytes=1 << 20, compression=None)
    _, blur = lu.pipeline(store, store)
    want = blur[0:100, 0:100]
    # in this process the copy joins the open file: same cache and tensors
    same = pickle.loads(pickle.dumps(store))
    assert same._file is store._file and same.mode == "a"
    assert same._options == store._options
    same.close()
    blob = pickle.dumps(blur)
    store.close()
    # another process opens the file itself and reads what was saved, computing nothing
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got, calls = pool.apply(lu.read_pickled, (blob, ((0, 100), (0, 100))))
    assert torch.equal(got, want) and calls == 0


def test_the_windows_a_child_computes_reach_the_file(tmp_path):
    path = str(tmp_path / "w.h5")
    with it.HDF5TileStore(path, mode="w", tile_size=64) as store:
        noise = it.InfiniteTensor((None, None), lu.counted_noise_f, it.TensorWindow((lu.WIN, lu.WIN)),
                                  tile_store=store, tensor_id="noise")
        blob = pickle.dumps(noise)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got, calls = pool.apply(lu.read_pickled, (blob, ((0, 64), (0, 128))))
    assert calls == 8
    with it.HDF5TileStore(path, mode="r", tile_size=64) as store:
        again = it.InfiniteTensor((None, None), lu.ones4, it.TensorWindow((lu.WIN, lu.WIN)), tile_store=store,
                                  tensor_id="noise")
        assert torch.equal(again[0:64, 0:128], got)  # from the file: ones4 would fail the shape check


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_dataloader_workers_get_the_tensor_itself(context):
    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} on this platform")
    _, blur = lu.pipeline()
    data = lu.PickledTensorCrops(blur, n=16, seed=3)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context=context)
    got = list(loader)
    assert len(got) == 16
    for i, crop in enumerate(got):
        assert torch.equal(crop, data[i]), i
    assert os.getpid()  # the parent's own reads above used its own cache


def test_a_relative_path_is_pickled_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with it.HDF5TileStore("rel.h5", mode="w", tile_size=64) as store:
        lu.pipeline(store, store)[1][0:40, 0:40]
        blob = pickle.dumps(store)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a worker may run in another directory
    copy = pickle.loads(blob)
    try:
        assert copy.filepath == tmp_path / "rel.h5"
        assert copy.tensor_ids() == ["blur", "noise"]
    finally:
        copy.close()
