"""Reads at the edges of what the engine represents: huge steps, far
coordinates, huge and empty regions."""
import pytest
import torch

import infinite_tensor as it


def counting(size, value):
    calls = []

    def f(ctx):
        calls.append(ctx)
        return torch.full(size, float(value(ctx)), dtype=torch.float64)
    return f, calls


def test_large_steps_compute_only_sampled_windows():
    f, calls = counting((8, 8), lambda c: c[0] * 1000 + c[1])
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((8, 8)), dtype=torch.float64)
    r = t[0:10**15:10**14, -10**16:10**16:10**15]
    assert r.shape == (10, 20)
    assert len(calls) == 200  # one window per sample, not one per window of the span
    rows = torch.arange(10, dtype=torch.float64) * 10**14 // 8
    cols = (torch.arange(20, dtype=torch.float64) * 10**15 - 10**16) // 8
    torch.testing.assert_close(r, rows[:, None] * 1000 + cols[None, :], rtol=0, atol=0)


def test_strided_read_equals_dense_read_sliced():
    f, _ = counting((3, 5), lambda c: c[0] * 7 - c[1])
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((3, 5), stride=(2, 3), offset=(1, -2)),
                          dtype=torch.float64)
    dense = t[-40:90, -70:50]
    for sy, sx in [(1, 1), (3, 7), (50, 2), (129, 131), (200, 1)]:
        torch.testing.assert_close(t[-40:90:sy, -70:50:sx], dense[::sy, ::sx], rtol=0, atol=0)


@pytest.mark.parametrize("far", [2**62 - 64, -2**62])
def test_reads_near_the_coordinate_limit(far):
    f, calls = counting((4,), lambda c: c[0] % 1000)
    t = it.InfiniteTensor((None,), f, it.TensorWindow((4,)), dtype=torch.float64)
    r = t[far:far + 8]
    assert r.shape == (8,)
    assert r[0].item() == (far // 4) % 1000
    assert len(calls) == 2


def test_coordinates_beyond_the_limit_are_index_errors():
    t = it.InfiniteTensor((None,), lambda c: torch.ones(4), it.TensorWindow((4,)))
    with pytest.raises(IndexError):
        t[2**62:2**62 + 4]
    with pytest.raises(IndexError):
        t[2**70]
    with pytest.raises(IndexError):
        t[-2**63:0]


def test_huge_region_fails_before_allocating():
    calls = []
    t = it.InfiniteTensor((None, None), lambda c: calls.append(c) or torch.ones(4, 4),
                          it.TensorWindow((4, 4)))
    with pytest.raises(MemoryError):
        t[0:2**40, 0:2**40]
    assert calls == []


def test_empty_reads_compute_nothing():
    f, calls = counting((4, 4), lambda c: 1)
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((4, 4), stride=(2, 2), offset=(1, 1)))
    assert t[3:3, 0:10].shape == (0, 10)
    assert t[5:2, 0:10].shape == (0, 10)
    assert t[0:10, 7:7].shape == (10, 0)
    assert calls == []


def test_region_too_large_to_hold_fails_before_computing():
    calls = []
    t = it.InfiniteTensor((None, None), lambda c: calls.append(c) or torch.ones(4, 4),
                          it.TensorWindow((4, 4)))
    with pytest.raises(MemoryError):
        t[0:2**28, 0:2**28]  # 2**56 floats: no machine holds that
    assert calls == []
