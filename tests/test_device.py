"""Tensors whose tiles live in device memory.

Without a GPU the device path still runs: inside
``_bridge.device_ops_on_cpu()`` new CPU tensors keep their tiles in torch
allocations and do every copy, fill and combine through torch ops, which is
the path CUDA tensors take (csrc/python/device.c; the core's side of it is
checked by the CMocka binaries test_tensor_device and test_backend_device).
Every read is compared with the plain-torch reference.  The CUDA tests at the
end need a GPU and skip without one.
"""

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _bridge
from pairs import Win, assert_same, make, pattern

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def pure_for(size, dtype):
    def pure(ctx, *args):
        out = pattern(ctx, size, dtype)
        for a in args:
            out = out + a.sum().to(dtype)
        return out
    return pure


BOXES = [(slice(-5, 9), slice(0, 7)), (slice(3, 20, 3), slice(-8, 4, 2)), (2, slice(-3, 3)),
         (slice(-5, 9), slice(0, 7))]

BLENDS = [(None, None), (None, 2), (torch.maximum, -1000), (torch.minimum, 1000),
          (lambda a, b: b - a, None)]


def device_pair(dtype=torch.float64, blend=None, blend_init=None, store=None, batch_size=None):
    win = Win((3, 4), (2, 3), (-1, 0))
    return make((None, None), pure_for((3, 4), dtype), win, store=store, dtype=dtype,
                blend=blend, blend_init=blend_init, batch_size=batch_size)


@pytest.mark.parametrize("blend,init", BLENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.float16])
def test_device_path_blends(blend, init, dtype):
    store = it.MemoryTileStore()
    with _bridge.device_ops_on_cpu():
        p = device_pair(dtype, blend, init, store=store)
    for box in BOXES:
        p.check(box)
    info = store.cache_info()
    assert info["device_bytes"] > 0 and info["bytes"] == 0, info


def test_device_path_batched_and_pipelines():
    """Batched f, and pipelines mixing the two paths in both directions."""
    for up_dev, down_dev in [(True, True), (False, True), (True, False)]:
        with _bridge.device_ops_on_cpu(up_dev):
            up = device_pair(batch_size=4)
        with _bridge.device_ops_on_cpu(down_dev):
            down = make((None, None), pure_for((2, 2), torch.float64), Win((2, 2), (2, 2)),
                        args=[up], args_windows=[Win((3, 3), (2, 2), (-1, -1))], dtype=torch.float64,
                        blend=torch.maximum, blend_init=-50)
        for box in BOXES:
            down.check(box)
            up.check(box)


def test_device_path_f_failure_leaves_no_partial_tile():
    fail = [True]

    def pure(ctx):
        if fail[0] and ctx == (3, 1):
            raise RuntimeError("boom")
        return pattern(ctx, (3, 4))

    with _bridge.device_ops_on_cpu():
        p = make((None, None), pure, Win((3, 4), (2, 3)), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="boom"):
        p.lib[0:12, 0:12]
    fail[0] = False
    p.check((slice(0, 12), slice(0, 12)))


def test_migration_between_host_and_device_memory():
    """.to() moves cached tiles between the two kinds of memory: created on
    the device path, a dtype change made outside it lands in host memory."""
    store = it.MemoryTileStore()
    with _bridge.device_ops_on_cpu():
        p = device_pair(store=store)
    p.check(BOXES[0])
    ncalls = len(p.calls)
    p.lib.to(torch.float32)  # outside the context: tiles go to host memory
    assert store.cache_info()["device_bytes"] == 0 and store.cache_info()["bytes"] > 0
    got = p.lib[BOXES[0]]
    assert_same(got, p.ref[BOXES[0]].to(torch.float32))
    assert len(p.calls) == ncalls  # nothing recomputed
    with _bridge.device_ops_on_cpu():
        p.lib.to(torch.float64)  # and back into torch-managed memory
    assert store.cache_info()["bytes"] == 0 and store.cache_info()["device_bytes"] > 0
    assert_same(p.lib[BOXES[0]], p.ref[BOXES[0]].to(torch.float32).to(torch.float64))
    assert len(p.calls) == ncalls


