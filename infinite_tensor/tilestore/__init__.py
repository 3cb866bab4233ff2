"""Tile stores: where an InfiniteTensor's computed values live.

TileStore is the base of the stores: the store protocol of 0.3 and the
deprecated 0.2 entry points.  MemoryTileStore keeps values in memory in the
C core's tile cache; PersistentTileStore adds a backend under that cache
(HDF5TileStore: an HDF5 file written by the core; or a Python subclass that
implements its storage primitives).  A tensor needs one of these: the engine
computes and caches values in tiles, so a TileStore subclass of one's own,
which 0.3 would have handed each window's output, is refused
(ValidationError); to keep tiles elsewhere, subclass PersistentTileStore.
"""
import abc
import warnings

__all__ = ["TileStore", "MemoryTileStore"]


class TileStore(abc.ABC):
    """The base of MemoryTileStore and PersistentTileStore (so of
    HDF5TileStore): owns the cached values of the tensors registered with
    it.  The abstract methods are 0.3's store protocol, which the stores
    implement over the C engine; InfiniteTensor accepts only stores built on
    that engine (see the module docstring)."""

    @abc.abstractmethod
    def register_tensor(self, tensor):
        """Attach a tensor (validating it against any state kept for its id)."""

    @abc.abstractmethod
    def clear_tensor(self, tensor_id):
        """Delete every piece of state kept for the id."""

    @abc.abstractmethod
    def is_window_processed(self, tensor_id, window_index):
        """Whether the window's output is in the cached values."""

    @abc.abstractmethod
    def notify_window_processed(self, tensor_id, window_index, output):
        """Add a window output computed elsewhere."""

    @abc.abstractmethod
    def read_pixels(self, tensor_id, pixel_slices):
        """Assemble a region from cached values only."""

    @abc.abstractmethod
    def migrate(self, tensor_id, old_device, old_dtype):
        """Move cached values after the tensor's device or dtype changed."""

    def clear_cache(self, tensor_id):
        """Drop recomputable in-memory state of the tensor (default: none)."""

    def begin_access(self, tensor_id):
        """Kept for 0.3 compatibility; reads pin what they use by themselves."""

    def end_access(self, tensor_id):
        """Kept for 0.3 compatibility; see begin_access."""

    # -- deprecated 0.2 API --------------------------------------------------
    def get_or_create(self, tensor_id, shape, f, output_window, *, args=None, args_windows=None,
                      dtype=None, batch_size=None, **kwargs):
        """Deprecated (0.2): build an InfiniteTensor in this store.

        cache_method is ignored; cache_limit sets this store's byte limit;
        tile_size sets the store's tile size where it has one."""
        warnings.warn("TileStore.get_or_create is deprecated; construct InfiniteTensor(..., "
                      "tile_store=store) instead", DeprecationWarning, stacklevel=2)
        kwargs.pop("cache_method", None)
        if "cache_limit" in kwargs:
            self._cache_size_bytes = kwargs.pop("cache_limit")
        if "tile_size" in kwargs:
            tile_size = kwargs.pop("tile_size")
            if hasattr(self, "tile_size"):
                self.tile_size = tile_size
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments: {sorted(kwargs)}")
        from ..infinite_tensor import DEFAULT_DTYPE, InfiniteTensor
        return InfiniteTensor(shape, f, output_window, args=args, args_windows=args_windows,
                              dtype=DEFAULT_DTYPE if dtype is None else dtype, tile_store=self,
                              tensor_id=tensor_id, batch_size=batch_size)

    def clear_direct_caches(self):
        """Deprecated (0.2): clear_cache for every registered tensor."""
        warnings.warn("clear_direct_caches is deprecated; use tensor.clear_cache()",
                      DeprecationWarning, stacklevel=2)
        for tensor_id in list(getattr(self, "_tensor_store", {})):
            self.clear_cache(tensor_id)


from .memory import MemoryTileStore  # noqa: E402  (needs TileStore)
from .persistent import PersistentTileStore  # noqa: E402
from .hdf5_tilestore import HDF5TileStore  # noqa: E402
