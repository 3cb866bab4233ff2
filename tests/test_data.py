"""infinite_tensor.data: RandomCrops and Crops with DataLoader workers
(issue 16).  Every crop is compared with a read of the tensor itself."""
import multiprocessing

import pytest
import torch

import infinite_tensor as it
import loader_util as lu
from infinite_tensor.data import Crops, RandomCrops


def pipeline():
    return lu.pipeline()[1]


def test_random_crops_are_reads_inside_the_region_and_deterministic():
    t = pipeline()
    data = RandomCrops(t, (20, 30), region=[(-50, 50), (100, 200)], length=12, seed=7)
    crops = list(data)
    assert len(crops) == len(data) == 12
    for i, c in enumerate(crops):
        ys, xs = data.box(i)
        assert -50 <= ys.start and ys.stop <= 50 and 100 <= xs.start and xs.stop <= 200
        assert ys.stop - ys.start == 20 and xs.stop - xs.start == 30
        assert torch.equal(c, t[ys, xs])
    again = RandomCrops(pipeline(), (20, 30), region=[(-50, 50), (100, 200)], length=12, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(crops, again))
    other = RandomCrops(t, (20, 30), region=[(-50, 50), (100, 200)], length=12, seed=8)
    assert [other.box(i) for i in range(12)] != [data.box(i) for i in range(12)]
    data.set_epoch(1)
    assert [data.box(i) for i in range(12)] != [data.box(i, epoch=0) for i in range(12)]


def test_finite_dims_are_taken_whole_or_cropped():
    t = it.InfiniteTensor((3, None, None), lu.rgb_f, it.TensorWindow((3, 8, 8)))
    whole = RandomCrops(t, (16, 16), region=[(0, 64), (0, 64)], length=3)
    assert all(c.shape == (3, 16, 16) for c in whole)
    part = RandomCrops(t, (2, 16, 16), region=[(0, 64), (0, 64)], length=5, seed=1)
    for i, c in enumerate(part):
        assert c.shape == (2, 16, 16) and torch.equal(c, t[part.box(i)])


def test_a_sampler_and_a_transform():
    t = pipeline()
    data = RandomCrops(t, (8, 8), sampler=lu.corner_sampler, length=4, transform=lu.double)
    for i, c in enumerate(data):
        ys, xs = data.box(i)
        assert ys.start in (0, 100) and xs.start in (0, 100)
        assert torch.equal(c, 2 * t[ys, xs])


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_workers_share_out_the_crops_of_one_process(context):
    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} here")
    t = pipeline()
    data = RandomCrops(t, (24, 24), region=[(-200, 200), (-200, 200)], length=18, seed=3)
    single = list(data)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context=context,
                                         persistent_workers=context == "spawn")
    for _ in range(2 if context == "spawn" else 1):  # persistent workers: a second epoch
        got = list(loader)
        assert len(got) == 18
        # the workers interleave; as a set, the crops are the single process's
        assert sorted(c.sum().item() for c in got) == sorted(c.sum().item() for c in single)
        for c in got:
            assert any(torch.equal(c, s) for s in single)


def test_state_dict_resumes_an_epoch():
    t = pipeline()
    data = RandomCrops(t, (16, 16), region=[(0, 300), (0, 300)], length=10, seed=4)
    full = list(data)
    data.set_epoch(0)
    stream = iter(data)
    first = [next(stream) for _ in range(4)]
    state = data.state_dict()
    assert state == {"epoch": 0, "next": 4}
    resumed = RandomCrops(pipeline(), (16, 16), region=[(0, 300), (0, 300)], length=10, seed=4)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert all(torch.equal(a, b) for a, b in zip(first + rest, full)) and len(first + rest) == 10


def test_crops_and_grid():
    t = pipeline()
    regions = [it.sl[0:10, 0:10], it.sl[-5:5, 100:130], it.sl[7, 0:4]]
    data = Crops(t, regions, transform=lu.double)
    assert len(data) == 3
    for r, c in zip(regions, data):
        assert torch.equal(c, 2 * t[r])
    grid = Crops.grid(t, (16, 32), region=[(0, 64), (-32, 32)])
    assert len(grid) == 4 * 2
    whole = t[0:64, -32:32]
    for k in range(len(grid)):
        ys, xs = grid.regions[k]
        assert torch.equal(grid[k], whole[ys.start:ys.stop, xs.start + 32:xs.stop + 32])
    loader = torch.utils.data.DataLoader(grid, batch_size=4, num_workers=2)
    batches = list(loader)
    assert torch.equal(torch.cat(batches), torch.stack([grid[k] for k in range(len(grid))]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=(8,)), "one entry per dim"),
    (dict(size=(0, 8)), "positive int"),
    (dict(size=(8, 8), region=[(0, 4), (0, 100)]), "at least"),
    (dict(size=(8, 8), region=[(0, 100)]), "per unbounded dim"),
    (dict(size=(8, 8)), "exactly one of region"),
    (dict(size=(8, 8), region=[(0, 99), (0, 99)], length=-1), "length"),
    (dict(size=(8, 8), region=[(0, 99), (0, 99)], seed=1.5), "seed"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(it.ValidationError, match=match):
        RandomCrops(pipeline(), **kwargs)
    with pytest.raises(it.ValidationError, match="InfiniteTensor"):
        RandomCrops(torch.zeros(4, 4), (2, 2), region=[(0, 4), (0, 4)])


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_where_it_stopped(workers):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    region = [(-300, 300), (-300, 300)]

    def loader():
        data = RandomCrops(pipeline(), (16, 16), region=region, length=24, seed=9)
        return sdl.StatefulDataLoader(data, batch_size=2, num_workers=workers)

    full = [b for b in loader()]
    first = loader()
    it_ = iter(first)
    head = [next(it_) for _ in range(5)]
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    tail = list(second)
    got = head + tail
    assert len(got) == len(full) == 12
    assert all(torch.equal(a, b) for a, b in zip(got, full))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_set_epoch_reaches_persistent_workers(context):
    data = RandomCrops(pipeline(), (16, 16), region=[(-200, 200), (-200, 200)], length=8, seed=5)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context=context,
                                         persistent_workers=True)
    epochs = []
    for e in range(3):
        data.set_epoch(e)
        epochs.append(sorted(c.sum().item() for c in loader))
    assert epochs[0] != epochs[1] != epochs[2]
    for e in range(3):
        assert epochs[e] == sorted(pipeline()[data.box(i, epoch=e)].sum().item() for i in range(8))
    # a plain pickle keeps the epoch as a number
    import pickle
    copy = pickle.loads(pickle.dumps(data))
    assert copy.epoch == 2 and [copy.box(i) for i in range(8)] == [data.box(i) for i in range(8)]


def test_a_resumed_epoch_runs_whole_the_next_time():
    data = RandomCrops(pipeline(), (8, 8), region=[(0, 100), (0, 100)], length=6, seed=2)
    full = [data.box(i) for i in range(6)]
    data.load_state_dict({"epoch": 0, "next": 4})
    assert len(list(data)) == 2  # the rest of the resumed epoch
    assert data.state_dict() == {"epoch": 0, "next": 6}
    again = list(data)  # the same epoch once more: from its first crop
    assert len(again) == 6 and all(torch.equal(c, data.tensor[b]) for c, b in zip(again, full))
