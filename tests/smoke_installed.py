"""The smoke test of an installed distribution (tests/dist_test.sh runs it
with python -I from an empty directory): the package imports from the venv,
reports the distribution's version, reads right from a memory store and an
HDF5 file, and its datasets import.  With "no-hdf5" after the version: a
build without the HDF5 C library, whose HDF5TileStore raises ImportError."""
import os
import sys
import sysconfig
import tempfile

import torch

import infinite_tensor as it
from infinite_tensor.data import RandomCrops


def ramp(ctx):
    return torch.arange(16, dtype=torch.float32).reshape(4, 4) + 100 * ctx[0] + ctx[1]


def refuse(ctx):
    raise AssertionError("this window should come from the file")


def main(version, hdf5=True):
    where = os.path.realpath(it.__file__)
    site = os.path.realpath(sysconfig.get_paths()["platlib"])
    assert where.startswith(site), f"imported {where}, not from {site}"
    assert it.__version__ == version, (it.__version__, version)
    win = it.TensorWindow((4, 4), stride=(2, 2))
    t = it.InfiniteTensor((None, None), ramp, win)
    got = t[-3:9, 1:7]
    want = torch.zeros(20, 20)  # plain torch over a finite box: windows -3..4 along each dim
    for i in range(-3, 5):
        for j in range(-3, 5):
            want[6 + 2 * i:6 + 2 * i + 4, 6 + 2 * j:6 + 2 * j + 4] += ramp((i, j))
    assert torch.equal(got, want[3:15, 7:13]), "memory store read"
    if not hdf5:
        assert not it._core.HAVE_HDF5
        try:
            it.HDF5TileStore(os.path.join(tempfile.gettempdir(), "never.h5"))
        except ImportError as e:
            assert "libhdf5-dev" in str(e), e
        else:
            raise AssertionError("HDF5TileStore opened a file in a build without HDF5")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.h5")
        if not hdf5:
            path = None
        if path is not None:
            with it.HDF5TileStore(path, mode="w", tile_size=8) as store:
                saved = it.InfiniteTensor((None, None), ramp, win, tile_store=store, tensor_id="ramp")[-3:9, 1:7]
            with it.HDF5TileStore(path, mode="r", tile_size=8) as store:
                again = it.InfiniteTensor((None, None), refuse, win, tile_store=store, tensor_id="ramp")[-3:9, 1:7]
            assert torch.equal(saved, got) and torch.equal(again, got), "HDF5 store round trip"
    crops = RandomCrops(t, (4, 4), region=[(0, 32), (0, 32)], length=3)
    assert all(c.shape == (4, 4) for c in crops)
    print(f"smoke test passed: infinite_tensor {it.__version__} from {os.path.dirname(where)}")


if __name__ == "__main__":
    main(sys.argv[1], hdf5=sys.argv[2:] != ["no-hdf5"])