def test_device_budget_counts_device_bytes(tmp_path):
    with _bridge.device_ops_on_cpu():
        probe = it.MemoryTileStore()
        device_pair(store=probe).lib[0:1, 0:1]
        tile = probe.cache_info()["device_bytes"]  # one tile
        limit = 3 * tile
        store = it.MemoryTileStore(cache_size_bytes=limit)
        p = device_pair(store=store)
    for k in range(8):  # far apart: more tiles than the budget holds
        box = (slice(400 * k, 400 * k + 30), slice(-300 * k, -300 * k + 30))
        p.check(box)
        info = store.cache_info()
        assert info["bytes"] == 0 and 0 < info["device_bytes"] <= limit, info


def test_hdf5_store_stages_device_tiles(tmp_path):
    path = str(tmp_path / "dev.h5")
    with _bridge.device_ops_on_cpu():
        store = it.HDF5TileStore(path, tile_size=8)
        p = make((None, None), pure_for((3, 4), torch.float64), Win((3, 4), (2, 3)), store=store,
                 dtype=torch.float64, tensor_id="dev")
        for box in BOXES:
            p.check(box)
        store.close()
    # reopened on either path, the stored tiles come back without recomputing
    for on_device in (False, True):
        with _bridge.device_ops_on_cpu(on_device):
            store = it.HDF5TileStore(path, tile_size=8)
            q = make((None, None), pure_for((3, 4), torch.float64), Win((3, 4), (2, 3)), store=store,
                     dtype=torch.float64, tensor_id="dev")
            for box in BOXES:
                q.check(box)
            assert q.calls == []
            store.close()


# ---- CUDA ---------------------------------------------------------------------

def cuda_pure(size, dtype=torch.float32):
    def pure(ctx, *args):
        out = pattern(ctx, size, dtype).cuda()
        for a in args:
            assert a.is_cuda, a.device
            out = out + a.sum().to(dtype)
        return out
    return pure


@needs_cuda
@pytest.mark.parametrize("blend,init", BLENDS)
def test_cuda_reads_match_reference(blend, init):
    store = it.MemoryTileStore()
    t = it.InfiniteTensor((None, None), cuda_pure((3, 4)), it.TensorWindow((3, 4), (2, 3), (-1, 0)),
                          device="cuda", blend=blend, blend_init=init, tile_store=store)
    ref = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3), (-1, 0)),
               dtype=torch.float32, blend=blend, blend_init=init)
    for box in BOXES:
        got = t[box]
        assert got.is_cuda
        assert_same(got.cpu(), ref.ref[box])
    info = store.cache_info()
    assert info["device_bytes"] > 0 and info["bytes"] == 0, info


@needs_cuda
def test_cuda_pipelines_mixed_devices():
    up = it.InfiniteTensor((None, None), cuda_pure((3, 4)), it.TensorWindow((3, 4), (2, 3)), device="cuda")

    def down_f(ctx, a):
        assert a.is_cuda
        return (pattern(ctx, (2, 2), torch.float32) + a.sum().cpu())

    down = it.InfiniteTensor((None, None), down_f, it.TensorWindow((2, 2), (2, 2)), args=(up,),
                             args_windows=(it.TensorWindow((3, 3), (2, 2), (-1, -1)),))
    ref_up = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3)), dtype=torch.float32)
    ref_down = make((None, None), pure_for((2, 2), torch.float32), Win((2, 2), (2, 2)), args=[ref_up],
                    args_windows=[Win((3, 3), (2, 2), (-1, -1))], dtype=torch.float32)
    for box in BOXES:
        got = down[box]
        assert got.device.type == "cpu"
        assert_same(got, ref_down.ref[box])


