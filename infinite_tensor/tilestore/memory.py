"""MemoryTileStore: values cached in memory by the C core.

One cache is shared by every tensor of the store.  It holds tiles (blocks of
the tensor grid with every window's contribution already combined), so a
cached region costs about its own size whatever the window overlap.  Reads
pin the tiles they use; when a read ends the cache is trimmed, least recently
used first, to cache_size_bytes and cache_size_windows (a tile counts as
ceil(tile bytes / window bytes) windows).
"""
from __future__ import annotations

import warnings

import torch

from .. import _core
from ..errors import ValidationError
from ._engine import EngineStore, Entry, check_limit, migrate_node
from .. import infinite_tensor as _it  # the module (it imports this one): annotations name _it.InfiniteTensor


class MemoryTileStore(EngineStore):
    """An in-memory store with one LRU cache shared by all its tensors.

    The cache holds tiles of combined values.  A read pins the tiles it uses
    (so one read may exceed the limits); when it ends the cache is trimmed,
    least recently used first.  Evicted values are computed again on demand.

    Args:
        cache_size_bytes: The most bytes the cache keeps, an int >= 0, or
            None (default) for no limit; or ``"auto"`` (a quarter of the
            host memory available when the store is made) or a fraction of
            it such as ``0.5``.  Host memory and GPU memory are bounded
            separately (by the same number).  0 empties the cache after
            each read.
        cache_size_windows: The most windows' worth of data the cache keeps
            (a tile weighs ceil(tile bytes / window bytes)), an int >= 0, or
            None (default) for no limit.

    Raises:
        ValidationError: A limit that is not None or an int >= 0.
    """

    def __init__(self, cache_size_bytes: int | float | str | None = None,
                 cache_size_windows: int | None = None) -> None:
        self._init_engine(cache_size_bytes, cache_size_windows)
        limit = self._cache.info()["byte_limit"]
        self._limits = [None if limit < 0 else limit, cache_size_windows]

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
        self._limits[0] = self._cache_bytes_spec = value
        self._apply_limits()

    def __setstate__(self, state):
        super().__setstate__(state)
        limit = self._cache.info()["byte_limit"]  # "auto" resolved again, here
        self._limits[0] = None if limit < 0 else limit

    @property
    def _cache_size_windows(self):
        return self._limits[1]

    @_cache_size_windows.setter
    def _cache_size_windows(self, value):
        check_limit("cache_size_windows", value)
        self._limits[1] = value
        self._apply_limits()

    # -- registration ----------------------------------------------------------
    def register_tensor(self, tensor: _it.InfiniteTensor) -> None:
        """Attach a tensor.  An id already registered with an equal
        ``to_json()`` shares its cached values (the new f, blend and batch
        size take effect; another blend or blend_init starts from empty
        values); any other configuration is refused.

        Args:
            tensor: The InfiniteTensor being created.

        Raises:
            ValidationError: The id is registered with another configuration.
        """
        tid = tensor.uuid
        entry = self._tensor_store.get(tid)
        if entry is not None:
            self._check_same_meta(tid, entry.meta, tensor.to_json())
            if entry.rule != tensor._rule():
                # combined values cannot be reused under another combining rule
                entry.node = _core.Tensor(self._cache, tensor._node_spec())
                entry.rule = tensor._rule()
                for view in entry.views:
                    view._node = entry.node
            else:
                entry.node.set_callbacks(*tensor._callbacks())
        else:
            entry = Entry(tensor, _core.Tensor(self._cache, tensor._node_spec()))
            self._tensor_store[tid] = entry
        entry.bind(tensor)

    def clear_tensor(self, tensor_id: str) -> None:
        """Unregister the tensor and drop its values; its InfiniteTensor
        objects then raise TileAccessError (an unknown id does nothing).

        Args:
            tensor_id: The tensor's id (turned into a str).
        """
        entry = self._tensor_store.pop(str(tensor_id), None)
        if entry is None:
            return
        entry.node.clear()
        for view in entry.views:
            view._node = None

    def clear_cache(self, tensor_id: str) -> None:
        """Drop the tensor's cached values (computed again when read); an
        unknown id does nothing.

        Args:
            tensor_id: The tensor's id (turned into a str).
        """
        entry = self._tensor_store.get(str(tensor_id))
        if entry is not None:
            entry.node.clear()

    def migrate(self, tensor_id: str, old_device: torch.device, old_dtype: torch.dtype) -> None:
        """Move and convert the tensor's cached values to the device and dtype
        its InfiniteTensor now declares (all or nothing).

        Args:
            tensor_id: The tensor's id.
            old_device: The device the values are on now.
            old_dtype: The dtype the values have now.

        Raises:
            TileAccessError: No tensor is registered under the id.
        """
        entry = self._entry(tensor_id)
        # the object whose .to() called us: it already declares the new values
        tensor = next((v for v in entry.views
                       if v._node is entry.node and (v.device, v.dtype) != (old_device, old_dtype)), None)
        if tensor is None:
            return
        migrate_node(entry, tensor.device, tensor.dtype, tensor._blend_init)

    # -- deprecated -------------------------------------------------------------
    def evict_cache_for(self, tensor_id: str, cache_limit: int | None) -> None:
        """Deprecated (0.2): evict the tensor's least recently used cached data
        until it holds at most cache_limit bytes (None: keep everything).

        Args:
            tensor_id: The tensor's id (an unknown id does nothing).
            cache_limit: The bytes the tensor may keep, an int >= 0, or None.

        Raises:
            ValidationError: ``cache_limit`` is not None or an int >= 0.
        """
        warnings.warn("evict_cache_for is deprecated; use tensor.clear_cache() or cache limits",
                      DeprecationWarning, stacklevel=2)
        if cache_limit is None:
            return
        if isinstance(cache_limit, bool) or not isinstance(cache_limit, int) or cache_limit < 0:
            raise ValidationError(f"cache_limit must be None or an int >= 0, got {cache_limit!r}")
        entry = self._tensor_store.get(str(tensor_id))
        if entry is not None:
            entry.node.trim(cache_limit)
