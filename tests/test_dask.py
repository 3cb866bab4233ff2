"""InfiniteTensor.to_dask (issue 16): dask arrays whose chunks are read
through the tensor, in this process (threads) and in the worker processes
of a dask.distributed LocalCluster.  Values are compared with one read of
the same region."""
import pytest
import torch

import infinite_tensor as it
import loader_util as lu

da = pytest.importorskip("dask.array")


def test_threaded_chunks_are_the_read():
    _, blur = lu.pipeline()
    region = (slice(-50, 150), slice(10, 310))
    a = blur.to_dask(region, chunks=(64, 100))
    assert a.shape == (200, 300) and a.chunks == ((64, 64, 64, 8), (100, 100, 100))
    assert str(a.dtype) == "float32"
    assert torch.equal(torch.from_numpy(a.compute()), blur[region])
    # a slice of the array reads only the chunks it needs, with the same values
    assert torch.equal(torch.from_numpy(a[70:130, 5:260].compute()), blur[20:80, 15:270])


def test_finite_dims_and_auto_chunks():
    t = it.InfiniteTensor((3, None, None), lu.rgb_f, it.TensorWindow((3, 8, 8)), dtype=torch.float32)
    a = t.to_dask((slice(None), slice(0, 40), slice(-16, 16)))
    assert a.shape == (3, 40, 32)
    assert torch.equal(torch.from_numpy(a.compute()), t[:, 0:40, -16:16])


@pytest.mark.parametrize("region,dtype,exc,match", [
    ((slice(0, 8), 3), torch.float32, TypeError, "slices only"),
    ((slice(0, 8, 2), slice(0, 8)), torch.float32, ValueError, "step-1"),
    ((slice(0, 8), slice(0, 8)), torch.bfloat16, TypeError, "bfloat16"),
])
def test_refusals(region, dtype, exc, match):
    t = it.InfiniteTensor((None, None), lu.ones_f, it.TensorWindow((4, 4)), dtype=dtype)
    with pytest.raises(exc, match=match):
        t.to_dask(region)


def test_a_local_cluster_of_two_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    _, blur = lu.pipeline()
    region = (slice(-100, 156), slice(0, 256))
    want = blur[region]
    path = str(tmp_path / "w.h5")
    with it.HDF5TileStore(path, mode="w", tile_size=64) as store:
        lu.pipeline(store, store)[1][region]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        # a memory store: each worker computes its chunks
        got = client.compute(blur.to_dask(region, chunks=64)).result()
        assert torch.equal(torch.from_numpy(got), want)
        # a file every worker opens read-only: the chunks come from the file
        with it.HDF5TileStore(path, mode="r", tile_size=64) as store:
            stored = lu.pipeline(store, store)[1]
            got = client.compute(stored.to_dask(region, chunks=(128, 64))).result()
        assert torch.equal(torch.from_numpy(got), want)
        # a file this process holds open for writing: the workers are served
        # by it, and what they compute lands in it
        world = str(tmp_path / "world.h5")
        with it.HDF5TileStore(world, mode="w", tile_size=64) as store:
            served = lu.pipeline(store, store)[1]
            got = client.compute(served.to_dask(region, chunks=(128, 64))).result()
            assert torch.equal(torch.from_numpy(got), want)
            assert served.stats()["windows"] == 0  # this process computed nothing
            assert served._node.missing_windows(region) == []
