"""A torch DataLoader with 4 worker processes ("fork" and "spawn") reading
random crops of a noise -> blur pipeline gives exactly the values of the
same reads in one process: on a memory store (forked workers inherit the
parent's tensors and cached tiles), on an HDF5 store the parent filled and
that the workers open read-only, and after the parent has run its copy
threads (a lock or a pool inherited broken by a forked child would hang or
corrupt its reads).

The dataset lives in tests/loader_util.py (spawned workers import it).
"""

import multiprocessing

import pytest
import torch

import infinite_tensor as it
from loader_util import NOISE_MAX, WIN, CropDataset, fill_hdf5, noise_f

N = 48
# torch warns that 4 workers exceed the CPUs of a small machine: wanted here
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
# a hung worker fails the test instead of hanging the suite
HANG_GUARD_S = 300


def single_process(ds):
    return [ds[i] for i in range(len(ds))]


def through_loader(ds, context):
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=4,
                                         multiprocessing_context=multiprocessing.get_context(context),
                                         timeout=HANG_GUARD_S)
    return list(loader)


def assert_same_crops(got, want, ds):
    assert len(got) == len(want) == len(ds)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == torch.float32 and g.shape == w.shape, (i, ds.box(i), g.shape, w.shape)
        assert torch.equal(g, w), f"crop {i} {ds.box(i)}: {(g != w).sum().item()} values differ"


def blur_by_hand(y, x, h, w):
    """The blur of [y, y+h) x [x, x+w), from noise_f alone."""
    lo_y, lo_x = (y - 1) // WIN, (x - 1) // WIN
    hi_y, hi_x = (y + h) // WIN + 1, (x + w) // WIN + 1
    rows = [torch.cat([noise_f((j, i)) for i in range(lo_x, hi_x)], dim=1) for j in range(lo_y, hi_y)]
    noise = torch.cat(rows, dim=0)  # covers [lo_y*WIN, hi_y*WIN) x [lo_x*WIN, hi_x*WIN)
    oy, ox = y - 1 - lo_y * WIN, x - 1 - lo_x * WIN
    out = torch.zeros(h, w)
    for dy in range(3):
        for dx in range(3):
            out += noise[oy + dy:oy + dy + h, ox + dx:ox + dx + w]
    return out


def test_the_reference_is_the_blur_of_the_noise():
    ds = CropDataset("memory", 4, seed=3)
    for i, crop in enumerate(single_process(ds)):
        y, x, h, w = ds.box(i)
        assert torch.equal(crop, blur_by_hand(y, x, h, w))
    # integer values, with a sum far below 2**24: float32 sums are exact
    assert 0 <= crop.min() and crop.max() <= 9 * (NOISE_MAX - 1)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_memory_store(context):
    ds = CropDataset("memory", N, seed=1)
    want = single_process(ds)  # a forked worker inherits this pipeline and its cache
    assert_same_crops(through_loader(ds, context), want, ds)
    if context == "fork":  # (spawned workers always start from nothing)
        fresh = CropDataset("memory", N, seed=1)
        assert_same_crops(through_loader(fresh, context), want, fresh)  # forked workers compute everything


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_hdf5_store_read_only_in_workers(context, tmp_path):
    path = str(tmp_path / "crops.h5")
    fill_hdf5(path, seed=2, n=N, span=400, max_crop=256)
    want = single_process(CropDataset("memory", N, seed=2))
    ds = CropDataset("hdf5", N, seed=2, path=path)
    try:
        assert_same_crops(single_process(ds), want, ds)  # the parent keeps the file open ("r")
        assert_same_crops(through_loader(ds, context), want, ds)
    finally:
        ds.close()
    # the workers computed nothing: a window missing from the file would have
    # raised TileAccessError in mode "r"; the file still opens for writing
    it.HDF5TileStore(path, mode="a").close()


def test_fork_after_the_parent_ran_its_copy_threads():
    old = it.set_num_threads(4)
    try:
        ds = CropDataset("memory", N, seed=5, span=300, max_crop=512, big_every=6)
        want = single_process(ds)  # 512 x 512 float32 reads: 1 MiB, assembled by the copy threads
        assert want[0].shape == (512, 512)
        big = ds._tensor()[-700:700, -700:700]  # and one more, larger, just before forking
        assert torch.equal(big[700 + 10:700 + 20, 700 - 5:700 + 5], ds._tensor()[10:20, -5:5])
        assert_same_crops(through_loader(ds, "fork"), want, ds)
    finally:
        it.set_num_threads(old)
