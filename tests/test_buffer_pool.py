"""The recycling pool of core buffers (infinite_tensor.buffers): its public
knobs, its bound, and that every buffer comes back (issue 22).  The C side
(size classes, reuse without allocating, threads, steady-state reads) is
pinned in csrc/tests/test_buffer.c."""
import gc
import os
import subprocess
import sys

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def pool_limit():
    """Restores the pool's limit after the test."""
    old = it.get_buffer_pool_limit()
    yield
    it.set_buffer_pool_limit(old)


def ramp(ctx):
    """A 64x64 window whose values depend on its index."""
    i, j = ctx
    return torch.arange(64 * 64, dtype=torch.float32).view(64, 64) + 1000 * i + j


def ramp_reference(y0, y1, x0, x1):
    """ramp's windows at stride 32, summed, over [y0:y1, x0:x1] in plain torch."""
    out = torch.zeros(y1 - y0 + 128, x1 - x0 + 128)
    for i in range((y0 - 64) // 32, y1 // 32 + 1):
        for j in range((x0 - 64) // 32, x1 // 32 + 1):
            top, left = i * 32 - y0 + 64, j * 32 - x0 + 64
            if 0 <= top <= out.shape[0] - 64 and 0 <= left <= out.shape[1] - 64:
                out[top:top + 64, left:left + 64] += ramp((i, j))
    return out[64:64 + y1 - y0, 64:64 + x1 - x0]


def overlapping(store=None):
    return it.InfiniteTensor((None, None), ramp, it.TensorWindow((64, 64), stride=(32, 32)),
                             tile_store=store or it.MemoryTileStore())


def test_limit_is_read_and_set(pool_limit):
    old = it.get_buffer_pool_limit()
    assert old == 256 * 2**20  # the default
    assert it.set_buffer_pool_limit(3 << 20) == old
    assert it.get_buffer_pool_limit() == 3 << 20
    assert it.set_buffer_pool_limit(0) == 3 << 20
    assert it.buffer_pool_bytes() == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1024", None])
def test_bad_limits_are_refused(bad, pool_limit):
    before = it.get_buffer_pool_limit()
    with pytest.raises(it.ValidationError, match="buffer pool limit"):
        it.set_buffer_pool_limit(bad)
    assert it.get_buffer_pool_limit() == before


def test_the_pool_stays_within_its_limit_and_lowering_it_frees(pool_limit):
    t = overlapping()
    it.set_buffer_pool_limit(1 << 20)
    for k in range(12):
        got = t[k * 100:k * 100 + 300, 0:300]  # 351 KiB results, dropped at once
        assert it.buffer_pool_bytes() <= 1 << 20
    torch.testing.assert_close(got, ramp_reference(1100, 1400, 0, 300))
    assert it.buffer_pool_bytes() > 0
    it.set_buffer_pool_limit(100_000)
    assert it.buffer_pool_bytes() <= 100_000


@pytest.mark.parametrize("limit", [0, 20_000, 256 * 2**20])
def test_values_do_not_depend_on_the_pool(limit, pool_limit):
    it.set_buffer_pool_limit(limit)
    store = it.MemoryTileStore(cache_size_bytes=200_000)  # tiles evicted as the reads go
    t = overlapping(store)
    for y0, x0 in [(0, 0), (-90, 37), (500, -300), (0, 0)]:
        torch.testing.assert_close(t[y0:y0 + 200, x0:x0 + 250], ramp_reference(y0, y0 + 200, x0, x0 + 250))


def test_results_torch_drops_come_back_to_the_pool(pool_limit):
    t = overlapping()
    t[0:256, 0:256]
    it.set_buffer_pool_limit(0)
    it.set_buffer_pool_limit(64 << 20)
    result = t[0:256, 0:256]  # cached: only the result is a new buffer
    assert it.buffer_pool_bytes() == 0
    del result
    gc.collect()
    assert it.buffer_pool_bytes() >= 256 * 256 * 4


def test_every_buffer_comes_back(pool_limit):
    gc.collect()
    it.set_buffer_pool_limit(0)
    live = _core.alloc_live_blocks()
    it.set_buffer_pool_limit(64 << 20)
    store = it.MemoryTileStore(cache_size_bytes=300_000)
    t = overlapping(store)
    up = it.InfiniteTensor((None, None), lambda ctx, x: x * 2, it.TensorWindow((64, 64)), args=(t,),
                           args_windows=(it.TensorWindow((64, 64)),), tile_store=store)
    results = [up[0:128, k * 64:k * 64 + 300] for k in range(8)]
    torch.testing.assert_close(results[3], 2 * ramp_reference(0, 128, 192, 492))
    del results, up, t, store
    gc.collect()
    assert _core.alloc_live_blocks() >= live  # the pool's buffers are still the core's
    it.set_buffer_pool_limit(0)
    assert _core.alloc_live_blocks() == live


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, **env}, timeout=120)


def test_environment_variable_sets_the_limit():
    done = run_python("import infinite_tensor as it; print(it.get_buffer_pool_limit())",
                      INFINITE_TENSOR_POOL_BYTES="12345")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12345"]


@pytest.mark.parametrize("bad", ["lots", "-5", "1.5"])
def test_a_bad_environment_variable_warns_and_keeps_the_default(bad):
    done = run_python("import infinite_tensor as it; print(it.get_buffer_pool_limit())",
                      INFINITE_TENSOR_POOL_BYTES=bad)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(256 * 2**20)]
    assert "RuntimeWarning" in done.stderr and "INFINITE_TENSOR_POOL_BYTES" in done.stderr
