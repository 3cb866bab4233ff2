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
from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

# the module, not the class: infinite_tensor.infinite_tensor imports this
# package while it is being imported (annotations name _it.InfiniteTensor)
from .. import infinite_tensor as _it
from ..tensor_window import TensorWindow

__all__ = ["TileStore", "MemoryTileStore"]


class TileStore(abc.ABC):
    """The base of MemoryTileStore and PersistentTileStore (so of
    HDF5TileStore): owns the cached values of the tensors registered with
    it.  The abstract methods are 0.3's store protocol, which the stores
    implement over the C engine; InfiniteTensor accepts only stores built on
    that engine (see the module docstring)."""

    @abc.abstractmethod
    def register_tensor(self, tensor: _it.InfiniteTensor) -> None:
        """Attach a tensor (validating it against any state kept for its id).

        ``InfiniteTensor.__init__`` calls it; an id registered again shares
        the values kept for it when its ``to_json()`` is equal.

        Args:
            tensor: The InfiniteTensor being created.

        Raises:
            ValidationError: The id is registered with another configuration.
        """

    @abc.abstractmethod
    def clear_tensor(self, tensor_id: str) -> None:
        """Delete every piece of state kept for the id.

        Args:
            tensor_id: The tensor's id (``tensor.uuid``).
        """

    @abc.abstractmethod
    def is_window_processed(self, tensor_id: str, window_index: tuple[int, ...]) -> bool:
        """Whether the window's output is in the cached values.

        Args:
            tensor_id: The tensor's id.
            window_index: The window's index, one int per coordinate.

        Returns:
            True when the window has been added into the tensor's values.
        """

    @abc.abstractmethod
    def notify_window_processed(self, tensor_id: str, window_index: tuple[int, ...],
                                output: torch.Tensor) -> None:
        """Add a window output computed elsewhere.

        Args:
            tensor_id: The tensor's id.
            window_index: The window's index, one int per coordinate.
            output: The window's values: a tensor of the window's size, the
                tensor's dtype and device.
        """

    @abc.abstractmethod
    def read_pixels(self, tensor_id: str, pixel_slices: tuple[slice, ...]) -> torch.Tensor:
        """Assemble a region from cached values only.

        Args:
            tensor_id: The tensor's id.
            pixel_slices: One slice per dim, with explicit start and stop.

        Returns:
            A new tensor holding the region.
        """

    @abc.abstractmethod
    def migrate(self, tensor_id: str, old_device: torch.device, old_dtype: torch.dtype) -> None:
        """Move cached values after the tensor's device or dtype changed.

        ``InfiniteTensor.to`` calls it after setting the new device and
        dtype on the tensor, and restores the old ones if it raises.

        Args:
            tensor_id: The tensor's id.
            old_device: The device the values are on now.
            old_dtype: The dtype the values have now.
        """

    def clear_cache(self, tensor_id: str) -> None:
        """Drop recomputable in-memory state of the tensor (default: none).

        Args:
            tensor_id: The tensor's id.
        """

    def begin_access(self, tensor_id: str) -> None:
        """Kept for 0.3 compatibility; reads pin what they use by themselves.

        Args:
            tensor_id: The tensor whose access starts.
        """

    def end_access(self, tensor_id: str) -> None:
        """Kept for 0.3 compatibility; see begin_access.

        Args:
            tensor_id: The tensor whose access ends.
        """

    # -- deprecated 0.2 API --------------------------------------------------
    def get_or_create(self, tensor_id: Any, shape: tuple[int | None, ...], f: Callable[..., Any],
                      output_window: TensorWindow, *, args: Sequence[_it.InfiniteTensor] | None = None,
                      args_windows: Sequence[TensorWindow] | None = None, dtype: torch.dtype | None = None,
                      batch_size: int | Sequence[int] | None = None, **kwargs: Any) -> _it.InfiniteTensor:
        """Deprecated (0.2): build an InfiniteTensor in this store.

        cache_method is ignored; cache_limit sets this store's byte limit;
        tile_size sets the store's tile size where it has one.

        Args:
            tensor_id: The tensor's id (as ``InfiniteTensor(tensor_id=...)``).
            shape: As ``InfiniteTensor``'s.
            f: As ``InfiniteTensor``'s.
            output_window: As ``InfiniteTensor``'s.
            args: As ``InfiniteTensor``'s.
            args_windows: As ``InfiniteTensor``'s.
            dtype: As ``InfiniteTensor``'s (None: ``torch.float32``).
            batch_size: As ``InfiniteTensor``'s.
            **kwargs: 0.2's ``cache_method`` (ignored), ``cache_limit`` (the
                store's byte limit) and ``tile_size`` (the store's tile size,
                where it has one).

        Returns:
            The new InfiniteTensor, registered in this store.

        Raises:
            TypeError: Any other keyword argument.
            ValidationError: As ``InfiniteTensor`` raises it.
        """
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

    def clear_direct_caches(self) -> None:
        """Deprecated (0.2): clear_cache for every registered tensor."""
        warnings.warn("clear_direct_caches is deprecated; use tensor.clear_cache()",
                      DeprecationWarning, stacklevel=2)
        for tensor_id in list(getattr(self, "_tensor_store", {})):
            self.clear_cache(tensor_id)


from .memory import MemoryTileStore  # noqa: E402  (needs TileStore)
from .persistent import PersistentTileStore  # noqa: E402
from .hdf5_tilestore import HDF5TileStore  # noqa: E402
