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

# torch warns when these odd tensors are made or read; the tests mean it
pytestmark = [
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage:UserWarning"),
    pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor is deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning"),
]

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


# what blend gets for the same results (its messages name blend; the checks
# and their words are f's: the jagged tensor was a TypeError for blend, which
# skipped the shape check f's outputs get)
BLEND_REFUSALS = {
    "nested-jagged": (it.ShapeMismatchError, "blend output shape (2, j"),  # j1, j2...: torch numbers them
    "nested": (TypeError, "blend must return a dense (strided) torch.Tensor, got a nested tensor"),
    "quantized": (it.DtypeMismatchError, "blend output has dtype torch.quint8, tensor declared dtype torch.float32."),
    "sparse-csr": (TypeError, "blend must return a dense (strided) torch.Tensor, got layout torch.sparse_csr"),
    "meta": (it.DeviceMismatchError, "blend output is on device meta, tensor declared device cpu."),
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


# ----------------------------------------------------------- constructor ints
def _f44(c):
    return torch.zeros(4, 4)


# (case id, kwargs, message fragment): each raised OverflowError, a plain
# ValueError, or nothing (blend_init overflowing to inf) before
HUGE_ARGS = [
    ("batch-size-2**64", dict(batch_size=2**64), "batch_size must be below 2**63, got 18446744073709551616"),
    ("batch-size-2**63", dict(batch_size=2**63), "batch_size must be below 2**63"),
    ("map-2**64", dict(output_window=it.TensorWindow((4, 4), dimension_map=(2**64, 0))),
     "dimension_map[0] = 18446744073709551616 is not a valid window coordinate"),
    ("map-16", dict(output_window=it.TensorWindow((4, 4), dimension_map=(0, 16))),
     "dimension_map[1] = 16 is not a valid window coordinate (0..1)"),
    ("blend-init-inf-float16", dict(blend_init=1e300, dtype=torch.float16),
     "blend_init 1e+300 cannot be represented as torch.float16: it overflows to inf"),
    ("blend-init-inf-float32", dict(blend_init=-(2**200), dtype=torch.float32),
     "cannot be represented as torch.float32: it overflows to -inf"),
    ("blend-init-huge-int-short-message", dict(blend_init=10**400),
     "blend_init 1000000000000000000000000000000000000... (401 characters) cannot be represented"),
    ("17-dims", dict(shape=(None,) * 17, output_window=it.TensorWindow((1,) * 17)),
     "a tensor must have 1 to 16 dims, got 17"),
]


@pytest.mark.parametrize("case, kwargs, fragment", HUGE_ARGS, ids=[c[0] for c in HUGE_ARGS])
def test_huge_constructor_ints_are_validation_errors(case, kwargs, fragment):
    store = it.MemoryTileStore()
    kw = dict(shape=(None, None), f=_f44, output_window=it.TensorWindow((4, 4)), tile_store=store,
              tensor_id="huge")
    kw.update(kwargs)
    with pytest.raises(it.ValidationError) as ei:
        it.InfiniteTensor(**kw)
    assert fragment in str(ei.value), str(ei.value)
    assert len(str(ei.value)) < 200
    # the id is not taken: it registers afresh and reads right
    t = it.InfiniteTensor((None, None), lambda c: torch.full((4, 4), 2.0), it.TensorWindow((4, 4)),
                          tile_store=store, tensor_id="huge")
    assert torch.equal(t[0:8, 0:4], torch.full((8, 4), 2.0))


def test_sixteen_dims_is_the_limit():
    ones = torch.ones((1,) * 15 + (2,))
    t = it.InfiniteTensor((None,) * 16, lambda c: ones * (c[15] + 1), it.TensorWindow((1,) * 15 + (2,)))
    got = t[(slice(0, 1),) * 15 + (slice(0, 4),)]
    assert got.shape == (1,) * 15 + (4,)
    assert got.flatten().tolist() == [1.0, 1.0, 2.0, 2.0]
    assert it._core.MAX_DIMS == 16
    with pytest.raises(it.ValidationError, match="a window must have 1 to 16 dims, got 17"):
        list(it.TensorWindow((1,) * 17).intersecting_windows((slice(0, 1),) * 17))


# (case id, a constructor or call, the whole message): the core checks each
# value and words the rule once, with its true limit; a value past int64 is
# shown as given (the Python layer used to check int64 and quote 2**48 for
# every field, "window size[0] must be within +-2**48", and to word the
# window, shape and region rules a second time)
P, C = it._core.PARAM_LIMIT_LOG2, it._core.COORD_LIMIT_LOG2
_win = it.TensorWindow
GIVEN_VALUES = [
    ("size-2**64", lambda: it.InfiniteTensor((None, None), _f44, _win((2**64, 4))),
     f"window size[0] must be in [1, 2**{P}], got 18446744073709551616"),
    ("size-2**49", lambda: it.InfiniteTensor((None, None), _f44, _win((2**49, 4))),
     f"window size[0] must be in [1, 2**{P}], got 562949953421312"),
    ("stride-2**70", lambda: it.InfiniteTensor((None, None), _f44, _win((4, 4), stride=(4, 2**70))),
     f"window stride[1] must be in [1, 2**{P}], got 1180591620717411303424"),
    ("offset-minus-2**70", lambda: it.InfiniteTensor((None, None), _f44, _win((4, 4), offset=(0, -(2**70)))),
     f"window offset[1] must be within +-2**{P}, got -1180591620717411303424"),
    ("shape-2**63", lambda: it.InfiniteTensor((None, 2**63), _f44, _win((4, 4))),
     f"dim 1 must be infinite or in [1, 2**{P}], got 9223372036854775808"),
    ("shape-10**400", lambda: it.InfiniteTensor((10**400, None), _f44, _win((4, 4))),
     f"dim 0 must be infinite or in [1, 2**{P}], got 1000000000000000000000000000000000000... "
     "(401 characters)"),
    ("map-2**40", lambda: it.InfiniteTensor((None, None), _f44, _win((4, 4), dimension_map=(2**40, 0))),
     "dimension_map[0] = 1099511627776 is not a valid window coordinate (0..1)"),
    ("arg-window-offset-2**64", lambda: it.InfiniteTensor(
        (None, None), lambda c, a: a, _win((4, 4)), args=[it.InfiniteTensor((None, None), _f44, _win((4, 4)))],
        args_windows=[_win((4, 4), offset=(2**64, 2**65))]),
     f"window offset[0] must be within +-2**{P}, got 18446744073709551616"),
    ("region-both-ends-past-int64", lambda: list(_win((4, 4)).intersecting_windows(
        (slice(2**70, 2**70 + 4), slice(0, 4)))),
     f"region [1180591620717411303424, 1180591620717411303428) on dim 0 is beyond +-2**{C}"),
    ("region-past-the-limit", lambda: list(_win((4, 4)).intersecting_windows(
        (slice(0, 4), slice(-(2**62) - 1, 0)))),
     f"region [-4611686018427387905, 0) on dim 1 is beyond +-2**{C}"),
]


@pytest.mark.parametrize("case, call, message", GIVEN_VALUES, ids=[c[0] for c in GIVEN_VALUES])
def test_limit_messages_quote_the_true_limit_and_the_value_given(case, call, message):
    exc = IndexError if case.startswith("region") else it.ValidationError
    with pytest.raises(exc) as ei:
        call()
    assert str(ei.value) == message


def test_huge_batch_size_below_the_limit_works():
    t = it.InfiniteTensor((None, None), lambda cs: [torch.full((4, 4), float(c[0])) for c in cs],
                          it.TensorWindow((4, 4)), batch_size=2**63 - 1)
    assert t[0:8, 0:4].tolist() == [[0.0] * 4] * 4 + [[1.0] * 4] * 4


def test_huge_thread_count_means_the_maximum():
    """set_num_threads(2**64) raised OverflowError; 2**31 already meant the
    core's maximum."""
    previous = it.get_num_threads()
    try:
        it.set_num_threads(2**31)
        most = it.get_num_threads()
        it.set_num_threads(2**64)
        assert it.get_num_threads() == most
    finally:
        it.set_num_threads(previous)
    assert it.get_num_threads() == previous


# ------------------------------------------------- errors name tensor, window
BAD_WINDOW = (1, 0)


def _bad_at(bad):
    """f returning bad(good) for window BAD_WINDOW only."""
    def f(c):
        good = torch.full((4, 4), float(c[0] * 10 + c[1]))
        return bad(good) if c == BAD_WINDOW else good
    return f


WHERE = "(infinite tensor 'named', window (1, 0))"
NAMED_OUTPUT_ERRORS = [
    ("shape", lambda g: g[:3], it.ShapeMismatchError,
     "Function output shape (3, 4) does not match expected window shape (4, 4) " + WHERE),
    ("dtype", lambda g: g.double(), it.DtypeMismatchError,
     "Function output has dtype torch.float64, tensor declared dtype torch.float32. " + WHERE),
    ("device", lambda g: g.to("meta"), it.DeviceMismatchError,
     "Function output is on device meta, tensor declared device cpu. " + WHERE),
    ("not-a-tensor", lambda g: g.numpy(), TypeError, "f must return a torch.Tensor, got numpy.ndarray " + WHERE),
    ("sparse", lambda g: g.to_sparse(), TypeError,
     "f must return a dense (strided) torch.Tensor, got layout torch.sparse_coo " + WHERE),
    ("no-memory", lambda g: torch._to_functional_tensor(g), TypeError, "return a plain torch.Tensor " + WHERE),
]


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("case, bad, exc, message", NAMED_OUTPUT_ERRORS, ids=[c[0] for c in NAMED_OUTPUT_ERRORS])
def test_output_errors_name_the_tensor_and_window(case, bad, exc, message, batch_size):
    f = _bad_at(bad)
    fn = f if batch_size is None else (lambda cs: [f(c) for c in cs])
    t = it.InfiniteTensor((None, None), fn, it.TensorWindow((4, 4)), tensor_id="named", batch_size=batch_size)
    with pytest.raises(exc) as ei:
        t[0:8, 0:8]
    assert type(ei.value) is exc
    assert str(ei.value).endswith(message), str(ei.value)
    assert str(ei.value).count("infinite tensor") == 1


def test_batch_errors_name_the_batch():
    t = it.InfiniteTensor((None, None), lambda cs: torch.zeros(len(cs), 4, 3), it.TensorWindow((4, 4)),
                          tensor_id="b", batch_size=6)
    with pytest.raises(it.ShapeMismatchError) as ei:
        t[0:8, 0:12]
    assert str(ei.value) == ("Function output shape (4, 3) does not match expected window shape (4, 4) "
                             "(infinite tensor 'b', windows (0, 0), (0, 1), (0, 2), (1, 0) and 2 more)")
    t = it.InfiniteTensor((None, None), lambda cs: [torch.zeros(4, 4)] * (len(cs) + 1), it.TensorWindow((4, 4)),
                          tensor_id="c", batch_size=2)
    with pytest.raises(it.ShapeMismatchError) as ei:
        t[0:4, 0:8]
    assert str(ei.value) == ("Batched f returned 3 outputs for a batch of 2 windows "
                             "(infinite tensor 'c', windows (0, 0), (0, 1))")
    t = it.InfiniteTensor((None,), lambda cs: None, it.TensorWindow((4,)), tensor_id="d", batch_size=3)
    with pytest.raises(TypeError) as ei:
        t[0:12]
    assert str(ei.value) == ("batched f must return a list of tensors, got NoneType "
                             "(infinite tensor 'd', windows (0,), (1,), (2,))")


def test_batched_f_that_empties_its_index_list_is_named_right():
    """The window named is the core's, not the list f was given (a batched f
    that emptied the list and returned a bad last output crashed the
    process before)."""
    def f(cs):
        n = len(cs)
        cs.clear()
        return [torch.zeros(4, 4)] * (n - 1) + [None]

    t = it.InfiniteTensor((None, None), f, it.TensorWindow((4, 4)), tensor_id="cleared", batch_size=4)
    with pytest.raises(TypeError) as ei:
        t[0:8, 0:8]
    assert str(ei.value) == "f must return a torch.Tensor, got NoneType (infinite tensor 'cleared', window (1, 1))"


def test_notified_output_errors_name_the_window():
    store = it.MemoryTileStore()
    it.InfiniteTensor((None, None), _f44, it.TensorWindow((4, 4)), tile_store=store, tensor_id="given")
    with pytest.raises(it.ShapeMismatchError) as ei:
        store.notify_window_processed("given", (3, -2), torch.zeros(4, 5))
    assert str(ei.value).endswith("(infinite tensor 'given', window (3, -2))")


HAS_NOTES = hasattr(BaseException, "add_note")  # PEP 678, Python >= 3.11


def _notes(exc):
    return getattr(exc, "__notes__", [])


def test_exception_from_f_keeps_class_and_traceback_and_gets_a_note():
    err = KeyError("boom")
    raised = []

    def f(c):
        if c == BAD_WINDOW:
            raised.append(err)  # the same object every time
            raise err
        return torch.zeros(4, 4)

    t = it.InfiniteTensor((None, None), f, it.TensorWindow((4, 4)), tensor_id="inner")
    with pytest.raises(KeyError) as ei:
        t[0:8, 0:8]
    assert ei.value is raised[0]
    assert type(ei.value) is KeyError and ei.value.args == ("boom",)
    assert any(entry.frame.code.name == "f" for entry in ei.traceback)  # f's frame is still there
    expected = ["raised in f of infinite tensor 'inner', window (1, 0)"] if HAS_NOTES else []
    assert _notes(ei.value) == expected
    # the same exception object raised again for the same window: one note
    with pytest.raises(KeyError) as ei:
        t[4:8, 0:4]
    assert ei.value is err and len(raised) == 2
    assert _notes(ei.value) == expected


def test_exception_from_batched_f_names_the_batch():
    def f(cs):
        raise ValueError("batch failed")

    t = it.InfiniteTensor((None,), f, it.TensorWindow((4,)), tensor_id="batched", batch_size=8)
    with pytest.raises(ValueError, match="batch failed") as ei:
        t[0:40]
    expected = ["raised in f of infinite tensor 'batched', windows (0,), (1,), (2,), (3,) and 4 more"]
    assert _notes(ei.value) == (expected if HAS_NOTES else [])


def test_exception_passing_through_nested_tensors_names_each_once():
    """f of 'outer' reads 'inner', whose f raises: one note per tensor it
    passed through, innermost first, as in a traceback."""
    def inner_f(c):
        raise RuntimeError("inner failed")

    inner = it.InfiniteTensor((None, None), inner_f, it.TensorWindow((4, 4)), tensor_id="inner")
    outer = it.InfiniteTensor((None, None), lambda c: inner[4:8, 0:4], it.TensorWindow((4, 4)), tensor_id="outer")
    with pytest.raises(RuntimeError, match="inner failed") as ei:
        outer[0:4, 4:8]
    expected = ["raised in f of infinite tensor 'inner', window (1, 0)",
                "raised in f of infinite tensor 'outer', window (0, 1)"]
    assert _notes(ei.value) == (expected if HAS_NOTES else [])


def test_output_error_of_an_inner_tensor_keeps_its_message():
    inner = it.InfiniteTensor((None, None), lambda c: torch.zeros(3, 4), it.TensorWindow((4, 4)), tensor_id="inner")
    outer = it.InfiniteTensor((None, None), lambda c: inner[0:4, 0:4], it.TensorWindow((4, 4)), tensor_id="outer")
    with pytest.raises(it.ShapeMismatchError) as ei:
        outer[0:4, 0:4]
    assert str(ei.value).endswith("(infinite tensor 'inner', window (0, 0))")
    expected = ["raised in f of infinite tensor 'outer', window (0, 0)"]
    assert _notes(ei.value) == (expected if HAS_NOTES else [])


def test_exception_from_an_upstream_through_args_names_only_the_upstream():
    def up_f(c):
        raise ArithmeticError("upstream failed")

    up = it.InfiniteTensor((None, None), up_f, it.TensorWindow((4, 4)), tensor_id="up")
    down = it.InfiniteTensor((None, None), lambda c, x: x, it.TensorWindow((4, 4)), args=[up],
                             args_windows=[it.TensorWindow((4, 4))], tensor_id="down")
    with pytest.raises(ArithmeticError) as ei:
        down[0:4, 0:4]
    expected = ["raised in f of infinite tensor 'up', window (0, 0)"]
    assert _notes(ei.value) == (expected if HAS_NOTES else [])


def test_exception_from_blend_gets_a_note():
    def blend(a, b):
        raise LookupError("blend failed")

    t = it.InfiniteTensor((None,), lambda c: torch.ones(4), it.TensorWindow((4,), stride=(2,)), blend=blend,
                          tensor_id="blended")
    with pytest.raises(LookupError) as ei:
        t[0:8]
    assert _notes(ei.value) == (["raised in blend of infinite tensor 'blended'"] if HAS_NOTES else [])


# --------------------------------------------------------------- open slices
OPEN_SLICES = [
    ((slice(None, 10), slice(0, 4)), "dim 0: the slice has a stop (10) but no start; give both"),
    ((slice(None, 10), ...), "dim 0: the slice has a stop (10) but no start; give both"),
    (slice(None, 10), "dim 0: the slice has a stop (10) but no start; give both"),
    ((slice(0, 4), slice(-5, None)), "dim 1: the slice has a start (-5) but no stop; give both"),
    ((slice(0, 4), slice(None, None, 2)), "dim 1: the slice has neither a start nor a stop; give both"),
    ((slice(0, 4),), "dim 1 is left open by the index"),
]


@pytest.mark.parametrize("key, fragment", OPEN_SLICES, ids=[f[:14] for _, f in OPEN_SLICES])
def test_open_slice_says_which_end_is_missing(key, fragment):
    store = it.MemoryTileStore()
    t = it.InfiniteTensor((None, None), lambda c: pytest.fail("f must not run"), it.TensorWindow((4, 4)),
                          tile_store=store, tensor_id="open")
    for read in (lambda: t[key], lambda: store.read_pixels("open", key if isinstance(key, tuple) else (key,))):
        with pytest.raises(IndexError) as ei:
            read()
        assert str(ei.value).startswith("Slice must have start and stop for infinite dimensions")
        assert fragment in str(ei.value), str(ei.value)


# ------------------------------------------- numpy, len, iter, bool, as_tensor
def _never(c):
    pytest.fail("f must not run")


WHOLE_REFUSALS = [
    ("np.asarray", lambda t: __import__("numpy").asarray(t), "cannot convert {} to a numpy array",
     "np.asarray({})"),
    ("np.array-dtype", lambda t: __import__("numpy").array(t, dtype="float64"), "cannot convert {} to a numpy array",
     "np.asarray({})"),
    ("list", list, "cannot iterate over {}", "for row in {}: ..."),
    ("iter", iter, "cannot iterate over {}", "for row in {}: ..."),
    ("tuple-unpack", lambda t: [*t], "cannot iterate over {}", "for row in {}: ..."),
    ("len", len, "{} has no len()", "len({})"),
    ("in", lambda t: 1.0 in t, "cannot search {} ('in')", "value in {}"),
    ("torch.as_tensor", torch.as_tensor, "cannot convert {} to a torch.Tensor", "torch.as_tensor({})"),
    ("torch.tensor", torch.tensor, "cannot convert {} to a torch.Tensor", "torch.as_tensor({})"),
    ("torch.from_dlpack", torch.from_dlpack, "cannot convert {} to a torch.Tensor", "torch.as_tensor({})"),
]


@pytest.mark.parametrize("shape, region", [((None, None), "t[0:64, 0:64]"), ((3, None), "t[:, 0:64]"),
                                           ((None,), "t[0:64]")])
@pytest.mark.parametrize("case, op, what, example", WHOLE_REFUSALS, ids=[c[0] for c in WHOLE_REFUSALS])
def test_whole_tensor_conversions_refuse_infinite_dims(case, op, what, example, shape, region):
    win = it.TensorWindow(tuple(3 if d == 3 else 4 for d in shape))
    t = it.InfiniteTensor(shape, _never, win)
    with pytest.raises(TypeError) as ei:
        op(t)
    subject = f"an InfiniteTensor with infinite dims (shape {shape})"
    assert str(ei.value) == (f"{what.format(subject)}; read a finite region first, e.g. {example.format(region)}")


def test_bool_is_always_true():
    """`if t:` asks whether there is a tensor (as in 0.3), never about values."""
    calls = []
    t = it.InfiniteTensor((None, None), lambda c: calls.append(c) or torch.zeros(4, 4), it.TensorWindow((4, 4)))
    assert bool(t) is True
    assert (t or None) is t
    z = it.InfiniteTensor((4, 4), lambda c: calls.append(c) or torch.zeros(4, 4), it.TensorWindow((4, 4)))
    assert bool(z) is True  # all zeros, still a tensor
    assert calls == []


def test_finite_tensor_converts_like_its_whole_read():
    import numpy as np

    win = Win((2, 3))
    ref = RefTensor((6, 6), lambda c: pattern(c, win.size), win)
    t = it.InfiniteTensor((6, 6), lambda c: pattern(c, win.size).float(), win.lib())
    whole = ref[0:6, 0:6]
    assert len(t) == 6
    rows = list(t)
    assert len(rows) == 6
    for got, want in zip(rows, whole):
        assert_same(got, want)
    arr = np.asarray(t)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (6, 6)
    assert np.array_equal(arr, whole.numpy())
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert_same(torch.as_tensor(t), whole)
    assert_same(torch.tensor(t), whole)
    assert_same(torch.from_dlpack(t), whole)
    assert float(whole[2, 4]) in t
    assert 1000.0 not in t
