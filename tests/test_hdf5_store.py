"""HDF5TileStore: persistence, reopening (in this and in new processes),
validation of reopened configurations, the write-back cache, read-only and
truncating modes, the on-disk format (read with h5py), and the same answers
as MemoryTileStore and the plain-torch reference (tests/reference.py).

Every value is compared with an independent computation; f is counted so
that "served from disk" means f was not called.
"""

import json
import os
import random
import re

import numpy as np
import pytest
import torch

import infinite_tensor as it
from persist_util import (
    DEMO_SHAPE,
    DEMO_WIN,
    Win,
    as_slices,
    assert_same,
    check_tile_values,
    demo_pair,
    demo_pure,
    duplicates,
    file_digest,
    make,
    pattern,
    run_python,
    tile_box,
    tile_shape,
    tiles_meeting,
    windows_in,
)

h5py = pytest.importorskip("h5py")

NP_DTYPES = {torch.int64: "int64", torch.float64: "float64", torch.float32: "float32",
             torch.int32: "int32"}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store.h5")


def H5(path, **kw):
    kw.setdefault("tile_size", 8)
    return it.HDF5TileStore(path, **kw)


def escape(tid):
    return tid.replace("%", "%25").replace("/", "%2F")


def attr_str(value):
    return value.decode() if isinstance(value, bytes) else str(value)


A = [(-5, 17), (3, 30)]
B = [(-20, 30), (-10, 40)]


# -- reopening ----------------------------------------------------------------------
CHILD_REOPEN = r"""
import sys, torch
import infinite_tensor as it
from persist_util import demo_pair
path, out = sys.argv[1], sys.argv[2]
with it.HDF5TileStore(path, tile_size=8) as store:
    p = demo_pair(store)
    a = p.lib[-5:17, 3:30]
    n_a = len(p.calls)
    b = p.lib[-20:30, -10:40]
    res = {"a": a, "b": b, "calls_a": list(p.calls[:n_a]), "calls_b": list(p.calls[n_a:])}
torch.save(res, out)
"""


def test_reopen_in_a_new_process_serves_stored_windows_from_disk(path, tmp_path):
    with H5(path) as store:
        assert isinstance(store, it.HDF5TileStore)
        p = demo_pair(store)
        p.check(as_slices(A))
        assert sorted(p.calls) == sorted(windows_in(DEMO_WIN, A, DEMO_SHAPE))
    out = str(tmp_path / "child.pt")
    run_python(CHILD_REOPEN, path, out)
    res = torch.load(out, weights_only=False)
    assert res["calls_a"] == [], "stored windows were recomputed after reopening"
    assert_same(res["a"], p.ref[as_slices(A)])
    new = windows_in(DEMO_WIN, B, DEMO_SHAPE) - windows_in(DEMO_WIN, A, DEMO_SHAPE)
    assert not duplicates(res["calls_b"])
    assert set(res["calls_b"]) == new
    assert_same(res["b"], p.ref[as_slices(B)])
    # what the child added was saved too
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(B))
        q.check((slice(-3, 4), 7))
        assert q.calls == []


def test_tile_size_tuple_with_a_finite_dim(path):
    shape = (3, None, None)
    win = Win((3, 5, 4), (3, 3, 4), (0, 1, -2))

    def pure(ctx):
        return pattern(ctx, win.size, torch.float64)

    box = [(0, 3), (-7, 20), (-9, 30)]
    with H5(path, tile_size=(8, 16)) as store:
        p = make(shape, pure, win, store=store, dtype=torch.float64, tensor_id="t3")
        p.check(as_slices(box))
        p.check((1, slice(0, 11, 2), slice(-9, 3)))
        computed = set(p.calls)
    with H5(path, tile_size=(8, 16)) as store:
        q = make(shape, pure, win, store=store, dtype=torch.float64, tensor_id="t3")
        q.check(as_slices(box))
        q.check((slice(None), slice(-1, 5), 0))
        assert q.calls == []
        q.check((slice(0, 3), slice(25, 40), slice(0, 5)))
        assert not (set(q.calls) & computed)
    with h5py.File(path, "r") as f:
        g = f["tensors"]["t3"]
        assert list(g.attrs["tile_size"]) == [8, 16]
        assert g["tiles"].shape[1:] == (3, 8, 16)


def test_int_tile_size_repeats_over_three_infinite_dims(path):
    shape = (None, 2, None, None)
    win = Win((3, 2, 2, 3), (2, 2, 2, 3), (0, 0, -1, 1))

    def pure(ctx):
        return pattern(ctx, win.size, torch.int64)

    idx = (slice(-4, 6), slice(None), slice(-3, 5), slice(0, 7))
    with H5(path, tile_size=5) as store:
        p = make(shape, pure, win, store=store, dtype=torch.int64, tensor_id="t4")
        p.check(idx)
    with H5(path, tile_size=5) as store:
        q = make(shape, pure, win, store=store, dtype=torch.int64, tensor_id="t4")
        q.check(idx)
        assert q.calls == []
    with h5py.File(path, "r") as f:
        g = f["tensors"]["t4"]
        assert list(g.attrs["tile_size"]) == [5, 5, 5]
        assert g["tiles"].shape[1:] == (5, 2, 5, 5)
        assert g["index"].shape[1] == 3


def test_tensor_without_infinite_dims(path):
    shape = (4, 6)
    win = Win((2, 3), (1, 3), (0, 0))  # overlapping rows

    def pure(ctx):
        return pattern(ctx, win.size, torch.int64)

    with H5(path) as store:
        p = make(shape, pure, win, store=store, dtype=torch.int64, tensor_id="fin")
        p.check((1, slice(2, 5)))
        p.check((slice(None), slice(None)))
        assert not duplicates(p.calls)
    with H5(path) as store:
        q = make(shape, pure, win, store=store, dtype=torch.int64, tensor_id="fin")
        q.check((slice(None), slice(None)))
        q.check((-1, -2))
        assert q.calls == []
    with h5py.File(path, "r") as f:
        g = f["tensors"]["fin"]
        assert "index" not in g
        assert g["tiles"].shape == (1, 4, 6)
        assert_same(torch.as_tensor(g["tiles"][0]), p.ref.region([(0, 4), (0, 6)]))


