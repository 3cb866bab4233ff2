"""InfiniteTensor: a tensor with unbounded dims, computed window by window.

The Python object holds the public configuration and checks what only
Python can (types, callables, torch dtypes and devices); the core checks the
geometry (dims, window limits, dimension_map, the number of args) when the
store creates the node.  The data path (index parsing, planning, calling f,
caching, assembly) runs in the C extension, reached through self._node, the
tensor's node in its store.
"""
import uuid as _uuidlib

import torch

from . import _bridge, _core
from .errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InfiniteTensorError,
    ShapeMismatchError,
    TileAccessError,
    ValidationError,
)
from .tensor_window import TensorWindow
from .tilestore import MemoryTileStore, TileStore
from .tilestore._engine import EngineStore

__all__ = ["InfiniteTensor", "DEFAULT_DTYPE", "DEFAULT_DEVICE"]

DEFAULT_DTYPE = torch.float32
DEFAULT_DEVICE = torch.device("cpu")

OUTPUT_SHAPE_MESSAGE = "Function output shape {actual} does not match expected window shape {expected}"
DEVICE_MESSAGE = "Function output is on device {actual}, tensor declared device {expected}."
DTYPE_MESSAGE = "Function output has dtype {actual}, tensor declared dtype {expected}."
TILE_DELETED_MESSAGE = ("Tile has been deleted. This indicates either a bug or an attempt to access a "
                        "tensor after cleanup.")

# blends the core combines itself, without calling Python per window
_BUILTIN_BLENDS = {
    torch.maximum: _core.COMBINE_MAX,
    torch.max: _core.COMBINE_MAX,
    torch.minimum: _core.COMBINE_MIN,
    torch.min: _core.COMBINE_MIN,
    torch.add: _core.COMBINE_SUM,
}


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _check_device_like(value, what):
    if isinstance(value, bool) or not isinstance(value, (torch.device, str, int)):
        raise TypeError(f"{what} must be a torch.device, str or int, got {type(value).__name__}")


