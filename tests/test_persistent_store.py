"""PersistentTileStore subclassed in Python with the seven storage primitives
(spec §5.2), here over a plain dict that outlives the store object: values
equal the plain-torch reference, a new store over the same dict serves what
was flushed without calling f, tiles handed to _write_tile have the documented
form, crash snapshots taken after any tile write recover exactly, and the 0.2
shims behave.
"""

import collections
import copy
import random

import pytest
import torch

import infinite_tensor as it
from persist_util import (
    DEMO_SHAPE,
    DEMO_WIN,
    Win,
    as_slices,
    assert_same,
    check_tile_values,
    demo_pair,
    duplicates,
    intersect,
    make,
    pattern,
    tile_box,
    tile_shape,
    tiles_meeting,
    windows_in,
)

from infinite_tensor.tilestore.persistent import PersistentTileStore  # noqa: E402  (seed README's path)


class DictStore(PersistentTileStore):
    """Every piece of persisted state lives in `backend`, a plain dict:
    backend[id] = {"metadata", "tile_size", "processed": set, "tiles": {tile_index: (tensor, set)}}."""

    def __init__(self, backend, **kw):
        self.backend = backend
        self.writes = []  # what _write_tile received, described
        self.tile_reads = 0
        self.snapshots = None  # a list: deep copies of backend after every tile write
        self.hooks = collections.Counter()
        super().__init__(**kw)

    def _read_tensor_metadata(self, tensor_id):
        e = self.backend.get(tensor_id)
        if e is None or "metadata" not in e:
            return None
        return {"metadata": copy.deepcopy(e["metadata"]), "tile_size": tuple(e["tile_size"])}

    def _write_tensor_metadata(self, tensor_id, metadata, tile_size):
        e = self.backend.setdefault(tensor_id, {"processed": set(), "tiles": {}})
        e["metadata"] = copy.deepcopy(metadata)
        e["tile_size"] = tuple(int(t) for t in tile_size)

    def _delete_tensor_state(self, tensor_id):
        self.backend.pop(tensor_id, None)

    def _read_processed_windows(self, tensor_id):
        e = self.backend.get(tensor_id)
        return set() if e is None else set(e["processed"])

    def _append_processed_window(self, tensor_id, window_index):
        self.backend[tensor_id]["processed"].add(tuple(window_index))

    def _read_tile(self, tensor_id, tile_index):
        self.tile_reads += 1
        e = self.backend.get(tensor_id)
        if e is None or tuple(tile_index) not in e["tiles"]:
            return None
        tile, contributions = e["tiles"][tuple(tile_index)]
        return tile.clone(), set(contributions)

    def _write_tile(self, tensor_id, tile_index, tile, contributions):
        self.writes.append(dict(
            id=tensor_id, index=tile_index, is_tensor=isinstance(tile, torch.Tensor),
            device=getattr(tile, "device", None), shape=tuple(getattr(tile, "shape", ())),
            dtype=getattr(tile, "dtype", None), contrib_type=type(contributions),
            contributions=frozenset(contributions)))
        self.backend[tensor_id]["tiles"][tuple(tile_index)] = (tile.detach().clone(), set(contributions))
        if self.snapshots is not None:
            self.snapshots.append(copy.deepcopy(self.backend))

    def _flush_backend(self):
        self.hooks["flush"] += 1

    def _close_backend(self):
        self.hooks["close"] += 1


def test_exports():
    from infinite_tensor.tilestore import TileStore

    assert issubclass(PersistentTileStore, TileStore)
    assert issubclass(it.HDF5TileStore, PersistentTileStore)
    assert "HDF5TileStore" in it.__all__


def test_a_subclass_missing_a_primitive_cannot_be_instantiated():
    class Partial(PersistentTileStore):
        _read_tensor_metadata = DictStore._read_tensor_metadata
        _write_tensor_metadata = DictStore._write_tensor_metadata
        _delete_tensor_state = DictStore._delete_tensor_state
        _read_processed_windows = DictStore._read_processed_windows
        _append_processed_window = DictStore._append_processed_window
        _read_tile = DictStore._read_tile

    with pytest.raises(TypeError):
        Partial()


def _pure_for(size, dtype):
    def pure(ctx):
        return pattern(ctx, size, dtype)

    return pure


