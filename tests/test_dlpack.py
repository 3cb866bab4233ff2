"""Buffers cross between the C core and torch by DLPack: torch's C exchange
table when it has one, else capsules of both kinds."""
import gc

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _bridge, _core


@pytest.fixture
def configure():
    yield _bridge.configure
    _bridge.configure()  # restore the fast defaults


def pipeline():
    base = it.InfiniteTensor((None, None), lambda c: torch.full((4, 4), float(c[0] * 10 + c[1])),
                             it.TensorWindow((4, 4)))
    dep = it.InfiniteTensor((None, None), lambda c, x: x[1:5, 1:5] * 2, it.TensorWindow((4, 4)), args=(base,),
                            args_windows=(it.TensorWindow((6, 6), stride=(4, 4), offset=(-1, -1)),))
    return base, dep


def test_versioned_capsules_from_f_are_accepted(configure):
    configure(to_dlpack=torch._C._to_dlpack_versioned, exchange_api=None)
    base, dep = pipeline()
    torch.testing.assert_close(dep[0:8, 0:8], base[0:8, 0:8] * 2)


def test_public_torch_entry_points_work_too(configure):
    configure(from_dlpack=torch.utils.dlpack.from_dlpack, to_dlpack=torch.utils.dlpack.to_dlpack, exchange_api=None)
    base, dep = pipeline()
    torch.testing.assert_close(dep[-3:5, 2:9], base[-3:5, 2:9] * 2)


def test_results_are_ordinary_torch_tensors_that_own_their_memory():
    base, _ = pipeline()
    r = base[0:8, 0:8]
    assert r.is_contiguous() and r.device.type == "cpu"
    # results are fresh: writing to one changes neither the cache nor another result
    r += 1000
    assert base[0:8, 0:8].max() < 1000
    # torch.from_dlpack on a result shares its memory, as for any tensor
    shared = torch.from_dlpack(r)
    assert shared.data_ptr() == r.data_ptr()


@pytest.fixture
def no_pool():
    limit = 256 * 2**20
    _core.buffer_pool(0)
    yield
    _core.buffer_pool(limit)


def test_result_memory_is_released_when_torch_drops_it(no_pool):
    base, _ = pipeline()
    base[0:64, 0:64]
    gc.collect()
    before = _core.alloc_live_blocks()
    results = [base[0:64, 0:64] for _ in range(50)]
    # each result holds two core blocks: its buffer and its DLPack header
    assert _core.alloc_live_blocks() == before + 2 * 50
    del results
    gc.collect()
    assert _core.alloc_live_blocks() == before


def test_pool_recycles_and_respects_its_limit():
    base, _ = pipeline()
    old = _core.buffer_pool(1 << 20)
    try:
        for _ in range(20):
            base[0:256, 0:256]  # 256 KiB results, freed at once
        assert 0 < _core.buffer_pool() <= 1 << 20
        _core.buffer_pool(0)
        assert _core.buffer_pool() == 0
    finally:
        _core.buffer_pool(256 * 2**20)
    assert old >= 0


def test_f_outputs_with_any_strides_are_copied():
    big = torch.arange(64.0).view(8, 8)

    def f(ctx):
        return big.t()[::2, 1:5]  # non-contiguous, transposed, offset view

    t = it.InfiniteTensor((None, None), f, it.TensorWindow((4, 4)))
    torch.testing.assert_close(t[0:4, 0:4], big.t()[::2, 1:5].contiguous())
    big.zero_()  # later changes to f's storage do not reach the cache
    assert t[0:4, 0:4].abs().sum() > 0


def test_outputs_requiring_grad_or_with_conj_bits_are_accepted():
    w = torch.ones(4, 4, requires_grad=True)
    t = it.InfiniteTensor((None, None), lambda c: w * 1 if torch.is_grad_enabled() else w,
                          it.TensorWindow((4, 4)))
    torch.testing.assert_close(t[0:4, 0:4], torch.ones(4, 4))
    z = torch.full((4,), 1 + 2j, dtype=torch.complex64)
    tc = it.InfiniteTensor((None,), lambda c: z.conj(), it.TensorWindow((4,)), dtype=torch.complex64)
    torch.testing.assert_close(tc[0:4], z.conj().resolve_conj())


