"""One persistent world, many processes (issue 16): the process that opened
an HDF5 file for writing serves it to its workers (infinite_tensor/
tilestore/_serve.py).  Every crop is compared with a read of the same
pipeline in a memory store, and what the workers computed is read back from
the file with an f that raises, so a window that did not reach the file
fails the test."""
import multiprocessing
import os
import pickle
import signal
import struct

import pytest
import torch

import infinite_tensor as it
import loader_util as lu
from infinite_tensor.tilestore import _serve

CONTEXTS = [c for c in ("fork", "spawn", "forkserver") if c in multiprocessing.get_all_start_methods()]


def stored_pipeline(store):
    """The loader_util pipeline with an f that raises: reads must come from
    the file."""
    noise = it.InfiniteTensor((None, None), lu.raising_f, it.TensorWindow((lu.WIN, lu.WIN)), tile_store=store,
                              tensor_id="noise")
    blur = it.InfiniteTensor((None, None), lu.raising_f, it.TensorWindow((lu.WIN, lu.WIN)), args=[noise],
                             args_windows=[it.TensorWindow((lu.WIN + 2, lu.WIN + 2), stride=(lu.WIN, lu.WIN),
                                                           offset=(-1, -1))],
                             tile_store=store, tensor_id="blur")
    return noise, blur


def check_in_file(path, boxes, crops):
    with it.HDF5TileStore(path, mode="r", tile_size=lu.TILE) as store:
        _, blur = stored_pipeline(store)
        for (y, x, h, w), crop in zip(boxes, crops):
            assert torch.equal(blur[y:y + h, x:x + w], crop), (y, x, h, w)


def reference(boxes):
    _, blur = lu.pipeline()
    return [blur[y:y + h, x:x + w] for y, x, h, w in boxes]


@pytest.mark.parametrize("context", CONTEXTS)
def test_workers_fill_one_file_and_the_owner_computes_nothing(tmp_path, context):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE, cache_size_bytes=1 << 20)
    noise, blur = lu.pipeline(store, store)
    jobs = [lu.world_crops(seed, 12) for seed in range(4)]  # overlapping crops: workers race for windows
    with multiprocessing.get_context(context).Pool(2) as pool:
        results = pool.starmap(lu.read_crops, [(blur, boxes) for boxes in jobs])
    boxes = [b for job in jobs for b in job]
    crops = [c for r in results for c in r]
    for box, crop, want in zip(boxes, crops, reference(boxes)):
        assert torch.equal(crop, want), box  # a window added twice would double its sum
    assert noise.stats()["windows"] == blur.stats()["windows"] == 0  # the owner computed nothing
    for y, x, h, w in boxes:
        assert blur._node.missing_windows((slice(y, y + h), slice(x, x + w))) == []
    store.close()
    check_in_file(path, boxes, crops)


@pytest.mark.parametrize("context", CONTEXTS)
def test_dataloader_workers_write_one_world(tmp_path, context):
    path = str(tmp_path / "world.h5")
    with it.HDF5TileStore(path, mode="w", tile_size=lu.TILE) as store:
        _, blur = lu.pipeline(store, store)
        data = lu.PickledTensorCrops(blur, n=24, seed=5, span=200)
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2,
                                             multiprocessing_context=context, persistent_workers=True)
        first = list(loader)
        second = list(loader)  # persistent workers: now every crop is read from the owner, computing nothing
        boxes = [lu.crop_box(5, i, 200, 64) for i in range(24)]
        for box, a, b, want in zip(boxes, first, second, reference(boxes)):
            assert torch.equal(a, want) and torch.equal(b, want), box
        assert blur.stats()["windows"] == 0
        del loader
    check_in_file(path, boxes, first)


