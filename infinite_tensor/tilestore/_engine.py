"""What every store built on the C engine shares: one core cache, one node
(a core tensor) per registered id, and the TileStore entry points that only
forward to the node."""
from __future__ import annotations

import weakref
from typing import Any

import torch

from .. import _bridge, _core, _sizing
from .._display import html_table, size_text as _mib
from ..errors import TileAccessError, ValidationError
from . import TileStore

DELETED_MESSAGE = ("Tile has been deleted. This indicates either a bug or an attempt to access a tensor "
                   "after cleanup.")


def check_limit(name, value):
    """A cache limit: None (no limit, -1 for the core) or an int >= 0."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be None or an int >= 0, got {value!r}")
    return value  # past int64: the binding takes the largest int64, a limit never reached


class Entry:
    """What a store keeps for one tensor id.  Not the InfiniteTensor itself:
    a tensor holds its store, so a store holding its tensors would make every
    tensor with a private store a reference cycle, freed only by the garbage
    collector, with all its cached tiles."""

    __slots__ = ("meta", "node", "rule", "views", "tile_size")

    def __init__(self, tensor, node, tile_size=None):
        self.meta = tensor.to_json()
        self.node = node
        self.rule = tensor._rule()
        self.views = weakref.WeakSet()  # the InfiniteTensor objects reading through node
        self.tile_size = tile_size

    def bind(self, tensor):
        tensor._node = self.node
        self.views.add(tensor)


class EngineStore(TileStore):
    """Base of MemoryTileStore and PersistentTileStore (not public)."""

    # the pid of the process that writes the store's file, when reads in
    # other processes go through it (HDF5TileStore; see _serve); None: each
    # process reads and writes the store itself
    _owner: int | None = None

    def _init_engine(self, byte_limit, weight_limit=None):
        """Make the core cache.  byte_limit may be "auto" or a fraction of
        the available memory (_sizing): kept as given, resolved here, and
        resolved again where a pickled store is unpickled."""
        self._cache_bytes_spec = byte_limit
        byte_limit = _sizing.cache_bytes(byte_limit)
        self._cache = _core.Cache(check_limit("cache_size_bytes", byte_limit),
                                  check_limit("cache_size_windows", weight_limit))
        self._tensor_store = {}  # id -> Entry

    # -- pickling: a store travels as what builds it again, never with its
    # cached tiles (another process starts with an empty cache of the same
    # limits; a persistent store reopens its file there) -----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_tensor_store")}
        info = self._cache.info()
        state["_engine_limits"] = (info["byte_limit"], info["weight_limit"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        byte_limit, weight_limit = state.pop("_engine_limits")
        spec = state.get("_cache_bytes_spec")
        self.__dict__.update(state)
        if isinstance(spec, (str, float)):  # "auto" or a fraction: of this process's memory
            byte_limit = spec
        self._init_engine(None if byte_limit == -1 else byte_limit, None if weight_limit < 0 else weight_limit)
        tile_limit = state.get("_tile_limit")
        if tile_limit is not None:
            self._cache.set_tile_limit(check_limit("cache_size_tiles", tile_limit))

    def _remote(self):
        """Where this process reaches the store when another process holds
        it (HDF5TileStore; see _serve), else None."""
        return None

    def _entry(self, tensor_id):
        entry = self._tensor_store.get(str(tensor_id))
        if entry is None:
            raise TileAccessError(DELETED_MESSAGE)
        return entry

    def _node(self, tensor_id):
        return self._entry(tensor_id).node

    @staticmethod
    def _check_same_meta(tensor_id, existing, new):
        if existing != new:
            raise ValidationError(f"Tensor {tensor_id} re-registered with mismatched metadata "
                                  f"({describe_differences(existing, new)}): existing={existing}, new={new}")

    @property
    def _bytes(self):
        """Bytes held by the cache (0.3 kept this counter under this name)."""
        return self._cache.info()["bytes"]

    def cache_info(self) -> dict[str, int]:
        """Counters of the shared cache: bytes (host memory), device_bytes
        (tiles on a GPU), tiles, weight, pinned.  The byte limit applies to
        host and device bytes separately.

        Returns:
            A new dict with those five ints (``weight``: the tiles' weight in
            windows, which ``cache_size_windows`` bounds; ``pinned``: tiles
            held by reads under way).
        """
        info = self._cache.info()
        return {k: info[k] for k in ("bytes", "device_bytes", "tiles", "weight", "pinned")}

    def is_window_processed(self, tensor_id: str, window_index: tuple[int, ...]) -> bool:
        """Whether the window has been added into the tensor's cached values
        (a process served by an HDF5 file's owner asks the owner).

        Args:
            tensor_id: The tensor's id.
            window_index: The window's index, one int per coordinate.

        Returns:
            True when the window's output is in the tensor's tiles.

        Raises:
            TileAccessError: No tensor is registered under the id.
            IndexError: The index is outside the supported range.
        """
        remote = self._remote()
        if remote is not None:
            return remote.window_done(self._view(tensor_id), window_index)
        node = self._node(tensor_id)
        try:
            return node.window_done(tuple(window_index))
        except OverflowError:
            raise IndexError(f"window index {tuple(window_index)} is outside the supported range") from None

    def notify_window_processed(self, tensor_id: str, window_index: tuple[int, ...],
                                output: torch.Tensor) -> None:
        """Add a window's output, computed by the caller, into the tensor's
        tiles (a window already added is not added again; a process served
        by an HDF5 file's owner hands it to the owner).

        Args:
            tensor_id: The tensor's id.
            window_index: The window's index, one int per coordinate.
            output: The window's values: a tensor of the window's size, the
                tensor's dtype and device.

        Raises:
            TileAccessError: No tensor is registered under the id.
            IndexError: The index is outside the supported range.
            ShapeMismatchError, DtypeMismatchError, DeviceMismatchError,
                TypeError: ``output`` is not a tensor of the right shape,
                dtype or device.
        """
        remote = self._remote()
        if remote is not None:
            return remote.contribute(self._view(tensor_id), window_index, output)
        node = self._node(tensor_id)
        try:
            node.contribute(tuple(window_index), output)
        except OverflowError:
            raise IndexError(f"window index {tuple(window_index)} is outside the supported range") from None

    def read_pixels(self, tensor_id: str, pixel_slices: tuple[slice, ...]) -> torch.Tensor:
        """Assemble a region from the cached values only (computes nothing;
        a process served by an HDF5 file's owner reads from the owner).

        Args:
            tensor_id: The tensor's id.
            pixel_slices: One slice per dim, with explicit start and stop.

        Returns:
            A new tensor holding the region.

        Raises:
            TileAccessError: No tensor is registered under the id, or a
                window the region needs has not been computed.
        """
        remote = self._remote()
        if remote is not None:
            return remote.read(self._view(tensor_id), tuple(pixel_slices), compute=False)
        return self._node(tensor_id).read_cached(tuple(pixel_slices))

    def begin_access(self, tensor_id: str) -> None:
        """Start a user operation that spans several reads (0.4's store
        protocol): until the matching end_access, nothing is evicted from
        this store's cache, so what the first reads computed is still there
        for the last.  Brackets nest; the outermost end_access trims the
        cache to its limits.  A single read needs no bracket: it pins the
        tiles it uses until it returns.

        Args:
            tensor_id: The tensor the operation reads (the hold covers the
                whole store's cache).
        """
        self._cache.hold(True)

    def end_access(self, tensor_id: str) -> None:
        """End what begin_access started (an unmatched call does nothing).

        Args:
            tensor_id: The tensor given to the matching begin_access.
        """
        self._cache.hold(False)

    def tensor_ids(self) -> list[str]:
        """The ids of the tensors registered in this store (sorted).

        Returns:
            A new sorted list of ids.
        """
        return sorted(self._tensor_store)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe_cache(self)}>"

    def _display_rows(self):
        info = self._cache.info()
        limit = info["byte_limit"]
        ids = sorted(self._tensor_store)
        shown = ", ".join(repr(i) for i in ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
        return [("tensors", shown or "none"),
                ("cache", f"{_mib(info['bytes'])} of {_mib(limit) if limit >= 0 else 'unbounded'}"),
                ("tiles", f"{info['tiles']} ({info['pinned']} pinned)")]

    def _repr_html_(self) -> str:
        return html_table(type(self).__name__, self._display_rows())


def describe_cache(store):
    """'2 tensors, cache 1.5 MiB of 100.0 MiB in 12 tiles' for a store's repr."""
    info = store._cache.info()
    limit = info["byte_limit"]
    n = len(store._tensor_store)
    text = (f"{n} tensor{'' if n == 1 else 's'}, cache {_mib(info['bytes'])} of "
            f"{_mib(limit) if limit >= 0 else 'unbounded'} in {info['tiles']} tile{'' if info['tiles'] == 1 else 's'}")
    if info.get("device_bytes"):
        text += f" (+{_mib(info['device_bytes'])} on devices)"
    return text


def migrate_node(entry, device, dtype, blend_init):
    """Move the node's cached tiles to device and dtype (all or nothing);
    every object sharing the node then declares them."""
    entry.node.migrate(device, dtype, _bridge.fill_tensor(blend_init, dtype),
                       lambda t: t.to(device=device, dtype=dtype))
    views = list(entry.views)
    for view in views:
        view._device, view._dtype = device, dtype
    if views:
        entry.meta = views[0].to_json()


def describe_differences(old, new, prefix=""):
    """'dtype: 'float32' -> 'float64'; ...' for two to_json() dicts."""
    parts = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                if key in old and key in new:
                    parts.append(describe_differences(old[key], new[key], f"{prefix}{key}."))
                else:
                    parts.append(f"{prefix}{key}: {old.get(key)!r} -> {new.get(key)!r}")
        return "; ".join(p for p in parts if p)
    if old != new:
        return f"{prefix[:-1] or 'value'}: {old!r} -> {new!r}"
    return ""