def test_f_runs_without_grad_and_grad_mode_is_restored():
    seen = []
    t = it.InfiniteTensor((None,), lambda c: seen.append(torch.is_grad_enabled()) or torch.ones(4),
                          it.TensorWindow((4,)))
    assert torch.is_grad_enabled()
    t[0:8]
    assert seen == [False, False] and torch.is_grad_enabled()
    with torch.no_grad():
        t[8:12]
    assert torch.is_grad_enabled()


EXCHANGE = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)


@pytest.mark.skipif(EXCHANGE is None, reason="this torch has no DLPack C exchange table")
@pytest.mark.parametrize("path", ["exchange table", "capsules"])
def test_both_paths_give_the_same_values_for_awkward_outputs(configure, path):
    """Non-contiguous, offset, requiring grad, a subclass, conj bits, and a
    batched f stacking its outputs: each path imports them alike."""
    configure(exchange_api=EXCHANGE if path == "exchange table" else None)
    big = torch.arange(100.0).view(10, 10)

    class Sub(torch.Tensor):
        pass

    outs = [big.t()[1:9:2, 2:6], big[3:7, 3:7].clone().requires_grad_(), big[:4, :4].as_subclass(Sub),
            torch.nn.Parameter(big[5:9, 0:4].clone())]

    t = it.InfiniteTensor((None, None), lambda c: outs[c[1] % 4], it.TensorWindow((4, 4)))
    expected = torch.cat([o.detach().as_subclass(torch.Tensor) for o in outs], dim=1)
    torch.testing.assert_close(t[0:4, 0:16], expected)
    z = torch.arange(4.0) + 1j * torch.arange(4.0)
    tc = it.InfiniteTensor((None,), lambda c: (-z).conj(), it.TensorWindow((4,)), dtype=torch.complex64)
    torch.testing.assert_close(tc[0:4], (-z).conj().resolve_conj().resolve_neg())
    tb = it.InfiniteTensor((None, None), lambda cs: torch.stack([big[c[1]:c[1] + 4, 0:4] for c in cs]),
                           it.TensorWindow((4, 4)), batch_size=3)
    torch.testing.assert_close(tb[0:4, 0:12], torch.cat([big[k:k + 4, 0:4] for k in range(3)], dim=1))


def test_results_and_args_from_the_exchange_table_own_their_memory():
    seen = []
    up = it.InfiniteTensor((None,), lambda c: torch.full((4,), float(c[0])), it.TensorWindow((4,)))
    down = it.InfiniteTensor((None,), lambda c, x: seen.append(x) or x * 1, it.TensorWindow((4,)), args=(up,),
                             args_windows=(it.TensorWindow((4,)),))
    r = down[0:8]
    del down, up
    gc.collect()
    # the args f kept and the result outlive the tensors that made them
    torch.testing.assert_close(r, torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(torch.cat(seen), r)
    assert all(type(x) is torch.Tensor and x.is_contiguous() for x in seen)


def test_window_index_tuples_f_keeps_are_never_reused():
    """The binding refills the index tuple f was given only when f kept no
    reference to it; a kept one must keep its value."""
    kept, seen = [], []

    def f(ctx):
        seen.append(tuple(ctx))
        if ctx[0] % 3 == 0:
            kept.append(ctx)  # the same object f was given
        return torch.full((2,), float(ctx[0]))

    t = it.InfiniteTensor((None,), f, it.TensorWindow((2,)))
    torch.testing.assert_close(t[0:40], torch.arange(20.0).repeat_interleave(2))
    assert seen == [(k,) for k in range(20)]
    assert kept == [(k,) for k in range(0, 20, 3)]
