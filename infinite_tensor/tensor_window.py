"""TensorWindow: where each window of a tensor lies.

Along dim d, window index i covers the pixels
[i * stride[d] + offset[d], i * stride[d] + offset[d] + size[d]).
With a dimension_map, dim d follows window coordinate dimension_map[d]
instead of coordinate d, and a None entry pins the dim to
[offset[d], offset[d] + size[d]) for every window.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from typing import Any

from . import _core
from .errors import ValidationError


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _expand(name, value, n, default):
    """An int (repeated n times), a falsy value (-> default) or a sequence of
    n ints (kept as given, like 0.3 did)."""
    if not value and not _is_int(value):
        return default
    if _is_int(value):
        return (value,) * n
    if not isinstance(value, (tuple, list)):
        raise ValidationError(f"{name} must be an int or a sequence of ints, got {value!r}")
    if len(value) != n:
        raise ValidationError(f"{name} length ({len(value)}) must match size length ({n})")
    for v in value:
        if not _is_int(v):
            raise ValidationError(f"{name} entries must be ints, got {v!r}")
    return value


class TensorWindow:
    """The placement of a tensor's windows (see the module docstring).

    Along dim d, window index i covers the pixels
    ``[i * stride[d] + offset[d], i * stride[d] + offset[d] + size[d])``.
    The core checks the limits (sizes and strides at most 2**48, offsets
    within +-2**48, at most 16 dims) when a tensor uses the window.

    Args:
        size: The window's extent per dim: a tuple (or list) of positive
            ints, the exact shape ``f`` must return for an output window.
        stride: The step between consecutive windows per dim: an int (for
            every dim), a tuple of positive ints, or None for ``size`` (no
            overlap).
        offset: Where window index 0 starts per dim: an int (for every dim),
            a tuple of ints, or None for zeros.
        dimension_map: None (dim d follows window coordinate d), or one
            entry per dim: the window coordinate (an int >= 0) that drives
            the dim, or None to pin the dim to
            ``[offset[d], offset[d] + size[d])`` for every window.

    Raises:
        ValidationError: A malformed size, stride, offset or dimension_map
            (wrong types, lengths that differ from ``size``'s, sizes or
            strides <= 0, negative map entries).
    """

    def __init__(self, size: tuple[int, ...], stride: int | tuple[int, ...] | None = None,
                 offset: int | tuple[int, ...] | None = None,
                 dimension_map: tuple[int | None, ...] | None = None) -> None:
        if not isinstance(size, (tuple, list)):
            raise ValidationError(f"size must be a tuple of positive ints, got {size!r}")
        if len(size) == 0:
            raise ValidationError("size must have at least one dim")
        for s in size:
            if not _is_int(s) or s <= 0:
                raise ValidationError(f"window sizes must be positive ints, got {tuple(size)!r}")
        n = len(size)
        self.size = size
        if not stride and not _is_int(stride):
            self.stride = size
        else:
            self.stride = _expand("stride", stride, n, size)
            for s in self.stride:
                if s <= 0:
                    raise ValidationError(f"window strides must be positive, got {tuple(self.stride)!r}")
        self.offset = _expand("offset", offset, n, (0,) * n)
        if dimension_map is not None:
            if not isinstance(dimension_map, (tuple, list)):
                raise ValidationError(f"dimension_map must be a sequence, got {dimension_map!r}")
            if len(dimension_map) != n:
                raise ValidationError(
                    f"dimension_map length ({len(dimension_map)}) must match size length ({n})")
            for m in dimension_map:
                if m is not None and (not _is_int(m) or m < 0):
                    raise ValidationError(
                        f"dimension_map entries must be None or non-negative ints, got {m!r}")
        self.dimension_map = dimension_map

    # -- helpers -------------------------------------------------------
    def _core_tuple(self):
        """(size, stride, offset, dimension_map) as the core takes them: the
        map in full (identity when none is given, None for a pinned dim).
        The core checks them (limits, dims, coordinates) where they are used."""
        dmap = tuple(range(len(self.size))) if self.dimension_map is None else tuple(self.dimension_map)
        return (tuple(self.size), tuple(self.stride), tuple(self.offset), dmap)

    # -- public API ----------------------------------------------------
    def get_bounds(self, window_index: tuple[int, ...]) -> tuple[slice, ...]:
        """Pixel slices (step None) covered by the window with this index:
        the core's window arithmetic (it_window_bounds), with its checks (a
        window the engine cannot place raises as a read of it would).

        Args:
            window_index: One int per window coordinate (as ``f`` receives
                it in ``ctx``).

        Returns:
            One ``slice(start, stop)`` per dim of the window, after
            ``dimension_map`` (a pinned dim gives
            ``slice(offset, offset + size)``).

        Raises:
            IndexError: The window reaches past +-2**62.
            ValidationError: The window's parameters are past the core's
                limits, or the index does not have the coordinates the map
                needs.
        """
        return _core.window_bounds(self._core_tuple(), window_index)

    def intersecting_windows(self, pixel_slices: tuple[slice, ...],
                             tensor_shape: tuple[int | None, ...] | None = None) -> Iterator[tuple[int, ...]]:
        """Yield, in lexicographic order, the index of every window meeting
        the region given by pixel_slices (start and stop per dim; steps are
        ignored).  With tensor_shape, windows that stick out of a finite dim
        are left out, as they are never computed.

        Args:
            pixel_slices: One slice per dim of the window, with explicit
                ``start`` and ``stop`` (a sequence of slices).
            tensor_shape: The tensor's shape (None marks an infinite dim), to
                leave out windows past a finite dim; None filters nothing.

        Yields:
            Window indices (tuples of ints), in lexicographic order.

        Raises:
            ValidationError: ``pixel_slices`` does not have one slice per
                dim, or the window's parameters are past the core's limits.
        """
        n = len(self.size)
        shape = list(tensor_shape) if tensor_shape is not None else [None] * n
        starts = [s.start for s in pixel_slices]
        stops = [s.stop for s in pixel_slices]
        if len(starts) != n:
            raise ValidationError(f"expected {n} slices, got {len(starts)}")
        dom = _core.window_domain(self._core_tuple(), n, shape, starts, stops)
        if dom is None:
            return
        lo, count = dom
        yield from product(*(range(l, l + c) for l, c in zip(lo, count)))

    def to_dict(self) -> dict[str, Any]:
        """The window as JSON-safe values (what ``to_json()`` and the stores'
        metadata hold).

        Returns:
            ``{"size", "stride", "offset", "dimension_map"}``: lists of ints,
            and None for a missing map.
        """
        return {
            "size": [int(s) for s in self.size],
            "stride": [int(s) for s in self.stride],
            "offset": [int(s) for s in self.offset],
            "dimension_map": None if self.dimension_map is None else list(self.dimension_map),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorWindow:
        """Rebuild a window from ``to_dict()``'s output.

        Args:
            d: A dict with ``size`` and, optionally, ``stride``, ``offset``
                and ``dimension_map`` (missing or None: the defaults).

        Returns:
            A new TensorWindow.

        Raises:
            KeyError: ``d`` has no ``size``.
            ValueError, TypeError: An entry ``int()`` cannot convert.
            ValidationError: The values do not make a valid window.
        """
        size = tuple(int(s) for s in d["size"])
        stride = d.get("stride")
        offset = d.get("offset")
        dmap = d.get("dimension_map")
        return cls(
            size,
            None if stride is None else tuple(int(s) for s in stride),
            None if offset is None else tuple(int(s) for s in offset),
            None if dmap is None else tuple(None if m is None else int(m) for m in dmap),
        )

    def __repr__(self) -> str:
        return (f"TensorWindow(size={self.size}, stride={self.stride}, "
                f"offset={self.offset}, map={self.dimension_map})")