def test_pipeline_reopened(path):
    base_win = Win((4, 4))
    down_win = Win((4, 4), (4, 4))
    arg_win = Win((6, 6), (4, 4), (-1, -1))

    def base_pure(ctx):
        return pattern(ctx, (4, 4), torch.int64)

    def down_pure(ctx, x):
        return x[1:5, 1:5] * 2 + x[:4, 2:6] - x[2:6, :4] + ctx[0]

    box = [(-6, 10), (0, 13)]
    with H5(path) as store:
        base = make(DEMO_SHAPE, base_pure, base_win, store=store, dtype=torch.int64, tensor_id="base")
        down = make(DEMO_SHAPE, down_pure, down_win, [base], [arg_win], store=store, dtype=torch.int64,
                    tensor_id="down")
        down.check(as_slices(box))
        base_done = set(base.calls)
    with H5(path) as store:
        base2 = make(DEMO_SHAPE, base_pure, base_win, store=store, dtype=torch.int64, tensor_id="base")
        down2 = make(DEMO_SHAPE, down_pure, down_win, [base2], [arg_win], store=store, dtype=torch.int64,
                     tensor_id="down")
        down2.check(as_slices(box))
        assert down2.calls == [] and base2.calls == []
        box2 = [(-6, 10), (8, 20)]
        down2.check(as_slices(box2))
        assert set(down2.calls) == windows_in(down_win, box2, DEMO_SHAPE) - windows_in(down_win, box, DEMO_SHAPE)
        assert not (set(base2.calls) & base_done)
        assert not duplicates(base2.calls)


# -- mismatched reopen -----------------------------------------------------------
def _cfg(**over):
    cfg = dict(shape=(5, None), size=(5, 4), stride=(5, 4), offset=(0, 0), dtype=torch.float32,
               args="up1", tile_size=8)
    cfg.update(over)
    return cfg


def _build(store, cfg, tensor_id="t"):
    # the upstreams live in memory, so only "t" meets the persisted configuration
    mem = it.MemoryTileStore()
    ups = {}
    for k, uid in enumerate(("up1", "up2")):
        ups[uid] = it.InfiniteTensor((None,), lambda c, k=k: torch.full((4,), float(k + c[0])),
                                     it.TensorWindow((4,)), tile_store=mem, tensor_id=uid)
    calls = []
    size, dtype = cfg["size"], cfg["dtype"]

    def f(ctx, up):
        calls.append(ctx)
        return pattern(ctx, size, dtype) + up.sum().to(dtype)

    t = it.InfiniteTensor(cfg["shape"], f, it.TensorWindow(size, cfg["stride"], cfg["offset"]),
                          args=[ups[cfg["args"]]], args_windows=[it.TensorWindow((4,), dimension_map=(1,))],
                          dtype=dtype, tile_store=store, tensor_id=tensor_id)
    return t, calls


MISMATCHES = [
    ("shape", _cfg(shape=(6, None)), "shape"),
    ("dtype", _cfg(dtype=torch.float64), "dtype"),
    ("window size", _cfg(size=(5, 3), stride=(5, 4)), "output_window|size"),
    ("window stride", _cfg(stride=(5, 3)), "output_window|stride"),
    ("window offset", _cfg(offset=(0, 1)), "output_window|offset"),
    ("args", _cfg(args="up2"), "args"),
    ("tile size", _cfg(tile_size=16), "tile_size"),
]


