"""InfiniteTensor construction: defaults, validation (spec 1.3 + our
decisions), properties, to_json, ids."""

import uuid

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import InfiniteTensor, TensorWindow, ValidationError


def ones_f(ctx):
    return torch.ones(4, 4)


def W():
    return TensorWindow((4, 4))


def make(**kw):
    kw.setdefault("shape", (None, None))
    kw.setdefault("f", ones_f)
    kw.setdefault("output_window", W())
    return InfiniteTensor(**kw)


# ---------------------------------------------------------------- defaults


def test_defaults():
    t = make()
    assert t.shape == (None, None)
    assert isinstance(t.shape, tuple)
    assert t.dtype == torch.float32
    assert t.device == torch.device("cpu")
    assert t.batch_size is None
    assert t.blend is None
    assert t.blend_init is None
    assert t.args == [] and isinstance(t.args, list)
    assert t.args_windows == [] and isinstance(t.args_windows, list)
    assert t.f is ones_f
    assert isinstance(t.output_window, TensorWindow)
    assert tuple(t.output_window.size) == (4, 4)
    # a random uuid4 string id
    assert isinstance(t.uuid, str)
    assert uuid.UUID(t.uuid).version == 4
    assert make().uuid != t.uuid


def test_positional_order():
    store = it.MemoryTileStore()
    blend = torch.maximum
    t = InfiniteTensor(
        (None,), lambda c: torch.zeros(2, dtype=torch.float64), TensorWindow((2,)),
        None, None, torch.float64, "cpu", store, "pos", 3, blend, -1.0,
    )
    assert t.dtype == torch.float64
    assert t.device == torch.device("cpu")
    assert t.uuid == "pos"
    assert t.batch_size == 3
    assert t.blend is blend
    assert t.blend_init == -1.0


def test_default_store_is_private():
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(4, 4)

    a = make(f=f, tensor_id="same")
    b = make(f=f, tensor_id="same")  # different private stores: no clash, no sharing
    a[0:4, 0:4]
    b[0:4, 0:4]
    assert calls == [(0, 0), (0, 0)]


def test_properties_are_read_only():
    t = make()
    for name in ["shape", "uuid", "dtype", "device", "f", "output_window", "batch_size", "blend", "blend_init"]:
        with pytest.raises(AttributeError):
            setattr(t, name, None)


def test_args_and_windows_properties(store):
    up = make(tile_store=store, tensor_id="up")
    aw = TensorWindow((4, 4), offset=(-1, -1))
    down = make(args=(up,), args_windows=(aw,), tile_store=store, f=lambda c, a: a.clone())
    assert down.args == [up]
    assert len(down.args_windows) == 1 and down.args_windows[0] is aw


def test_context_manager():
    t = make()
    with t as same:
        assert same is t
    assert t.__exit__(None, None, None) is False


def test_no_item_assignment():
    t = make()
    with pytest.raises((TypeError, AttributeError)):
        t[0:4, 0:4] = torch.zeros(4, 4)


def test_accepts_device_string_and_object():
    assert make(device="cpu").device == torch.device("cpu")
    assert make(device=torch.device("cpu")).device == torch.device("cpu")


