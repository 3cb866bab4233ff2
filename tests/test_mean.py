"""blend="mean": the weighted mean of the windows covering each pixel,
against a brute-force sum of value x weight and of weight over a finite box
(plain torch), for each weight kind, dtypes, finite dims, gaps between
windows, strided reads, pipelines, batches, threads and HDF5 persistence."""
import itertools
import threading

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import TensorWindow, sl
from infinite_tensor._mean import weight_window

F64 = torch.float64


def noise(size, dtype=F64):
    def f(ctx):
        g = torch.Generator().manual_seed(abs(hash(tuple(ctx))) % (2**31))
        return (torch.rand(size, generator=g, dtype=F64) * 4 - 1).to(dtype)
    return f


def brute_mean(f, shape, win, weight, box, empty=0.0):
    """The weighted mean over box ((start, stop) per dim) by enumerating
    every window meeting it (windows wholly inside the finite dims)."""
    w = weight_window(weight, win)
    ext = [b - a for a, b in box]
    num, den = torch.zeros(ext, dtype=F64), torch.zeros(ext, dtype=F64)
    ranges = []
    for d, (a, b) in enumerate(box):
        z, s, o = win.size[d], win.stride[d], win.offset[d]
        lo, hi = (a - o - z) // s - 1, (b - o) // s + 1
        ranges.append(range(lo, hi + 1))
    for k in itertools.product(*ranges):
        start = [o + i * s for o, i, s in zip(win.offset, k, win.stride)]
        if any(shape[d] is not None and (start[d] < 0 or start[d] + win.size[d] > shape[d]) for d in range(len(k))):
            continue
        src, dst = [], []
        for d, (a, b) in enumerate(box):
            lo, hi = max(a, start[d]), min(b, start[d] + win.size[d])
            if lo >= hi:
                break
            src.append(slice(lo - start[d], hi - start[d]))
            dst.append(slice(lo - a, hi - a))
        else:
            v = f(k).to(F64)
            num[tuple(dst)] += (v * w)[tuple(src)]
            den[tuple(dst)] += w[tuple(src)]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.tensor(float(empty), dtype=F64))


CASES = {
    "overlap-2d": ((None, None), TensorWindow((8, 8), stride=(3, 5), offset=(1, -2))),
    "channels": ((3, None, None), TensorWindow((3, 6, 6), stride=(3, 4, 4))),
    "gaps": ((None, None), TensorWindow((4, 4), stride=(6, 5))),
    "finite-lattice": ((10, None), TensorWindow((4, 4), stride=(3, 2))),
}