def _as_device(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return torch.device("cuda", value)
    return torch.device(value)


def _parse_to_args(*args, **kwargs):
    """Parse the arguments of Tensor.to-style calls into (device, dtype);
    either may be None.  Raises TypeError like torch for malformed calls."""
    unknown = set(kwargs) - {"device", "dtype"}
    if unknown:
        raise TypeError(f"to() got unexpected keyword arguments: {sorted(unknown)}")
    device = dtype = None
    for a in args:
        if isinstance(a, torch.Tensor):
            if len(args) > 1 or kwargs:
                raise TypeError("to(tensor) takes no other device or dtype")
            return a.device, a.dtype
        if isinstance(a, torch.dtype):
            if dtype is not None:
                raise TypeError("to() got the dtype twice")
            dtype = a
        elif isinstance(a, bool):
            raise TypeError("to() does not take a bool")
        elif isinstance(a, (torch.device, str, int)):
            if device is not None:
                raise TypeError("to() got the device twice")
            device = _as_device(a)
        else:
            raise TypeError(f"to() got an unsupported argument of type {type(a).__name__}")
    if "device" in kwargs:
        if device is not None:
            raise TypeError("to() got the device twice")
        _check_device_like(kwargs["device"], "device")
        device = _as_device(kwargs["device"])
    if "dtype" in kwargs:
        if dtype is not None:
            raise TypeError("to() got the dtype twice")
        if not isinstance(kwargs["dtype"], torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {type(kwargs['dtype']).__name__}")
        dtype = kwargs["dtype"]
    return device, dtype


def _normalize_device(device):
    # an int names a CUDA device, as in .to(); torch.device(3) itself asks the
    # accelerator and fails with a RuntimeError where there is none
    device = _as_device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValidationError(f"device {device} is not available: torch.cuda.is_available() is False")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_store(store):
    """A tensor needs a store built on the C engine, which computes and
    caches its values in tiles.  0.3's other route, any TileStore subclass
    handed each window's output (notify_window_processed) and asked to
    combine them (read_pixels), would be a second engine: storage of one's
    own is a PersistentTileStore subclass (docs/api.md)."""
    if not isinstance(store, EngineStore):
        what = "a TileStore not built on the engine" if isinstance(store, TileStore) else "not a store"
        raise ValidationError(
            f"tile_store must be a MemoryTileStore, an HDF5TileStore or a subclass of PersistentTileStore "
            f"(which keeps tiles where its storage primitives say), got {type(store).__name__} ({what})")


class InfiniteTensor:
    """A tensor with unbounded dims defined by a deterministic window function.

    ``t[...]`` computes the windows the region needs (calling ``f``),
    combines overlapping windows (sum by default, or ``blend``), caches the
    result in ``tile_store`` and returns a new ``torch.Tensor``.
    """

    def __init__(self, shape, f, output_window, args=None, args_windows=None,
                 dtype=DEFAULT_DTYPE, device=DEFAULT_DEVICE, tile_store=None, tensor_id=None,
                 batch_size=None, blend=None, blend_init=None):
        if not isinstance(shape, tuple):
            raise ValidationError(f"Shape must be a tuple, got {type(shape).__name__}")
        if len(shape) == 0:
            raise ValidationError("Shape cannot be empty")
        for i, d in enumerate(shape):
            if d is not None and (not _is_int(d) or d <= 0):
                raise ValidationError(f"Dimension {i} must be None or positive integer, got {d!r}")
        if not callable(f):
            raise ValidationError(f"Function must be callable, got {type(f).__name__}")
        if blend is not None and not callable(blend):
            raise ValidationError(f"blend must be callable or None, got {type(blend).__name__}")
        if blend_init is not None and (isinstance(blend_init, bool) or not isinstance(blend_init, (int, float))):
            raise ValidationError(f"blend_init must be int, float, or None, got {type(blend_init).__name__}")
        args = list(args) if args is not None else []
        args_windows = list(args_windows) if args_windows is not None else []
        if len(args_windows) != len(args) and (args_windows or args):
            raise ValidationError(f"args_windows length {len(args_windows)} must match args length {len(args)}")
        if tile_store is None:
            tile_store = MemoryTileStore()
        self._id_given = tensor_id is not None  # stores warn when a random id hides a stored tensor
        if tensor_id is None:
            tensor_id = str(_uuidlib.uuid4())
        if not isinstance(output_window, TensorWindow):
            raise ValidationError(f"output_window must be a TensorWindow, got {type(output_window).__name__}")
        # the core checks the geometry (dims, limits, dimension_map, the
        # number of args) when the store creates the node; here only what it
        # cannot see: Python types, and the hint below
        for i, (arg, win) in enumerate(zip(args, args_windows)):
            if not isinstance(arg, InfiniteTensor):
                raise ValidationError("All positional args must be InfiniteTensor instances")
            if not isinstance(win, TensorWindow):
                raise ValidationError(f"args_windows[{i}] must be a TensorWindow, got {type(win).__name__}")
            if win.dimension_map is None and len(shape) < len(win.size) == len(arg.shape):
                raise ValidationError(
                    f"args_windows[{i}] has {len(win.size)} dims but this tensor's window index has "
                    f"{len(shape)} entries; give it a dimension_map")
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise ValidationError(f"batch_size must be None or a positive int, got {_bridge.short_repr(batch_size)}")
        if batch_size is not None and batch_size >= 2**63:  # the core takes any int64 >= 1
            raise ValidationError(f"batch_size must be below 2**63, got {_bridge.short_repr(batch_size)}")
        if not isinstance(dtype, torch.dtype):
            raise ValidationError(f"dtype must be a torch.dtype, got {dtype!r}")
        _bridge.dtype_code(dtype)
        device = _normalize_device(device)

        self._node = None
        self._shape = shape
        self._fn = f
        self._output_window = output_window
        self._args = args
        self._args_windows = args_windows
        self._dtype = dtype
        self._device = device
        self._store = tile_store
        self._uuid = str(tensor_id)
        self._batch_size = batch_size
        self._blend = blend
        self._blend_init = blend_init
        _check_store(tile_store)
        tile_store.register_tensor(self)
        if self._node is None:
            raise ValidationError(
                f"{type(tile_store).__name__}.register_tensor did not attach the tensor to the engine (an "
                "override that does not call the base class's?)")

    # -- read-only configuration ---------------------------------------
    shape = property(lambda self: self._shape)
    uuid = property(lambda self: self._uuid)
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    args = property(lambda self: self._args)
    args_windows = property(lambda self: self._args_windows)
    output_window = property(lambda self: self._output_window)
    batch_size = property(lambda self: self._batch_size)
    blend = property(lambda self: self._blend)
    blend_init = property(lambda self: self._blend_init)

    @property
    def f(self):
        return self._fn

    @property
    def _f(self):
        return self._fn

    @_f.setter
    def _f(self, fn):
        # tests and users swap f by hand (e.g. before .to()); the node follows
        self._fn = fn
        if self._node is not None:
            self._node.set_callbacks(fn, self._blend, self._batch_size or 0)

    # -- what the store needs to build the node --------------------------
    def _combine(self):
        if self._blend is None:
            return _core.COMBINE_SUM
        mode = _BUILTIN_BLENDS.get(self._blend, _core.COMBINE_CUSTOM)
        if self._dtype.is_complex and mode != _core.COMBINE_SUM:
            return _core.COMBINE_CUSTOM  # torch decides what max/min mean there
        return mode

    def _node_spec(self):
        """What the store builds this tensor's core node from."""
        return _bridge.NodeSpec(
            shape=self._shape,
            window=self._output_window._core_tuple(),
            args=tuple(a._live_node() for a in self._args),
            arg_windows=tuple(w._core_tuple() for w in self._args_windows),
            dtype=self._dtype,
            device=self._device,
            fill=_bridge.fill_tensor(self._blend_init, self._dtype),
            f=self._fn,
            blend=self._blend,
            batch_size=self._batch_size or 0,
            combine=self._combine(),
            tensor_id=self._uuid,
        )

    def _live_node(self):
        node = self._node
        if node is None:
            raise TileAccessError(TILE_DELETED_MESSAGE)
        return node

    # -- reading -----------------------------------------------------------
    def __getitem__(self, key):
        node = self._node
        if node is None:
            raise TileAccessError(TILE_DELETED_MESSAGE)
        return node[key]

    # -- whole-tensor conversions --------------------------------------------
    # A tensor with an infinite dim has no length, rows to iterate over, or
    # array to convert to: each of these raises a TypeError that says to
    # read a finite region first (without them Python and numpy fell back on
    # __getitem__: np.asarray(t) gave a 0-d object array, list(t) was empty or
    # never ended).  A tensor whose dims are all finite behaves like its
    # whole read, t[...].  bool(t) is always True, as in 0.3: `if t:` asks
    # whether there is a tensor, never about its values.
    def _finite_or_raise(self, what, example):
        """what: a format with {} for the tensor; example: one with {} for a
        finite region of it."""
        if any(d is None for d in self._shape):
            region = "t[" + ", ".join("0:64" if d is None else ":" for d in self._shape) + "]"
            raise TypeError(f"{what.format(f'an InfiniteTensor with infinite dims (shape {self._shape})')}; read "
                            f"a finite region first, e.g. {example.format(region)}")

    def __len__(self):
        self._finite_or_raise("{} has no len()", "len({})")
        return self._shape[0]

    def __iter__(self):
        self._finite_or_raise("cannot iterate over {}", "for row in {}: ...")
        return (self[i] for i in range(self._shape[0]))

    def __contains__(self, value):
        self._finite_or_raise("cannot search {} ('in')", "value in {}")
        return value in self[...]

    def __bool__(self):
        return True

    def __array__(self, dtype=None, copy=None):
        self._finite_or_raise("cannot convert {} to a numpy array", "np.asarray({})")
        out = self[...].cpu().numpy()  # a fresh read: nothing else shares it
        return out if dtype is None else out.astype(dtype, copy=False)

    def __dlpack__(self, *args, **kwargs):
        # torch.as_tensor / torch.tensor / torch.from_dlpack take this path
        self._finite_or_raise("cannot convert {} to a torch.Tensor", "torch.as_tensor({})")
        return self[...].__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return _bridge.device_code(self._device)

    # -- 0.3's private helpers, kept for code that called them -----------
    def _ensure_processed_range(self, ranges):
        """Compute every window meeting each region (a tuple of slices)."""
        for region in ranges:
            self[tuple(region)]

    def _ensure_processed(self, window_indices):
        """Compute the given windows (and any other window meeting their
        bounds, which the engine computes together)."""
        self._ensure_processed_range(self._output_window.get_bounds(w) for w in window_indices)

    _process_windows = _ensure_processed

    def clear_cache(self):
        """Forget this tensor's cached values (recomputed on the next read)."""
        self._store.clear_cache(self._uuid)

    def to(self, *args, **kwargs):
        """Change the declared device and/or dtype in place, migrating cached
        values; returns self.  f is not changed: it must produce the new
        dtype/device for windows computed afterwards."""
        device, dtype = _parse_to_args(*args, **kwargs)
        new_device = self._device if device is None else _normalize_device(device)
        new_dtype = self._dtype if dtype is None else dtype
        if new_device == self._device and new_dtype == self._dtype:
            return self
        old_device, old_dtype = self._device, self._dtype
        self._device, self._dtype = new_device, new_dtype
        try:
            self._store.migrate(self._uuid, old_device, old_dtype)
        except BaseException:
            self._device, self._dtype = old_device, old_dtype
            raise
        return self

    def to_json(self):
        return {
            "shape": list(self._shape),
            "dtype": str(self._dtype).replace("torch.", ""),
            "device": str(self._device),
            "args": [a.uuid for a in self._args],
            "args_windows": [None if w is None else w.to_dict() for w in self._args_windows],
            "output_window": self._output_window.to_dict(),
        }

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return False


# keep the exception names importable from this module, as in 0.3
__all__ += ["InfiniteTensorError", "ShapeMismatchError", "DeviceMismatchError",
            "DtypeMismatchError", "ValidationError", "TileAccessError"]