@pytest.mark.parametrize("what,cfg,word", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_reopen_with_another_configuration_is_refused(path, what, cfg, word):
    base = _cfg()
    with H5(path, tile_size=base["tile_size"]) as store:
        t, calls = _build(store, base)
        expected = t[0:5, -8:12]
        assert calls
    with H5(path, tile_size=cfg["tile_size"]) as store:
        with pytest.raises(it.ValidationError) as info:
            _build(store, cfg)
    # named before the dump of both configurations (0.3's "existing=..., new=...")
    head = str(info.value).split("existing=")[0]
    assert re.search(word, head), str(info.value)
    # the stored tensor is untouched by the refused registration
    with H5(path, tile_size=base["tile_size"]) as store:
        t, calls = _build(store, base)
        assert_same(t[0:5, -8:12], expected)
        assert calls == []


def test_mismatched_reregistration_in_the_same_store(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        with pytest.raises(it.ValidationError, match="dtype"):
            it.InfiniteTensor(DEMO_SHAPE, demo_pure, DEMO_WIN.lib(), dtype=torch.float64, tile_store=store,
                              tensor_id="demo")
        n = len(p.calls)
        p.check(as_slices(A))
        assert len(p.calls) == n


def test_to_same_device_is_a_no_op_and_dtype_change_is_refused_and_rolled_back(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        n = len(p.calls)
        assert p.lib.to("cpu") is p.lib
        assert p.lib.to(torch.int64) is p.lib
        with pytest.raises(it.ValidationError):
            p.lib.to(torch.float64)
        assert p.lib.dtype == torch.int64 and p.lib.device == torch.device("cpu")
        with pytest.raises(it.ValidationError):
            p.lib.to("cpu", torch.float32)
        assert p.lib.dtype == torch.int64
        p.check(as_slices(A))
        assert len(p.calls) == n
        p.check(as_slices(B))  # new windows still work
    with H5(path) as store:  # still int64 on disk
        q = demo_pair(store)
        q.check(as_slices(B))
        assert q.calls == []


# -- clear_cache / clear_tensor -------------------------------------------------
def test_clear_cache_drops_memory_but_keeps_disk(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        n = len(p.calls)
        store.clear_cache("demo")
        p.check(as_slices(A))
        p.lib.clear_cache()
        p.check((slice(0, 9), slice(3, 30, 3)))
        assert len(p.calls) == n
        p.check(as_slices(B))
        assert not duplicates(p.calls)
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(B))
        assert q.calls == []


def test_clear_tensor_deletes_the_data_on_disk(path):
    with H5(path) as store:
        gone = demo_pair(store, "gone")
        kept = demo_pair(store, "kept")
        gone.check(as_slices(A))
        kept.check(as_slices(A))
        store.flush()
        store.clear_tensor("gone")
        with pytest.raises(it.TileAccessError):
            gone.lib[0:4, 0:4]
        kept.check(as_slices(A))
    with h5py.File(path, "r") as f:
        assert "gone" not in f["tensors"]
        assert "kept" in f["tensors"]
    with H5(path) as store:
        gone2 = demo_pair(store, "gone")
        kept2 = demo_pair(store, "kept")
        gone2.check(as_slices(A))
        assert sorted(gone2.calls) == sorted(windows_in(DEMO_WIN, A, DEMO_SHAPE))
        kept2.check(as_slices(A))
        assert kept2.calls == []


def test_clear_tensor_discards_unwritten_tiles_and_recreate_starts_fresh(path):
    with H5(path, cache_size_tiles=2) as store:
        p = demo_pair(store, "x")
        p.check(as_slices(B))  # some tiles written by eviction, some still dirty
        store.clear_tensor("x")
        q = demo_pair(store, "x")  # same id again, in the same store
        q.check(as_slices(A))
        assert sorted(q.calls) == sorted(windows_in(DEMO_WIN, A, DEMO_SHAPE))
        q.check(as_slices(B))
        assert not duplicates(q.calls)
    with H5(path) as store:
        r = demo_pair(store, "x")
        r.check(as_slices(B))
        assert r.calls == []


def test_clear_tensor_with_a_slash_in_the_id(path):
    with H5(path) as store:
        p = demo_pair(store, "a/b")
        p.check(as_slices(A))
        store.clear_tensor("a/b")
    with h5py.File(path, "r") as f:
        assert escape("a/b") not in f["tensors"] and "a" not in f["tensors"]


# -- 0.2 shims --------------------------------------------------------------------------
def test_tile_cache_size_is_deprecated_and_limits_the_cache(path):
    with pytest.warns(DeprecationWarning, match="tile_cache_size"):
        store = it.HDF5TileStore(path, tile_size=8, tile_cache_size=1)
    with store:
        p = demo_pair(store)
        p.check(as_slices(B))
        p.check(as_slices(A))
        assert not duplicates(p.calls)
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(B))
        assert q.calls == []


def test_get_or_create_tile_size_is_deprecated_and_sets_the_store_tile_size(path):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return pattern(ctx, (4, 4), torch.float32)

    store = it.HDF5TileStore(path)
    assert store.tile_size == 512
    with pytest.warns(DeprecationWarning):
        t = store.get_or_create("g", (None, None), f, it.TensorWindow((4, 4)), tile_size=16)
    assert store.tile_size == 16
    ref = make(DEMO_SHAPE, lambda c: pattern(c, (4, 4), torch.float32), Win((4, 4))).ref
    assert_same(t[-3:20, 0:9], ref[-3:20, 0:9])
    store.close()
    with h5py.File(path, "r") as fh:
        assert list(fh["tensors"]["g"].attrs["tile_size"]) == [16, 16]
        assert fh["tensors"]["g"]["tiles"].shape[1:] == (16, 16)


# -- compact contribution records ------------------------------------------------------
def test_ten_thousand_windows_in_one_tile(path):
    win = Win((2, 2), (1, 1), (0, 0))  # 101 x 101 windows touch each 100 x 100 tile

    def pure(ctx):
        return pattern(ctx, (2, 2), torch.int64)

    box = [(0, 100), (0, 100)]
    with H5(path, tile_size=100) as store:
        p = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.int64, tensor_id="dense", batch_size=2048)
        p.check(as_slices(box))
        assert len(p.calls) == 101 * 101
        store.flush()
    with H5(path, tile_size=100) as store:
        q = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.int64, tensor_id="dense", batch_size=2048)
        q.check(as_slices(box))
        assert q.calls == []
        edge = [(-1, 101), (-1, 1)]
        q.check(as_slices(edge))
        assert set(q.calls) == windows_in(win, edge, DEMO_SHAPE) - windows_in(win, box, DEMO_SHAPE)
        assert not duplicates(q.calls)
    with h5py.File(path, "r") as f:
        g = f["tensors"]["dense"]
        rows = [tuple(r) for r in g["index"][()]]
        i = rows.index((0, 0))
        assert_same(torch.as_tensor(g["tiles"][i]), p.ref.region(box))


# -- write-back cache -------------------------------------------------------------------
CACHES = [dict(cache_size_tiles=1), dict(cache_size_tiles=3), dict(cache_size_bytes=1),
          dict(cache_size_bytes=3 * 5 * 5 * 8)]


@pytest.mark.parametrize("limits", CACHES, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_small_write_back_cache(path, limits):
    win = Win((4, 4), (3, 3), (1, -1))

    def pure(ctx):
        return pattern(ctx, (4, 4), torch.int64)

    rng = random.Random(str(limits))
    boxes = []
    for _ in range(12):
        y, x = rng.randint(-30, 20), rng.randint(-30, 20)
        boxes.append([(y, y + rng.randint(1, 12)), (x, x + rng.randint(1, 12))])
    with H5(path, tile_size=5, **limits) as store:
        p = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.int64, tensor_id="wb")
        for box in boxes:
            p.check(as_slices(box))
        # persistent: evicted tiles are written, never recomputed
        assert not duplicates(p.calls)
        done = set(p.calls)
    with H5(path, tile_size=5, **limits) as store:
        q = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.int64, tensor_id="wb")
        for box in reversed(boxes):
            q.check(as_slices(box))
        assert q.calls == []
        whole = [(-30, 32), (-30, 32)]
        q.check(as_slices(whole))
        assert set(q.calls) == windows_in(win, whole, DEMO_SHAPE) - done
        assert not duplicates(q.calls)


