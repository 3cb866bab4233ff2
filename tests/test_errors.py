"""What happens when f misbehaves: the three output checks in order with the
0.3 message templates, non-tensor returns, exceptions from f, and recovery."""

import re

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import InfiniteTensor, TensorWindow

S = slice


def t_with(f, **kw):
    kw.setdefault("shape", (None, None))
    kw.setdefault("output_window", TensorWindow((4, 4)))
    return InfiniteTensor(f=f, **kw)


def test_shape_mismatch_message():
    t = t_with(lambda c: torch.ones(3, 4))
    with pytest.raises(it.ShapeMismatchError) as ei:
        t[0:4, 0:4]
    msg = str(ei.value)
    assert re.fullmatch(r"Function output shape .*3, 4.* does not match expected window shape .*4, 4.*", msg), msg


def test_shape_mismatch_wrong_ndim():
    t = t_with(lambda c: torch.ones(16))
    with pytest.raises(it.ShapeMismatchError, match="does not match expected window shape"):
        t[0:4, 0:4]


def test_dtype_mismatch_message():
    t = t_with(lambda c: torch.ones(4, 4, dtype=torch.float64), tensor_id="t")
    with pytest.raises(it.DtypeMismatchError) as ei:
        t[0:4, 0:4]
    # the 0.3 message, then which tensor and window (issue 13)
    assert str(ei.value) == ("Function output has dtype torch.float64, tensor declared dtype torch.float32. "
                             "(infinite tensor 't', window (0, 0))")


def test_dtype_mismatch_declared_int():
    t = t_with(lambda c: torch.ones(4, 4), dtype=torch.int64, tensor_id=7)
    with pytest.raises(it.DtypeMismatchError) as ei:
        t[0:4, 4:8]
    assert str(ei.value) == ("Function output has dtype torch.float32, tensor declared dtype torch.int64. "
                             "(infinite tensor '7', window (0, 1))")


def test_device_mismatch_message():
    t = t_with(lambda c: torch.ones(4, 4, device="meta"), tensor_id="dev")
    with pytest.raises(it.DeviceMismatchError) as ei:
        t[-4:0, 0:4]
    assert str(ei.value) == ("Function output is on device meta, tensor declared device cpu. "
                             "(infinite tensor 'dev', window (-1, 0))")


def test_check_order_shape_first():
    t = t_with(lambda c: torch.ones(3, 3, dtype=torch.float64, device="meta"))
    with pytest.raises(it.ShapeMismatchError):
        t[0:4, 0:4]


def test_check_order_device_before_dtype():
    t = t_with(lambda c: torch.ones(4, 4, dtype=torch.float64, device="meta"))
    with pytest.raises(it.DeviceMismatchError):
        t[0:4, 0:4]


@pytest.mark.parametrize("ret", [None, 3, [1.0] * 16, "x"])
def test_non_tensor_return(ret):
    t = t_with(lambda c: ret)
    with pytest.raises(TypeError):
        t[0:4, 0:4]


def test_numpy_return_is_a_type_error():
    import numpy as np

    t = t_with(lambda c: np.ones((4, 4), dtype=np.float32))
    with pytest.raises(TypeError):
        t[0:4, 0:4]


def test_exceptions_are_all_infinite_tensor_errors():
    for f in (lambda c: torch.ones(3, 4), lambda c: torch.ones(4, 4, dtype=torch.int8)):
        with pytest.raises(it.InfiniteTensorError):
            t_with(f)[0:4, 0:4]


def test_exception_from_f_propagates_unchanged():
    class Boom(Exception):
        pass

    def f(ctx):
        raise Boom(str(ctx))

    t = t_with(f)
    with pytest.raises(Boom):
        t[0:4, 0:4]


def test_exception_from_upstream_f_propagates():
    def up_f(ctx):
        if ctx == (1, 1):
            raise KeyError("upstream")
        return torch.ones(4, 4)

    store = it.MemoryTileStore()
    up = t_with(up_f, tile_store=store)
    down = t_with(lambda c, a: a * 2, args=(up,), args_windows=(TensorWindow((4, 4)),), tile_store=store)
    assert torch.equal(down[0:4, 0:4], torch.full((4, 4), 2.0))
    with pytest.raises(KeyError):
        down[0:8, 0:8]


def test_recovery_after_failures():
    state = {"fail": {(0, 1), (1, 0)}}
    calls = []

    def f(ctx):
        calls.append(ctx)
        if ctx in state["fail"]:
            raise RuntimeError("transient")
        return torch.full((4, 4), float(ctx[0] * 10 + ctx[1]))

    store = it.MemoryTileStore()
    t = t_with(f, tile_store=store)
    with pytest.raises(RuntimeError):
        t[0:8, 0:8]
    assert store.cache_info()["pinned"] == 0  # nothing stays pinned after a failed read
    state["fail"] = set()
    r = t[0:8, 0:8]
    exp = torch.tensor([[0.0, 1.0], [10.0, 11.0]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(r, exp)
    # no window was counted twice, and nothing is recomputed afterwards
    n = len(calls)
    assert torch.equal(t[0:8, 0:8], exp)
    assert len(calls) == n


def test_recovery_after_wrong_output_with_overlap():
    # overlapping windows: a failure half way must not leave partial sums behind
    state = {"bad": True}

    def f(ctx):
        if state["bad"] and ctx == (1, 1):
            return torch.ones(2, 2)
        return torch.ones(4, 4)

    store = it.MemoryTileStore()
    t = t_with(f, output_window=TensorWindow((4, 4), stride=(2, 2)), tile_store=store)
    with pytest.raises(it.ShapeMismatchError):
        t[0:8, 0:8]
    state["bad"] = False
    r = t[0:8, 0:8]
    assert torch.equal(r, torch.full((8, 8), 4.0))


def test_f_runs_without_grad():
    seen = []

    def f(ctx):
        seen.append(torch.is_grad_enabled())
        return torch.ones(4, 4)

    t = t_with(f)
    with torch.enable_grad():
        t[0:4, 0:4]
    assert seen == [False]


def test_grad_requiring_output_accepted():
    w = torch.ones(4, 4, requires_grad=True)
    t = t_with(lambda c: w * 1)  # no_grad inside f: no graph, plain values
    r = t[0:4, 0:4]
    assert torch.equal(r, torch.ones(4, 4)) and not r.requires_grad


def test_ctx_is_a_tuple_of_ints_with_every_dim():
    seen = []

    def f(ctx):
        seen.append(ctx)
        return torch.ones(3, 4, 4)

    t = InfiniteTensor(shape=(3, None, None), f=f, output_window=TensorWindow((3, 4, 4)))
    t[:, 0:8, -4:4]
    assert sorted(seen) == [(0, 0, -1), (0, 0, 0), (0, 1, -1), (0, 1, 0)]
    assert all(type(c) is tuple and all(type(x) is int for x in c) for c in seen)
