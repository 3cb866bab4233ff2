"""Interrupted reads leave no half-written tile behind.

An exception from f or from blend, a KeyboardInterrupt raised by f on its
N-th call, ``_thread.interrupt_main()`` from a timer thread and a signal
whose handler raises, each while a long multi-window read runs: the read
raises that exception unchanged, no tile stays pinned, and the next read
(with f and blend behaving again) equals the plain-torch reference, on the
memory and HDF5 stores (after a reopen too), batched and unbatched, with the
sum and with a custom blend, and in a pipeline whose upstream fails.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest
import torch

from _health import BOX, StoreEnv
from pairs import Win, make, pattern
from persist_util import DEMO_SHAPE, DEMO_WIN, demo_pure

LONG = (slice(-30, 60), slice(-20, 50))  # a few hundred windows of DEMO_WIN


@pytest.fixture(params=["memory", "hdf5"])
def env(request, tmp_path):
    e = StoreEnv(request.param, tmp_path)
    yield e
    e.close()


def _max(a, b):
    return torch.maximum(a, b)


class Fault:
    """Raises exc (a class or a callable making the exception) on the n-th
    call of the wrapped function while armed."""

    def __init__(self, exc, n):
        self.exc, self.n, self.calls, self.armed, self.fired = exc, n, 0, True, False

    def tick(self):
        if self.armed:
            self.calls += 1
            if self.calls == self.n:
                self.fired = True
                raise self.exc()


def _tensor(env, fault_in, fault, batch, blend, tensor_id="victim"):
    """The demo tensor with a fault in f ("f") or in blend ("blend")."""
    def pure(ctx):
        if fault_in == "f":
            fault.tick()
        return demo_pure(ctx)

    user_blend = None
    if blend == "custom":
        def user_blend(a, b):
            if fault_in == "blend":
                fault.tick()
            return _max(a, b)
    p = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id=tensor_id,
             batch_size=batch, blend=user_blend, blend_init=-1000 if blend == "custom" else None)
    if blend == "custom":
        p.ref.blend = _max
    return p


def _recovered(env, p, fault):
    """After the failed read: nothing pinned, the same tensor reads right
    (partial tiles were not kept half-combined), the store is healthy."""
    assert env.store.cache_info()["pinned"] == 0
    fault.armed = False
    p.check(LONG)
    p.check(BOX)
    env.check()


@pytest.mark.parametrize("n", [1, 7, 150])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError], ids=["KeyboardInterrupt", "RuntimeError"])
@pytest.mark.parametrize("batch", [None, 4])
@pytest.mark.parametrize("blend", ["sum", "custom"])
def test_f_fails_mid_read(env, n, exc, batch, blend):
    fault = Fault(exc, n)
    p = _tensor(env, "f", fault, batch, blend)
    with pytest.raises(exc):
        p.lib[LONG]
    assert fault.fired
    _recovered(env, p, fault)


@pytest.mark.parametrize("n", [1, 25, 200])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, ValueError], ids=["KeyboardInterrupt", "ValueError"])
@pytest.mark.parametrize("batch", [None, 4])
def test_blend_fails_mid_read(env, n, exc, batch):
    fault = Fault(exc, n)
    p = _tensor(env, "blend", fault, batch, "custom")
    with pytest.raises(exc):
        p.lib[LONG]
    assert fault.fired
    _recovered(env, p, fault)


def test_fail_then_interrupt_then_fine(env):
    """Several failed reads in a row over overlapping regions, then a good one."""
    p = _tensor(env, "f", Fault(RuntimeError, 10**9), None, "sum")
    for k, n in enumerate([5, 30, 2, 90]):
        fault = Fault(KeyboardInterrupt if k % 2 else RuntimeError, n)

        def pure(ctx, fault=fault):
            fault.tick()
            return demo_pure(ctx)
        p.lib._f = lambda ctx, pure=pure: pure(ctx)
        with pytest.raises((KeyboardInterrupt, RuntimeError)):
            p.lib[LONG]
        assert env.store.cache_info()["pinned"] == 0
    p.lib._f = demo_pure
    p.check(LONG)
    env.check()


# -------------------------------------------------- asynchronous interrupts
def _slow_tensor(env, batch, blend, started):
    """f sleeps a little per window and sets `started` on its 5th call."""
    count = [0]

    def pure(ctx):
        count[0] += 1
        if count[0] == 5:
            started.set()
        time.sleep(0.002)
        return demo_pure(ctx)

    user_blend = _max if blend == "custom" else None
    p = make(DEMO_SHAPE, pure, DEMO_WIN, store=env.store, dtype=torch.int64, tensor_id="slow",
             batch_size=batch, blend=(lambda a, b: _max(a, b)) if user_blend else None,
             blend_init=-1000 if user_blend else None)
    if user_blend:
        p.ref.blend = _max
    return p, count


def _after_async(env, p):
    assert env.store.cache_info()["pinned"] == 0
    p.check(LONG)
    p.check(BOX)
    env.check()


@pytest.mark.parametrize("batch", [None, 4])
@pytest.mark.parametrize("blend", ["sum", "custom"])
def test_interrupt_main_during_read(env, batch, blend):
    started = threading.Event()
    p, count = _slow_tensor(env, batch, blend, started)

    def interrupter():
        if started.wait(30):
            _thread.interrupt_main()

    th = threading.Thread(target=interrupter, daemon=True)
    th.start()
    with pytest.raises(KeyboardInterrupt):
        p.lib[LONG]
        time.sleep(5)  # only reached if the read ended first: the test then fails below
    th.join()
    total = len(p.ref.windows_for(LONG))
    assert 5 <= count[0] < total, "the interrupt did not land inside the read"
    _after_async(env, p)


class _Alarm(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
@pytest.mark.parametrize("signum, handler", [
    (signal.SIGINT, signal.default_int_handler),
    (signal.SIGUSR1, "raise"),
], ids=["SIGINT", "SIGUSR1-handler-raises"])
@pytest.mark.parametrize("batch", [None, 4])
def test_signal_during_read(env, signum, handler, batch):
    started = threading.Event()
    p, count = _slow_tensor(env, batch, "sum", started)
    expected = KeyboardInterrupt if handler is signal.default_int_handler else _Alarm

    def raise_alarm(sig, frame):
        raise _Alarm(f"signal {sig}")

    old = signal.signal(signum, raise_alarm if handler == "raise" else handler)
    main = threading.main_thread().ident

    def sender():
        if started.wait(30):
            signal.pthread_kill(main, signum)

    th = threading.Thread(target=sender, daemon=True)
    try:
        th.start()
        with pytest.raises(expected):
            p.lib[LONG]
            time.sleep(5)
        th.join()
    finally:
        signal.signal(signum, old)
    total = len(p.ref.windows_for(LONG))
    assert 5 <= count[0] < total, "the signal did not land inside the read"
    _after_async(env, p)


# -------------------------------------------------- pipelines
@pytest.mark.parametrize("n", [1, 60])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError], ids=["KeyboardInterrupt", "RuntimeError"])
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("blend", ["sum", "custom"])
def test_upstream_fails_mid_read(env, n, exc, batch, blend):
    fault = Fault(exc, n)
    up = _tensor(env, "f", fault, None, "sum", tensor_id="up")

    def down_pure(ctx, a):
        return a[1:5, 2:6] * 2 + pattern(ctx, (4, 4), torch.int64)

    down = make(DEMO_SHAPE, down_pure, Win((4, 4), (3, 3)), [up], [Win((6, 8), (3, 3), (-1, -2))],
                store=env.store, dtype=torch.int64, tensor_id="down", batch_size=batch,
                blend=(lambda a, b: _max(a, b)) if blend == "custom" else None,
                blend_init=-1000 if blend == "custom" else None)
    if blend == "custom":
        down.ref.blend = _max
    with pytest.raises(exc):
        down.lib[LONG]
    assert fault.fired
    assert env.store.cache_info()["pinned"] == 0
    fault.armed = False
    down.check(LONG)
    up.check(LONG)
    env.check()


# -------------------------------------------------- failures over tiles already partly computed
@pytest.fixture(params=["memory", "hdf5", "memory-evicting", "hdf5-evicting"])
def any_env(request, tmp_path):
    e = StoreEnv(request.param, tmp_path)
    yield e
    e.close()


PARTS = [(slice(-6, 10), slice(-4, 8)), (slice(20, 33), slice(30, 41))]


@pytest.mark.parametrize("n", [1, 9, 120])
@pytest.mark.parametrize("where", ["f", "blend"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError], ids=["KeyboardInterrupt", "RuntimeError"])
@pytest.mark.parametrize("batch", [None, 4])
def test_fail_over_partly_computed_tiles(any_env, n, where, exc, batch):
    """Parts of the region were read before (so its tiles are partly
    combined, and with an evicting cache written to the file or dropped):
    a read of the whole region failing midway must not leave any tile
    half-updated, in memory or in the file."""
    env = any_env
    fault = Fault(exc, n)
    p = _tensor(env, where, fault, batch, "custom" if where == "blend" else "sum")
    fault.armed = False
    for part in PARTS:
        p.check(part)
    fault.armed = True
    with pytest.raises(exc):
        p.lib[LONG]
    assert fault.fired
    _recovered(env, p, fault)
    if env.persistent:  # the file agrees after a reopen as well
        again = _tensor(env, where, fault, batch, "custom" if where == "blend" else "sum")
        again.check(LONG)
        assert again.calls == [], "windows were computed again after reopen"


# -------------------------------------------------- the device path (torch-allocated tiles), run on the CPU
@pytest.mark.parametrize("n", [1, 7, 150])
@pytest.mark.parametrize("where", ["f", "blend"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError], ids=["KeyboardInterrupt", "RuntimeError"])
@pytest.mark.parametrize("batch", [None, 4])
def test_fail_mid_read_device_path(env, n, where, exc, batch):
    """The same failures on the path CUDA tensors take (tiles allocated and
    combined by torch), exercised on the CPU."""
    from infinite_tensor import _bridge

    fault = Fault(exc, n)
    with _bridge.device_ops_on_cpu():
        p = _tensor(env, where, fault, batch, "custom" if where == "blend" else "sum")
        fault.armed = False
        p.check(PARTS[0])
        fault.armed = True
        with pytest.raises(exc):
            p.lib[LONG]
        assert fault.fired
        assert env.store.cache_info()["pinned"] == 0
        fault.armed = False
        p.check(LONG)
    env.check()
