"""The 0.2 API kept as deprecated shims: get_or_create (cache_method,
cache_limit, tile_size), clear_direct_caches, evict_cache_for, and the 0.2
README samples run through them."""

import warnings

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import MemoryTileStore, TensorWindow
from pairs import Win, make, pattern

S = slice


def goc(store, *args, **kwargs):
    with pytest.warns(DeprecationWarning):
        return store.get_or_create(*args, **kwargs)


def ones64(ctx):
    return torch.ones(64, 64)


# ---------------------------------------------------------------- README 0.2 samples


def test_0_2_getting_started():
    tile_store = MemoryTileStore()

    def your_processing_function(ctx):
        return torch.ones(512, 512)

    window = TensorWindow((512, 512))
    tensor = goc(
        tile_store,
        "my_infinite_tensor",
        shape=(None, None),
        f=your_processing_function,
        output_window=window,
        tile_size=512,
    )
    result = tensor[0:1024, 0:1024]
    assert torch.equal(result, torch.ones(1024, 1024))
    assert tensor.uuid == "my_infinite_tensor"


def test_0_2_dependency_chaining():
    tile_store = MemoryTileStore()

    def zeros_tensor_func(ctx):
        return torch.zeros(10, 512, 512)

    base_window = TensorWindow((10, 512, 512))
    base = goc(tile_store, "my_tensor", (10, None, None), zeros_tensor_func, base_window)
    offset_window = TensorWindow((10, 512, 512), offset=(0, -256, -256))

    def inc_func(ctx, prev):
        return prev + 1

    dep = goc(tile_store, "my_second_tensor", (10, None, None), inc_func, offset_window,
              args=(base,), args_windows=(offset_window,))
    out = dep[:, 0:512, 0:512]
    assert torch.equal(out, torch.ones(10, 512, 512))


def test_0_2_batching():
    tile_store = MemoryTileStore()

    def zeros_tensor_func(ctx):
        return torch.zeros(10, 512, 512)

    base_window = TensorWindow((10, 512, 512))
    base = goc(tile_store, "my_tensor", (10, None, None), zeros_tensor_func, base_window)
    offset_window = TensorWindow((10, 512, 512), offset=(0, -256, -256))
    sizes = []

    def inc_func(ctx, prev):
        sizes.append(len(prev))
        assert isinstance(ctx, list) and len(ctx) == len(prev)
        prev_stack = torch.stack(prev)
        return [p for p in (prev_stack + 1)]

    dep = goc(tile_store, "my_second_tensor", (10, None, None), inc_func, offset_window,
              args=(base,), args_windows=(offset_window,), batch_size=4)
    out = dep[:, 0:512, 0:512]
    assert torch.equal(out, torch.ones(10, 512, 512))
    assert sum(sizes) == 4 and max(sizes) <= 4


# ---------------------------------------------------------------- get_or_create


def test_get_or_create_warns_and_returns_a_working_tensor():
    store = MemoryTileStore()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = store.get_or_create("a", shape=(None, None), f=ones64,
                                output_window=TensorWindow((64, 64), stride=(64, 64)),
                                cache_method="direct", cache_limit=2 * 1024 * 1024, batch_size=None)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert isinstance(t, it.InfiniteTensor)
    assert torch.equal(t[0:128, 0:128], torch.ones(128, 128))


@pytest.mark.parametrize("method", ["direct", "indirect"])
def test_cache_method_is_dropped(method):
    store = MemoryTileStore()
    t = goc(store, "a", (None, None), ones64, TensorWindow((64, 64)), cache_method=method)
    assert torch.equal(t[0:64, 0:64], torch.ones(64, 64))


def test_cache_limit_sets_the_store_byte_limit():
    store = MemoryTileStore()
    t = goc(store, "a", (None, None), ones64, TensorWindow((64, 64)), cache_method="direct", cache_limit=0)
    other = it.InfiniteTensor(shape=(None,), f=lambda c: torch.ones(8), output_window=TensorWindow((8,)),
                              tile_store=store)
    assert torch.equal(t[0:128, 0:128], torch.ones(128, 128))
    assert store.cache_info()["bytes"] == 0
    other[0:64]
    assert store.cache_info()["bytes"] == 0  # the limit is the whole store's


def test_cache_limit_bounds_bytes():
    store = MemoryTileStore()
    calls = []

    def f(ctx):
        calls.append(ctx)
        return pattern(ctx, (64, 64), torch.float32)

    t = goc(store, "a", (None, None), f, TensorWindow((64, 64)), cache_method="direct", cache_limit=512 * 1024)
    for k in range(5):
        t[k * 10**5:k * 10**5 + 200, 0:200]
        assert store.cache_info()["bytes"] <= 512 * 1024


def test_cache_limit_none_is_unbounded():
    store = MemoryTileStore(cache_size_bytes=0)
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(64, 64)

    t = goc(store, "a", (None, None), f, TensorWindow((64, 64)), cache_method="direct", cache_limit=None)
    t[0:128, 0:128]
    assert torch.equal(t[0:128, 0:128], torch.ones(128, 128))
    assert len(calls) == 4  # cache_limit=None: the store became unbounded (0.2: "None for unlimited")


def test_tile_size_ignored_on_memory_store():
    store = MemoryTileStore()
    t = goc(store, "a", (None, None), ones64, TensorWindow((64, 64)), tile_size=128)
    assert not hasattr(store, "tile_size")
    assert torch.equal(t[0:100, 0:100], torch.ones(100, 100))


