"""TensorWindow: where each window of a tensor lies.

Along dim d, window index i covers the pixels
[i * stride[d] + offset[d], i * stride[d] + offset[d] + size[d]).
With a dimension_map, dim d follows window coordinate dimension_map[d]
instead of coordinate d, and a None entry pins the dim to
[offset[d], offset[d] + size[d]) for every window.
"""
from itertools import product

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
    """The placement of a tensor's windows (see the module docstring)."""

    def __init__(self, size, stride=None, offset=None, dimension_map=None):
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
    def get_bounds(self, window_index):
        """Pixel slices (step None) covered by the window with this index:
        the core's window arithmetic (it_window_bounds), with its checks (a
        window the engine cannot place raises as a read of it would)."""
        return _core.window_bounds(self._core_tuple(), window_index)

    def intersecting_windows(self, pixel_slices, tensor_shape=None):
        """Yield, in lexicographic order, the index of every window meeting
        the region given by pixel_slices (start and stop per dim; steps are
        ignored).  With tensor_shape, windows that stick out of a finite dim
        are left out, as they are never computed."""
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

    def to_dict(self):
        return {
            "size": [int(s) for s in self.size],
            "stride": [int(s) for s in self.stride],
            "offset": [int(s) for s in self.offset],
            "dimension_map": None if self.dimension_map is None else list(self.dimension_map),
        }

    @classmethod
    def from_dict(cls, d):
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

    def __repr__(self):
        return (f"TensorWindow(size={self.size}, stride={self.stride}, "
                f"offset={self.offset}, map={self.dimension_map})")
