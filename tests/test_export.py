"""InfiniteTensor.to_hdf5 and to_zarr (issue 16): a region written block by
block equals the region read at once."""
import h5py
import numpy as np
import pytest
import torch

import infinite_tensor as it
import loader_util as lu

zarr = pytest.importorskip("zarr")


def blur():
    return lu.pipeline()[1]


@pytest.mark.parametrize("chunks", [None, 64, (50, 70), 10_000])
def test_to_hdf5_writes_the_region(tmp_path, chunks):
    t = blur()
    path = tmp_path / "out.h5"
    t.to_hdf5(path, it.sl[-70:130, 5:300], chunks=chunks)
    t.to_hdf5(path, it.sl[0:3, 0:5], dataset="small", compression=None)
    with h5py.File(path, "r") as f:
        assert f["data"].shape == (200, 295) and f["data"].dtype == np.float32
        assert np.array_equal(f["data"][...], t[-70:130, 5:300].numpy())
        assert np.array_equal(f["small"][...], t[0:3, 0:5].numpy())
        if chunks == 64:
            assert f["data"].chunks == (64, 64)


def test_to_zarr_writes_the_region_with_finite_dims_whole(tmp_path):
    t = it.InfiniteTensor((3, None, None), lu.rgb_f, it.TensorWindow((3, 8, 8), stride=(3, 4, 4)))
    z = t.to_zarr(str(tmp_path / "out.zarr"), it.sl[:, -20:21, 7:40], chunks=None)
    assert z.shape == (3, 41, 33) and z.chunks == (3, 41, 33)
    assert np.array_equal(z[...], t[:, -20:21, 7:40].numpy())
    z = t.to_zarr(str(tmp_path / "out.zarr"), it.sl[:, 0:16, 0:16], chunks=(1, 5, 6), mode="w")
    assert z.chunks == (1, 5, 6)
    back = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert np.array_equal(back[...], t[:, 0:16, 0:16].numpy())


def test_blocks_are_computed_in_batches(tmp_path):
    calls = []

    def f(ctxs):
        calls.append(len(ctxs))
        return [torch.full((8, 8), float(c[0] * 100 + c[1])) for c in ctxs]

    t = it.InfiniteTensor((None, None), f, it.TensorWindow((8, 8)), batch_size=4)
    t.to_hdf5(tmp_path / "b.h5", it.sl[0:32, 0:32], chunks=16)
    assert sum(calls) == 16 and max(calls) == 4
    with h5py.File(tmp_path / "b.h5", "r") as h:
        assert np.array_equal(h["data"][...], t[0:32, 0:32].numpy())


def test_bad_exports(tmp_path):
    t = blur()
    with pytest.raises(TypeError, match="slices only"):
        t.to_hdf5(tmp_path / "x.h5", it.sl[0, 0:4])
    with pytest.raises(ValueError, match="step-1"):
        t.to_zarr(str(tmp_path / "x.zarr"), it.sl[0:4:2, 0:4])
    with pytest.raises(it.ValidationError, match="chunks"):
        t.to_hdf5(tmp_path / "x.h5", it.sl[0:4, 0:4], chunks=(0, 2))
    with pytest.raises(it.ValidationError, match="mode"):
        t.to_zarr(str(tmp_path / "x.zarr"), it.sl[0:4, 0:4], mode="r")
    with pytest.raises(OSError):
        t.to_hdf5(tmp_path / "missing" / "x.h5", it.sl[0:4, 0:4])
    t.to_hdf5(tmp_path / "x.h5", it.sl[0:4, 0:4])
    with pytest.raises(ValueError):  # h5py: the dataset exists
        t.to_hdf5(tmp_path / "x.h5", it.sl[0:4, 0:4])
    b16 = it.InfiniteTensor((None,), lambda c: torch.ones(4, dtype=torch.bfloat16), it.TensorWindow((4,)),
                            dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        b16.to_zarr(str(tmp_path / "y.zarr"), it.sl[0:4])
