"""MemoryTileStore: values cached in memory by the C core.

One cache is shared by every tensor of the store.  It holds tiles (blocks of
the tensor grid with every window's contribution already combined), so a
cached region costs about its own size whatever the window overlap.  Reads
pin the tiles they use; when a read ends the cache is trimmed, least recently
used first, to cache_size_bytes and cache_size_windows (a tile counts as
ceil(tile bytes / window bytes) windows).
"""
import warnings
import weakref

import torch

from .. import _bridge, _core
from ..errors import TileAccessError, ValidationError
from . import TileStore

_DELETED = ("Tile has been deleted. This indicates either a bug or an attempt to access a tensor "
            "after cleanup.")


def _check_limit(name, value):
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be None or an int >= 0, got {value!r}")
    return value


class MemoryTileStore(TileStore):
    """An in-memory store with one LRU cache shared by all its tensors."""

    def __init__(self, cache_size_bytes=None, cache_size_windows=None):
        self._cache = _core.Cache(_check_limit("cache_size_bytes", cache_size_bytes),
                                  _check_limit("cache_size_windows", cache_size_windows))
        self._limits = [cache_size_bytes, cache_size_windows]
        self._tensor_store = {}
        self._views = {}  # id -> WeakSet of InfiniteTensor objects sharing the node

    # -- limits (0.3 kept them as attributes; the 0.2 shim assigns them) -----
    def _apply_limits(self):
        self._cache.set_limits(_check_limit("cache_size_bytes", self._limits[0]),
                               _check_limit("cache_size_windows", self._limits[1]))

    @property
    def _cache_size_bytes(self):
        return self._limits[0]

    @_cache_size_bytes.setter
    def _cache_size_bytes(self, value):
        _check_limit("cache_size_bytes", value)
        self._limits[0] = value
        self._apply_limits()

    @property
    def _cache_size_windows(self):
        return self._limits[1]

    @_cache_size_windows.setter
    def _cache_size_windows(self, value):
        _check_limit("cache_size_windows", value)
        self._limits[1] = value
        self._apply_limits()

    def cache_info(self):
        """Counters of the shared cache: bytes, tiles, weight, pinned."""
        info = self._cache.info()
        return {k: info[k] for k in ("bytes", "tiles", "weight", "pinned")}

    # -- registration ----------------------------------------------------------
    def register_tensor(self, tensor):
        if tensor.device.type != "cpu":
            raise ValidationError(f"device {tensor.device} is not supported by this build yet (CPU only)")
        tid = tensor.uuid
        existing = self._tensor_store.get(tid)
        if existing is not None:
            old, new = existing.to_json(), tensor.to_json()
            if old != new:
                raise ValidationError(
                    f"Tensor {tid} re-registered with mismatched metadata: existing={old}, new={new}")
            if existing._blend_init != tensor._blend_init or existing._combine() != tensor._combine():
                # combined values cannot be reused under another combining rule
                node = _core.Tensor(self._cache, **tensor._node_config())
                for view in self._views[tid]:
                    view._node = node
            else:
                node = existing._node
                node.set_callbacks(tensor.f, tensor.blend, tensor.batch_size or 0)
        else:
            node = _core.Tensor(self._cache, **tensor._node_config())
            self._views[tid] = weakref.WeakSet()
        tensor._node = node
        self._tensor_store[tid] = tensor
        self._views[tid].add(tensor)

    def _node(self, tensor_id):
        tensor = self._tensor_store.get(str(tensor_id))
        if tensor is None:
            raise TileAccessError(_DELETED)
        return tensor._node

    def clear_tensor(self, tensor_id):
        tid = str(tensor_id)
        tensor = self._tensor_store.pop(tid, None)
        if tensor is None:
            return
        tensor._node.clear()
        for view in self._views.pop(tid, ()):
            view._node = None

    def clear_cache(self, tensor_id):
        tensor = self._tensor_store.get(str(tensor_id))
        if tensor is not None:
            tensor._node.clear()

    def is_window_processed(self, tensor_id, window_index):
        return self._node(tensor_id).window_done(tuple(window_index))

    def notify_window_processed(self, tensor_id, window_index, output):
        self._node(tensor_id).contribute(tuple(window_index), output)

    def read_pixels(self, tensor_id, pixel_slices):
        return self._node(tensor_id).read_cached(tuple(pixel_slices))

    def migrate(self, tensor_id, old_device, old_dtype):
        tensor = self._tensor_store[str(tensor_id)]
        if tensor.device != old_device and tensor.device.type != "cpu":
            raise ValidationError(f"device {tensor.device} is not supported by this build (CPU only)")
        if tensor.dtype != old_dtype:
            dtype = tensor.dtype
            tensor._node.retype(_bridge.dtype_code(dtype), dtype,
                                _fill_for(tensor._blend_init, dtype), lambda t: t.to(dtype))

    # -- deprecated -------------------------------------------------------------
    def evict_cache_for(self, tensor_id, cache_limit):
        """Deprecated (0.2): evict the tensor's least recently used cached data
        until it holds at most cache_limit bytes (None: keep everything)."""
        warnings.warn("evict_cache_for is deprecated; use tensor.clear_cache() or cache limits",
                      DeprecationWarning, stacklevel=2)
        if cache_limit is None:
            return
        if isinstance(cache_limit, bool) or not isinstance(cache_limit, int) or cache_limit < 0:
            raise ValidationError(f"cache_limit must be None or an int >= 0, got {cache_limit!r}")
        tensor = self._tensor_store.get(str(tensor_id))
        if tensor is not None:
            tensor._node.trim(cache_limit)


def _fill_for(blend_init, dtype):
    from ..infinite_tensor import _fill_tensor
    return _fill_tensor(blend_init, dtype)