def test_same_id_twice_shares_data():
    store = MemoryTileStore()
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(64, 64)

    first = goc(store, "same", (None, None), f, TensorWindow((64, 64)), cache_method="indirect")
    second = goc(store, "same", (None, None), f, TensorWindow((64, 64)), cache_method="indirect")
    first[0:128, 0:128]
    n = len(calls)
    assert torch.equal(second[0:128, 0:128], torch.ones(128, 128))
    assert len(calls) == n == 4


def test_same_id_other_config_raises():
    store = MemoryTileStore()
    goc(store, "same", (None, None), ones64, TensorWindow((64, 64)))
    with pytest.raises(it.ValidationError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.get_or_create("same", (None, None), ones64, TensorWindow((64, 64), stride=(32, 32)))


def test_none_id_gives_random_id():
    store = MemoryTileStore()
    a = goc(store, None, (None, None), ones64, TensorWindow((64, 64)))
    b = goc(store, None, (None, None), ones64, TensorWindow((64, 64)))
    assert isinstance(a.uuid, str) and a.uuid != b.uuid


def test_dtype_keyword_and_device_default():
    store = MemoryTileStore()
    t = goc(store, "d", (None,), lambda c: torch.ones(4, dtype=torch.float64), TensorWindow((4,)),
            dtype=torch.float64)
    assert t.dtype == torch.float64 and t.device == torch.device("cpu")
    assert torch.equal(t[0:8], torch.ones(8, dtype=torch.float64))


def test_unexpected_keywords():
    store = MemoryTileStore()
    with pytest.raises(TypeError, match="Unexpected keyword arguments"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.get_or_create("x", (None,), lambda c: torch.ones(4), TensorWindow((4,)), device="cpu")
    with pytest.raises(TypeError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.get_or_create("x", (None,), lambda c: torch.ones(4), TensorWindow((4,)), None)


def test_get_or_create_batched_with_args():
    store = MemoryTileStore()
    up = make((None, None), lambda c: pattern(c, (8, 8), torch.float32), Win((8, 8)), store=store)

    def f(ctxs, prevs):
        return [p * 2 for p in prevs]

    t = goc(store, "dep", (None, None), f, TensorWindow((8, 8), offset=(-4, -4)), args=(up.lib,),
            args_windows=(TensorWindow((8, 8), offset=(-4, -4)),), batch_size=3, cache_method="direct",
            cache_limit=None)
    assert torch.equal(t[-10:10, 3:17], up.ref[-10:10, 3:17] * 2)


# ---------------------------------------------------------------- clear_direct_caches / evict_cache_for


def test_clear_direct_caches():
    store = MemoryTileStore()
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(64, 64)

    t = goc(store, "a", (None, None), f, TensorWindow((64, 64)), cache_method="direct", cache_limit=None)
    u = it.InfiniteTensor(shape=(None,), f=lambda c: torch.ones(8), output_window=TensorWindow((8,)),
                          tile_store=store)
    t[0:128, 0:128]
    u[0:64]
    assert store.cache_info()["bytes"] > 0
    with pytest.warns(DeprecationWarning):
        store.clear_direct_caches()
    assert store.cache_info()["bytes"] == 0
    assert store.cache_info()["tiles"] == 0
    assert torch.equal(t[0:64, 0:64], torch.ones(64, 64))
    assert len(calls) == 5


def _two_tensors(store):
    a = make((None, None), lambda c: pattern(c, (32, 32)), Win((32, 32)), store=store, dtype=torch.float64,
             tensor_id="A")
    b = make((None, None), lambda c: pattern(c, (32, 32)) + 1, Win((32, 32)), store=store, dtype=torch.float64,
             tensor_id="B")
    return a, b


BOXES = [(S(k * 10**6, k * 10**6 + 32), S(0, 32)) for k in range(4)]


def _bytes_per_box():
    s = MemoryTileStore()
    a, _ = _two_tensors(s)
    a.lib[BOXES[0]]
    return s.cache_info()["bytes"]


def test_evict_cache_for_zero_drops_that_tensor_only():
    store = MemoryTileStore()
    a, b = _two_tensors(store)
    for bx in BOXES:
        a.check(bx)
        b.check(bx)
    per = _bytes_per_box()
    assert store.cache_info()["bytes"] == 8 * per
    with pytest.warns(DeprecationWarning):
        store.evict_cache_for("A", 0)
    assert store.cache_info()["bytes"] == 4 * per
    a.reset_calls()
    b.reset_calls()
    for bx in BOXES:
        a.check(bx)
        b.check(bx)
    assert len(a.calls) == 4 and b.calls == []


def test_evict_cache_for_trims_least_recently_used():
    store = MemoryTileStore()
    a, b = _two_tensors(store)
    for bx in BOXES:
        a.check(bx)
        b.check(bx)
    per = _bytes_per_box()
    with pytest.warns(DeprecationWarning):
        store.evict_cache_for("A", 2 * per + per // 2)  # room for two boxes of A
    assert store.cache_info()["bytes"] == 6 * per
    a.reset_calls()
    b.reset_calls()
    a.check(BOXES[3])
    a.check(BOXES[2])
    assert a.calls == []  # the most recently used of A's data stayed
    a.check(BOXES[0])
    assert len(a.calls) == 1
    for bx in BOXES:
        b.check(bx)
    assert b.calls == []


def test_evict_cache_for_bigger_limit_keeps_everything():
    store = MemoryTileStore()
    a, b = _two_tensors(store)
    a.check(BOXES[0])
    before = store.cache_info()["bytes"]
    with pytest.warns(DeprecationWarning):
        store.evict_cache_for("A", 10**9)
    assert store.cache_info()["bytes"] == before