@needs_cuda
def test_cuda_to_moves_cached_tiles():
    calls = []

    def f(ctx):
        calls.append(ctx)
        return pattern(ctx, (3, 4), torch.float32).to(t.device)

    t = it.InfiniteTensor((None, None), f, it.TensorWindow((3, 4), (2, 3)))
    ref = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3)), dtype=torch.float32)
    assert_same(t[0:9, 0:9], ref.ref[0:9, 0:9])
    n = len(calls)
    t.to("cuda")
    got = t[0:9, 0:9]
    assert got.is_cuda and len(calls) == n
    assert_same(got.cpu(), ref.ref[0:9, 0:9])
    t.to("cpu")
    assert_same(t[0:9, 0:9], ref.ref[0:9, 0:9])
    assert len(calls) == n


@needs_cuda
def test_cuda_hdf5_persists_and_reopens_on_cuda(tmp_path):
    path = str(tmp_path / "cuda.h5")
    ref = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3)), dtype=torch.float32)
    with it.HDF5TileStore(path, tile_size=8) as store:
        t = it.InfiniteTensor((None, None), cuda_pure((3, 4)), it.TensorWindow((3, 4), (2, 3)),
                              device="cuda", tile_store=store, tensor_id="g")
        assert_same(t[0:20, 0:20].cpu(), ref.ref[0:20, 0:20])

    def never(ctx):
        raise AssertionError("recomputed a stored window")

    with it.HDF5TileStore(path, tile_size=8) as store:
        t = it.InfiniteTensor((None, None), never, it.TensorWindow((3, 4), (2, 3)), device="cuda",
                              tile_store=store, tensor_id="g")
        got = t[0:20, 0:20]
        assert got.is_cuda
        assert_same(got.cpu(), ref.ref[0:20, 0:20])


@needs_cuda
def test_cuda_wrong_device_output():
    t = it.InfiniteTensor((None, None), lambda ctx: torch.zeros(3, 4), it.TensorWindow((3, 4), (2, 3)),
                          device="cuda")
    with pytest.raises(it.DeviceMismatchError):
        t[0:4, 0:4]


@needs_cuda
def test_cuda_reads_on_a_side_stream():
    stream = torch.cuda.Stream()
    ref = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3)), dtype=torch.float32)
    with torch.cuda.stream(stream):
        t = it.InfiniteTensor((None, None), cuda_pure((3, 4)), it.TensorWindow((3, 4), (2, 3)), device="cuda")
        got = t[0:64, 0:64]
    stream.synchronize()
    assert_same(got.cpu(), ref.ref[0:64, 0:64])


@needs_cuda
def test_cuda_persistent_to_moves_tiles_and_rolls_back_on_a_failed_write(tmp_path, monkeypatch):
    path = str(tmp_path / "move.h5")
    ref = make((None, None), pure_for((3, 4), torch.float32), Win((3, 4), (2, 3)), dtype=torch.float32)
    calls = []

    def f(ctx):
        calls.append(ctx)
        return pattern(ctx, (3, 4), torch.float32).to(t.device)

    with it.HDF5TileStore(path, tile_size=8) as store:
        t = it.InfiniteTensor((None, None), f, it.TensorWindow((3, 4), (2, 3)), tile_store=store, tensor_id="m")
        assert_same(t[0:16, 0:16], ref.ref[0:16, 0:16])
        n = len(calls)
        t.to("cuda")
        assert store.cache_info()["device_bytes"] > 0
        got = t[0:16, 0:16]
        assert got.is_cuda and len(calls) == n
        assert_same(got.cpu(), ref.ref[0:16, 0:16])

        def broken(*args, **kwargs):
            raise OSError("disk full")
        monkeypatch.setattr(store, "_write_tensor_metadata", broken)
        with pytest.raises(OSError, match="disk full"):
            t.to("cpu")
        assert t.device.type == "cuda" and store.cache_info()["bytes"] == 0
        assert_same(t[0:16, 0:16].cpu(), ref.ref[0:16, 0:16])
        monkeypatch.undo()