@pytest.mark.parametrize("weight", ["constant", "linear", "gaussian", "tensor"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_values_equal_the_brute_force_mean(case, weight):
    shape, win = CASES[case]
    if weight == "tensor":
        weight = torch.rand(win.size, generator=torch.Generator().manual_seed(3), dtype=F64) + 0.1
    f = noise(win.size)
    t = it.InfiniteTensor(shape, f, win, dtype=F64, blend="mean", weight=weight, blend_init=-5.0)
    box = [(0, e) if e is not None else (-13, 17) for e in shape]
    got = t[tuple(slice(a, b) for a, b in box)]
    want = brute_mean(f, shape, win, weight, box, empty=-5.0)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # strided and int-indexed reads sample the same values
    key = tuple(slice(a, b, 2) for a, b in box)
    assert torch.allclose(t[key], want[tuple(slice(None, None, 2) for _ in box)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_lower_precision_dtypes(dtype, tol):
    shape, win = CASES["overlap-2d"]
    f = noise(win.size, dtype)
    t = it.InfiniteTensor(shape, f, win, dtype=dtype, blend="mean", weight="linear")
    box = [(-6, 10), (0, 12)]
    got = t[-6:10, 0:12]
    assert got.dtype == dtype
    want = brute_mean(f, shape, win, "linear", box)
    assert (got.to(F64) - want).abs().max().item() <= tol * 4


def test_a_constant_window_value_stays_exactly_constant():
    # the mean of equal values is that value, whatever the weights
    win = TensorWindow((16, 16), stride=(5, 7))
    t = it.InfiniteTensor((None, None), lambda c: torch.full((16, 16), 0.3), win, blend="mean", weight="gaussian")
    assert torch.allclose(t[-40:40, -40:40], torch.full((80, 80), 0.3), atol=1e-7)


def test_pipelines_read_the_mean_upstream():
    shape, win = CASES["overlap-2d"]
    f = noise(win.size)
    base = it.InfiniteTensor(shape, f, win, dtype=F64, blend="mean", weight="linear")
    padded = TensorWindow((6, 6), stride=(4, 4), offset=(-1, -1))
    down = it.InfiniteTensor((None, None), lambda c, x: x[1:5, 1:5] * 2, TensorWindow((4, 4)), args=(base,),
                             args_windows=(padded,), dtype=F64)
    want = brute_mean(f, shape, win, "linear", [(0, 12), (0, 12)]) * 2
    assert torch.allclose(down[0:12, 0:12], want, rtol=1e-12, atol=1e-12)


def test_batched_threaded_and_list_reads_agree():
    # small integers and constant weights: every sum is exact in float64, so
    # any order of adding windows gives the same bits and torch.equal holds
    # (with other weights two histories may differ in the last bits, as sums do)
    shape, win = CASES["channels"]

    def f(ctx):
        return (noise(win.size)(ctx) * 8).round()

    plain = it.InfiniteTensor(shape, f, win, dtype=F64, blend="mean")
    want_box = brute_mean(f, shape, win, "constant", [(0, 3), (0, 20), (0, 20)])
    assert torch.equal(plain[:, 0:20, 0:20], want_box)
    batched = it.InfiniteTensor(shape, lambda cs: [f(c) for c in cs], win, dtype=F64, blend="mean",
                                batch_size=[1, 4])
    regions = [sl[:, 0:20, 0:20], sl[:, -8:8, 10:30], sl[1, 5:9, -20:0]]
    want = [plain[r] for r in regions]
    errors = []

    def reader(k):
        try:
            for r, w in zip(regions[k % 3:] + regions[:k % 3], want[k % 3:] + want[:k % 3]):
                if not torch.equal(batched[r], w):
                    errors.append(r)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert all(torch.equal(a, b) for a, b in zip(batched[regions], want))


def test_hdf5_keeps_weighted_sums_and_reopens_without_computing(tmp_path):
    shape, win = CASES["overlap-2d"]
    f = noise(win.size)
    calls = []

    def counted(ctx):
        calls.append(ctx)
        return f(ctx)

    path = tmp_path / "mean.h5"
    with it.HDF5TileStore(path, tile_size=16) as store:
        t = it.InfiniteTensor(shape, counted, win, dtype=F64, blend="mean", weight="linear", tile_store=store,
                              tensor_id="m")
        first = t[0:24, 0:24]
    n = len(calls)
    with it.HDF5TileStore(path, tile_size=16) as store:
        t = it.InfiniteTensor(shape, counted, win, dtype=F64, blend="mean", weight="linear", tile_store=store,
                              tensor_id="m")
        assert torch.equal(t[0:24, 0:24], first)
    assert len(calls) == n
    assert torch.allclose(first, brute_mean(f, shape, win, "linear", [(0, 24), (0, 24)]), rtol=1e-12, atol=1e-12)


def test_another_weight_under_one_id(tmp_path):
    # the memory store starts the id afresh (as for another blend); a
    # persistent store, whose tiles hold sums weighted the old way, refuses
    win = TensorWindow((4, 4), stride=(2, 2))
    f = noise((4, 4))
    store = it.MemoryTileStore()
    a = it.InfiniteTensor((None, None), f, win, dtype=F64, blend="mean", weight="linear", tile_store=store,
                          tensor_id="a")
    a[0:8, 0:8]
    b = it.InfiniteTensor((None, None), f, win, dtype=F64, blend="mean", weight="gaussian", tile_store=store,
                          tensor_id="a")
    assert torch.allclose(b[0:8, 0:8], brute_mean(f, (None, None), win, "gaussian", [(0, 8), (0, 8)]),
                          rtol=1e-12, atol=1e-12)
    with it.HDF5TileStore(tmp_path / "w.h5", tile_size=8) as disk:
        it.InfiniteTensor((None, None), f, win, dtype=F64, blend="mean", weight="linear", tile_store=disk,
                          tensor_id="a")[0:8, 0:8]
        with pytest.raises(it.ValidationError):
            it.InfiniteTensor((None, None), f, win, dtype=F64, blend="mean", weight="gaussian", tile_store=disk,
                              tensor_id="a")
        with pytest.raises(it.ValidationError):
            it.InfiniteTensor((None, None), f, win, dtype=F64, tile_store=disk, tensor_id="a")


@pytest.mark.parametrize("kwargs,match", [
    (dict(blend="mean", dtype=torch.int64), "floating dtype"),
    (dict(blend="mean", dtype=torch.bool), "floating dtype"),
    (dict(weight="linear"), "weight= goes with blend='mean'"),
    (dict(blend="mean", weight="tent"), "weight must be one of"),
    (dict(blend="mean", weight=torch.ones(3, 4)), "window's shape"),
    (dict(blend="mean", weight=-torch.ones(4, 4)), ">= 0"),
    (dict(blend="mean", weight=torch.zeros(4, 4)), "some entry > 0"),
    (dict(blend="average"), "blend must be callable or None, got str \\(or 'mean'"),
])
def test_bad_mean_arguments(kwargs, match):
    with pytest.raises(it.ValidationError, match=match):
        it.InfiniteTensor((None, None), noise((4, 4)), TensorWindow((4, 4), stride=(2, 2)), **kwargs)


def test_a_dimension_map_is_refused():
    win = TensorWindow((4, 4), stride=(2, 2), dimension_map=(0, 0))
    with pytest.raises(it.ValidationError, match="dimension_map"):
        it.InfiniteTensor((None, None), noise((4, 4)), win, blend="mean")
