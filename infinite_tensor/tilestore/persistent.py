"""PersistentTileStore: tiles that outlive the process.

The C engine caches tiles exactly as for MemoryTileStore; a persistent store
adds a backend under the cache.  A tile missing from the cache is loaded from
the backend, values and contribution record together; a tile that changed
is written back when the cache evicts it, on flush() and on close().  The
contribution record of a tile says which windows have been added into it,
so a window is never added twice, whatever was saved before a crash:
windows whose tiles were not written are simply computed again, and added
only to the tiles that lack them.

A backend is either built into the engine (HDF5TileStore) or written in
Python by subclassing PersistentTileStore and implementing the storage
primitives below; the engine then calls _read_tile and _write_tile.

Tiles cover tile_size pixels along every infinite dim (an int for all of
them, or a tuple with one entry per infinite dim) and the whole extent of
every finite dim.  Tile k of an infinite dim of tile size T covers
[k * T, (k + 1) * T); a tensor without infinite dims has one tile, ().
"""
from __future__ import annotations

import abc
import sys
import warnings
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Literal

import torch

from .. import _core
from ..errors import TileAccessError, ValidationError
from ._engine import EngineStore, Entry, check_limit, migrate_node
from .. import infinite_tensor as _it  # the module (it imports this one): annotations name _it.InfiniteTensor

DEFAULT_TILE_SIZE = 512
DEFAULT_CACHE_SIZE_BYTES = 100 * 1024 * 1024