# -- modes --------------------------------------------------------------------------------
def _write_demo(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
    return p


def test_mode_r_reads_stored_data_and_refuses_new_windows(path):
    p = _write_demo(path)
    before = file_digest(path)
    with H5(path, mode="r") as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        q.check((slice(0, 10, 2), 5))
        with pytest.raises(it.TileAccessError, match=r"(?i)read.only"):
            q.lib[as_slices(B)]
        with pytest.raises(it.TileAccessError, match=r"(?i)read.only"):
            q.lib[-5:17, 29:31]  # one column past what is stored
        assert q.calls == []  # refused before computing anything
        q.check(as_slices(A))  # still fine after the refusal
        store.flush()
    assert file_digest(path) == before
    with H5(path) as store:  # and nothing half-written was left behind
        r = demo_pair(store)
        r.check(as_slices(B))
        assert set(r.calls) == windows_in(DEMO_WIN, B, DEMO_SHAPE) - set(p.calls)


def test_mode_r_refuses_a_new_tensor_id(path):
    _write_demo(path)
    before = file_digest(path)
    with H5(path, mode="r") as store:
        with pytest.raises(it.ValidationError):
            demo_pair(store, "new")
    assert file_digest(path) == before


def test_mode_r_on_a_missing_file(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(FileNotFoundError):
        it.HDF5TileStore(str(missing), mode="r")
    assert not missing.exists()


def test_mode_w_truncates(path):
    with H5(path) as store:
        demo_pair(store, "x").check(as_slices(A))
        demo_pair(store, "y").check(as_slices(A))
    with H5(path, mode="w") as store:
        # another configuration under the same id: nothing left to mismatch
        calls = []

        def f(ctx):
            calls.append(ctx)
            return pattern(ctx, DEMO_WIN.size, torch.float64)

        t = it.InfiniteTensor(DEMO_SHAPE, f, DEMO_WIN.lib(), dtype=torch.float64, tile_store=store, tensor_id="x")
        ref = make(DEMO_SHAPE, lambda c: pattern(c, DEMO_WIN.size, torch.float64), DEMO_WIN,
                   dtype=torch.float64).ref
        assert_same(t[as_slices(A)], ref[as_slices(A)])
        assert sorted(calls) == sorted(windows_in(DEMO_WIN, A, DEMO_SHAPE))
    with h5py.File(path, "r") as f:
        assert sorted(f["tensors"]) == ["x"]
        assert json.loads(attr_str(f["tensors"]["x"].attrs["meta"]))["dtype"] == "float64"


def test_mode_w_creates_a_missing_file(tmp_path):
    path = str(tmp_path / "new.h5")
    with H5(path, mode="w") as store:
        demo_pair(store).check(as_slices(A))
    with H5(path, mode="r") as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert q.calls == []


# -- same answers as the memory store ----------------------------------------------------
def _avg(a, b):
    return (a + b) / 2


def _lmax(a, b):
    return torch.maximum(a, b)


def _rand_case(rng):
    shape = rng.choice([(None,), (None, None), (3, None), (None, 4, None), (None, None)])
    dtype = rng.choice([torch.int64, torch.float64, torch.float32])
    blends = [("sum", None, None), ("sum_init", None, 3), ("max", torch.maximum, -1000),
              ("lambda_max", _lmax, -1000)]
    if dtype.is_floating_point:
        blends.append(("avg", _avg, None))
    name, blend, init = rng.choice(blends)
    size, stride, offset = [], [], []
    for ext in shape:
        if ext is None:
            s = rng.randint(1, 6)
            st = rng.choice([rng.randint(1, s), s, s, s + rng.randint(1, 2)])
            o = rng.randint(-4, 4)
        else:
            s = rng.randint(1, ext)
            st = rng.randint(1, s + 1)
            o = rng.randint(0, ext - s) if rng.random() < 0.8 else rng.choice([-1, 1])
        size.append(s)
        stride.append(st)
        offset.append(o)
    dmap = None
    if rng.random() < 0.2:  # output windows follow a dimension_map too (docs/api.md)
        n = len(shape)
        dmap = tuple(rng.choice(list(range(n)) + [None]) if rng.random() < 0.5 else d for d in range(n))
    win = Win(size, stride, offset, dmap)
    n_inf = sum(ext is None for ext in shape)
    tile = rng.randint(2, 9) if rng.random() < 0.6 else tuple(rng.randint(2, 9) for _ in range(n_inf))
    limits = rng.choice([{}, {}, dict(cache_size_tiles=1), dict(cache_size_tiles=2), dict(cache_size_bytes=64)])
    batch = rng.choice([None, None, 3])
    return shape, dtype, (name, blend, init), win, tile, limits, batch


def _rand_index(rng, shape):
    idx = []
    for ext in shape:
        r = rng.random()
        if ext is None:
            if r < 0.1:
                idx.append(rng.randint(-20, 20))
            else:
                a = rng.randint(-25, 20)
                idx.append(slice(a, a + rng.randint(1, 14), rng.choice([None, 1, 1, 2, 3])))
        else:
            if r < 0.2:
                idx.append(rng.randint(-ext, ext - 1))
            elif r < 0.4:
                idx.append(slice(None))
            else:
                idx.append(slice(rng.randint(-ext - 1, ext), rng.randint(-ext, ext + 2), rng.choice([None, 2])))
    return tuple(idx)


N_RANDOM = int(os.environ.get("IT_HDF5_RANDOM_CASES", "24"))


@pytest.mark.parametrize("seed", range(N_RANDOM))
def test_same_answers_as_the_memory_store(path, seed):
    rng = random.Random(seed)
    shape, dtype, (bname, blend, init), win, tile, limits, batch = _rand_case(rng)
    desc = f"seed={seed} shape={shape} dtype={dtype} blend={bname} win={vars(win)} tile={tile} " \
           f"limits={limits} batch={batch}"

    def pure(ctx):
        return pattern(ctx, win.size, dtype)

    kw = dict(dtype=dtype, blend=blend, blend_init=init, batch_size=batch)
    custom = bname in ("avg", "lambda_max")
    mem = make(shape, pure, win, store=it.MemoryTileStore(), **kw)
    reads = [_rand_index(rng, shape) for _ in range(8)]
    with H5(path, tile_size=tile, **limits) as store:
        h = make(shape, pure, win, store=store, tensor_id="r", **kw)
        for idx in reads:
            got_h, got_m, exp = h.lib[idx], mem.lib[idx], h.ref[idx]
            assert_same(got_m, exp)
            try:
                assert_same(got_h, exp)
            except AssertionError as e:
                raise AssertionError(f"{desc}\nindex={idx}\n{e}") from None
        if not custom:  # a custom blend recomputes windows met by later tile completions (by design)
            assert not duplicates(h.calls), desc
    with H5(path, tile_size=tile, **limits) as store:
        h2 = make(shape, pure, win, store=store, tensor_id="r", **kw)
        for idx in reads:
            assert_same(h2.lib[idx], h.ref[idx])
        assert h2.calls == [], desc
        more = [_rand_index(rng, shape) for _ in range(3)]
        for idx in more:
            assert_same(h2.lib[idx], mem.lib[idx])
            assert_same(h2.lib[idx], h.ref[idx])
        if not custom:
            assert not duplicates(h.calls + h2.calls), desc


# -- the file format --------------------------------------------------------------------
def _check_layout(path, tid, pair, shape, tile_size, read_box):
    with h5py.File(path, "r") as f:
        assert [int(v) for v in np.asarray(f.attrs["infinite_tensor_format"]).reshape(-1)] == [2]
        g = f["tensors"][escape(tid)]
        assert attr_str(g.attrs["id"]) == tid
        assert json.loads(attr_str(g.attrs["meta"])) == pair.lib.to_json()
        n_inf = sum(ext is None for ext in shape)
        ts = [tile_size] * n_inf if isinstance(tile_size, int) else list(tile_size)
        assert [int(v) for v in g.attrs["tile_size"]] == ts
        tiles, index = g["tiles"][()], g["index"][()]
        n = tiles.shape[0]
        assert tiles.shape == (n,) + tile_shape(shape, tile_size)
        assert str(tiles.dtype) == NP_DTYPES[pair.lib.dtype]
        assert index.shape == (n, n_inf) and str(index.dtype) == "int64"
        assert g["bits"].shape[0] == n
        rows = [tuple(int(v) for v in r) for r in index]
        assert len(set(rows)) == n, "a tile is stored twice"
        needed = tiles_meeting(shape, tile_size, read_box)
        assert needed <= set(rows)
        compared = 0
        for i, k in enumerate(rows):
            compared += check_tile_values(tiles[i], tile_box(shape, tile_size, k), pair.ref, read_box)
        assert compared >= len(needed)
        return g["tiles"].compression, g["tiles"].compression_opts


def test_file_layout_readable_by_h5py(path):
    box = [(-13, 27), (-6, 35)]
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(box))
    comp = _check_layout(path, "demo", p, DEMO_SHAPE, 8, box)
    assert comp == ("gzip", 4)


def test_format_version_is_a_scalar_attribute(path):
    with H5(path) as store:
        demo_pair(store).check(as_slices(A))
    with h5py.File(path, "r") as f:
        version = f.attrs["infinite_tensor_format"]
        assert np.ndim(version) == 0, f"a {np.shape(version)} array, not a scalar"
        assert version == 2


def test_file_layout_with_finite_dims_and_tuple_tile(path):
    shape = (2, None, None)
    win = Win((2, 3, 5), (2, 2, 5), (0, 1, -3))

    def pure(ctx):
        return pattern(ctx, win.size, torch.float32)

    box = [(0, 2), (-9, 12), (-4, 30)]
    with H5(path, tile_size=(4, 16)) as store:
        p = make(shape, pure, win, store=store, dtype=torch.float32, tensor_id="img")
        p.check(as_slices(box))
    _check_layout(path, "img", p, shape, (4, 16), box)


def test_ids_with_slash_and_percent_are_one_group(path):
    ids = ["a/b", "50%/x", "%2F"]
    with H5(path) as store:
        pairs = {tid: demo_pair(store, tid) for tid in ids}
        for tid, p in pairs.items():
            p.check(as_slices(A))
    with h5py.File(path, "r") as f:
        assert sorted(f["tensors"]) == sorted(escape(t) for t in ids)
        assert "a%2Fb" in f["tensors"] and "50%25%2Fx" in f["tensors"] and "%252F" in f["tensors"]
    for tid, p in pairs.items():
        _check_layout(path, tid, p, DEMO_SHAPE, 8, A)
    with H5(path) as store:
        for tid in ids:
            q = demo_pair(store, tid)
            q.check(as_slices(A))
            assert q.calls == []


def test_compression_none_alone(path):
    with H5(path, compression=None) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
    with h5py.File(path, "r") as f:
        assert f["tensors"]["demo"]["tiles"].compression is None
    with H5(path, compression=None) as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert q.calls == []


def test_store_attributes(path):
    with it.HDF5TileStore(path, mode="a", compression="gzip", compression_opts=2, tile_size=(3, 7)) as store:
        assert str(store.filepath) == path
        assert store.mode == "a"
        assert store.compression == "gzip" and store.compression_opts == 2
        assert tuple(store.tile_size) == (3, 7)
        p = demo_pair(store)
        p.check(as_slices(A))
    with h5py.File(path, "r") as f:
        assert f["tensors"]["demo"]["tiles"].compression_opts == 2


# -- closing ------------------------------------------------------------------------------
def test_reading_a_closed_store_raises_and_with_reopens_it(path):
    store = H5(path)
    p = demo_pair(store)
    p.check(as_slices(A))
    n = len(p.calls)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(it.InfiniteTensorError):
        p.lib[as_slices(B)]
    with pytest.raises(it.InfiniteTensorError):
        p.lib[as_slices(A)]
    with store as s:
        assert s is store
        p.check(as_slices(A))
        assert len(p.calls) == n
        p.check(as_slices(B))
    with pytest.raises(it.InfiniteTensorError):
        p.lib[as_slices(A)]
    with H5(path) as store2:
        q = demo_pair(store2)
        q.check(as_slices(B))
        assert q.calls == []


# -- bad arguments --------------------------------------------------------------------------
def _register(path, **store_kw):
    store = it.HDF5TileStore(path, **store_kw)
    try:
        it.InfiniteTensor(DEMO_SHAPE, demo_pure, DEMO_WIN.lib(), dtype=torch.int64, tile_store=store,
                          tensor_id="x")
    finally:
        store.close()


def test_unknown_keyword(path):
    with pytest.raises(TypeError, match="Unexpected keyword arguments"):
        it.HDF5TileStore(path, tile_sise=8)


@pytest.mark.parametrize("tile_size", [0, -4, (4, 0), (-1, 4)])
def test_tile_size_must_be_positive(path, tile_size):
    with pytest.raises(it.ValidationError, match="tile_size must be positive"):
        _register(path, tile_size=tile_size)


@pytest.mark.parametrize("tile_size,n", [((4, 4, 4), 3), ((4,), 1)])
def test_tile_size_tuple_length(path, tile_size, n):
    with pytest.raises(it.ValidationError, match=f"tile_size tuple length {n} != infinite dims 2"):
        _register(path, tile_size=tile_size)


@pytest.mark.parametrize("mode", ["rw", "append", ""])
def test_unknown_mode(path, mode):
    with pytest.raises(it.ValidationError):
        it.HDF5TileStore(path, mode=mode)


@pytest.mark.parametrize("kw", [dict(cache_size_bytes=-1), dict(cache_size_tiles=-2)])
def test_negative_cache_limits(path, kw):
    with pytest.raises(it.ValidationError):
        it.HDF5TileStore(path, **kw)


# -- more lifecycle ---------------------------------------------------------------------------
def test_tile_size_can_change_between_registrations(path):
    with H5(path, tile_size=8) as store:
        a = demo_pair(store, "a")
        a.check(as_slices(A))
        store.tile_size = (4, 12)
        b = demo_pair(store, "b")
        b.check(as_slices(A))
        a.check(as_slices(B))  # a keeps its own tiles
    with h5py.File(path, "r") as f:
        assert list(f["tensors"]["a"].attrs["tile_size"]) == [8, 8]
        assert list(f["tensors"]["b"].attrs["tile_size"]) == [4, 12]
        assert f["tensors"]["b"]["tiles"].shape[1:] == (4, 12)
    with H5(path, tile_size=(4, 12)) as store:
        b2 = demo_pair(store, "b")
        b2.check(as_slices(A))
        assert b2.calls == []


def test_leaving_with_by_an_exception_still_saves(path):
    with pytest.raises(KeyError):
        with H5(path) as store:
            p = demo_pair(store)
            p.check(as_slices(A))
            raise KeyError("boom")
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert q.calls == []


def test_garbage_collected_store_saves_its_tiles(path):
    import gc

    store = H5(path)
    p = demo_pair(store)
    p.check(as_slices(A))
    del store, p
    gc.collect()
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert q.calls == []


def test_clear_direct_caches_shim(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        n = len(p.calls)
        with pytest.warns(DeprecationWarning):
            store.clear_direct_caches()
        p.check(as_slices(A))
        assert len(p.calls) == n


def test_an_exception_in_f_loses_nothing_and_counts_nothing_twice(path):
    fail = {(1, 2), (2, 5)}
    calls = []

    def f(ctx):
        calls.append(ctx)
        if ctx in fail:
            fail.discard(ctx)
            raise RuntimeError(f"f failed at {ctx}")
        return demo_pure(ctx)

    ref = demo_pair(None).ref
    with H5(path, cache_size_tiles=2) as store:
        t = it.InfiniteTensor(DEMO_SHAPE, f, DEMO_WIN.lib(), dtype=torch.int64, tile_store=store, tensor_id="e")
        with pytest.raises(RuntimeError, match="f failed"):
            t[as_slices(B)]
        with pytest.raises(RuntimeError, match="f failed"):
            t[as_slices(B)]
        assert_same(t[as_slices(B)], ref[as_slices(B)])
        ok = [c for c in calls if c not in {(1, 2), (2, 5)}]
        assert not duplicates(ok)
    with H5(path) as store:
        q = demo_pair(store, "e")
        q.check(as_slices(B))
        assert q.calls == []


# -- documented in docs/api.md and docs/file-format.md ----------------------------------------------
def test_ids_dot_and_empty_are_single_groups(path):
    with H5(path) as store:
        dot = demo_pair(store, ".")
        empty = demo_pair(store, "")
        dot.check(as_slices(A))
        empty.check((slice(0, 5), slice(0, 5)))
    with h5py.File(path, "r") as f:
        assert sorted(f["tensors"]) == ["%", "%2E"]
        assert attr_str(f["tensors"]["%2E"].attrs["id"]) == "."
        assert attr_str(f["tensors"]["%"].attrs["id"]) == ""
    with H5(path) as store:
        q = demo_pair(store, ".")
        q.check(as_slices(A))
        assert q.calls == []


def test_a_newer_format_version_is_refused(path):
    with h5py.File(path, "w") as f:
        f.attrs["infinite_tensor_format"] = 3
        f.create_group("tensors")
    with pytest.raises(it.InfiniteTensorError) as info:
        _register(path)
    msg = str(info.value)
    assert "format" in msg and "3" in msg and "2" in msg, msg


def test_tensors_written_by_0_3_are_refused_by_id(path):
    # 0.3's layout: tensors/<id>/metadata (attrs meta, tile_size) and tensors/<id>/tiles/<index>
    meta = {"shape": [None, None], "dtype": "int64", "device": "cpu", "args": [], "args_windows": [],
            "output_window": DEMO_WIN.lib().to_dict()}
    with h5py.File(path, "w") as f:
        m = f.create_group("tensors/old/metadata")
        m.attrs["meta"] = json.dumps(meta)
        m.attrs["tile_size"] = [8, 8]
        f.create_dataset("tensors/old/tiles/0_0", data=[[0] * 8] * 8)
    with H5(path) as store:
        with pytest.raises(it.ValidationError, match="0.3"):
            demo_pair(store, "old")
        p = demo_pair(store, "new")
        p.check(as_slices(A))
    with H5(path) as store:
        q = demo_pair(store, "new")
        q.check(as_slices(A))
        assert q.calls == []


CHILD_LOCK = r"""
import sys
import infinite_tensor as it
path = sys.argv[1]
for mode in ("a", "r"):
    try:
        it.HDF5TileStore(path, mode=mode, tile_size=8).close()
        print(mode, "opened")
    except Exception as e:
        print(mode, type(e).__name__)
"""


def test_a_second_process_cannot_open_a_file_being_written(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        out = run_python(CHILD_LOCK, path).stdout.split("\n")
        assert out[:2] == ["a TileAccessError", "r TileAccessError"], out
        p.check(as_slices(B))
    out = run_python(CHILD_LOCK, path).stdout.split("\n")
    assert out[:2] == ["a opened", "r opened"], out


def test_modes_r_plus_and_exclusive_create(path, tmp_path):
    missing = str(tmp_path / "none.h5")
    with pytest.raises(FileNotFoundError):
        it.HDF5TileStore(missing, mode="r+")
    _write_demo(path)
    for mode in ("w-", "x"):
        with pytest.raises(FileExistsError):
            it.HDF5TileStore(path, mode=mode)
    with H5(path, mode="r+") as store:
        q = demo_pair(store)
        q.check(as_slices(B))
        assert set(q.calls) == windows_in(DEMO_WIN, B, DEMO_SHAPE) - windows_in(DEMO_WIN, A, DEMO_SHAPE)
    fresh = str(tmp_path / "fresh.h5")
    with H5(fresh, mode="x") as store:
        demo_pair(store).check(as_slices(A))
    with H5(fresh, mode="r") as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert q.calls == []


def test_reopening_a_closed_w_store_does_not_truncate(path):
    store = H5(path, mode="w")
    p = demo_pair(store)
    p.check(as_slices(A))
    store.close()
    with store:
        n = len(p.calls)
        p.check(as_slices(A))
        assert len(p.calls) == n


@pytest.mark.parametrize("kw", [dict(compression="lzf"), dict(compression="gzip", compression_opts=10),
                                dict(compression="gzip", compression_opts=-1)])
def test_unsupported_compression(path, kw):
    with pytest.raises(it.ValidationError):
        it.HDF5TileStore(path, **kw)


def test_an_int_compression_is_a_gzip_level(path):
    with H5(path, compression=7) as store:
        demo_pair(store).check(as_slices(A))
    with h5py.File(path, "r") as f:
        ds = f["tensors"]["demo"]["tiles"]
        assert (ds.compression, ds.compression_opts) == ("gzip", 7)


def test_reregistering_with_another_blend_is_refused(path):
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(A))
        with pytest.raises(it.ValidationError):
            it.InfiniteTensor(DEMO_SHAPE, demo_pure, DEMO_WIN.lib(), dtype=torch.int64, tile_store=store,
                              tensor_id="demo", blend=torch.maximum)
        p.check(as_slices(A))


# -- dtypes, coordinates, threads ----------------------------------------------------------------
def _dtype_value(ctx, size, dtype):
    v = pattern(ctx, size, torch.float64)
    if dtype == torch.bool:
        return v.remainder(3) == 0
    if dtype.is_complex:
        return torch.complex(v, pattern(ctx, size, torch.float64, base=5)).to(dtype)
    if dtype in (torch.uint8,):
        return (v + 40).to(dtype)
    return v.to(dtype)


DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16,
          torch.float32, torch.complex64, torch.complex128]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_dtypes_round_trip_and_read_with_h5py(path, dtype):
    win = Win((3, 5), (3, 5), (1, -2))  # no overlap: each pixel is one window's value

    def pure(ctx):
        return _dtype_value(ctx, win.size, dtype)

    box = [(-6, 13), (-9, 22)]
    with H5(path, tile_size=(6, 10)) as store:
        p = make(DEMO_SHAPE, pure, win, store=store, dtype=dtype, tensor_id="d")
        p.check(as_slices(box))
    with H5(path, tile_size=(6, 10)) as store:
        q = make(DEMO_SHAPE, pure, win, store=store, dtype=dtype, tensor_id="d")
        q.check(as_slices(box))
        assert q.calls == []
    with h5py.File(path, "r") as f:
        g = f["tensors"]["d"]
        tiles, index = g["tiles"][()], g["index"][()]
    names = {torch.bool: "bool", torch.bfloat16: "uint16", torch.complex64: "complex64",
             torch.complex128: "complex128"}
    assert str(tiles.dtype) == names.get(dtype, str(dtype).replace("torch.", ""))
    compared = 0
    for k, tile in zip(index, tiles):
        t = torch.from_numpy(np.ascontiguousarray(tile))
        if dtype == torch.bfloat16:
            t = t.view(torch.int16).view(torch.bfloat16)  # stored as its raw bits
        compared += check_tile_values(t, tile_box(DEMO_SHAPE, (6, 10), tuple(int(c) for c in k)), p.ref, box)
    assert compared >= len(tiles_meeting(DEMO_SHAPE, (6, 10), box))


def test_far_away_coordinates(path):
    far = 10 ** 12
    box = [(far - 5, far + 9), (-far - 3, -far + 20)]
    with H5(path) as store:
        p = demo_pair(store)
        p.check(as_slices(box))
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(box))
        q.check((far, slice(-far, -far + 4)))
        assert q.calls == []
    _check_layout(path, "demo", p, DEMO_SHAPE, 8, box)


