"""The smoke test of an installed distribution (tests/dist_test.sh runs it
with python -I from an empty directory): the package imports from the venv,
reports the distribution's version, reads right from a memory store and an
HDF5 file, its datasets import, and the README's Python samples (the quick
start) run.  Arguments: the version, the README's path, and "no-hdf5" for a
build without the HDF5 C library, whose HDF5TileStore raises ImportError
(the README's samples are not run then: one opens an HDF5 file)."""
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


def run_readme(readme):
    """Every ```python block of the README, in order, in one namespace, in
    an empty directory (the persistence sample writes world.h5 there)."""
    text = open(readme, encoding="utf-8").read()
    blocks = [b.split("```", 1)[0] for b in text.split("```python")[1:]]
    assert blocks, "the README has Python samples"
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            scope = {}
            for code in blocks:
                exec(compile(code, readme, "exec"), scope)
        finally:
            os.chdir(here)
    assert scope["patch"].shape == (3, 600, 400)


def main(version, readme, hdf5=True):
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
    if hdf5:
        run_readme(readme)
    ran = "the README's samples ran" if hdf5 else "no HDF5 in this build"
    print(f"smoke test passed: infinite_tensor {it.__version__} from {os.path.dirname(where)} ({ran})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], hdf5=sys.argv[3:] != ["no-hdf5"])
