"""Buffers cross between the C core and torch by DLPack, both capsule kinds."""
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
    configure(to_dlpack=torch._C._to_dlpack_versioned)
    base, dep = pipeline()
    torch.testing.assert_close(dep[0:8, 0:8], base[0:8, 0:8] * 2)


def test_public_torch_entry_points_work_too(configure):
    configure(from_dlpack=torch.utils.dlpack.from_dlpack, to_dlpack=torch.utils.dlpack.to_dlpack)
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