def test_clear_tensor_of_a_stored_id_that_was_not_registered_in_this_session(path):
    _write_demo(path)
    with H5(path) as store:
        store.clear_tensor("demo")  # wipe the saved state without re-creating the tensor
    with h5py.File(path, "r") as f:
        assert "demo" not in f["tensors"]
    with H5(path) as store:
        q = demo_pair(store)
        q.check(as_slices(A))
        assert sorted(q.calls) == sorted(windows_in(DEMO_WIN, A, DEMO_SHAPE))


def test_threads_reading_one_hdf5_store(path):
    import threading

    boxes = [[(y, y + 14), (x, x + 17)] for y in range(-40, 40, 11) for x in range(-40, 40, 13)]
    for limits in ({}, dict(cache_size_tiles=3)):
        tid = f"th{len(limits)}"
        with H5(path, tile_size=(8, 12), **limits) as store:
            p = demo_pair(store, tid)
            errors = []

            def worker(k):
                try:
                    for box in boxes[k::4] + boxes[::-1][k::4]:
                        got = p.lib[as_slices(box)]
                        if not torch.equal(got, p.ref[as_slices(box)]):
                            errors.append(box)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
        with H5(path, tile_size=(8, 12)) as store:
            q = demo_pair(store, tid)
            whole = [(-40, 43), (-40, 44)]
            q.check(as_slices(whole))
            assert q.calls == []


