"""Eight threads reading one pipeline: the single-threaded values, each
window computed once while it stays cached, and no deadlock.

f sleeps briefly and calls torch ops, both of which release the GIL, so the
threads really interleave inside reads: a thread's plan can meet windows
another thread is computing right now.  It must wait for them (not compute
them again) and must not wait for windows nobody will compute.

Window values are small integers, so float sums are exact whatever order the
windows were added in, and every read can be compared with torch.equal
against one thread's answer (itself checked against plain torch).
"""
import random
import threading
import time
from collections import Counter

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import TensorWindow

THREADS = 8
JOIN_SECONDS = 120  # a deadlock shows as a thread still alive after this


class Ledger:
    """Counts f's calls per (tensor, window) and flags a window computed by
    two threads at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()
        self.running = Counter()
        self.overlaps = []

    def enter(self, name, ctx):
        key = (name, tuple(ctx))
        with self.lock:
            self.calls[key] += 1
            self.running[key] += 1
            if self.running[key] > 1:
                self.overlaps.append(key)

    def leave(self, name, ctx):
        with self.lock:
            self.running[(name, tuple(ctx))] -= 1

    def computed_twice(self):
        return sorted(k for k, n in self.calls.items() if n > 1)


def noise_window(ctx):
    g = torch.Generator().manual_seed((ctx[0] * 7919 + ctx[1] * 104729) & 0x7FFFFFFF)
    return torch.randint(-4, 5, (16, 16), generator=g).to(torch.float64)


def build(store, ledger, custom_blend=False, batch=None):
    """noise (16x16 windows, stride 8) -> smooth (3x3 box sum) -> edge
    (a custom blend or a max), all in one store."""

    def noise(ctx):
        ledger.enter("noise", ctx)
        try:
            time.sleep(0.0002)
            x = noise_window(ctx)
            return (x @ torch.eye(16, dtype=torch.float64))  # a GIL-releasing op
        finally:
            ledger.leave("noise", ctx)

    def smooth(ctx, x):
        ledger.enter("smooth", ctx)
        try:
            time.sleep(0.0002)
            out = torch.zeros(16, 16, dtype=torch.float64)
            for dy in range(3):
                for dx in range(3):
                    out += x[dy:dy + 16, dx:dx + 16]
            return out
        finally:
            ledger.leave("smooth", ctx)

    def edge_one(ctx, x):
        ledger.enter("edge", ctx)
        try:
            time.sleep(0.0002)
            return x[:12, :12] - x[4:, 4:]
        finally:
            ledger.leave("edge", ctx)

    def edge(ctx, x):
        if batch:
            return [edge_one(c, a) for c, a in zip(ctx, x)]
        return edge_one(ctx, x)

    def blend(a, b):
        time.sleep(0.0001)
        return a * 2 + b

    w = TensorWindow((16, 16), stride=(8, 8))
    a = it.InfiniteTensor((None, None), noise, w, dtype=torch.float64, tile_store=store, tensor_id="noise")
    b = it.InfiniteTensor((None, None), smooth, TensorWindow((16, 16)), args=(a,),
                          args_windows=(TensorWindow((18, 18), stride=(16, 16), offset=(-1, -1)),),
                          dtype=torch.float64, tile_store=store, tensor_id="smooth")
    c = it.InfiniteTensor((None, None), edge, TensorWindow((12, 12), stride=(6, 6)), args=(b,),
                          args_windows=(TensorWindow((16, 16), stride=(6, 6)),),
                          dtype=torch.float64, tile_store=store, tensor_id="edge", batch_size=batch,
                          blend=blend if custom_blend else torch.maximum)
    return c


def reference_edge(y0, y1, x0, x1, custom_blend):
    """edge over [y0, y1) x [x0, x1) with plain torch."""
    pad = 64
    ny, nx = y1 - y0 + 2 * pad, x1 - x0 + 2 * pad
    oy, ox = y0 - pad, x0 - pad
    noise = torch.zeros(ny, nx, dtype=torch.float64)
    for i in range((oy - 16) // 8, (oy + ny) // 8 + 2):
        for j in range((ox - 16) // 8, (ox + nx) // 8 + 2):
            y, x = i * 8 - oy, j * 8 - ox
            ys, xs, ye, xe = max(y, 0), max(x, 0), min(y + 16, ny), min(x + 16, nx)
            if ys < ye and xs < xe:
                noise[ys:ye, xs:xe] += noise_window((i, j))[ys - y:ye - y, xs - x:xe - x]
    smooth = torch.zeros(ny, nx, dtype=torch.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            smooth[1:-1, 1:-1] += noise[1 + dy:ny - 1 + dy, 1 + dx:nx - 1 + dx]
    edge = torch.zeros(ny, nx, dtype=torch.float64)  # blend_init: 0 for either blend
    for i in range((oy - 12) // 6 + 1, (oy + ny) // 6 + 1):
        for j in range((ox - 12) // 6 + 1, (ox + nx) // 6 + 1):
            y, x = i * 6 - oy, j * 6 - ox
            if y < 8 or x < 8 or y + 16 > ny - 8 or x + 16 > nx - 8:
                continue  # windows near the border of the padded box: unneeded
            win = smooth[y:y + 16, x:x + 16]
            v = win[:12, :12] - win[4:, 4:]
            region = edge[y:y + 12, x:x + 12]
            edge[y:y + 12, x:x + 12] = region * 2 + v if custom_blend else torch.maximum(region, v)
    return edge[pad:pad + y1 - y0, pad:pad + x1 - x0]


def random_boxes(seed, n):
    rnd = random.Random(seed)
    boxes = []
    for _ in range(n):
        y, x = rnd.randrange(-60, 60), rnd.randrange(-60, 60)
        boxes.append((y, y + rnd.randrange(1, 40), x, x + rnd.randrange(1, 40)))
    return boxes


def run_threads(target, n=THREADS):
    errors = []

    def wrapped(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=wrapped, args=(k,), daemon=True) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(JOIN_SECONDS)
    assert not any(th.is_alive() for th in threads), "deadlock: a reading thread never finished"
    assert errors == []


def store_for(kind, tmp_path, limit):
    if kind == "memory":
        return it.MemoryTileStore(cache_size_bytes=limit)
    return it.HDF5TileStore(str(tmp_path / "c.h5"), mode="w", tile_size=16, cache_size_bytes=limit)


def check_store(store):
    cache = store._cache
    cache.check()
    assert store.cache_info()["pinned"] == 0


@pytest.mark.parametrize("custom_blend", [False, True], ids=["max", "custom"])
@pytest.mark.parametrize("kind,limit", [("memory", None), ("memory", 60_000), ("hdf5", None), ("hdf5", 60_000)],
                         ids=["memory", "memory-evicting", "hdf5", "hdf5-evicting"])
def test_eight_threads_get_the_single_threaded_values(kind, limit, custom_blend, tmp_path):
    boxes = random_boxes(7, 48)
    serial = build(it.MemoryTileStore(), Ledger(), custom_blend)
    expected = {b: serial[b[0]:b[1], b[2]:b[3]] for b in boxes}
    y0, y1, x0, x1 = boxes[0]
    assert torch.equal(expected[boxes[0]], reference_edge(y0, y1, x0, x1, custom_blend))

    ledger = Ledger()
    store = store_for(kind, tmp_path, limit)
    shared = build(store, ledger, custom_blend)
    wrong = []

    def reader(k):
        mine = boxes[k::2] + boxes[::-1][k::3]  # overlapping sets, different orders
        for b in mine:
            got = shared[b[0]:b[1], b[2]:b[3]]
            if not torch.equal(got, expected[b]):
                wrong.append(b)

    run_threads(reader)
    assert wrong == []
    assert ledger.overlaps == []  # never two threads on one window at once
    if limit is None or (kind == "hdf5" and not custom_blend):
        # nothing computed was ever lost (unbounded, or saved to the file on
        # eviction): every window was computed exactly once.  (A custom
        # blend's parts waiting for a neighbouring tile live in memory only,
        # so under eviction one thread alone recomputes windows too.)
        assert ledger.computed_twice() == []
    check_store(store)
    if kind == "hdf5":
        store.close()


def test_each_window_once_with_a_batched_f():
    ledger = Ledger()
    t = build(it.MemoryTileStore(), ledger, batch=5)
    serial = build(it.MemoryTileStore(), Ledger())
    boxes = random_boxes(11, 40)

    def reader(k):
        for b in boxes[k::3]:
            assert torch.equal(t[b[0]:b[1], b[2]:b[3]], serial[b[0]:b[1], b[2]:b[3]])

    run_threads(reader)
    assert ledger.overlaps == [] and ledger.computed_twice() == []


def test_all_threads_reading_the_same_region_compute_it_once():
    ledger = Ledger()
    t = build(it.MemoryTileStore(), ledger)
    results = [None] * THREADS
    start = threading.Barrier(THREADS)

    def reader(k):
        start.wait()
        results[k] = t[-20:40, -30:30]

    run_threads(reader)
    assert all(torch.equal(r, results[0]) for r in results)
    assert torch.equal(results[0], reference_edge(-20, 40, -30, 30, False))
    assert ledger.computed_twice() == []
    assert sum(1 for k in ledger.calls if k[0] == "edge") > 0


def test_f_reading_other_infinite_tensors_inside_f_does_not_deadlock():
    """f of `top` reads `mid` and `base` itself (not through args), from eight
    threads at once: nested reads wait for windows other threads compute,
    and nobody waits for a window that the waiter itself must compute."""
    ledger = Ledger()

    def fbase(ctx):
        ledger.enter("base", ctx)
        try:
            time.sleep(0.0005)
            return torch.full((8, 8), float(ctx[0] * 3 + ctx[1]))
        finally:
            ledger.leave("base", ctx)

    base = it.InfiniteTensor((None, None), fbase, TensorWindow((8, 8), stride=(4, 4)))

    def fmid(ctx):
        ledger.enter("mid", ctx)
        try:
            y, x = ctx[0] * 8, ctx[1] * 8
            return base[y - 2:y + 6, x - 2:x + 6] * 2
        finally:
            ledger.leave("mid", ctx)

    mid = it.InfiniteTensor((None, None), fmid, TensorWindow((8, 8)))

    def ftop(ctx):
        y, x = ctx[0] * 8, ctx[1] * 8
        return mid[y:y + 8, x + 4:x + 12] - base[y + 1:y + 9, x:x + 8]

    top = it.InfiniteTensor((None, None), ftop, TensorWindow((8, 8)))
    boxes = random_boxes(5, 32)
    serial_base = it.InfiniteTensor((None, None), lambda c: torch.full((8, 8), float(c[0] * 3 + c[1])),
                                    TensorWindow((8, 8), stride=(4, 4)))
    serial_mid = it.InfiniteTensor((None, None),
                                   lambda c: serial_base[c[0] * 8 - 2:c[0] * 8 + 6, c[1] * 8 - 2:c[1] * 8 + 6] * 2,
                                   TensorWindow((8, 8)))
    serial_top = it.InfiniteTensor(
        (None, None),
        lambda c: serial_mid[c[0] * 8:c[0] * 8 + 8, c[1] * 8 + 4:c[1] * 8 + 12]
        - serial_base[c[0] * 8 + 1:c[0] * 8 + 9, c[1] * 8:c[1] * 8 + 8],
        TensorWindow((8, 8)))

    def reader(k):
        for b in boxes[k::2]:
            assert torch.equal(top[b[0]:b[1], b[2]:b[3]], serial_top[b[0]:b[1], b[2]:b[3]])

    run_threads(reader)
    assert ledger.overlaps == [] and ledger.computed_twice() == []


def test_a_failing_f_hands_its_windows_to_the_waiting_threads():
    """The thread computing a window fails; threads waiting for that window
    compute it themselves (the claim is released), and all end with the
    right values or the error, never a hang."""
    fail_once = {(0, 0)}
    lock = threading.Lock()

    def f(ctx):
        time.sleep(0.002)
        with lock:
            if tuple(ctx) in fail_once:
                fail_once.discard(tuple(ctx))
                raise RuntimeError("transient")
        return torch.full((8, 8), float(ctx[0] - ctx[1]))

    t = it.InfiniteTensor((None, None), f, TensorWindow((8, 8), stride=(4, 4)))
    outcomes = []

    def reader(k):
        try:
            outcomes.append(t[-8:8, -8:8].clone())
        except RuntimeError as e:
            assert "transient" in str(e)
            outcomes.append("error")

    run_threads(reader)
    assert outcomes.count("error") <= 1
    expected = it.InfiniteTensor((None, None), lambda c: torch.full((8, 8), float(c[0] - c[1])),
                                 TensorWindow((8, 8), stride=(4, 4)))[-8:8, -8:8]
    assert all(torch.equal(o, expected) for o in outcomes if not isinstance(o, str))
    assert torch.equal(t[-8:8, -8:8], expected)


def test_a_cycle_through_another_thread_is_still_an_error_not_a_hang():
    """f of a tensor reading that same tensor is a cycle whichever thread
    runs it (the claim of its own windows is found, not waited for)."""
    holder = {}

    def f(ctx):
        return holder["t"][0:4] + 1

    holder["t"] = it.InfiniteTensor((None,), f, TensorWindow((4,)))
    seen = []

    def reader(k):
        try:
            holder["t"][0:4]
        except it.InfiniteTensorError as e:
            seen.append(str(e))

    run_threads(reader, 4)
    assert len(seen) == 4 and all("cycle" in s for s in seen)


def _child_reads(t, q):
    q.put(t[0:16, 0:16].tolist())  # a list: a tensor would travel as a shared fd


def test_a_forked_child_does_not_wait_for_windows_a_parent_thread_was_computing():
    """A DataLoader worker forks while another thread of the parent is inside
    f: the claims of that thread (which the child does not have) must not
    make the child wait forever; the child computes the windows itself."""
    import multiprocessing

    entered, release = threading.Event(), threading.Event()

    def f(ctx):
        if threading.current_thread() is not threading.main_thread() and not release.is_set():
            entered.set()
            release.wait(60)
        return torch.full((8, 8), float(ctx[0] * 10 + ctx[1]))

    t = it.InfiniteTensor((None, None), f, TensorWindow((8, 8), stride=(4, 4)))
    th = threading.Thread(target=lambda: t[0:16, 0:16], daemon=True)
    th.start()
    assert entered.wait(30)
    try:
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_child_reads, args=(t, q))
        p.start()
        got = torch.tensor(q.get(timeout=60))
        p.join(30)
        assert p.exitcode == 0
    finally:
        release.set()
        th.join(30)
    ref = it.InfiniteTensor((None, None), lambda c: torch.full((8, 8), float(c[0] * 10 + c[1])),
                            TensorWindow((8, 8), stride=(4, 4)))[0:16, 0:16]
    assert torch.equal(got, ref)
    assert torch.equal(t[0:16, 0:16], ref)


def test_two_tensors_whose_f_read_each_other_fail_in_every_thread_not_hang():
    """x's f reads y and y's f reads x (not through args): a cycle, an error
    in one thread.  Two threads, each inside one side, would each wait for
    the other's windows; the second to wait finds the cycle and reports it,
    which frees the first.  Both end with the cycle error."""
    inside = threading.Barrier(2, timeout=30)
    holder = {}

    def fx(ctx):
        if threading.current_thread().name == "x-reader":
            inside.wait()  # both threads hold claims on their own windows now
        return holder["y"][0:4] + 1

    def fy(ctx):
        if threading.current_thread().name == "y-reader":
            inside.wait()
        return holder["x"][0:4] * 2

    holder["x"] = it.InfiniteTensor((None,), fx, TensorWindow((4,)))
    holder["y"] = it.InfiniteTensor((None,), fy, TensorWindow((4,)))
    with pytest.raises(it.InfiniteTensorError, match="cycle"):
        holder["x"][0:4]  # one thread: the usual error
    errors = {}

    def read(name):
        try:
            holder[name[0]][0:4]
            errors[name] = None
        except it.InfiniteTensorError as e:
            errors[name] = str(e)

    threads = [threading.Thread(target=read, args=(n,), name=n, daemon=True) for n in ("x-reader", "y-reader")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(JOIN_SECONDS)
    assert not any(th.is_alive() for th in threads), "deadlock: two threads wait for each other"
    assert set(errors) == {"x-reader", "y-reader"}
    assert all(e is not None and "cycle" in e for e in errors.values()), errors
