"""What a tile_store must be, and limits of the constructor."""
import pytest
import torch

import infinite_tensor as it
from infinite_tensor.tilestore import TileStore


class BareStore(TileStore):
    """Implements 0.3's abstract protocol, as a store of one's own would."""

    def __init__(self):
        self.registered = []

    def register_tensor(self, tensor):
        self.registered.append(tensor.uuid)

    def clear_tensor(self, tensor_id):
        pass

    def is_window_processed(self, tensor_id, window_index):
        return False

    def notify_window_processed(self, tensor_id, window_index, output):
        pass

    def read_pixels(self, tensor_id, pixel_slices):
        return None

    def migrate(self, tensor_id, old_device, old_dtype):
        pass


SUPPORTED = ("tile_store must be a MemoryTileStore, an HDF5TileStore or a subclass of PersistentTileStore "
             "(which keeps tiles where its storage primitives say), got ")


def test_a_tilestore_of_ones_own_is_refused_before_it_is_called():
    """The engine computes and caches values in tiles; a TileStore subclass
    that is not built on it is refused, naming the stores that work, and is
    not called (it used to get register_tensor, then "did not attach")."""
    store = BareStore()
    with pytest.raises(it.ValidationError) as ei:
        it.InfiniteTensor((None,), lambda c: torch.ones(2), it.TensorWindow((2,)), tile_store=store)
    assert str(ei.value) == SUPPORTED + "BareStore (a TileStore not built on the engine)"
    assert store.registered == []


def test_a_non_store_is_refused():
    for bad in ("memory", object(), 3):
        with pytest.raises(it.ValidationError) as ei:
            it.InfiniteTensor((None,), lambda c: torch.ones(2), it.TensorWindow((2,)), tile_store=bad)
        assert str(ei.value) == SUPPORTED + f"{type(bad).__name__} (not a store)"


def test_subclasses_of_the_engine_stores_hold_tensors():
    """What the refusal points to works: subclasses of MemoryTileStore (and
    of PersistentTileStore: tests/test_persistent_store.py)."""
    class Counting(it.MemoryTileStore):
        def __init__(self):
            super().__init__(cache_size_bytes=0)
            self.registered = 0

        def register_tensor(self, tensor):
            self.registered += 1
            super().register_tensor(tensor)

    store = Counting()
    t = it.InfiniteTensor((None, 4), lambda c: torch.arange(8.0).reshape(2, 4) + 10 * c[0],
                          it.TensorWindow((2, 4)), tile_store=store)
    assert store.registered == 1
    assert torch.equal(t[1:5, 0:4], torch.cat([torch.arange(8.0).reshape(2, 4) + 10 * i for i in range(3)])[1:5])


def test_an_engine_store_whose_register_tensor_skips_the_base_is_refused():
    class Forgetful(it.MemoryTileStore):
        def register_tensor(self, tensor):
            pass

    with pytest.raises(it.ValidationError, match=r"Forgetful.register_tensor did not attach the tensor to the "
                                                 r"engine \(an override that does not call the base class's\?\)"):
        it.InfiniteTensor((None,), lambda c: torch.ones(2), it.TensorWindow((2,)), tile_store=Forgetful())


def test_at_most_63_args():
    base = it.InfiniteTensor((None,), lambda c: torch.ones(2), it.TensorWindow((2,)))
    w = it.TensorWindow((2,))
    ok = it.InfiniteTensor((None,), lambda c, *xs: sum(xs), w, args=[base] * 63, args_windows=[w] * 63)
    assert ok[0:4].tolist() == [63.0] * 4
    with pytest.raises(it.ValidationError, match="a tensor takes 0 to 63 args, got 64"):
        it.InfiniteTensor((None,), lambda c, *xs: sum(xs), w, args=[base] * 64, args_windows=[w] * 64)


def test_to_through_one_of_two_objects_sharing_a_node():
    store = it.MemoryTileStore()
    w = it.TensorWindow((4,))
    a = it.InfiniteTensor((None,), lambda c: torch.ones(4, dtype=a.dtype), w, tile_store=store, tensor_id="x")
    b = it.InfiniteTensor((None,), lambda c: torch.ones(4, dtype=b.dtype), w, tile_store=store, tensor_id="x")
    a[0:8]
    b.to(torch.float64)
    assert b.dtype == torch.float64 and a.dtype == torch.float64  # they share the cached values
    assert b[0:12].dtype == torch.float64 and b[0:12].tolist() == [1.0] * 12


def test_0_3_private_helpers_still_work():
    calls = []
    t = it.InfiniteTensor((None, 2), lambda c: calls.append(c) or torch.ones(4, 2), it.TensorWindow((4, 2)))
    t._ensure_processed_range([(slice(0, 8), slice(0, 2))])
    assert sorted(calls) == [(0, 0), (1, 0)]
    t._ensure_processed([(5, 0)])
    assert (5, 0) in calls and len(calls) == 3
    store = t._store
    before = store._bytes
    assert before > 0
    t.to(torch.float64)
    assert store._bytes == 2 * before  # 0.3's tests checked the byte counter doubles


def test_a_node_is_built_from_one_spec_with_dtype_and_device_given_once():
    """_core.Tensor(cache, spec, tile_shape=None): the binding took 15
    keywords, dtype and device twice (as codes and as torch objects)."""
    from infinite_tensor import _bridge, _core

    t = it.InfiniteTensor((None, 3), lambda c: torch.full((2, 3), float(c[0]), dtype=torch.float64),
                          it.TensorWindow((2, 3), stride=(1, 3)), dtype=torch.float64)
    spec = t._node_spec()
    assert isinstance(spec, _bridge.NodeSpec) and spec.dtype is torch.float64 and spec.device == t.device
    node = _core.Tensor(_core.Cache(), spec)
    expected = torch.zeros(4, 3, dtype=torch.float64)  # plain torch: window i adds i on rows [i, i + 2)
    for i in range(-1, 4):
        expected[max(i, 0):i + 2] += i
    assert torch.equal(node[0:4, 0:3], expected)
    assert torch.equal(t[0:4, 0:3], expected)
    with pytest.raises(ValueError, match="fill must be a 0-d CPU tensor of dtype torch.float64"):
        _core.Tensor(_core.Cache(), spec._replace(fill=torch.tensor(0.0)))  # a float32 fill
    with pytest.raises(it.ValidationError, match="device meta is not supported"):
        _core.Tensor(_core.Cache(), spec._replace(device=torch.device("meta")))