def _caller_level():
    """The stacklevel of the first frame outside this package (the user's
    InfiniteTensor(...) call), for warnings.warn called by our caller."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("infinite_tensor"):
        frame, level = frame.f_back, level + 1
    return level


class PersistentTileStore(EngineStore):
    """Abstract base of disk-backed stores: a write-back tile cache over a
    backend that stores tiles with their contribution records.

    Subclasses implement the storage primitives:

    - ``_read_tensor_metadata(id)`` -> ``{"metadata": dict, "tile_size": tuple}`` or None;
    - ``_write_tensor_metadata(id, metadata, tile_size)``;
    - ``_delete_tensor_state(id)``;
    - ``_read_tile(id, tile_index)`` -> ``(tile, contributions)`` or None: tile a
      tensor of the full tile shape and the tensor's dtype (any device),
      contributions an iterable of window-index tuples;
    - ``_write_tile(id, tile_index, tile, contributions)``: store both as one
      record (a crash must leave the old record or the new one, never a mix);
      ``tile`` is a CPU tensor the backend may keep, ``contributions`` a set.

    and may override ``_flush_backend()`` (make everything written so far
    durable), ``_close_backend()``, ``_validate_registration(...)``,
    ``_read_processed_windows(id)`` and ``_append_processed_window(id, w)``
    (0.3's per-window record; the engine keeps contributions per tile and
    does not need it, so by default nothing is recorded).

    Args:
        tile_size: The tile's extent along every infinite dim (an int), or
            one entry per infinite dim (a tuple); each > 0.  Kept as the
            attribute ``tile_size`` and read when a tensor registers.
        cache_size_bytes: The most bytes the tile cache keeps in memory (an
            int >= 0, default 100 MiB), or None for no limit; or ``"auto"``
            (a quarter of the host memory available when the store is
            opened) or a fraction of it such as ``0.5``.
        cache_size_tiles: The most tiles the cache keeps (an int >= 0), or
            None (default) for no limit.
        **kwargs: Only the deprecated ``tile_cache_size=`` (sets
            ``cache_size_tiles`` and warns with DeprecationWarning).

    Raises:
        TypeError: Any other keyword argument.
        ValidationError: A cache limit that is not None or an int >= 0.
    """

    def __init__(self, tile_size: int | tuple[int, ...] = DEFAULT_TILE_SIZE,
                 cache_size_bytes: int | float | str | None = DEFAULT_CACHE_SIZE_BYTES, cache_size_tiles: int | None = None,
                 **kwargs: Any) -> None:
        if "tile_cache_size" in kwargs:
            warnings.warn("tile_cache_size is deprecated; use cache_size_tiles", DeprecationWarning,
                          stacklevel=2)
            cache_size_tiles = kwargs.pop("tile_cache_size")
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments: {sorted(kwargs)}")
        self._init_engine(cache_size_bytes)
        self._cache_size_tiles = cache_size_tiles
        self.tile_size = tile_size
        self._readonly = False
        self._closed = False

    # -- limits --------------------------------------------------------------
    @property
    def _cache_size_bytes(self):
        limit = self._cache.info()["byte_limit"]
        return limit if limit >= 0 else None

    @_cache_size_bytes.setter
    def _cache_size_bytes(self, value):
        self._cache.set_limits(check_limit("cache_size_bytes", value), -1)
        self._cache_bytes_spec = value

    @property
    def _cache_size_tiles(self):
        return self._tile_limit

    @_cache_size_tiles.setter
    def _cache_size_tiles(self, value):
        self._cache.set_tile_limit(check_limit("cache_size_tiles", value))
        self._tile_limit = value

    # -- tile geometry ---------------------------------------------------------
    def _effective_tile_size(self, tensor):
        ninf = sum(d is None for d in tensor.shape)
        ts = self.tile_size
        if isinstance(ts, tuple):
            if len(ts) != ninf:
                raise ValidationError(f"tile_size tuple length {len(ts)} != infinite dims {ninf}")
            sizes = ts
        elif isinstance(ts, int) and not isinstance(ts, bool):
            sizes = (ts,) * ninf
        else:
            raise ValidationError(f"tile_size must be an int or a tuple of ints, got {ts!r}")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int):
                raise ValidationError(f"tile_size entries must be ints, got {s!r}")
            if s <= 0:
                raise ValidationError("tile_size must be positive")
        return tuple(sizes)

    @staticmethod
    def _tile_shape(tensor, tile_size):
        sizes = iter(tile_size)
        return tuple(next(sizes) if d is None else d for d in tensor.shape)

    # -- registration ------------------------------------------------------------
    def _validate_registration(self, tensor: _it.InfiniteTensor, existing: dict,
                               effective_tile_size: tuple[int, ...]) -> None:
        """Check stored metadata against a tensor registering under its id.

        Args:
            tensor: The tensor registering.
            existing: What ``_read_tensor_metadata`` returned for its id.
            effective_tile_size: The store's tile size for the tensor, one
                entry per infinite dim.

        Raises:
            ValidationError: The metadata or the tile size differ.
        """
        self._check_same_meta(tensor.uuid, existing["metadata"], tensor.to_json())
        self._check_same_tile_size(tensor.uuid, existing["tile_size"], effective_tile_size)

    @staticmethod
    def _check_same_tile_size(tensor_id, existing, new):
        if tuple(existing) != tuple(new):
            raise ValidationError(f"Tensor {tensor_id} re-registered with mismatched tile_size: "
                                  f"existing={tuple(existing)}, store tile_size={tuple(new)}")

    def register_tensor(self, tensor: _it.InfiniteTensor) -> None:
        """Attach a tensor.  An id the backend holds is checked against the
        stored metadata and tile size and its stored tiles are read instead of
        computed; a new id gets its metadata written.

        Args:
            tensor: The InfiniteTensor being created.

        Raises:
            TileAccessError: The store is closed.
            ValidationError: The id is stored (or registered) with another
                configuration, tile size, blend or blend_init; the store is
                read-only and does not hold the id; or a bad ``tile_size``.
        """
        self._check_open()
        tid = tensor.uuid
        tile_size = self._effective_tile_size(tensor)
        entry = self._tensor_store.get(tid)
        if entry is not None:
            self._check_same_meta(tid, entry.meta, tensor.to_json())
            self._check_same_tile_size(tid, entry.tile_size, tile_size)
            if entry.rule != tensor._rule():
                raise ValidationError(
                    f"Tensor {tid} re-registered with another blend or blend_init: its stored values "
                    "were combined with the old one; clear_tensor it first")
            entry.node.set_callbacks(*tensor._callbacks())
            entry.bind(tensor)
            return
        existing = self._read_tensor_metadata(tid)
        if existing is not None:
            self._validate_registration(tensor, existing, tile_size)
            tile_size = tuple(existing["tile_size"])
        elif self._readonly:
            raise ValidationError(f"Tensor {tid} is not in this store, which is read-only (mode 'r')")
        elif not getattr(tensor, "_id_given", True):
            self._warn_if_stored_under_another_id(tensor)
        node = _core.Tensor(self._cache, tensor._node_spec(), self._tile_shape(tensor, tile_size))
        if existing is None:
            self._write_tensor_metadata(tid, tensor.to_json(), tile_size)
            self._flush_backend()
        self._attach(node, tid)
        entry = Entry(tensor, node, tile_size)
        self._tensor_store[tid] = entry
        entry.bind(tensor)

    def _warn_if_stored_under_another_id(self, tensor):
        """A tensor without a tensor_id gets a random one; if the store already
        holds tensors of the same configuration, the user most likely meant to
        reopen one of them (and would otherwise compute everything again into
        a new, orphan record)."""
        same = self._ids_with_meta(tensor.to_json())
        if same:
            names = ", ".join(repr(t) for t in same[:5]) + (", ..." if len(same) > 5 else "")
            warnings.warn(
                f"{type(self).__name__} already holds {len(same)} tensor(s) with this configuration ({names}), "
                f"but this tensor has no tensor_id, so it gets the new random id {tensor.uuid!r} and computes "
                f"everything again; pass tensor_id={same[0]!r} to use the stored values (passing any "
                "tensor_id silences this warning)", UserWarning, stacklevel=_caller_level())

    def _ids_with_meta(self, meta: dict) -> list[str]:
        """Ids of stored tensors whose metadata is meta (a backend that can
        list its tensors overrides this; by default: none known)."""
        return []

    def tensor_ids(self) -> list[str]:
        """The ids of the tensors this store holds (sorted).  Backends that
        cannot list their records report the tensors registered since the
        store was opened.

        Returns:
            A new sorted list of ids.

        Raises:
            TileAccessError: The store is closed.
        """
        self._check_open()
        return super().tensor_ids()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} closed>" if self._closed else super().__repr__()

    def _attach(self, node, tensor_id):
        """Make the store the node's backend (HDF5TileStore attaches in C)."""
        _core.attach_python(node, self, tensor_id, self._readonly)

    # what the engine calls for a Python backend
    def _core_read_tile(self, tensor_id, tile_index):
        record = self._read_tile(tensor_id, tile_index)
        if record is None:
            return None
        tile, contributions = record
        return tile.detach().to("cpu").contiguous(), contributions

    def _core_write_tile(self, tensor_id, tile_index, tile, contributions):
        self._write_tile(tensor_id, tile_index, tile, contributions)

    # -- TileStore -------------------------------------------------------------
    def clear_cache(self, tensor_id: str) -> None:
        """Write the tensor's changed tiles, then drop its cached tiles; the
        data on disk stays (later reads load it).

        Args:
            tensor_id: The tensor's id (an unknown id does nothing).

        Raises:
            TileAccessError: The store is closed, or writing failed.
        """
        entry = self._tensor_store.get(str(tensor_id))
        if entry is None:
            return
        self._check_open()
        entry.node.flush()
        self._flush_backend()
        entry.node.clear()

    def clear_tensor(self, tensor_id: str) -> None:
        """Delete everything kept for the tensor, on disk too (unsaved tiles
        are dropped, not written).  Create the tensor again to use the id.

        Args:
            tensor_id: The tensor's id.  Its InfiniteTensor objects then
                raise TileAccessError.

        Raises:
            TileAccessError: The store is closed (or read-only), or the
                backend failed.
        """
        self._check_open()
        entry = self._tensor_store.pop(str(tensor_id), None)
        if entry is not None:
            entry.node.clear()
            for view in entry.views:
                view._node = None
        self._delete_tensor_state(str(tensor_id))
        self._flush_backend()

    def migrate(self, tensor_id: str, old_device: torch.device, old_dtype: torch.dtype) -> None:
        """Move the tensor's cached tiles to the device its InfiniteTensor now
        declares and rewrite the stored metadata (the backend keeps host
        data whatever the device).

        Args:
            tensor_id: The tensor's id.
            old_device: The device the cached tiles are on now.
            old_dtype: The tensor's dtype before the change.

        Raises:
            ValidationError: The dtype changed (persistent stores keep one
                dtype; nothing is changed).
            TileAccessError: No tensor is registered under the id, or the
                metadata could not be written (the tiles move back).
        """
        entry = self._entry(tensor_id)
        tensor = next((v for v in entry.views
                       if v._node is entry.node and (v.device, v.dtype) != (old_device, old_dtype)), None)
        if tensor is None:
            return
        if tensor.dtype != old_dtype:
            raise ValidationError(
                f"Persistent stores do not support dtype changes ({old_dtype} -> {tensor.dtype}) for tensor "
                f"{tensor_id}: clear the tensor and re-create it with the new dtype")
        # stored tiles stay in the file (host memory); the cached ones move
        migrate_node(entry, tensor.device, tensor.dtype, tensor._blend_init)
        try:
            self._write_tensor_metadata(str(tensor_id), tensor.to_json(), entry.tile_size)
            self._flush_backend()
        except BaseException:
            # the file still names the old device: so do the tiles and tensors
            migrate_node(entry, old_device, old_dtype, tensor._blend_init)
            raise

    # -- write-back ----------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise TileAccessError(f"{type(self).__name__} is closed; reopen it with `with store:`")

    def flush(self) -> None:
        """Write every changed tile and make the backend durable.

        Raises:
            TileAccessError: The store is closed, or a write failed.
        """
        self._check_open()
        for entry in list(self._tensor_store.values()):
            entry.node.flush()
        self._flush_backend()

    def close(self) -> None:
        """flush(), drop the cache and close the backend.  Reads then fail
        until the store is reopened (``with store:``).

        Closing a closed store does nothing.  If flushing fails the error is
        raised, but the store still ends closed (the unsaved tiles stay
        cached, and reopening it writes them).

        Raises:
            TileAccessError: A write failed.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            # whatever failed above, the store ends closed, so that `with
            # store:` reopens it (tiles that could not be saved stay cached,
            # and the reopened store writes them)
            try:
                if self._releases_backend():
                    for entry in self._tensor_store.values():
                        if not entry.node.ndirty:
                            entry.node.clear()
                    self._close_backend()
            finally:
                self._closed = True

    def _releases_backend(self):
        """Whether closing this store closes the backend (HDF5TileStore: not
        while another store of this process shares its file)."""
        return True

    def _reopen_backend(self):
        """Open the backend again after close(); raise if it cannot."""
        raise ValidationError(f"{type(self).__name__} cannot be reopened after close()")

    def __enter__(self) -> PersistentTileStore:
        """``with store:``: reopens a closed store (never truncating); returns
        the store, which is closed when the block ends."""
        if self._closed:
            self._reopen_backend()
            self._closed = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        """close() the store; exceptions of the block propagate.

        Args:
            exc_type: The exception's class, or None.
            exc: The exception, or None.
            tb: Its traceback, or None.
        """
        self.close()
        return False

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        try:
            self.close()
        except Exception as e:  # noqa: BLE001  (a finalizer must not raise)
            warnings.warn(f"{type(self).__name__} could not save its tiles when it was garbage-collected: "
                          f"{e}; call close() or use `with` to see such errors", RuntimeWarning)

    # -- storage primitives ----------------------------------------------------------
    @abc.abstractmethod
    def _read_tensor_metadata(self, tensor_id: str) -> dict | None:
        """{"metadata": the stored to_json(), "tile_size": tuple} or None.

        Args:
            tensor_id: The tensor's id.
        """

    @abc.abstractmethod
    def _write_tensor_metadata(self, tensor_id: str, metadata: dict, tile_size: tuple[int, ...]) -> None:
        """Persist (or overwrite) both, creating the tensor's structure.

        Args:
            tensor_id: The tensor's id.
            metadata: The tensor's ``to_json()``.
            tile_size: The tile size, one entry per infinite dim.
        """

    @abc.abstractmethod
    def _delete_tensor_state(self, tensor_id: str) -> None:
        """Remove the metadata, the tiles and any other record of the id.

        Args:
            tensor_id: The tensor's id.
        """

    @abc.abstractmethod
    def _read_tile(self, tensor_id: str,
                   tile_index: tuple[int, ...]) -> tuple[torch.Tensor, Iterable[tuple[int, ...]]] | None:
        """(tile, contributions) or None when the tile was never written.

        Args:
            tensor_id: The tensor's id.
            tile_index: The tile's coordinates, one per infinite dim (``()``
                for a tensor without infinite dims).
        """

    @abc.abstractmethod
    def _write_tile(self, tensor_id: str, tile_index: tuple[int, ...], tile: torch.Tensor,
                    contributions: set[tuple[int, ...]]) -> None:
        """Persist the tile and its contribution set as one record.

        Args:
            tensor_id: The tensor's id.
            tile_index: The tile's coordinates, one per infinite dim.
            tile: The tile's values, a CPU tensor of the full tile shape.
            contributions: The window indices added into the tile.
        """

    def _read_processed_windows(self, tensor_id: str) -> set:
        """0.3's per-window durability record; unused by the engine."""
        return set()

    def _append_processed_window(self, tensor_id: str, window_index: tuple[int, ...]) -> None:
        """0.3's per-window durability record; unused by the engine."""

    def _flush_backend(self) -> None:
        """Make everything written so far durable (default: nothing to do)."""

    def _close_backend(self) -> None:
        """Release the backend (default: nothing to do)."""
