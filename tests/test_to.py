"""InfiniteTensor.to() and _parse_to_args (spec 5.4): accepted forms, errors,
no-op, dtype migration of cached data on MemoryTileStore, rollback."""

import pytest
import torch

import infinite_tensor as it
from infinite_tensor.infinite_tensor import _parse_to_args
from pairs import Win, make, pattern

S = slice
CPU = torch.device("cpu")


# ---------------------------------------------------------------- _parse_to_args


@pytest.mark.parametrize(
    "args,kwargs,expected",
    [
        ((CPU,), {}, (CPU, None)),
        (("cpu",), {}, (CPU, None)),
        ((0,), {}, (torch.device("cuda", 0), None)),
        ((2,), {}, (torch.device("cuda", 2), None)),
        (("cuda:1",), {}, (torch.device("cuda", 1), None)),
        ((torch.float64,), {}, (None, torch.float64)),
        (("cpu", torch.int8), {}, (CPU, torch.int8)),
        ((torch.int8, "cpu"), {}, (CPU, torch.int8)),
        ((), {"device": "cpu"}, (CPU, None)),
        ((), {"dtype": torch.float16}, (None, torch.float16)),
        ((), {"device": CPU, "dtype": torch.float16}, (CPU, torch.float16)),
        ((torch.zeros(1, dtype=torch.int16),), {}, (CPU, torch.int16)),
        ((), {}, (None, None)),
        (("cpu",), {"dtype": torch.bool}, (CPU, torch.bool)),
        ((torch.float64,), {"device": 1}, (torch.device("cuda", 1), torch.float64)),
    ],
)
def test_parse_to_args_forms(args, kwargs, expected):
    device, dtype = _parse_to_args(*args, **kwargs)
    assert (device, dtype) == expected
    if device is not None:
        assert isinstance(device, torch.device)


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((True,), {}),                               # bool is not a device
        ((), {"device": False}),
        ((), {"non_blocking": True}),
        ((), {"copy": True}),
        (("cpu",), {"device": "cpu"}),               # device twice
        (("cpu", "cpu"), {}),
        ((torch.float32, torch.float64), {}),        # dtype twice
        ((torch.float32,), {"dtype": torch.float64}),
        ((torch.zeros(1),), {"dtype": torch.float64}),  # tensor + anything
        ((torch.zeros(1), "cpu"), {}),
        ((torch.zeros(1),), {"device": "cpu"}),
        ((), {"device": 1.5}),
        ((), {"device": [0]}),
        ((), {"dtype": "float32"}),                  # strings are not dtypes
        ((), {"dtype": 3}),
        ((1.5,), {}),
        ((object(),), {}),
    ],
)
def test_parse_to_args_errors(args, kwargs):
    with pytest.raises(TypeError):
        _parse_to_args(*args, **kwargs)


# ---------------------------------------------------------------- .to()


def tensor(store, dtype=torch.float32):
    def f(ctx):
        return pattern(ctx, (4, 4), dtype)

    return it.InfiniteTensor(shape=(None, None), f=f, output_window=it.TensorWindow((4, 4), stride=(2, 2)),
                             dtype=dtype, tile_store=store)


def test_noop_returns_self_without_touching_anything(store):
    t = tensor(store)
    before = t[0:8, 0:8]
    assert t.to("cpu") is t
    assert t.to(torch.float32) is t
    assert t.to(CPU, torch.float32) is t
    assert t.to(torch.zeros(1)) is t
    assert t.to() is t
    assert t.dtype == torch.float32 and t.device == CPU
    assert torch.equal(t[0:8, 0:8], before)


def test_dtype_change_converts_cached_values(store):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return pattern(ctx, (4, 4), torch.float32) + 0.25

    t = it.InfiniteTensor(shape=(None, None), f=f, output_window=it.TensorWindow((4, 4), stride=(2, 2)),
                          tile_store=store)
    before = t[0:8, 0:8]
    nbytes = store.cache_info()["bytes"]
    n = len(calls)
    assert t.to(torch.float64) is t
    assert t.dtype == torch.float64
    assert t.to_json()["dtype"] == "float64"
    after = t[0:8, 0:8]
    assert after.dtype == torch.float64
    assert torch.equal(after, before.to(torch.float64))
    assert len(calls) == n  # converted, not recomputed
    assert store.cache_info()["bytes"] == 2 * nbytes


def test_dtype_change_to_int_and_bool(store):
    t = tensor(store)
    before = t[0:8, 0:8]
    t.to(torch.int32)
    assert torch.equal(t[0:8, 0:8], before.to(torch.int32))
    t.to(dtype=torch.bool)
    assert torch.equal(t[0:8, 0:8], before.to(torch.int32).to(torch.bool))


def test_dtype_change_keyword_and_tensor_forms(store):
    t = tensor(store)
    before = t[0:8, 0:8]
    t.to(dtype=torch.float64)
    assert t.dtype == torch.float64
    t.to(torch.zeros(1, dtype=torch.float16))
    assert t.dtype == torch.float16 and t.device == CPU
    assert torch.equal(t[0:8, 0:8], before.to(torch.float16))
    t.to("cpu", torch.float32)
    assert torch.equal(t[0:8, 0:8], before.to(torch.float16).to(torch.float32))


def test_f_is_unchanged_after_to(store):
    # spec 5.4: new windows still come from f, which returns float32
    t = tensor(store)
    t[0:4, 0:4]
    t.to(torch.float64)
    with pytest.raises(it.DtypeMismatchError):
        t[100:104, 0:4]


def test_to_does_not_affect_other_tensors(store):
    a = tensor(store)
    b = tensor(store)
    ra, rb = a[0:8, 0:8], b[0:8, 0:8]
    a.to(torch.float64)
    assert b.dtype == torch.float32
    assert torch.equal(b[0:8, 0:8], rb)


def test_to_with_dependents(store):
    up = make((None,), lambda c: pattern(c, (4,), torch.float32), Win((4,)), store=store)
    down = make((None,), lambda c, a: a.to(torch.float32) * 2, Win((4,)), [up], [Win((4,))], store=store)
    down.check((S(0, 8),))
    up.lib.to(torch.float64)
    assert up.lib.to_json()["dtype"] == "float64"
    assert torch.equal(up.lib[0:8], up.ref[0:8].to(torch.float64))
    down.check((S(0, 8),))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build without CUDA")
@pytest.mark.parametrize("target", ["cuda:0", 0, torch.device("cuda", 0)])
def test_cuda_unsupported_rolls_back(store, target):
    t = tensor(store)
    before = t[0:8, 0:8]
    nbytes = store.cache_info()["bytes"]
    with pytest.raises(it.InfiniteTensorError):
        t.to(target)
    assert t.device == CPU and t.dtype == torch.float32
    assert store.cache_info()["bytes"] == nbytes
    assert torch.equal(t[0:8, 0:8], before)
    with pytest.raises(it.InfiniteTensorError):
        t.to(target, torch.float64)
    assert t.device == CPU and t.dtype == torch.float32
    assert store.cache_info()["bytes"] == nbytes


@pytest.mark.parametrize(
    "args,kwargs",
    [((True,), {}), ((), {"non_blocking": True}), (("cpu", "cpu"), {}), ((), {"dtype": "float64"}),
     ((torch.zeros(1), torch.float64), {}), ((1.5,), {})],
)
def test_to_errors(store, args, kwargs):
    t = tensor(store)
    t[0:4, 0:4]
    with pytest.raises(TypeError):
        t.to(*args, **kwargs)
    assert t.dtype == torch.float32 and t.device == CPU
