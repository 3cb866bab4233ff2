"""MemoryTileStore: values cached in memory by the C core.

One cache is shared by every tensor of the store.  It holds tiles (blocks of
the tensor grid with every window's contribution already combined), so a
cached region costs about its own size whatever the window overlap.  Reads
pin the tiles they use; when a read ends the cache is trimmed, least recently
used first, to cache_size_bytes and cache_size_windows (a tile counts as
ceil(tile bytes / window bytes) windows).
"""
import warnings

from .. import _core
from ..errors import ValidationError
from ._engine import EngineStore, Entry, check_limit, migrate_node


class MemoryTileStore(EngineStore):
    """An in-memory store with one LRU cache shared by all its tensors."""

    def __init__(self, cache_size_bytes=None, cache_size_windows=None):
        self._init_engine(cache_size_bytes, cache_size_windows)
        self._limits = [cache_size_bytes, cache_size_windows]

    # -- limits (0.3 kept them as attributes; the 0.2 shim assigns them) -----
    def _apply_limits(self):
        self._cache.set_limits(check_limit("cache_size_bytes", self._limits[0]),
                               check_limit("cache_size_windows", self._limits[1]))

    @property
    def _cache_size_bytes(self):
        return self._limits[0]

    @_cache_size_bytes.setter
    def _cache_size_bytes(self, value):
        check_limit("cache_size_bytes", value)
        self._limits[0] = value
        self._apply_limits()

    @property
    def _cache_size_windows(self):
        return self._limits[1]

    @_cache_size_windows.setter
    def _cache_size_windows(self, value):
        check_limit("cache_size_windows", value)
        self._limits[1] = value
        self._apply_limits()

    # -- registration ----------------------------------------------------------
    def register_tensor(self, tensor):
        tid = tensor.uuid
        entry = self._tensor_store.get(tid)
        if entry is not None:
            self._check_same_meta(tid, entry.meta, tensor.to_json())
            if entry.rule != (tensor._combine(), tensor._blend_init):
                # combined values cannot be reused under another combining rule
                entry.node = _core.Tensor(self._cache, tensor._node_spec())
                entry.rule = (tensor._combine(), tensor._blend_init)
                for view in entry.views:
                    view._node = entry.node
            else:
                entry.node.set_callbacks(tensor.f, tensor.blend, tensor.batch_size or 0)
        else:
            entry = Entry(tensor, _core.Tensor(self._cache, tensor._node_spec()))
            self._tensor_store[tid] = entry
        entry.bind(tensor)

    def clear_tensor(self, tensor_id):
        entry = self._tensor_store.pop(str(tensor_id), None)
        if entry is None:
            return
        entry.node.clear()
        for view in entry.views:
            view._node = None

    def clear_cache(self, tensor_id):
        entry = self._tensor_store.get(str(tensor_id))
        if entry is not None:
            entry.node.clear()

    def migrate(self, tensor_id, old_device, old_dtype):
        entry = self._entry(tensor_id)
        # the object whose .to() called us: it already declares the new values
        tensor = next((v for v in entry.views
                       if v._node is entry.node and (v.device, v.dtype) != (old_device, old_dtype)), None)
        if tensor is None:
            return
        migrate_node(entry, tensor.device, tensor.dtype, tensor._blend_init)

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
        entry = self._tensor_store.get(str(tensor_id))
        if entry is not None:
            entry.node.trim(cache_limit)
