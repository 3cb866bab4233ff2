"""Issue 13: mistakes users make first, and tensors torch marks lazily.

* f (or blend, or notify_window_processed) hands back a tensor whose values
  torch keeps as a flag: the negative bit (torch._neg_view, the imaginary
  part of a conjugate), the conjugate bit, or a ZeroTensor with no memory.
  Each is stored with its real values, checked against a plain-torch
  reference (tests/reference.py) that never sees a lazy tensor.  Tensors
  with no values in memory at all (fake, functional, wrapper subclasses) and
  nested ones are refused with a TypeError, never read.
* Constructor arguments too large for the core, more than 16 dims.
* Errors from f and from its output name the tensor and the window.
* Open slices on an infinite dim say which end is missing.
* numpy / len / iter / bool / torch.as_tensor on an InfiniteTensor.

docs/bad-input.md lists every case.
"""

from __future__ import annotations

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _bridge
from pairs import Win, assert_same, pattern
from reference import RefTensor

SHAPE = (None, None)
WIN = Win((4, 4), stride=(2, 3))  # windows overlap on both dims
BOX = (slice(-3, 9), slice(-2, 10))


@pytest.fixture(params=["exchange-table", "capsules"])
def dlpack_path(request):
    """Each case runs through torch's C exchange table and through capsules."""
    if request.param == "capsules":
        _bridge.configure(exchange_api=None)
    yield request.param
    _bridge.configure()


def _complex(p):
    return torch.complex(p.float(), (p * 2 + 1).float())


# (case id, dtype, lazy(p) -> what f returns, plain(p) -> the same values
# computed without any lazy flag); p is a float64 integer-valued pattern
LAZY_OUTPUTS = [
    ("neg-view", torch.float32, lambda p: torch._neg_view(p.float()), lambda p: -p.float()),
    ("neg-view-int64", torch.int64, lambda p: torch._neg_view(p.long()), lambda p: -p.long()),
    ("neg-view-detached", torch.float64, lambda p: torch._neg_view(p).detach(), lambda p: -p),
    ("neg-view-transposed", torch.float32, lambda p: torch._neg_view(p.float().mT.contiguous()).mT,
     lambda p: -p.float()),
    ("conj-imag", torch.float32, lambda p: _complex(p).conj().imag, lambda p: -(p * 2 + 1).float()),
    ("conj-real", torch.float32, lambda p: _complex(p).conj().real, lambda p: p.float()),
    ("conj", torch.complex64, lambda p: _complex(p).conj(),
     lambda p: torch.complex(p.float(), -(p * 2 + 1).float())),
    ("neg-conj", torch.complex64, lambda p: torch._neg_view(_complex(p).conj()),
     lambda p: torch.complex(-p.float(), (p * 2 + 1).float())),
    ("zero-tensor", torch.float32, lambda p: torch._efficientzerotensor(tuple(p.shape)),
     lambda p: torch.zeros(tuple(p.shape))),
    ("zero-tensor-complex", torch.complex64,
     lambda p: torch._efficientzerotensor(tuple(p.shape), dtype=torch.complex64),
     lambda p: torch.zeros(tuple(p.shape), dtype=torch.complex64)),
]


def _plain_blend(a, b):
    return a + 2 * b


def _lazy_blend(a, b):
    """a + 2 b, returned as a negative view (and, for complex, through two
    conjugate views)."""
    r = torch._neg_view(-a - 2 * b)
    return r.conj().conj() if r.is_complex() else r


def _lib(lazy, dtype, blend, batch_size, store=None, tensor_id=None):
    if batch_size is None:
        f = lambda c: lazy(pattern(c, WIN.size))  # noqa: E731
    else:
        f = lambda cs: [lazy(pattern(c, WIN.size)) for c in cs]  # noqa: E731
    return it.InfiniteTensor(SHAPE, f, WIN.lib(), dtype=dtype, blend=blend, batch_size=batch_size,
                             tile_store=store, tensor_id=tensor_id)


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("blend", ["sum", "custom", "custom-lazy"])
@pytest.mark.parametrize("case", LAZY_OUTPUTS, ids=[c[0] for c in LAZY_OUTPUTS])
def test_lazy_outputs_of_f_store_their_values(case, blend, batch_size, dlpack_path):
    _, dtype, lazy, plain = case
    lib_blend = {"sum": None, "custom": _plain_blend, "custom-lazy": _lazy_blend}[blend]
    ref_blend = None if blend == "sum" else _plain_blend
    t = _lib(lazy, dtype, lib_blend, batch_size)
    ref = RefTensor(SHAPE, lambda c: plain(pattern(c, WIN.size)), WIN, dtype=dtype, blend=ref_blend)
    assert_same(t[BOX], ref[BOX])
    assert_same(t[1:7, 0:5], ref[1:7, 0:5])  # from the cache


@pytest.mark.parametrize("case", LAZY_OUTPUTS, ids=[c[0] for c in LAZY_OUTPUTS])
def test_lazy_stacked_output_of_batched_f(case, dlpack_path):
    """A batched f returning one stacked tensor that carries the flag."""
    _, dtype, lazy, plain = case

    def f(cs):
        return lazy(torch.stack([pattern(c, WIN.size) for c in cs]))

    t = it.InfiniteTensor(SHAPE, f, WIN.lib(), dtype=dtype, batch_size=2)
    ref = RefTensor(SHAPE, lambda c: plain(pattern(c, WIN.size)), WIN, dtype=dtype)
    assert_same(t[BOX], ref[BOX])