def _fit(a, size, dtype):
    """Any arg region -> a window of `size` (flatten, cut or zero-pad), exact integers."""
    n = 1
    for s in size:
        n *= s
    flat = a.reshape(-1).to(torch.float64)
    out = torch.zeros(n, dtype=torch.float64)
    k = min(n, flat.numel())
    out[:k] = flat[:k]
    return out.reshape(tuple(size)).to(dtype)


@pytest.mark.parametrize("seed", range(max(1, N_RANDOM // 2)))
def test_random_pipelines_same_answers(path, seed):
    rng = random.Random(1000 + seed)
    up_shape, up_dtype, (_, up_blend, up_init), up_win, tile, limits, batch = _rand_case(rng)
    down_shape = rng.choice([(None, None), (2, None), (None,)])
    dsize = [rng.randint(1, 4) if ext is None else ext for ext in down_shape]
    down_win = Win(dsize, [rng.randint(1, s + 1) for s in dsize], [rng.randint(-2, 2) if e is None else 0
                                                                     for e in down_shape])
    u = len(up_shape)
    arg_win = Win([rng.randint(1, 5) for _ in range(u)], [rng.randint(1, 4) for _ in range(u)],
                  [rng.randint(-3, 2) for _ in range(u)],
                  tuple(rng.choice(list(range(len(down_shape))) + [None]) for _ in range(u)))
    down_dtype = rng.choice([torch.int64, torch.float64])
    down_tile = rng.randint(2, 7)

    def up_pure(ctx):
        return pattern(ctx, up_win.size, up_dtype)

    def down_pure(ctx, x):
        return pattern(ctx, down_win.size, down_dtype, base=3) + _fit(x, down_win.size, down_dtype)

    desc = f"seed={seed} up={up_shape} {vars(up_win)} down={down_shape} {vars(down_win)} arg={vars(arg_win)}"
    mem_store = it.MemoryTileStore()
    mem_up = make(up_shape, up_pure, up_win, store=mem_store, dtype=up_dtype, blend=up_blend, blend_init=up_init)
    mem_down = make(down_shape, down_pure, down_win, [mem_up], [arg_win], store=mem_store, dtype=down_dtype,
                    batch_size=batch)
    reads = [_rand_index(rng, down_shape) for _ in range(6)]

    def build(store):
        store.tile_size = tile
        up = make(up_shape, up_pure, up_win, store=store, dtype=up_dtype, blend=up_blend, blend_init=up_init,
                  tensor_id="up")
        store.tile_size = down_tile
        down = make(down_shape, down_pure, down_win, [up], [arg_win], store=store, dtype=down_dtype,
                    batch_size=batch, tensor_id="down")
        return up, down

    with H5(path, **limits) as store:
        up, down = build(store)
        for idx in reads:
            got, exp = down.lib[idx], down.ref[idx]
            assert_same(mem_down.lib[idx], exp)
            try:
                assert_same(got, exp)
            except AssertionError as e:
                raise AssertionError(f"{desc}\nindex={idx}\n{e}") from None
        assert not duplicates(down.calls), desc
    with H5(path, **limits) as store:
        up2, down2 = build(store)
        for idx in reads:
            assert_same(down2.lib[idx], down.ref[idx])
        assert down2.calls == [] and up2.calls == [], desc
        for idx in [_rand_index(rng, down_shape) for _ in range(3)]:
            assert_same(down2.lib[idx], down.ref[idx])
        assert not duplicates(down.calls + down2.calls), desc