def test_unknown_device_string():
    with pytest.raises((RuntimeError, ValidationError)):
        make(device="not_a_device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_cuda_device_without_cuda_raises():
    with pytest.raises(Exception):
        make(device="cuda")


# ---------------------------------------------------------------- validation (spec 1.3)


@pytest.mark.parametrize("shape", [[None, None], "ab", None, 3])
def test_shape_must_be_tuple(shape):
    with pytest.raises(ValidationError, match="Shape must be a tuple, got"):
        make(shape=shape)


def test_shape_cannot_be_empty():
    with pytest.raises(ValidationError, match="Shape cannot be empty"):
        make(shape=(), output_window=TensorWindow((1,)))


@pytest.mark.parametrize("bad", [0, -1, 2.0, "3"])
def test_shape_entries(bad):
    with pytest.raises(ValidationError, match=r"Dimension 1 must be None or positive integer, got"):
        make(shape=(None, bad))


@pytest.mark.parametrize("f", [None, 3, "f"])
def test_f_must_be_callable(f):
    with pytest.raises(ValidationError, match="Function must be callable, got"):
        make(f=f)


@pytest.mark.parametrize("blend", [3, "max"])
def test_blend_must_be_callable(blend):
    with pytest.raises(ValidationError, match="blend must be callable or None, got"):
        make(blend=blend)


@pytest.mark.parametrize("init", [True, False, "0", [0], torch.tensor(0.0)])
def test_blend_init_type(init):
    with pytest.raises(ValidationError, match="blend_init must be int, float, or None, got"):
        make(blend_init=init)


@pytest.mark.parametrize("init", [0, 3, -2.5, float("-inf")])
def test_blend_init_accepts_numbers(init):
    assert make(blend_init=init).blend_init == init


def test_args_windows_length(store):
    up = make(tile_store=store)
    with pytest.raises(ValidationError, match="args_windows length 2 must match args length 1"):
        make(args=(up,), args_windows=(W(), W()), tile_store=store, f=lambda c, a: a)


def test_output_window_dims():
    with pytest.raises(ValidationError, match="output_window has 2 dims but tensor has 3 dims"):
        make(shape=(None, None, 2))


def test_args_window_dims(store):
    up = make(tile_store=store)
    with pytest.raises(ValidationError, match=r"args_windows\[0\] has 3 dims but corresponding arg tensor has 2 dims"):
        make(args=(up,), args_windows=(TensorWindow((1, 4, 4)),), tile_store=store, f=lambda c, a: a)


def test_args_must_be_infinite_tensors():
    with pytest.raises(ValidationError, match="All positional args must be InfiniteTensor instances"):
        make(args=(torch.zeros(4, 4),), args_windows=(W(),), f=lambda c, a: a)


def test_int_arg_is_a_validation_error():
    # the reference raised AttributeError here (spec 7.11); we raise a documented class
    with pytest.raises(ValidationError):
        make(args=(5,), args_windows=(W(),), f=lambda c, a: a)


def test_missing_arg_window_is_a_validation_error(store):
    up = make(tile_store=store)
    with pytest.raises(ValidationError):
        make(args=(up,), tile_store=store, f=lambda c, a: a)
    with pytest.raises(ValidationError):
        make(args=(up,), args_windows=(None,), tile_store=store, f=lambda c, a: a)


def test_output_window_must_be_a_window():
    with pytest.raises((ValidationError, TypeError)):
        make(output_window=(4, 4))


@pytest.mark.parametrize("bs", [0, -1, 1.5, "2", True])
def test_batch_size_validation(bs):
    with pytest.raises(ValidationError):
        make(batch_size=bs)


@pytest.mark.parametrize("bs", [1, 2, 64])
def test_batch_size_accepted(bs):
    assert make(batch_size=bs).batch_size == bs


@pytest.mark.parametrize("kw", ["tile_size", "cache_method", "cache_limit", "_created_via_store"])
def test_pre_0_3_keywords_rejected(kw):
    with pytest.raises(TypeError):
        make(**{kw: 1})


# ---------------------------------------------------------------- ids


def test_ids_are_strings(store):
    t = make(tile_store=store, tensor_id=5)
    assert t.uuid == "5"
    u = uuid.uuid4()
    assert make(tile_store=store, tensor_id=u).uuid == str(u)


def test_int_and_str_ids_collide(store):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.ones(4, 4)

    a = make(tile_store=store, tensor_id=5, f=f)
    a[0:4, 0:4]
    b = make(tile_store=store, tensor_id="5", f=f)
    assert torch.equal(b[0:4, 0:4], torch.ones(4, 4))
    assert calls == [(0, 0)]  # shared data


# ---------------------------------------------------------------- to_json


def test_to_json_plain():
    t = make(shape=(3, None, None), output_window=TensorWindow((3, 4, 4), stride=(3, 2, 2)),
             f=lambda c: torch.ones(3, 4, 4))
    j = t.to_json()
    assert set(j) == {"shape", "dtype", "device", "args", "args_windows", "output_window"}
    assert j["shape"] == [3, None, None]
    assert j["dtype"] == "float32"
    assert j["device"] == "cpu"
    assert j["args"] == []
    assert j["args_windows"] == []
    assert j["output_window"] == {
        "size": [3, 4, 4], "stride": [3, 2, 2], "offset": [0, 0, 0], "dimension_map": None,
    }


@pytest.mark.parametrize(
    "dtype,name",
    [(torch.float64, "float64"), (torch.int64, "int64"), (torch.bool, "bool"),
     (torch.bfloat16, "bfloat16"), (torch.uint8, "uint8"), (torch.float16, "float16")],
)
def test_to_json_dtype_names(dtype, name):
    assert make(dtype=dtype).to_json()["dtype"] == name


def test_to_json_with_args(store):
    up = make(tile_store=store, tensor_id="up")
    aw = TensorWindow((4, 4), stride=(4, 4), offset=(-2, -2), dimension_map=(0, 1))
    down = make(args=(up,), args_windows=(aw,), tile_store=store, tensor_id="down",
                f=lambda c, a: a.clone(), batch_size=2, blend=torch.maximum, blend_init=0)
    j = down.to_json()
    assert j["args"] == ["up"]
    assert j["args_windows"] == [
        {"size": [4, 4], "stride": [4, 4], "offset": [-2, -2], "dimension_map": [0, 1]}
    ]
    # f, batch_size, blend and blend_init are not part of to_json
    assert set(j) == {"shape", "dtype", "device", "args", "args_windows", "output_window"}


def test_to_json_is_json_serialisable():
    import json

    t = make()
    assert json.loads(json.dumps(t.to_json())) == t.to_json()
