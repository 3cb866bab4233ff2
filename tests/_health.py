"""A store under test and the check that it still answers correctly.

Used by test_bad_input.py, test_interrupts.py and test_limits.py: every bad
input is tried against a store that already holds a healthy tensor; after the
error, ``StoreEnv.check()`` proves that nothing was damaged:

* no tile is left pinned (``cache_info()["pinned"] == 0``);
* the healthy tensor still reads the values of the plain-torch reference
  (tests/reference.py), from the cache, without calling f again;
* a tensor created afterwards in the same store reads right;
* for an HDF5 store: close, reopen the file, and both tensors read right
  again from the file, without calling f.
"""

from __future__ import annotations

import itertools

import infinite_tensor as it
from persist_util import DEMO_TILE, demo_pair

BOX = (slice(-5, 13), slice(-3, 11))
WIDE = (slice(-9, 17), slice(-7, 15))
_fresh_ids = itertools.count()


class StoreEnv:
    """A store holding the healthy tensor "good".  kind: "memory", "hdf5",
    or "memory-evicting" / "hdf5-evicting" whose cache keeps nothing (memory)
    or one tile (HDF5) after each read, so tiles are dropped or written to
    the file and read back between reads."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        self.path = tmp_path / "store.h5"
        self.store = self._open()
        self.good = demo_pair(self.store, "good")
        self.good.check(BOX)
        self.fresh = []

    @property
    def persistent(self):
        return self.kind.startswith("hdf5")

    def _open(self, mode="a"):
        if self.kind == "memory":
            return it.MemoryTileStore()
        if self.kind == "memory-evicting":
            return it.MemoryTileStore(cache_size_bytes=0)
        tiles = 1 if self.kind == "hdf5-evicting" else None
        return it.HDF5TileStore(self.path, mode=mode, tile_size=DEMO_TILE, cache_size_tiles=tiles)

    def new_pair(self, tensor_id=None, **kw):
        return demo_pair(self.store, tensor_id or f"fresh{next(_fresh_ids)}", **kw)

    def check(self):
        store = self.store
        assert store.cache_info()["pinned"] == 0
        self.good.reset_calls()
        self.good.check(BOX)
        if self.kind != "memory-evicting":  # that one recomputes every read
            assert self.good.calls == [], "the healthy tensor was computed again"
        self.good.check(WIDE)
        fresh = self.new_pair()
        fresh.check(BOX)
        assert store.cache_info()["pinned"] == 0
        if self.persistent:
            store.close()
            self.store = self._open()
            for tid, box in (("good", WIDE), (fresh.lib.uuid, BOX)):
                again = demo_pair(self.store, tid)
                again.check(box)
                assert again.calls == [], f"{tid}: stored tiles were computed again after reopen"
            self.good = demo_pair(self.store, "good")

    def close(self):
        if self.persistent:
            self.store.close()