def test_a_worker_sees_what_the_owner_and_other_workers_added(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    _, blur = lu.pipeline(store, store)
    boxes = lu.world_crops(1, 6)
    want = reference(boxes)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        first = pool.apply(lu.read_crops, (blur, boxes))
    with ctx.Pool(1) as pool:
        # a new process: the windows the first one computed are the owner's now
        again = pool.apply(lu.read_crops, (blur, boxes))
    assert all(torch.equal(a, w) and torch.equal(b, w) for a, b, w in zip(first, again, want))
    assert blur.stats()["windows"] == 0
    store.close()


def test_a_tensor_built_in_a_worker_reaches_the_file(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    boxes = lu.world_crops(2, 4)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(lu.build_and_read, (store, boxes))
    assert "built-in-worker" in store.tensor_ids()
    store.close()
    with it.HDF5TileStore(path, mode="r", tile_size=lu.TILE) as back:
        t = it.InfiniteTensor((None, None), lu.raising_f, it.TensorWindow((lu.WIN, lu.WIN)), tile_store=back,
                              tensor_id="built-in-worker")
        for (y, x, h, w), crop in zip(boxes, got):
            assert torch.equal(t[y:y + h, x:x + w], crop)
            ref = it.InfiniteTensor((None, None), lu.noise_f, it.TensorWindow((lu.WIN, lu.WIN)))
            assert torch.equal(crop, ref[y:y + h, x:x + w])


def _fork(child):
    """Run child() in a forked process; its exit status (0: it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if child() else 3
        except BaseException:  # noqa: BLE001
            import traceback
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_never_writes_its_parents_handle(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    _, blur = lu.pipeline(store, store)
    want = blur[0:100, 0:100]
    store.flush()

    def child():
        # the parent's C handle, used directly: the journaling driver refuses
        _, other = lu.pipeline()
        other[200:300, 200:300]
        with pytest.raises(it.TileAccessError, match="fork"):
            store._file.flush()
        try:
            store._file.close()  # releases nothing of the parent's: its lock and journal stay
        except it.TileAccessError as e:
            assert "failed" in str(e)  # the refused flush
        return True

    assert _fork(child) == 0
    assert torch.equal(blur[0:100, 0:100], want)
    blur[100:200, 0:100]  # the parent goes on writing
    store.close()
    check_in_file(path, [(0, 0, 200, 100)], [torch.cat([want, lu.pipeline()[1][100:200, 0:100]])])


def test_a_forked_child_reads_through_its_parent_and_may_flush_or_close(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    _, blur = lu.pipeline(store, store)

    def child():
        got = blur[0:64, 0:64]
        assert "served by process" in repr(store)
        assert store.tensor_ids() == ["blur", "noise"]
        assert store.is_window_processed("blur", (0, 0))
        store.flush()  # the parent flushes
        store.close()  # only this process's copy
        with pytest.raises(it.TileAccessError, match="held by process"):
            with store:
                store.clear_tensor("blur")
        return torch.equal(got, lu.pipeline()[1][0:64, 0:64])

    assert _fork(child) == 0
    assert blur._node.ndirty == 0 and blur.stats()["windows"] == 0
    assert torch.equal(blur[0:64, 0:64], lu.pipeline()[1][0:64, 0:64])
    store.close()


def test_an_f_the_owner_cannot_unpickle_is_named(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    lu.pipeline(store, store)

    def child():
        local = it.InfiniteTensor((None, None), lambda ctx: torch.zeros(lu.WIN, lu.WIN),
                                  it.TensorWindow((lu.WIN, lu.WIN)), tile_store=store, tensor_id="lambda")
        with pytest.raises(it.TileAccessError, match="module-level f"):
            local[0:8, 0:8]
        return True

    assert _fork(child) == 0
    assert "lambda" not in store.tensor_ids()
    store.close()


def test_a_killed_worker_loses_only_its_own_windows(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE, cache_size_bytes=256 << 10)
    _, blur = lu.pipeline(store, store)
    ctx = multiprocessing.get_context("fork")
    progress = ctx.Queue()
    doomed = ctx.Process(target=lu.read_until_killed, args=(blur, progress), daemon=True)
    doomed.start()
    while progress.get(timeout=60) < 5:
        pass
    # one more worker, killed in the middle of a message: the owner holds its
    # half request and must drop it
    server = _serve.serve()

    def half_message():
        conn = _serve.connect(server.address, server.authkey, server.pid)
        body = pickle.dumps(("put", path, [("blur", (0, 0), torch.full((lu.WIN, lu.WIN), 1e9))], None, None))
        conn.conn._send(struct.pack("!i", len(body)) + body[: len(body) // 2])  # as send_bytes frames it
        os.kill(os.getpid(), signal.SIGKILL)

    assert _fork(half_message) == -signal.SIGKILL
    boxes = [b for seed in range(3) for b in lu.world_crops(seed, 8)]
    with ctx.Pool(2) as pool:
        os.kill(doomed.pid, signal.SIGKILL)  # while the others start reading
        results = pool.starmap(lu.read_crops, [(blur, boxes[i::2]) for i in range(2)])
    doomed.join()
    crops = [None] * len(boxes)
    crops[0::2], crops[1::2] = results
    assert all(torch.equal(c, w) for c, w in zip(crops, reference(boxes)))
    # the half message added nothing: window (0, 0) has its own values
    assert torch.equal(blur[0:lu.WIN, 0:lu.WIN], reference([(0, 0, lu.WIN, lu.WIN)])[0])
    store.close()
    check_in_file(path, boxes, crops)


def test_a_worker_of_a_closed_file_opens_it_itself(tmp_path):
    path = str(tmp_path / "world.h5")
    store = it.HDF5TileStore(path, mode="w", tile_size=lu.TILE)
    _, blur = lu.pipeline(store, store)
    blob = pickle.dumps(blur)
    store.close()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got, calls = pool.apply(lu.read_pickled, (blob, ((0, 40), (0, 40))))
    assert torch.equal(got, reference([(0, 0, 40, 40)])[0])
    check_in_file(path, [(0, 0, 40, 40)], [got])


def test_windows_computed_before_f_fails_reach_the_owner(tmp_path):
    store = it.HDF5TileStore(str(tmp_path / "world.h5"), mode="w", tile_size=lu.TILE)
    t = lu.noise_tensor(store, lu.noise_failing_at_1_1)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(lu.read_noise, (store, ((0, 64), (0, 64)), "noise_failing_at_1_1"))
    assert "no window (1, 1) today" in got
    assert [t._node.window_done(w) for w in [(0, 0), (0, 1), (1, 0), (1, 1)]] == [True, True, True, False]
    store.close()


def test_windows_the_owner_lost_are_computed_again(tmp_path):
    store = it.HDF5TileStore(str(tmp_path / "world.h5"), mode="w", tile_size=lu.TILE)
    lu.noise_tensor(store)
    want = lu.noise_tensor(None)[0:64, 0:64]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert torch.equal(pool.apply(lu.read_noise, (store, ((0, 64), (0, 64)))), want)
        store.clear_tensor("n")  # the owner forgets them; the worker's copy still holds them
        again = lu.noise_tensor(store)
        assert torch.equal(pool.apply(lu.read_noise, (store, ((0, 64), (0, 64)))), want)
    assert again._node.missing_windows((slice(0, 64), slice(0, 64))) == [] and again.stats()["windows"] == 0
    store.close()


def test_a_fork_of_a_spawned_worker_is_served_too(tmp_path):
    store = it.HDF5TileStore(str(tmp_path / "world.h5"), mode="w", tile_size=lu.TILE)
    _, blur = lu.pipeline(store, store)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(lu.read_in_a_fork, (blur, ((0, 70), (10, 90))))
    assert torch.equal(got, reference([(0, 10, 70, 80)])[0])
    assert blur._node.missing_windows((slice(0, 70), slice(10, 90))) == [] and blur.stats()["windows"] == 0
    store.close()
