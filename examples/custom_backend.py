"""A persistent store of your own: subclass PersistentTileStore.

The engine caches tiles in memory and calls five storage methods when it
needs a tile it does not hold (_read_tile) or must save one (_write_tile,
on eviction, flush and close).  Each tile comes with its contribution
record, the set of windows added into it, which the store must save with
the tile as one record.  This example keeps everything in a dict of bytes,
as a key-value database would; swap the dict for your storage.
"""
import io

import torch

from infinite_tensor import InfiniteTensor, TensorWindow
from infinite_tensor.tilestore.persistent import PersistentTileStore


class DictTileStore(PersistentTileStore):
    """Tiles as serialized records in a dict (shared by every store object
    built over it, as a file would be)."""

    def __init__(self, backing, **kwargs):
        super().__init__(**kwargs)
        self.backing = backing  # key -> bytes

    @staticmethod
    def _pack(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    @staticmethod
    def _unpack(data):
        return torch.load(io.BytesIO(data))

    def _read_tensor_metadata(self, tensor_id):
        data = self.backing.get(("meta", tensor_id))
        return None if data is None else self._unpack(data)

    def _write_tensor_metadata(self, tensor_id, metadata, tile_size):
        self.backing[("meta", tensor_id)] = self._pack({"metadata": metadata, "tile_size": tuple(tile_size)})

    def _delete_tensor_state(self, tensor_id):
        for key in [k for k in self.backing if k[1] == tensor_id]:
            del self.backing[key]

    def _read_tile(self, tensor_id, tile_index):
        data = self.backing.get(("tile", tensor_id, tuple(tile_index)))
        if data is None:
            return None
        record = self._unpack(data)
        return record["tile"], record["contributions"]

    def _write_tile(self, tensor_id, tile_index, tile, contributions):
        # one record: a crash (or a failed write) keeps the old record or the new one, never a mix
        self.backing[("tile", tensor_id, tuple(tile_index))] = self._pack(
            {"tile": tile, "contributions": sorted(contributions)})


def main():
    backing = {}
    calls = [0]

    def f(ctx):
        calls[0] += 1
        return torch.full((16, 16), float(ctx[0] - ctx[1]))

    window = TensorWindow((16, 16), stride=(8, 8))
    with DictTileStore(backing, tile_size=32) as store:
        t = InfiniteTensor((None, None), f, window, tile_store=store, tensor_id="demo")
        first = t[0:64, 0:64]
    print(f"first run: {calls[0]} windows computed, {sum(k[0] == 'tile' for k in backing)} tiles saved")
    calls[0] = 0
    with DictTileStore(backing, tile_size=32) as store:  # "reopen"
        t = InfiniteTensor((None, None), f, window, tile_store=store, tensor_id="demo")
        again = t[0:64, 0:64]
    print(f"second run: {calls[0]} windows computed, same values: {torch.equal(first, again)}")
    return first, again, calls[0]


if __name__ == "__main__":
    main()
