"""Bad input never crashes, corrupts or loses data.

Every kind of bad input (constructor arguments, indices, what f and blend
return, cache limits, store paths, tensor ids) is tried against a store that
already holds a healthy tensor.  Each case asserts the exact exception class
and a fragment of its message, and then StoreEnv.check() (tests/_health.py)
proves the store still answers the plain-torch reference, after a reopen for
HDF5.  docs/bad-input.md lists every case with the test that covers it.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

import infinite_tensor as it
from _health import BOX, StoreEnv
from infinite_tensor import InfiniteTensor, TensorWindow
from pairs import Win, assert_same, make, pattern
from persist_util import DEMO_SHAPE, DEMO_TILE, DEMO_WIN, demo_pair, demo_pure, file_digest, run_python

S = slice
VE, TAE, SME = it.ValidationError, it.TileAccessError, it.ShapeMismatchError
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(params=["memory", "hdf5"])
def env(request, tmp_path):
    e = StoreEnv(request.param, tmp_path)
    yield e
    e.close()


def _base(env, **over):
    kw = dict(shape=(None, None), f=lambda c: torch.zeros(4, 4), output_window=TensorWindow((4, 4)),
              tile_store=env.store, tensor_id="bad")
    kw.update(over)
    return kw


def _after_refused(env):
    """The refused id left nothing behind: the id registers afresh, and the
    store as a whole is healthy."""
    again = env.new_pair("bad")
    again.check(BOX)
    env.check()


def _ids(cases):
    return [c.values[0] if hasattr(c, "marks") else c[0] for c in cases]


# ---------------------------------------------------------------- constructor
def _up(store):
    return InfiniteTensor((None, None), lambda c: torch.zeros(4, 4), TensorWindow((4, 4)), tile_store=store)


# (case id, kwargs builder env -> overrides, exception, message fragment)
CONSTRUCTOR_CASES = [
    # shapes
    ("shape-zero", lambda e: dict(shape=(0, None)), VE, "Dimension 0 must be None or positive integer, got 0"),
    ("shape-negative", lambda e: dict(shape=(None, -3)), VE, "Dimension 1 must be None or positive integer, got -3"),
    ("shape-float", lambda e: dict(shape=(2.0, None)), VE, "got 2.0"),
    ("shape-bool", lambda e: dict(shape=(True, None)), VE, "got True"),
    ("shape-str-entry", lambda e: dict(shape=("4", None)), VE, "got '4'"),
    ("shape-list", lambda e: dict(shape=[None, None]), VE, "Shape must be a tuple, got list"),
    ("shape-str", lambda e: dict(shape="ab"), VE, "Shape must be a tuple, got str"),
    ("shape-empty", lambda e: dict(shape=()), VE, "Shape cannot be empty"),
    ("shape-longer-than-window", lambda e: dict(shape=(None, None, None)), VE,
     "output_window has 2 dims but tensor has 3 dims"),
    ("shape-shorter-than-window", lambda e: dict(shape=(None,)), VE, "output_window has 2 dims but tensor has 1 dims"),
    # windows
    ("window-size-zero", lambda e: dict(output_window=TensorWindow((0, 4))), VE, "window sizes must be positive ints"),
    ("window-size-negative", lambda e: dict(output_window=TensorWindow((4, -4))), VE,
     "window sizes must be positive ints"),
    ("window-size-float", lambda e: dict(output_window=TensorWindow((4.0, 4))), VE,
     "window sizes must be positive ints"),
    ("window-size-int", lambda e: dict(output_window=TensorWindow(4)), VE, "size must be a tuple"),
    ("window-size-empty", lambda e: dict(output_window=TensorWindow(())), VE, "size must have at least one dim"),
    ("window-stride-zero", lambda e: dict(output_window=TensorWindow((4, 4), stride=(0, 4))), VE,
     "window strides must be positive"),
    ("window-stride-negative", lambda e: dict(output_window=TensorWindow((4, 4), stride=-2)), VE,
     "window strides must be positive"),
    ("window-stride-length", lambda e: dict(output_window=TensorWindow((4, 4), stride=(1, 2, 3))), VE,
     "stride length (3) must match size length (2)"),
    ("window-stride-float", lambda e: dict(output_window=TensorWindow((4, 4), stride=(2.0, 2))), VE,
     "stride entries must be ints"),
    ("window-stride-huge", lambda e: dict(output_window=TensorWindow((4, 4), stride=(2**61, 4))), VE,
     "window stride[0] must be in [1, 2**48]"),
    ("window-offset-length", lambda e: dict(output_window=TensorWindow((4, 4), offset=(1,))), VE,
     "offset length (1) must match size length (2)"),
    ("window-offset-float", lambda e: dict(output_window=TensorWindow((4, 4), offset=0.5)), VE,
     "offset must be an int or a sequence of ints"),
    ("window-offset-float-entry", lambda e: dict(output_window=TensorWindow((4, 4), offset=(0, 0.5))), VE,
     "offset entries must be ints"),
    ("window-map-length", lambda e: dict(output_window=TensorWindow((4, 4), dimension_map=(0,))), VE,
     "dimension_map length (1) must match size length (2)"),
    ("window-map-negative", lambda e: dict(output_window=TensorWindow((4, 4), dimension_map=(0, -1))), VE,
     "dimension_map entries must be None or non-negative ints"),
    ("window-not-a-window", lambda e: dict(output_window=(4, 4)), VE, "output_window must be a TensorWindow"),
    # args
    ("arg-not-a-tensor", lambda e: dict(args=[torch.zeros(4, 4)], args_windows=[TensorWindow((4, 4))]), VE,
     "All positional args must be InfiniteTensor instances"),
    ("args-windows-count", lambda e: dict(args=[_up(e.store)], args_windows=[]), VE,
     "args_windows length 0 must match args length 1"),
    ("arg-window-dims", lambda e: dict(args=[_up(e.store)], args_windows=[TensorWindow((4,))]), VE,
     "args_windows[0] has 1 dims but corresponding arg tensor has 2 dims"),
    ("arg-window-not-a-window", lambda e: dict(args=[_up(e.store)], args_windows=[(4, 4)]), VE,
     "args_windows[0] must be a TensorWindow"),
    # dtypes
    ("dtype-str", lambda e: dict(dtype="float32"), VE, "dtype must be a torch.dtype, got 'float32'"),
    ("dtype-numpy", lambda e: dict(dtype=np.float32), VE, "dtype must be a torch.dtype"),
    ("dtype-python-type", lambda e: dict(dtype=float), VE, "dtype must be a torch.dtype"),
    ("dtype-quantized", lambda e: dict(dtype=torch.quint8), VE, "dtype torch.quint8 is not supported"),
    ("dtype-complex32", lambda e: dict(dtype=torch.complex32), VE, "dtype torch.complex32 is not supported"),
    # devices
    ("device-unknown-string", lambda e: dict(device="gpu"), RuntimeError, "Expected one of cpu, cuda"),
    ("device-meta", lambda e: dict(device="meta"), VE, "device meta is not supported"),
    ("device-none", lambda e: dict(device=None), TypeError, "device()"),
    ("device-float", lambda e: dict(device=1.5), TypeError, "device()"),
    pytest.param("device-cuda", lambda e: dict(device="cuda"), VE, "is not available",
                 marks=pytest.mark.skipif(HAS_CUDA, reason="a GPU is available")),
    pytest.param("device-cuda-index", lambda e: dict(device="cuda:1"), VE, "device cuda:1 is not available",
                 marks=pytest.mark.skipif(HAS_CUDA, reason="a GPU is available")),
    pytest.param("device-int", lambda e: dict(device=3), VE, "device cuda:3 is not available",
                 marks=pytest.mark.skipif(HAS_CUDA, reason="a GPU is available")),
    # f, batch size, blend, blend_init
    ("f-not-callable", lambda e: dict(f=3), VE, "Function must be callable, got int"),
    ("batch-size-zero", lambda e: dict(batch_size=0), VE, "batch_size must be None or a positive int, got 0"),
    ("batch-size-negative", lambda e: dict(batch_size=-2), VE, "batch_size must be None or a positive int"),
    ("batch-size-float", lambda e: dict(batch_size=2.0), VE, "batch_size must be None or a positive int"),
    ("batch-size-bool", lambda e: dict(batch_size=True), VE, "batch_size must be None or a positive int"),
    ("batch-size-str", lambda e: dict(batch_size="2"), VE, "batch_size must be None or a positive int"),
    ("blend-not-callable", lambda e: dict(blend=3), VE, "blend must be callable or None, got int"),
    ("blend-init-str", lambda e: dict(blend_init="0"), VE, "blend_init must be int, float, or None, got str"),
    ("blend-init-bool", lambda e: dict(blend_init=True), VE, "blend_init must be int, float, or None, got bool"),
    ("blend-init-tensor", lambda e: dict(blend_init=torch.tensor(1.0)), VE, "blend_init must be int, float, or None"),
    ("blend-init-too-big-for-int64", lambda e: dict(blend_init=2**70, dtype=torch.int64), VE,
     "cannot be represented as torch.int64"),
    ("blend-init-nan-for-int", lambda e: dict(blend_init=float("nan"), dtype=torch.int32), VE,
     "cannot be represented as torch.int32"),
    # the store and keywords
    ("store-not-a-store", lambda e: dict(tile_store=object()), VE,
     "tile_store must be a MemoryTileStore, an HDF5TileStore or a subclass of PersistentTileStore"),
    ("unknown-keyword", lambda e: dict(tile_size=8), TypeError, "tile_size"),
]


@pytest.mark.parametrize("case, over, exc, fragment", CONSTRUCTOR_CASES,
                         ids=_ids(CONSTRUCTOR_CASES))
def test_constructor_rejects(env, case, over, exc, fragment):
    with pytest.raises(exc) as ei:
        InfiniteTensor(**_base(env, **over(env)))
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    _after_refused(env)


def test_mismatched_reregistration(env):
    """Re-registering "good" with another window: ValidationError naming the
    difference; the stored tensor is untouched."""
    with pytest.raises(VE, match="mismatched metadata .*output_window.size"):
        make(DEMO_SHAPE, demo_pure, Win((4, 4)), store=env.store, dtype=torch.int64, tensor_id="good")
    with pytest.raises(VE, match="dtype: 'int64' -> 'float32'"):
        make(DEMO_SHAPE, demo_pure, DEMO_WIN, store=env.store, dtype=torch.float32, tensor_id="good")
    env.check()


# ---------------------------------------------------------------- indices
# (case id, index, exception, message fragment); on a (6, None, None) tensor
INDEX_CASES = [
    ("open-infinite-padded", (0,), IndexError, "Slice must have start and stop for infinite dimensions"),
    ("open-infinite-start", (0, S(None, 4), S(0, 4)), IndexError, "Slice must have start and stop"),
    ("open-infinite-stop", (0, S(0, 4), S(0, None)), IndexError, "Slice must have start and stop"),
    ("open-infinite-ellipsis", (S(0, 4), ...), IndexError, "Slice must have start and stop"),
    ("too-many", (0, S(0, 1), S(0, 1), 0), IndexError, "Too many indices for infinite tensor of dimension 3"),
    ("too-many-with-ellipsis", (0, S(0, 1), S(0, 1), S(0, 1), ...), IndexError, "Too many indices"),
    ("two-ellipses", (..., S(0, 1), ...), IndexError, "single ellipsis"),
    ("step-zero", (0, S(0, 4, 0), S(0, 4)), ValueError, "slice step must be greater than zero"),
    ("step-negative", (0, S(0, 4), S(4, 0, -1)), ValueError, "slice step must be greater than zero"),
    ("step-negative-finite", (S(5, 0, -2), S(0, 4), S(0, 4)), ValueError, "slice step must be greater than zero"),
    ("index-float", (0, 1.0, S(0, 4)), TypeError, "indexed by ints, slices and '...', got float"),
    ("index-none", (0, None, S(0, 4)), TypeError, "got NoneType"),
    ("index-str", (0, "a", S(0, 4)), TypeError, "got str"),
    ("index-list", (0, S(0, 4), [0, 1]), TypeError, "got list"),
    ("index-numpy-float", (0, np.float64(1.0), S(0, 4)), TypeError, "got numpy.float64"),
    ("index-tensor-several", (0, torch.tensor([1, 2]), S(0, 4)), TypeError,
     "only integer tensors of a single element"),
    ("index-tensor-float", (0, torch.tensor(1.5), S(0, 4)), TypeError, "only integer tensors of a single element"),
    ("slice-float-start", (0, S(0.0, 4), S(0, 4)), TypeError, "cannot be interpreted as an integer"),
    ("slice-float-stop", (0, S(0, 4.5), S(0, 4)), TypeError, "cannot be interpreted as an integer"),
    ("slice-float-step", (0, S(0, 4, 1.0), S(0, 4)), TypeError, "cannot be interpreted as an integer"),
    ("slice-str-start", (0, S("a", 4), S(0, 4)), TypeError, "cannot be interpreted as an integer"),
    ("finite-int-too-big", (6, S(0, 4), S(0, 4)), IndexError, "Index 6 is out of bounds for dimension 0 with size 6"),
    ("finite-int-too-negative", (-7, S(0, 4), S(0, 4)), IndexError,
     "Index -7 is out of bounds for dimension 0 with size 6"),
    ("infinite-int-past-2**62", (0, 2**62 + 1, S(0, 4)), IndexError, "outside the supported range +-2**62"),
    ("infinite-slice-past-2**63", (0, S(0, 4), S(2**63, 2**63 + 4)), IndexError, "outside the supported range"),
    ("infinite-int-huge", (0, -(2**80), S(0, 4)), IndexError, "outside the supported range"),
]


def _t3(store):
    def pure(ctx):
        return pattern(ctx, (6, 4, 4), torch.float64)

    return make((6, None, None), pure, Win((6, 4, 4), (6, 3, 3), (0, -1, 1)), store=store, dtype=torch.float64,
                tensor_id="t3")


@pytest.mark.parametrize("case, index, exc, fragment", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_index_rejects(env, case, index, exc, fragment):
    t3 = _t3(env.store)
    t3.check((S(0, 6), S(-2, 7), S(0, 9)))
    t3.reset_calls()
    with pytest.raises(exc) as ei:
        t3.lib[index]
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    assert t3.calls == [], "a refused index computed windows"
    t3.check((S(0, 6), S(-5, 12), S(-3, 9)))
    env.check()


@pytest.mark.parametrize("index, same_as", [
    ((torch.tensor(2), S(0, 4), S(0, 4)), (2, S(0, 4), S(0, 4))),
    ((np.int64(-1), S(0, 4), S(0, 4)), (5, S(0, 4), S(0, 4))),
    ((True, S(0, 4), S(0, 4)), (1, S(0, 4), S(0, 4))),
    ((S(-20, 30), S(0, 4), S(0, 4)), (S(0, 6), S(0, 4), S(0, 4))),   # finite slices clamp like torch
    ((..., S(0, 4), S(1, 9, 3)), (S(0, 6), S(0, 4), S(1, 9, 3))),
])
def test_index_odd_but_valid(env, index, same_as):
    t3 = _t3(env.store)
    assert_same(t3.lib[index], t3.ref[same_as])
    env.check()


# ---------------------------------------------------------------- what f returns
def _bad_on_call(bad, n=3):
    """A wrapper of demo_pure that returns bad(good_output) (or raises) on its
    n-th call while armed, so earlier windows have already been combined into
    the tiles when the failure comes."""
    state = {"armed": True, "calls": 0}

    def pure(ctx):
        good = demo_pure(ctx)
        if state["armed"]:
            state["calls"] += 1
            if state["calls"] == n:
                return bad(good)
        return good

    return pure, state


def _raise(exc):
    def bad(good):
        raise exc
    return bad


# (case id, bad(good) -> returned value, exception, fragment)
F_CASES = [
    ("wrong-shape", lambda g: g[:3], SME, "Function output shape (3, 6) does not match expected window shape (6, 6)"),
    ("wrong-ndim", lambda g: g.flatten(), SME, "does not match expected window shape (6, 6)"),
    ("extra-dim", lambda g: g.unsqueeze(0), SME, "does not match expected window shape"),
    ("zero-dim", lambda g: g[0, 0], SME, "Function output shape () does not match"),
    ("wrong-dtype", lambda g: g.float(), it.DtypeMismatchError,
     "Function output has dtype torch.float32, tensor declared dtype torch.int64."),
    ("wrong-device", lambda g: g.to("meta"), it.DeviceMismatchError,
     "Function output is on device meta, tensor declared device cpu."),
    ("none", lambda g: None, TypeError, "f must return a torch.Tensor, got NoneType (infinite tensor 'bad', window ("),
    ("numpy", lambda g: g.numpy(), TypeError, "got numpy.ndarray"),
    ("list", lambda g: g.tolist(), TypeError, "got list"),
    ("tuple-of-tensor", lambda g: (g,), TypeError, "got tuple"),
    ("python-int", lambda g: 3, TypeError, "got int"),
    ("sparse", lambda g: g.to_sparse(), TypeError, "f must return a dense (strided) torch.Tensor"),
    ("raises-keyerror", _raise(KeyError("boom in f")), KeyError, "boom in f"),
    ("raises-valueerror", _raise(ValueError("bad window")), ValueError, "bad window"),
    ("raises-library-error", _raise(it.TileAccessError("from f")), TAE, "from f"),
]




@pytest.mark.parametrize("case, bad, exc, fragment", F_CASES, ids=_ids(F_CASES))
def test_f_bad_output(env, case, bad, exc, fragment):
    pure, state = _bad_on_call(bad)
    p = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="bad")
    with pytest.raises(exc) as ei:
        p.lib[BOX]
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    assert state["calls"] == 3
    state["armed"] = False
    # no half-written tile: the windows combined before the failure count once
    p.check(BOX)
    env.check()


# f returns something odd but valid: the values must still be right, and the
# library must copy, not keep a reference (later mutation changes nothing)
def _expand_pure(ctx):
    return torch.full(DEMO_WIN.size, (ctx[0] * 7 + ctx[1]) % 11, dtype=torch.int64)


def _expand_f(ctx):
    return torch.tensor((ctx[0] * 7 + ctx[1]) % 11, dtype=torch.int64).expand(*DEMO_WIN.size)


_BUF = {}


def _shared_buffer_f(ctx):
    buf = _BUF.setdefault("b", torch.empty(DEMO_WIN.size, dtype=torch.int64))
    buf.copy_(demo_pure(ctx))
    return buf


ODD_F_CASES = [
    ("transposed", lambda c: demo_pure(c).t().contiguous().t(), demo_pure),
    ("strided-view", lambda c: torch.zeros(12, 12, dtype=torch.int64).index_put_(
        (torch.arange(0, 12, 2)[:, None], torch.arange(0, 12, 2)[None, :]), demo_pure(c))[::2, ::2], demo_pure),
    ("offset-view", lambda c: torch.nn.functional.pad(demo_pure(c), (1, 1, 2, 0))[2:, 1:-1], demo_pure),
    ("expand-view", _expand_f, _expand_pure),
    ("same-buffer-every-call", _shared_buffer_f, demo_pure),
    ("requires-grad", lambda c: demo_pure(c).double().requires_grad_().long(), demo_pure),
    ("parameter-subclass", lambda c: torch.nn.Parameter(demo_pure(c), requires_grad=False), demo_pure),
]


@pytest.mark.parametrize("case, f, pure", ODD_F_CASES, ids=[c[0] for c in ODD_F_CASES])
@pytest.mark.parametrize("batch", [None, 3])
def test_f_odd_but_valid_output(env, case, f, pure, batch):
    if batch and case == "same-buffer-every-call":
        pytest.skip("one batched call returning one buffer for several windows is a wrong f, not an odd one")
    outs = []

    def single(ctx):
        out = f(ctx)
        outs.append(out)
        return out

    if batch is None:
        lib_f = single
    else:
        def lib_f(ctxs):
            return [single(c) for c in ctxs]
    lib = InfiniteTensor(DEMO_SHAPE, lib_f, DEMO_WIN.lib(), dtype=torch.int64, tile_store=env.store,
                         tensor_id="odd", batch_size=batch)
    ref = demo_pair(it.MemoryTileStore(), "ref")  # only for its RefTensor twin
    ref.ref.f = pure
    assert_same(lib[BOX], ref.ref[BOX])
    for o in outs:  # mutating what f returned must not reach the cache
        if o.is_leaf and not o.requires_grad:
            o.data.fill_(99)
    assert_same(lib[BOX], ref.ref[BOX])
    env.check()


def test_f_returns_view_of_its_arg_region(env):
    """A downstream f returning a view into the region it was handed."""
    up = demo_pair(env.store, "up")
    down = make(DEMO_SHAPE, lambda c, a: a[1:5, 2:6], Win((4, 4), (3, 3)), [up], [Win((6, 8), (3, 3), (-1, -2))],
                store=env.store, dtype=torch.int64, tensor_id="down")
    down.check(BOX)
    up.reset_calls()
    up.check(BOX)  # the upstream's cache was not changed through the view
    env.check()


# ---------------------------------------------------------------- batched f
def _batched_bad_on_call(bad, n=2):
    """A batched f (list of demo_pure outputs) replaced by bad(outs) on its
    n-th call while armed."""
    state = {"armed": True, "calls": 0}

    def f(ctxs):
        outs = [demo_pure(c) for c in ctxs]
        if state["armed"]:
            state["calls"] += 1
            if state["calls"] == n:
                return bad(outs)
        return outs

    return f, state


BATCH_CASES = [
    ("too-many", lambda o: o + [o[0]], SME, "outputs for a batch of"),
    ("too-few", lambda o: o[:-1], SME, "outputs for a batch of"),
    ("empty-list", lambda o: [], SME, "Batched f returned 0 outputs for a batch of"),
    ("stacked-wrong-shape", lambda o: torch.stack(o)[:, :, :3], SME, "does not match expected window shape (6, 6)"),
    ("stacked-too-many", lambda o: torch.stack(o + [o[0]]), SME, "entries along dim 0 for a batch of"),
    ("stacked-too-few", lambda o: torch.stack(o[:-1]), SME, "entries along dim 0 for a batch of"),
    ("stacked-wrong-dtype", lambda o: torch.stack(o).float(), it.DtypeMismatchError, "Function output has dtype"),
    ("one-wrong-shape", lambda o: o[:-1] + [o[-1][:2]], SME, "does not match expected window shape"),
    ("one-wrong-dtype", lambda o: o[:-1] + [o[-1].int()], it.DtypeMismatchError, "torch.int32"),
    ("one-none", lambda o: o[:-1] + [None], TypeError, "f must return a torch.Tensor"),
    ("none", lambda o: None, TypeError, "batched f must return a list of tensors, got NoneType"),
    ("single-tensor-not-stacked", lambda o: o[0], SME, "entries along dim 0"),
    ("numpy-stacked", lambda o: torch.stack(o).numpy(), TypeError, "got numpy.ndarray"),
    ("generator", lambda o: (x for x in o), TypeError, "got generator"),
    ("raises", _raise(RuntimeError("batched boom")), RuntimeError, "batched boom"),
]


@pytest.mark.parametrize("case, bad, exc, fragment", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_batched_f_bad_output(env, case, bad, exc, fragment):
    f, state = _batched_bad_on_call(bad)
    lib = InfiniteTensor(DEMO_SHAPE, f, DEMO_WIN.lib(), dtype=torch.int64, tile_store=env.store,
                         tensor_id="bad", batch_size=3)
    with pytest.raises(exc) as ei:
        lib[BOX]
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    assert state["calls"] == 2
    state["armed"] = False
    ref = demo_pair(it.MemoryTileStore(), "ref").ref
    assert_same(lib[BOX], ref[BOX])
    env.check()


def _const_pure(ctx):
    return torch.full(DEMO_WIN.size, 5, dtype=torch.int64)


BATCH_ODD_CASES = [
    ("same-tensor-for-every-window", lambda cs: [torch.full(DEMO_WIN.size, 5, dtype=torch.int64)] * len(cs)),
    ("stacked-expand", lambda cs: torch.tensor(5).expand(len(cs), *DEMO_WIN.size)),
    ("list-of-views-of-one-tensor", lambda cs: list(torch.full((len(cs),) + DEMO_WIN.size, 5, dtype=torch.int64))),
    ("tuple", lambda cs: tuple(torch.full(DEMO_WIN.size, 5, dtype=torch.int64) for _ in cs)),
]


@pytest.mark.parametrize("case, f", BATCH_ODD_CASES, ids=[c[0] for c in BATCH_ODD_CASES])
def test_batched_f_aliased_outputs(env, case, f):
    lib = InfiniteTensor(DEMO_SHAPE, f, DEMO_WIN.lib(), dtype=torch.int64, tile_store=env.store,
                         tensor_id="odd", batch_size=4)
    ref = demo_pair(it.MemoryTileStore(), "ref").ref
    ref.f = _const_pure
    assert_same(lib[BOX], ref[BOX])
    env.check()


# ---------------------------------------------------------------- blend
def _max(a, b):
    return torch.maximum(a, b)


def _blend_bad_on_call(bad, n=4):
    state = {"armed": True, "calls": 0}

    def blend(a, b):
        if state["armed"]:
            state["calls"] += 1
            if state["calls"] == n:
                return bad(a, b)
        return _max(a, b)

    return blend, state


def _inplace_then_raise(a, b):
    a.copy_(a + b + 1000)
    raise RuntimeError("blend failed after writing")


BLEND_CASES = [
    ("wrong-shape", lambda a, b: torch.ones(1, dtype=a.dtype), SME,
     "blend output shape (1,) does not match expected region shape ("),
    ("wrong-dtype", lambda a, b: _max(a, b).double(), it.DtypeMismatchError,
     "blend output has dtype torch.float64, tensor declared dtype"),
    ("wrong-device", lambda a, b: _max(a, b).to("meta"), it.DeviceMismatchError,
     "blend output is on device meta, tensor declared device cpu."),
    ("none", lambda a, b: None, TypeError, "blend must return a torch.Tensor, got NoneType"),
    ("numpy", lambda a, b: _max(a, b).numpy(), TypeError, "got numpy.ndarray"),
    ("scalar", lambda a, b: 3, TypeError, "got int"),
    ("raises", lambda a, b: 1 // 0, ZeroDivisionError, "by zero"),
    ("inplace-then-raises", _inplace_then_raise, RuntimeError, "blend failed after writing"),
]


@pytest.mark.parametrize("case, bad, exc, fragment", BLEND_CASES, ids=_ids(BLEND_CASES))
@pytest.mark.parametrize("batch", [None, 2])
def test_blend_bad_output(env, case, bad, exc, fragment, batch):
    blend, state = _blend_bad_on_call(bad)
    p = make(DEMO_SHAPE, demo_pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="bad",
             blend=blend, blend_init=-100, batch_size=batch)
    with pytest.raises(exc) as ei:
        p.lib[BOX]
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    state["armed"] = False
    p.ref.blend = _max
    p.check(BOX)
    env.check()


@pytest.mark.parametrize("case, blend", [
    ("in-place-into-existing", lambda a, b: a.copy_(torch.maximum(a, b))),
    ("returns-incoming-view", lambda a, b: torch.where(b > a, b, a)[...]),
    ("expanded-result", lambda a, b: torch.maximum(a, b).max().expand(a.shape) * 0 + torch.maximum(a, b)),
])
def test_blend_odd_but_valid(env, case, blend):
    p = make(DEMO_SHAPE, demo_pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="odd",
             blend=blend, blend_init=-100)
    p.ref.blend = _max
    p.check(BOX)
    env.check()


# ---------------------------------------------------------------- cache limits
BAD_LIMITS = [-1, -(2**70), 1.5, True, False, "10", [10], float("inf")]


@pytest.mark.parametrize("value", BAD_LIMITS, ids=repr)
@pytest.mark.parametrize("which", ["cache_size_bytes", "cache_size_windows", "cache_size_tiles"])
def test_cache_limit_rejected(env, tmp_path, value, which):
    if which == "cache_size_tiles":
        make_store = lambda: it.HDF5TileStore(tmp_path / "other.h5", tile_size=8, cache_size_tiles=value)  # noqa
    elif which == "cache_size_windows":
        make_store = lambda: it.MemoryTileStore(cache_size_windows=value)  # noqa
    else:
        make_store = lambda: (it.MemoryTileStore if env.kind == "memory" else (  # noqa
            lambda cache_size_bytes: it.HDF5TileStore(tmp_path / "other.h5", cache_size_bytes=cache_size_bytes)))(
                cache_size_bytes=value)
    with pytest.raises(VE) as ei:
        make_store()
    assert f"{which} must be None or an int >= 0" in str(ei.value), str(ei.value)
    if which != "cache_size_tiles":
        # the setter on a live store: refused, the old limit kept
        attr = "_" + which
        if hasattr(env.store, attr):
            before = getattr(env.store, attr)
            with pytest.raises(VE, match=f"{which} must be None or an int >= 0"):
                setattr(env.store, attr, value)
            assert getattr(env.store, attr) == before
    assert not (tmp_path / "other.h5").exists() or which != "cache_size_tiles"
    env.check()


@pytest.mark.parametrize("value", [2**63 - 1, 2**63, 2**70])
def test_huge_cache_limit_means_no_limit(tmp_path, value):
    store = it.MemoryTileStore(cache_size_bytes=value, cache_size_windows=value)
    p = demo_pair(store)
    p.check(BOX)
    p.reset_calls()
    p.check(BOX)
    assert p.calls == []  # nothing evicted
    store._cache_size_bytes = value
    hs = it.HDF5TileStore(tmp_path / "h.h5", tile_size=DEMO_TILE, cache_size_bytes=value, cache_size_tiles=value)
    q = demo_pair(hs)
    q.check(BOX)
    hs.close()


# ---------------------------------------------------------------- store paths
def _healthy_file(path):
    """Write a store with the demo tensor at path; return its digest."""
    s = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    demo_pair(s, "t").check(BOX)
    s.close()
    return file_digest(path)


def _reads_back(path, mode="a"):
    s = it.HDF5TileStore(path, mode=mode, tile_size=DEMO_TILE)
    p = demo_pair(s, "t")
    p.check(BOX)
    calls = list(p.calls)
    s.close()
    return calls


@pytest.mark.parametrize("mode", ["a", "r", "r+", "w-"])
def test_path_is_a_directory(tmp_path, mode):
    d = tmp_path / "dir.h5"
    d.mkdir()
    with pytest.raises(IsADirectoryError, match="Is a directory") as info:  # (was TAE)
        it.HDF5TileStore(d, mode=mode)
    assert info.value.filename == str(d)
    assert d.is_dir() and list(d.iterdir()) == []
    _reads_back(tmp_path / "next.h5")


@pytest.mark.parametrize("mode", ["a", "w", "r", "r+"])
def test_path_in_missing_directory(tmp_path, mode):
    # (modes "a" and "w" raised TAE naming the temporary file)
    with pytest.raises(FileNotFoundError, match="No such directory") as info:
        it.HDF5TileStore(tmp_path / "missing" / "x.h5", mode=mode)
    assert info.value.filename == str(tmp_path / "missing" / "x.h5")
    assert not (tmp_path / "missing").exists()
    _reads_back(tmp_path / "next.h5")


@pytest.mark.parametrize("mode", ["a", "r", "r+"])
def test_path_not_hdf5(tmp_path, mode):
    p = tmp_path / "notes.h5"
    p.write_text("not an HDF5 file\n" * 100)
    digest = file_digest(p)
    with pytest.raises(TAE, match="file signature not found"):
        it.HDF5TileStore(p, mode=mode)
    assert file_digest(p) == digest  # the failed open wrote nothing


@pytest.mark.parametrize("mode", ["a", "r+"])
def test_empty_file_is_a_new_store(tmp_path, mode):
    """A 0-byte file (e.g. from touch) holds no data to lose: modes "a" and
    "r+" make a store of it, which round-trips."""
    p = tmp_path / "empty.h5"
    p.touch()
    _reads_back(p, mode=mode)
    assert _reads_back(p, mode="r") == []


@pytest.mark.parametrize("mode", ["r"])
def test_empty_file_opened_existing(tmp_path, mode):
    p = tmp_path / "empty.h5"
    p.touch()
    with pytest.raises(TAE, match="file signature not found"):
        it.HDF5TileStore(p, mode=mode, tile_size=DEMO_TILE)
    assert p.stat().st_size == 0


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("mode", ["a", "r"])
def test_truncated_file(tmp_path, fraction, mode):
    good = tmp_path / "good.h5"
    _healthy_file(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    digest = file_digest(cut)
    with pytest.raises(TAE, match="HDF5 failed opening"):
        it.HDF5TileStore(cut, mode=mode, tile_size=DEMO_TILE)
    assert file_digest(cut) == digest
    assert _reads_back(good) == []  # the original is whole


_CORRUPT_CHILD = r"""
import os, random, sys
import torch, infinite_tensor as it
from persist_util import DEMO_TILE, demo_pair
from _health import BOX
good, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(good, "rb").read()
ok = {"values": 0, "error": 0}
for seed in range(n):
    rnd = random.Random(seed)
    b = bytearray(data)
    for _ in range(rnd.choice([1, 3, 20])):
        pos = rnd.randrange(len(b))
        b[pos] ^= rnd.randrange(1, 256)
    open(work, "wb").write(b)
    outcome = "error"
    try:
        s = it.HDF5TileStore(work, tile_size=DEMO_TILE)
        try:
            p = demo_pair(s, "t")
            got = p.lib[BOX]
            expected = p.ref[BOX]
            # right values (a lost window record means recomputed, never counted twice)
            assert torch.equal(got, expected), f"seed {seed}: wrong values read from a damaged file"
            outcome = "values"
        finally:
            s.close()
    except (it.TileAccessError, it.ValidationError) as e:
        pass
    ok[outcome] += 1