CASES = {
    "2d-int64": (DEMO_SHAPE, DEMO_WIN, torch.int64, 8, [[(-5, 17), (3, 30)]], [[(-20, 30), (-10, 40)]]),
    "3d-finite-tuple": ((2, None, None), Win((2, 3, 5), (2, 2, 5), (0, 1, -3)), torch.float64, (4, 16),
                        [[(0, 2), (-9, 12), (-4, 30)]], [[(0, 2), (-12, 14), (-4, 35)]]),
    "1d-float32": ((None,), Win((5,), (3,), (2,)), torch.float32, 5, [[(-11, 23)]], [[(-30, 40)]]),
    "no-infinite-dim": ((4, 6), Win((2, 3), (1, 3), (0, 0)), torch.int64, 8, [[(1, 3), (0, 6)]],
                        [[(0, 4), (0, 6)]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dict_backend_values_tiles_and_reopen(name):
    shape, win, dtype, ts, first, second = CASES[name]
    pure = _pure_for(win.size, dtype)
    backend = {}
    store = DictStore(backend, tile_size=ts)
    p = make(shape, pure, win, store=store, dtype=dtype, tensor_id="t")
    for box in first:
        p.check(as_slices(box))
    computed = set(p.calls)
    assert not duplicates(p.calls)
    assert computed == set().union(*(windows_in(win, b, shape) for b in first))
    store.flush()
    assert store.hooks["flush"] >= 1

    # what _write_tile received
    assert store.writes, "flush wrote no tile"
    n_inf = sum(e is None for e in shape)
    for w in store.writes:
        assert w["id"] == "t"
        assert w["is_tensor"] and w["device"] == torch.device("cpu")
        assert w["shape"] == tile_shape(shape, ts), w
        assert w["dtype"] == dtype
        assert issubclass(w["contrib_type"], (set, frozenset)), w["contrib_type"]
        assert all(isinstance(c, tuple) and len(c) == len(shape) and all(isinstance(v, int) for v in c)
                   for c in w["contributions"])
        assert len(tuple(w["index"])) == n_inf
    # the persisted state: each stored tile carries exactly the computed windows meeting it,
    # and its values are the reference wherever every window was computed
    e = backend["t"]
    needed = set().union(*(tiles_meeting(shape, ts, b) for b in first)) if n_inf else {()}
    assert needed <= set(e["tiles"])
    for k, (tile, contributions) in e["tiles"].items():
        tb = tile_box(shape, ts, k)
        assert contributions == {c for c in computed if intersect(win.bounds(c), tb)}, k
        for box in first:
            check_tile_values(tile, tb, p.ref, box)
    # (0.3's per-window record is optional: the engine keeps contributions per tile)
    assert e["processed"] <= computed
    assert e["tile_size"] == (tuple(ts) if not isinstance(ts, int) else (ts,) * n_inf)
    assert e["metadata"] == p.lib.to_json()

    # a new store object over the same dict: a reopen
    store2 = DictStore(backend, tile_size=ts)
    q = make(shape, pure, win, store=store2, dtype=dtype, tensor_id="t")
    for box in first:
        q.check(as_slices(box))
    assert q.calls == []
    for box in second:
        q.check(as_slices(box))
    assert set(q.calls) == set().union(*(windows_in(win, b, shape) for b in second)) - computed
    assert not duplicates(q.calls)
    store2.close()
    assert store2.hooks["close"] == 1


def test_crash_after_any_tile_write_recovers_exactly():
    """Snapshots of the backend taken right after each _write_tile are what a
    crash at that moment leaves behind.  Reopening any of them must give the
    reference values: windows lost are recomputed, never counted twice."""
    win = Win((5, 5), (3, 3), (-2, 1))
    pure = _pure_for(win.size, torch.int64)
    backend = {}
    store = DictStore(backend, tile_size=4, cache_size_tiles=2)
    store.snapshots = []
    p = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.int64, tensor_id="c")
    rng = random.Random(5)
    boxes = []
    for i in range(10):
        y, x = rng.randint(-15, 10), rng.randint(-15, 10)
        boxes.append([(y, y + rng.randint(2, 9)), (x, x + rng.randint(2, 9))])
        p.check(as_slices(boxes[-1]))
        if i % 4 == 3:
            store.flush()
    store.close()
    snaps = store.snapshots
    assert len(snaps) > 10
    whole = [(-20, 22), (-20, 22)]
    picks = sorted(set(rng.sample(range(len(snaps)), min(12, len(snaps))) + [0, len(snaps) - 1]))
    for k in picks:
        snap = copy.deepcopy(snaps[k])
        e = snap["c"]
        # a window recorded in every tile it meets is complete: it must not be computed again
        durable = set()
        for w in set().union(*(c for _, c in e["tiles"].values())):
            if all(t in e["tiles"] and w in e["tiles"][t][1]
                   for t in tiles_meeting(DEMO_SHAPE, 4, win.bounds(w))):
                durable.add(w)
        # 0.3's per-window record, if the engine keeps it, lists only complete windows
        assert e["processed"] <= durable, k
        s2 = DictStore(snap, tile_size=4, cache_size_tiles=3)
        q = make(DEMO_SHAPE, pure, win, store=s2, dtype=torch.int64, tensor_id="c")
        try:
            q.check(as_slices(whole))
        except AssertionError as err:
            raise AssertionError(f"snapshot {k} of {len(snaps)}: {err}") from None
        assert not duplicates(q.calls), k
        assert not (set(q.calls) & durable), k


def test_tile_cache_size_is_deprecated_and_acts_as_cache_size_tiles():
    box = [(0, 16), (0, 16)]  # 16 tiles of 4 x 4
    ntiles = len(tiles_meeting(DEMO_SHAPE, 4, box))

    def writes_before_flush(**kw):
        store = DictStore({}, tile_size=4, **kw)
        p = demo_pair(store)
        p.check(as_slices(box))
        n = len(store.writes)
        store.close()
        return n

    with pytest.warns(DeprecationWarning, match="tile_cache_size"):
        store = DictStore({}, tile_size=4, tile_cache_size=1)
    p = demo_pair(store)
    p.check(as_slices(box))
    shim = len(store.writes)
    store.close()
    assert shim >= ntiles - 1
    assert shim == writes_before_flush(cache_size_tiles=1)
    assert writes_before_flush() == 0  # write-back: nothing written before flush when it all fits


def test_unexpected_keyword_arguments():
    with pytest.raises(TypeError, match="Unexpected keyword arguments"):
        DictStore({}, tile_size=4, cache_method="direct")


def test_get_or_create_tile_size_sets_the_store_tile_size():
    store = DictStore({}, tile_size=64)
    with pytest.warns(DeprecationWarning):
        t = store.get_or_create("g", (None, None), lambda c: pattern(c, (4, 4), torch.float32),
                                it.TensorWindow((4, 4)), tile_size=8)
    assert store.tile_size == 8
    ref = make(DEMO_SHAPE, lambda c: pattern(c, (4, 4), torch.float32), Win((4, 4))).ref
    assert_same(t[-5:11, 2:9], ref[-5:11, 2:9])
    store.flush()
    assert store.writes and all(w["shape"] == (8, 8) for w in store.writes)
    assert store.backend["g"]["tile_size"] == (8, 8)


def test_reopen_with_another_dtype_or_tile_size_is_refused():
    backend = {}
    with DictStore(backend, tile_size=8) as store:
        demo_pair(store).check((slice(0, 9), slice(0, 9)))
    with pytest.raises(it.ValidationError, match="dtype"):
        it.InfiniteTensor(DEMO_SHAPE, lambda c: torch.zeros(6, 6), DEMO_WIN.lib(),
                          tile_store=DictStore(backend, tile_size=8), tensor_id="demo")
    with pytest.raises(it.ValidationError, match="tile_size"):
        demo_pair(DictStore(backend, tile_size=16))
    q = demo_pair(DictStore(backend, tile_size=8))
    q.check((slice(0, 9), slice(0, 9)))
    assert q.calls == []


def test_clear_cache_keeps_the_backend_and_clear_tensor_deletes_it():
    backend = {}
    store = DictStore(backend, tile_size=8)
    p = demo_pair(store)
    p.check((slice(-4, 20), slice(0, 9)))
    n = len(p.calls)
    p.lib.clear_cache()
    reads = store.tile_reads
    p.check((slice(-4, 20), slice(0, 9)))
    assert len(p.calls) == n
    assert store.tile_reads > reads  # the tiles came back from the backend
    store.clear_tensor("demo")
    assert "demo" not in backend
    with pytest.raises(it.TileAccessError):
        p.lib[0:4, 0:4]
    q = demo_pair(store)
    q.check((slice(-4, 20), slice(0, 9)))
    assert len(q.calls) == n
    store.close()


def test_dtype_change_is_refused_and_rolled_back():
    store = DictStore({}, tile_size=8)
    p = demo_pair(store)
    p.check((slice(0, 9), slice(0, 9)))
    with pytest.raises(it.ValidationError):
        p.lib.to(torch.float64)
    assert p.lib.dtype == torch.int64
    p.check((slice(0, 9), slice(0, 9)))
    p.check((slice(0, 19), slice(-3, 9)))
    assert not duplicates(p.calls)
    assert p.lib.to("cpu") is p.lib


@pytest.mark.parametrize("blend,init", [(lambda a, b: (a + b) / 2, None), (lambda a, b: torch.maximum(a, b), -50.0),
                                        (torch.minimum, 50.0)], ids=["avg", "lambda-max", "min"])
def test_blends_match_the_reference_and_survive_reopen(blend, init):
    win = Win((4, 3), (2, 2), (1, -1))
    pure = _pure_for(win.size, torch.float64)
    backend = {}
    store = DictStore(backend, tile_size=(3, 5), cache_size_tiles=2)
    p = make(DEMO_SHAPE, pure, win, store=store, dtype=torch.float64, blend=blend, blend_init=init, tensor_id="b")
    mem = make(DEMO_SHAPE, pure, win, store=it.MemoryTileStore(), dtype=torch.float64, blend=blend,
               blend_init=init)
    rng = random.Random(11)
    idxs = []
    for _ in range(8):
        y, x = rng.randint(-12, 10), rng.randint(-12, 10)
        idxs.append((slice(y, y + rng.randint(1, 9)), slice(x, x + rng.randint(1, 9), rng.choice([1, 2]))))
        assert_same(p.check(idxs[-1]), mem.lib[idxs[-1]])
    # (a custom blend may compute a window again when a later read completes another
    # tile it meets: docs/architecture.md; only the values are checked then)
    custom = blend is not torch.minimum
    if not custom:
        assert not duplicates(p.calls)
    store.close()
    q = make(DEMO_SHAPE, pure, win, store=DictStore(backend, tile_size=(3, 5)), dtype=torch.float64,
             blend=blend, blend_init=init, tensor_id="b")
    for idx in idxs:
        q.check(idx)
    assert q.calls == []
    q.check((slice(-15, 15), slice(-15, 15)))
    if not custom:
        assert not duplicates(p.calls + q.calls)


class FailingStore(DictStore):
    fail = False

    def _write_tile(self, tensor_id, tile_index, tile, contributions):
        if self.fail:
            raise OSError("disk full")
        super()._write_tile(tensor_id, tile_index, tile, contributions)


def test_a_failing_backend_write_is_reported_and_can_be_retried():
    backend = {}
    store = FailingStore(backend, tile_size=8)
    p = demo_pair(store)
    p.check((slice(-4, 20), slice(0, 9)))
    store.fail = True
    with pytest.raises(OSError, match="disk full"):
        store.flush()
    store.fail = False
    store.flush()
    p.check((slice(-4, 20), slice(0, 9)))
    store.close()
    q = demo_pair(DictStore(backend, tile_size=8))
    q.check((slice(-4, 20), slice(0, 9)))
    assert q.calls == []


class KeepingStore(DictStore):
    """Keeps the very tensor _write_tile received (the contract allows it)
    next to a copy taken at that moment."""

    def __init__(self, backend, **kw):
        self.kept = []
        super().__init__(backend, **kw)

    def _write_tile(self, tensor_id, tile_index, tile, contributions):
        self.kept.append((tile_index, tile, tile.clone()))
        super()._write_tile(tensor_id, tile_index, tile, contributions)


def test_tiles_handed_to_write_tile_are_not_changed_afterwards():
    store = KeepingStore({}, tile_size=4, cache_size_tiles=1)
    p = demo_pair(store)
    for y in range(-12, 12, 3):
        p.check((slice(y, y + 5), slice(-8, 9)))  # tiles evicted, reloaded, changed, written again
    store.close()
    assert len(store.kept) > 10
    changed = [k for k, tile, copy_ in store.kept if not torch.equal(tile, copy_)]
    assert changed == []


def _tampered(kind):
    backend = {}
    with DictStore(backend, tile_size=8) as store:
        demo_pair(store).check((slice(0, 9), slice(0, 9)))
    tile, contributions = backend["demo"]["tiles"][(0, 0)]
    if kind == "shape":
        tile = torch.zeros(3, 3, dtype=tile.dtype)
    elif kind == "dtype":
        tile = tile.to(torch.float32)
    elif kind == "foreign window":
        contributions = set(contributions) | {(1000, 1000)}
    elif kind == "malformed window":
        contributions = set(contributions) | {(1, 2, 3)}
    backend["demo"]["tiles"][(0, 0)] = (tile, contributions)
    return backend


@pytest.mark.parametrize("kind", ["shape", "dtype", "foreign window", "malformed window"])
def test_a_damaged_tile_from_the_backend_is_a_clear_error(kind):
    store = DictStore(_tampered(kind), tile_size=8)
    q = demo_pair(store)
    with pytest.raises(it.InfiniteTensorError):
        q.lib[0:9, 0:9]


@pytest.mark.parametrize("kind, exc, message", [
    ("shape", it.ShapeMismatchError, "the tile _read_tile returned has shape (3, 3), expected (8, "),
    ("dtype", it.DtypeMismatchError, "the tile _read_tile returned has dtype float32, expected "),
])
def test_a_tile_of_the_wrong_shape_or_dtype_says_which(kind, exc, message):
    """The check is the core's one output check (it_view_check), as for f's
    outputs; the message used to be "not a contiguous CPU tensor of the
    tile's shape and dtype" whatever was wrong."""
    store = DictStore(_tampered(kind), tile_size=8)
    q = demo_pair(store)
    with pytest.raises(exc) as ei:
        q.lib[0:9, 0:9]
    assert message in str(ei.value), str(ei.value)