@pytest.mark.parametrize("case", LAZY_OUTPUTS, ids=[c[0] for c in LAZY_OUTPUTS])
def test_lazy_output_given_to_notify_window_processed(case, dlpack_path):
    _, dtype, lazy, plain = case
    store = it.MemoryTileStore()
    t = it.InfiniteTensor(SHAPE, lambda c: pytest.fail("f must not run"), WIN.lib(), dtype=dtype,
                          tile_store=store, tensor_id="given")
    ref = RefTensor(SHAPE, lambda c: plain(pattern(c, WIN.size)), WIN, dtype=dtype)
    for c in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        store.notify_window_processed("given", c, lazy(pattern(c, WIN.size)))
    # pixels [2:4, 3:4] are covered by exactly these four windows
    assert_same(store.read_pixels("given", (slice(2, 4), slice(3, 4))), ref[2:4, 3:4])
    assert_same(t._node.read_cached((slice(2, 4), slice(3, 4))), ref[2:4, 3:4])


def _fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode().from_tensor(torch.zeros(4, 4))


def _two_tensor():
    from torch.testing._internal.two_tensor import TwoTensor

    return TwoTensor(torch.zeros(4, 4), torch.ones(4, 4))


def _masked():
    import warnings

    from torch.masked import masked_tensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masked_tensor(torch.ones(4, 4), torch.ones(4, 4, dtype=torch.bool))


# outputs with no values in memory, or not dense: refused, never read
REFUSED_OUTPUTS = [
    ("functional", lambda: torch._to_functional_tensor(torch.ones(4, 4)), TypeError, "got a Tensor with none"),
    ("fake", _fake, TypeError, "got a FakeTensor with none"),
    ("wrapper-subclass", _two_tensor, TypeError, "got a TwoTensor with none"),
    ("masked", _masked, TypeError, "got a MaskedTensor with none"),
    ("nested", lambda: torch.nested.nested_tensor([torch.ones(4), torch.ones(4)]), TypeError,
     "got a nested tensor"),
    ("nested-jagged", lambda: torch.nested.nested_tensor([torch.ones(4), torch.ones(4)], layout=torch.jagged),
     it.ShapeMismatchError, "does not match expected window shape (4, 4)"),
    ("quantized", lambda: torch.quantize_per_tensor(torch.ones(4, 4), 0.1, 0, torch.quint8),
     it.DtypeMismatchError, "torch.quint8"),
    ("sparse-csr", lambda: torch.ones(4, 4).to_sparse_csr(), TypeError, "got layout torch.sparse_csr"),
    ("meta", lambda: torch.ones(4, 4, device="meta"), it.DeviceMismatchError, "device meta"),
]


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("case", REFUSED_OUTPUTS, ids=[c[0] for c in REFUSED_OUTPUTS])
def test_outputs_without_values_are_refused(case, batch_size, dlpack_path):
    _, make_out, exc, msg = case
    bad = make_out()
    calls = []
    state = {"bad_call": 3}

    def f(c):
        calls.append(c)
        return bad if len(calls) == state["bad_call"] else torch.full((4, 4), 1.0)

    fn = f if batch_size is None else (lambda cs: [f(c) for c in cs])
    t = it.InfiniteTensor((None, None), fn, it.TensorWindow((4, 4)), batch_size=batch_size)
    with pytest.raises(exc) as info:
        t[0:16, 0:4]
    assert msg in str(info.value)
    # nothing half-written: once f behaves, every window reads 1
    state["bad_call"] = None
    assert torch.equal(t[0:16, 0:4], torch.ones(16, 4))


# what blend gets for the same results (its messages name blend)
BLEND_REFUSALS = {
    "nested-jagged": (TypeError, "blend must return a dense (strided) torch.Tensor, got a nested tensor"),
    "nested": (TypeError, "blend must return a dense (strided) torch.Tensor, got a nested tensor"),
    "quantized": (it.DtypeMismatchError, "blend returned dtype torch.quint8"),
    "sparse-csr": (TypeError, "blend must return a dense (strided) torch.Tensor, got layout torch.sparse_csr"),
    "meta": (it.DeviceMismatchError, "blend returned a tensor on device meta"),
}


@pytest.mark.parametrize("case", REFUSED_OUTPUTS, ids=[c[0] for c in REFUSED_OUTPUTS])
def test_blend_results_without_values_are_refused(case, dlpack_path):
    name, make_out, exc, msg = case
    exc, msg = BLEND_REFUSALS.get(name, (exc, msg))
    bad = make_out()
    calls = []

    def blend(a, b):
        calls.append(1)
        return bad if len(calls) == 2 else a + b

    t = it.InfiniteTensor((None, None), lambda c: torch.ones(4, 4), it.TensorWindow((4, 4), stride=(2, 4)),
                          blend=blend)
    with pytest.raises(exc) as info:
        t[0:12, 0:4]
    assert msg in str(info.value)
    calls.append(1)  # from here on blend behaves
    assert torch.equal(t[0:12, 0:4], torch.full((12, 4), 2.0))  # every row is in two windows