print("RESULT", ok["values"], ok["error"])
"""


def test_corrupt_file_never_crashes_or_lies(tmp_path):
    """Random byte flips in a copy of a gzip-compressed store: each open/read
    gives the right values or a TileAccessError / ValidationError; no crash
    (run in a child process so a crash fails the test instead of the run)."""
    pytest.importorskip("h5py")
    good = tmp_path / "good.h5"
    digest = _healthy_file(good)
    proc = run_python(_CORRUPT_CHILD, good, tmp_path / "work.h5", 60, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    values, errors = map(int, line.split()[1:])
    assert values + errors == 60
    assert file_digest(good) == digest
    assert _reads_back(good) == []


def test_corrupt_uncompressed_tile_detected(tmp_path):
    path = tmp_path / "raw.h5"
    marker = 123456789.0
    s = it.HDF5TileStore(path, tile_size=8, compression=None)
    t = InfiniteTensor((None,), lambda c: torch.full((4,), marker, dtype=torch.float64), TensorWindow((4,)),
                       dtype=torch.float64, tile_store=s, tensor_id="m")
    t[0:8]
    s.close()
    data = bytearray(path.read_bytes())
    pos = data.find(struct.pack("<d", marker))
    assert pos >= 0
    data[pos + 3] ^= 0x10
    path.write_bytes(bytes(data))
    s = it.HDF5TileStore(path, tile_size=8, compression=None)
    t = InfiniteTensor((None,), lambda c: torch.full((4,), marker, dtype=torch.float64), TensorWindow((4,)),
                       dtype=torch.float64, tile_store=s, tensor_id="m")
    try:
        got = t[0:8]
    except (TAE, VE):
        return
    finally:
        s.close()
    assert torch.equal(got, torch.full((8,), marker, dtype=torch.float64)), "damaged tile read back silently"


def test_foreign_hdf5_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as h:
        h["data"] = np.arange(10)
        h["nested/values"] = np.ones((3, 3))
        h.attrs["owner"] = "someone else"
    s = it.HDF5TileStore(p, tile_size=DEMO_TILE)
    demo_pair(s, "t").check(BOX)
    s.close()
    assert _reads_back(p) == []
    with h5py.File(p, "r") as h:  # the foreign content is untouched
        assert (h["data"][...] == np.arange(10)).all()
        assert (h["nested/values"][...] == 1).all()
        assert h.attrs["owner"] == "someone else"


def test_foreign_group_under_tensors(tmp_path):
    """A group tensors/<id> written by someone else, without our metadata."""
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as h:
        h.create_group("tensors/t")
        h["tensors/t/x"] = np.arange(3)
    s = it.HDF5TileStore(p, tile_size=DEMO_TILE)
    with pytest.raises(VE, match="has no metadata on disk"):
        demo_pair(s, "t")
    demo_pair(s, "u").check(BOX)
    s.close()
    s = it.HDF5TileStore(p, tile_size=DEMO_TILE)
    again = demo_pair(s, "u")
    again.check(BOX)
    assert again.calls == []
    s.close()


def test_foreign_tensors_is_a_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as h:
        h["tensors"] = np.arange(10)
    digest = file_digest(p)
    with pytest.raises(TAE, match="'tensors': not a group"):
        it.HDF5TileStore(p)
    assert file_digest(p) == digest


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file(tmp_path):
    p = tmp_path / "ro.h5"
    digest = _healthy_file(p)
    os.chmod(p, 0o444)
    try:
        with pytest.raises(PermissionError, match="Permission denied"):
            it.HDF5TileStore(p, mode="a")
        assert _reads_back(p, mode="r") == []
    finally:
        os.chmod(p, 0o644)
    assert file_digest(p) == digest


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o555)
    try:
        with pytest.raises(PermissionError, match="Permission denied"):
            it.HDF5TileStore(d / "x.h5")
        assert list(d.iterdir()) == []
    finally:
        os.chmod(d, 0o755)


def test_read_only_mode_refuses_to_compute(tmp_path):
    """Mode "r": stored values read back; a window not stored raises
    TileAccessError and nothing is written; the stored values still read."""
    p = tmp_path / "ro.h5"
    digest = _healthy_file(p)
    s = it.HDF5TileStore(p, mode="r", tile_size=DEMO_TILE)
    t = demo_pair(s, "t")
    t.check(BOX)
    with pytest.raises(TAE, match="read-only"):
        t.lib[100:120, 0:4]
    assert s.cache_info()["pinned"] == 0
    t.reset_calls()
    t.check(BOX)
    assert t.calls == []
    s.close()
    assert file_digest(p) == digest


# ---------------------------------------------------------------- tensor ids
ODD_IDS = ["", ".", "..", "a/b", "/a", "a/", "a//b", "a%2Fb", "%", "%2E", " ", "tensors", "a.b",
           "é☃😀", "\t\n", "x" * 300, "y" * 70000, 5]


@pytest.mark.parametrize("tid", ODD_IDS, ids=lambda t: repr(t)[:20])
def test_odd_tensor_ids(env, tid):
    p = demo_pair(env.store, tid)
    p.check(BOX)
    assert p.lib.uuid == str(tid)
    env.check()
    again = demo_pair(env.store, tid)  # after the reopen for HDF5
    again.check(BOX)
    assert again.calls == [], "an odd id did not round-trip"


def test_odd_ids_do_not_collide(env):
    """Every odd id is its own tensor: distinct values side by side, and the
    same after a reopen."""
    ids = [i for i in ODD_IDS if i != 5] + ["a"]
    pairs = {}
    for k, tid in enumerate(ids):
        def pure(ctx, k=k):
            return pattern(ctx, DEMO_WIN.size, torch.int64, base=k * 1000)
        pairs[tid] = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id=tid)
        pairs[tid].check(BOX)
    for tid, p in pairs.items():
        p.reset_calls()
        p.check(BOX)
        assert p.calls == []
    if env.kind == "hdf5":
        env.store.close()
        env.store = env._open()
        for k, tid in enumerate(ids):
            def pure(ctx, k=k):
                return pattern(ctx, DEMO_WIN.size, torch.int64, base=k * 1000)
            p = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id=tid)
            p.check(BOX)
            assert p.calls == [], repr(tid)
        env.good = demo_pair(env.store, "good")
    env.check()


@pytest.mark.parametrize("tid", ["\x00", "a\x00b"], ids=repr)
def test_nul_in_id(env, tid):
    if env.kind == "memory":
        demo_pair(env.store, tid).check(BOX)  # the memory store takes any str
    else:
        with pytest.raises(VE, match="contains a NUL character"):
            demo_pair(env.store, tid)
    env.check()


def test_clear_tensor_then_read_old_object(env):
    p = demo_pair(env.store, "gone")
    p.check(BOX)
    env.store.clear_tensor("gone")
    with pytest.raises(TAE, match="Tile has been deleted"):
        p.lib[BOX]
    env.store.clear_tensor("never-registered")  # nothing to do
    demo_pair(env.store, "gone").check(BOX)
    env.check()


def test_corrupt_tile_index_detected(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "idx.h5"
    _healthy_file(path)
    with h5py.File(path, "r") as h:
        index = h["tensors/t/index"]
        rows = index[...].tolist()
        row = rows.index([0, 0])
        base = index.id.get_chunk_info(0).byte_offset if index.chunks else index.id.get_offset()
        assert index.compression is None
    target = [4, 0]
    assert target not in rows
    data = bytearray(path.read_bytes())
    pos = base + row * 2 * 8  # int64 little-endian, first coordinate
    assert struct.unpack_from("<q", data, pos)[0] == 0
    struct.pack_into("<q", data, pos, 4)
    path.write_bytes(bytes(data))
    s = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    try:
        p = demo_pair(s, "t")
        got = p.lib[32:40, 0:8]
    except (TAE, VE):
        return
    finally:
        s.close()
    assert_same(got, p.ref[32:40, 0:8])


@pytest.mark.parametrize("mode", ["a", "w", "r"])
def test_path_under_a_regular_file(tmp_path, mode):
    """A path whose parent is a file: refused for every user, root included
    (the permission tests above are skipped for root; test_store_safety.py
    checks permissions as root without its file capabilities)."""
    parent = tmp_path / "plain.txt"
    parent.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="Not a directory"):
        it.HDF5TileStore(parent / "x.h5", mode=mode)
    assert parent.read_text() == "keep me"
    _reads_back(tmp_path / "next.h5")


# ---------------------------------------------------------------- the store protocol
PROTOCOL_CASES = [
    ("read-pixels-not-slices", lambda s: s.read_pixels("good", "junk"), IndexError, "Too many indices"),
    ("read-pixels-open", lambda s: s.read_pixels("good", (S(None, 4), S(0, 4))), IndexError,
     "Slice must have start and stop"),
    ("read-pixels-step-zero", lambda s: s.read_pixels("good", (S(0, 4, 0), S(0, 4))), ValueError,
     "slice step must be greater than zero"),
    ("read-pixels-not-computed", lambda s: s.read_pixels("good", (S(100, 104), S(0, 4))), TAE,
     "window(s) that have not been computed"),
    ("read-pixels-unknown-id", lambda s: s.read_pixels("nope", (S(0, 4), S(0, 4))), TAE, "Tile has been deleted"),
    ("processed-float", lambda s: s.is_window_processed("good", (1.5, 0)), TypeError,
     "cannot be interpreted as an integer"),
    ("processed-length", lambda s: s.is_window_processed("good", (0,)), ValueError,
     "a window index of this tensor has 2 entries, got 1"),
    ("processed-none", lambda s: s.is_window_processed("good", None), TypeError, "not iterable"),
    ("processed-huge", lambda s: s.is_window_processed("good", (2**70, 0)), IndexError,
     "outside the supported range"),
    ("notify-wrong-shape", lambda s: s.notify_window_processed("good", (50, 50), torch.ones(3, 3)), SME,
     "Function output shape (3, 3) does not match expected window shape (6, 6)"),
    ("notify-wrong-dtype", lambda s: s.notify_window_processed("good", (50, 50), torch.ones(6, 6)),
     it.DtypeMismatchError, "Function output has dtype torch.float32, tensor declared dtype torch.int64."),
    ("notify-numpy", lambda s: s.notify_window_processed("good", (50, 50), np.ones((6, 6), np.int64)), TypeError,
     "got numpy.ndarray"),
    ("notify-huge-index", lambda s: s.notify_window_processed("good", (2**70, 0), torch.ones(6, 6, dtype=torch.int64)),
     IndexError, "outside the supported range"),
]


@pytest.mark.parametrize("case, call, exc, fragment", PROTOCOL_CASES, ids=[c[0] for c in PROTOCOL_CASES])
def test_store_protocol_rejects(env, case, call, exc, fragment):
    with pytest.raises(exc) as ei:
        call(env.store)
    assert type(ei.value) is exc, type(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    assert not env.store.is_window_processed("good", (50, 50))
    env.check()


def test_store_protocol_renotify_is_ignored(env):
    """Notifying a window already combined (with other values) never counts
    it twice or replaces it."""
    w = (0, 0)
    assert env.store.is_window_processed("good", w)
    env.store.notify_window_processed("good", w, torch.full(DEMO_WIN.size, 1000, dtype=torch.int64))
    env.check()


# ---------------------------------------------------------------- f touching the store during a read
def _reenter(case, env, holder):
    t, s = holder["t"], env.store
    if case == "read-self":
        t[0:4, 0:4]
    elif case == "clear-tensor-self":
        s.clear_tensor(t.uuid)
    elif case == "clear-cache-self":
        t.clear_cache()
    elif case == "to-self":
        t.to(torch.float64)
    elif case == "close-store":
        s.close()
    elif case == "flush-store":
        s.flush()
    elif case == "clear-other":
        s.clear_tensor("victim-other")
    elif case == "reregister-self":
        InfiniteTensor(DEMO_SHAPE, t.f, DEMO_WIN.lib(), dtype=torch.int64, tile_store=s, tensor_id=t.uuid)
    elif case == "cache-limit-zero":
        s._cache_size_bytes = 0
    elif case == "read-other":
        holder["other"][-20:20, -20:20]


# (case, kinds it applies to, exception or None, fragment)
REENTRANT_CASES = [
    ("read-self", ("memory", "hdf5"), it.InfiniteTensorError, "reads that same tensor (a cycle)"),
    ("clear-tensor-self", ("memory",), TAE, "was cleared during the read"),
    ("clear-tensor-self", ("hdf5",), TAE, "was deleted from"),
    ("clear-cache-self", ("memory", "hdf5"), TAE, "was cleared during the read"),
    ("to-self", ("memory",), TAE, "a read of this tensor is in progress"),
    ("to-self", ("hdf5",), VE, "Persistent stores do not support dtype changes"),
    ("close-store", ("hdf5",), TAE, "is closed"),
    ("flush-store", ("hdf5",), None, None),
    ("clear-other", ("memory", "hdf5"), None, None),
    ("reregister-self", ("memory", "hdf5"), None, None),
    ("cache-limit-zero", ("memory", "hdf5"), None, None),
    ("read-other", ("memory", "hdf5"), None, None),
]


@pytest.mark.parametrize("case, kinds, exc, fragment", REENTRANT_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}" for c in REENTRANT_CASES])
def test_f_touches_the_store_mid_read(env, case, kinds, exc, fragment):
    if env.kind not in kinds:
        pytest.skip(f"{case} on {env.kind}: another row")
    holder = {"other": demo_pair(env.store, "victim-other").lib}
    state = {"n": 0, "armed": True}

    def pure(ctx):
        if state["armed"]:
            state["n"] += 1
            if state["n"] == 3:
                state["armed"] = False
                _reenter(case, env, holder)
        return demo_pure(ctx)

    p = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="victim")
    holder["t"] = p.lib
    if exc is None:
        p.check(BOX)
    else:
        with pytest.raises(exc) as ei:
            p.lib[BOX]
        assert type(ei.value) is exc, type(ei.value)
        assert fragment in str(ei.value), str(ei.value)
    if case == "close-store":
        env.store.__enter__()  # `with store:` reopens
    assert env.store.cache_info()["pinned"] == 0
    if case == "clear-tensor-self":
        p = make(DEMO_SHAPE, demo_pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="victim")
    p.check(BOX)
    if case == "cache-limit-zero" and env.kind == "memory":
        env.store._cache_size_bytes = None  # the healthy tensor was evicted: recomputed once, then cached
        env.good.check(BOX)
    env.check()


@pytest.mark.parametrize("checksums", [True, False], ids=["with-sums", "before-sums"])
def test_corrupt_chunk_index_detected(tmp_path, checksums):
    """A damaged chunk key hides a listed tile's chunk. With the tile
    checksums either check may catch it; in a file written before them
    (no `sums` dataset) only the chunk check does, so the read must fail."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "btree.h5"
    _healthy_file(path)
    if not checksums:
        with h5py.File(path, "r+") as h:
            del h["tensors/t/sums"]

    def chunk_offsets(p):
        with h5py.File(p, "r") as h:
            ds = h["tensors/t/tiles"]
            return [ds.id.get_chunk_info(i).chunk_offset for i in range(ds.id.get_num_chunks())]

    before = chunk_offsets(path)
    data = path.read_bytes()
    row = max(r[0] for r in before)  # the key of the last tile row: (row, 0, 0, 0) as uint64
    key = struct.pack("<4Q", row, 0, 0, 0)
    damaged = None
    pos = data.find(key)
    while pos >= 0 and damaged is None:
        b = bytearray(data)
        b[pos + 8 + 3] ^= 0x1A  # the second coordinate of the key
        path.write_bytes(bytes(b))
        try:
            if chunk_offsets(path) != before:
                damaged = bytes(b)
        except Exception:
            pass
        pos = data.find(key, pos + 1)
    assert damaged is not None, "found no chunk key to damage"
    path.write_bytes(damaged)
    s = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    try:
        p = demo_pair(s, "t")
        if not checksums:
            with pytest.raises(TAE, match="missing from the file"):
                p.lib[BOX]
            return
        try:
            got = p.lib[BOX]
        except (TAE, VE):
            return
    finally:
        s.close()
    assert_same(got, p.ref[BOX])
