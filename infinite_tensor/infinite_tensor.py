"""InfiniteTensor: a tensor with unbounded dims, computed window by window.

The Python object holds the public configuration and checks what only
Python can (types, callables, torch dtypes and devices); the core checks the
geometry (dims, window limits, dimension_map, the number of args) when the
store creates the node.  The data path (index parsing, planning, calling f,
caching, assembly) runs in the C extension, reached through self._node, the
tensor's node in its store.
"""
from __future__ import annotations

import os
import pickle as _pickle
import uuid as _uuidlib
from collections import deque as _deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import torch

from . import _bridge, _core, _display, _mean, _sizing, progress as _progress
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
from .tilestore import _serve
from .tilestore._engine import EngineStore
from .utils import standardize_indices

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


def _as_device(value: torch.device | str | int) -> torch.device:
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


def _normalize_device(device: torch.device | str | int) -> torch.device:
    # an int names a CUDA device, as in .to(); torch.device(3) itself asks the
    # accelerator and fails with a RuntimeError where there is none
    device = _as_device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValidationError(f"device {device} is not available: torch.cuda.is_available() is False")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_batch_size(batch_size):
    """The allowed sizes (sorted) when batch_size is a list or tuple of them,
    else None; ValidationError unless it is None, "auto" or positive ints."""
    shown = _bridge.short_repr(batch_size)
    if isinstance(batch_size, str) and batch_size == "auto":
        return None
    if isinstance(batch_size, (list, tuple)):
        sizes = list(batch_size)
        if not sizes or len(set(sizes)) != len(sizes) or any(not _is_int(b) or not 1 <= b < 2**63 for b in sizes):
            raise ValidationError(f"batch_size as a list (the allowed batch sizes) must hold distinct positive ints "
                                  f"below 2**63, got {shown}")
        return sorted(sizes)
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise ValidationError(f"batch_size must be None or a positive int, got {shown} (or a list of the "
                              f"allowed batch sizes, or 'auto')")
    if batch_size is not None and batch_size >= 2**63:  # the core takes any int64 >= 1
        raise ValidationError(f"batch_size must be below 2**63, got {shown}")
    return None


def _padding_f(f, sizes):
    """f for allowed batch sizes: a batch of n windows is padded to the
    smallest allowed size >= n by repeating its last window (and that
    window's argument regions); the padding's outputs are dropped."""
    def padded(ctxs, *arg_lists):
        n = len(ctxs)
        size = next(s for s in sizes if s >= n)
        if size == n:
            return f(ctxs, *arg_lists)
        extra = size - n
        out = f(list(ctxs) + [ctxs[-1]] * extra, *[list(a) + [a[-1]] * extra for a in arg_lists])
        try:
            count = len(out)
        except TypeError:
            return out  # not a list or tensor: the core says what is wrong
        return out[:n] if count == size else out  # a wrong count is reported as f returned it
    padded.__wrapped__ = f
    return padded


def _has_access_hooks(store):
    """Whether the store's class overrides begin_access or end_access."""
    cls = type(store)
    return cls.begin_access is not EngineStore.begin_access or cls.end_access is not EngineStore.end_access


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


def _read_block(tensor: InfiniteTensor, box: tuple[slice, ...]) -> Any:
    """One chunk of InfiniteTensor.to_dask: the region read, as numpy."""
    return tensor[box].cpu().numpy()


def _rebuild(definition: dict[str, Any]) -> InfiniteTensor:
    """Unpickle an InfiniteTensor (InfiniteTensor.__reduce__)."""
    return InfiniteTensor(**definition)


class InfiniteTensor:
    """A tensor with unbounded dims defined by a deterministic window function.

    ``t[...]`` computes the windows the region needs (calling ``f``),
    combines overlapping windows (sum by default, or ``blend``), caches the
    result in ``tile_store`` and returns a new ``torch.Tensor``.

    Args:
        shape: A tuple of positive ints and None (an unbounded dim), at most
            16 dims.
        f: The window function, ``f(ctx, *arg_regions)``: ``ctx`` is the
            window index (a tuple of ints, one per dim) and each arg region
            the window of the matching upstream tensor; it returns a tensor
            of exactly ``output_window.size``, with the declared dtype and
            device.  It runs under ``torch.no_grad()`` and must be
            deterministic (evicted values are computed again).
        output_window: The TensorWindow that places f's outputs.
        args: Upstream InfiniteTensors whose regions f receives (at most 63).
        args_windows: One TensorWindow per entry of ``args``: the region of
            that tensor f receives for a window index.
        dtype: The tensor's dtype (default ``torch.float32``).
        device: Where f's outputs, the cached tiles and every read live:
            ``"cpu"`` (default) or a CUDA device (``"cuda"`` is the current
            one; an int names a CUDA device).
        tile_store: Where computed values are cached: a MemoryTileStore, an
            HDF5TileStore or a PersistentTileStore subclass.  None: a new
            unbounded MemoryTileStore.
        tensor_id: The id the store keys the tensor by (turned into a str);
            None: a random uuid.  Reuse an id to share a store's values.
        batch_size: None (f gets one window at a time); an int N (f gets a
            list of up to N window indices and, per arg, a list of regions,
            and returns as many tensors, or one stacked along a new first
            dim); or a list or tuple of distinct positive ints, the allowed
            batch sizes (a short batch is padded to the smallest allowed size
            by repeating its last window, and the padding's outputs dropped);
            or ``"auto"``: the largest batch whose outputs and args take at
            most a quarter of the memory available on the tensor's device
            (at most 4096 windows; found again when the tensor moves).
        blend: ``blend(existing, incoming) -> combined``, how overlapping
            windows combine instead of the sum (``torch.maximum`` and
            ``torch.minimum`` run as built-in kernels); or ``"mean"``, the
            weighted mean of the windows covering each pixel (see weight).
        blend_init: The value before any window (an int or float; None: 0);
            with ``blend="mean"``, the value where no window covers a pixel.
        progress: True or False shows or hides progress bars for this
            tensor's large reads whatever ``set_progress`` says; None
            (default) follows it.
        weight: With ``blend="mean"`` only: ``"constant"`` (the default),
            ``"linear"`` (a tent along every dim where windows overlap),
            ``"gaussian"`` (sigma 0.125 x the window's extent along those
            dims, as MONAI) or a tensor of the window's shape (>= 0).  Each
            window's output is multiplied by it and every read divides by
            the sum of the weights covering each pixel.

    Raises:
        ValidationError: A bad shape, f, window, args, batch size, dtype,
            device (a CUDA device without a GPU), store or progress value, or
            an id already registered in the store with another configuration.
    """

    # (store, id) pairs whose begin_access/end_access bracket this tensor's
    # reads (declared for type checkers; set in __init__)
    _access_hooks: list[tuple[TileStore, str]]

    def __init__(self, shape: tuple[int | None, ...], f: Callable[..., Any], output_window: TensorWindow,
                 args: Sequence[InfiniteTensor] | None = None, args_windows: Sequence[TensorWindow] | None = None,
                 dtype: torch.dtype = DEFAULT_DTYPE, device: torch.device | str | int = DEFAULT_DEVICE,
                 tile_store: TileStore | None = None, tensor_id: Any | None = None,
                 batch_size: int | Sequence[int] | Literal["auto"] | None = None,
                 blend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Literal["mean"] | None = None,
                 blend_init: float | int | None = None, progress: bool | None = None,
                 weight: str | torch.Tensor | None = None) -> None:
        if not isinstance(shape, tuple):
            raise ValidationError(f"Shape must be a tuple, got {type(shape).__name__}")
        if len(shape) == 0:
            raise ValidationError("Shape cannot be empty")
        for i, d in enumerate(shape):
            if d is not None and (not _is_int(d) or d <= 0):
                raise ValidationError(f"Dimension {i} must be None or positive integer, got {d!r}")
        if not callable(f):
            raise ValidationError(f"Function must be callable, got {type(f).__name__}")
        if blend is not None and not callable(blend) and not (isinstance(blend, str) and blend == "mean"):
            raise ValidationError(f"blend must be callable or None, got {type(blend).__name__} (or 'mean': the "
                                  f"weighted mean of the windows covering a pixel)")
        if weight is not None and not (isinstance(blend, str) and blend == "mean"):
            raise ValidationError("weight= goes with blend='mean' (the weighted mean of overlapping windows)")
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
        batch_sizes = _check_batch_size(batch_size)
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
        self._batch_sizes = batch_sizes  # the allowed sizes (a list given), else None
        self._blend = blend
        self._blend_init = blend_init
        self._mean = None  # blend="mean": what the core gets (_mean.core_mean)
        self._weight = weight
        if self._is_mean():
            if output_window.dimension_map is not None and \
                    tuple(output_window.dimension_map) != tuple(range(len(shape))):
                raise ValidationError("blend='mean' needs an output window without a dimension_map")
            if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                raise ValidationError(f"blend='mean' needs a floating dtype (float16, bfloat16, float32, float64), "
                                      f"got {dtype}: the mean of integers is not an integer; compute in float and "
                                      f"round")
            if device.type != "cpu":
                raise ValidationError(f"blend='mean' is not available on {device.type} devices yet")
            self._mean = _mean.core_mean("constant" if weight is None else weight, shape, output_window, dtype,
                                         blend_init)
        _progress.check_setting(progress)
        self._progress = progress
        _check_store(tile_store)
        # a store class with begin_access/end_access of its own sees every
        # read that may compute its tensor's windows bracketed by them, as in
        # 0.4 (our stores need no bracket: a read pins what it uses): the
        # (store, id) pairs of this tensor and its upstreams that have hooks
        hooked: list[tuple[TileStore, str]] = [(tile_store, self._uuid)] if _has_access_hooks(tile_store) else []
        for a in args:
            hooked += [h for h in a._access_hooks if all(h[0] is not s or h[1] != i for s, i in hooked)]
        self._access_hooks = hooked
        tile_store.register_tensor(self)
        if progress is not None:
            _progress._set_tensor(self._uuid, progress)
        if self._node is None:
            raise ValidationError(
                f"{type(tile_store).__name__}.register_tensor did not attach the tensor to the engine (an "
                "override that does not call the base class's?)")

    # -- read-only configuration ---------------------------------------
    @property
    def shape(self) -> tuple[int | None, ...]:
        """The shape as given: positive ints, and None for an infinite dim."""
        return self._shape

    @property
    def uuid(self) -> str:
        """The tensor's id in its store (``tensor_id``, or a random uuid)."""
        return self._uuid

    @property
    def dtype(self) -> torch.dtype:
        """The declared dtype of f's outputs and of every read."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The declared device (a CUDA device always has its index)."""
        return self._device

    @property
    def args(self) -> list[InfiniteTensor]:
        """The upstream tensors whose regions f receives."""
        return self._args

    @property
    def args_windows(self) -> list[TensorWindow]:
        """One window per upstream tensor: the region of it f receives."""
        return self._args_windows

    @property
    def output_window(self) -> TensorWindow:
        """Where the windows of f's outputs lie."""
        return self._output_window

    @property
    def batch_size(self) -> int | Sequence[int] | Literal["auto"] | None:
        """None, the largest batch f receives, the list of allowed batch
        sizes, or "auto", as given."""
        return self._batch_size

    @property
    def blend(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Literal["mean"] | None:
        """How overlapping windows combine (None: their sum; "mean": their
        weighted mean)."""
        return self._blend

    @property
    def weight(self) -> str | torch.Tensor | None:
        """The weights of blend="mean", as given (None: constant)."""
        return self._weight

    @property
    def blend_init(self) -> float | int | None:
        """The value before any window (None: 0)."""
        return self._blend_init

    @property
    def progress(self) -> bool | None:
        """Progress bars for this tensor's large reads: True, False, or None
        (the package-wide setting, infinite_tensor.set_progress).

        Settable: ``t.progress = enabled`` with enabled True, False or None;
        anything else raises ValidationError."""
        return self._progress

    @progress.setter
    def progress(self, enabled: bool | None) -> None:
        _progress.check_setting(enabled)
        self._progress = enabled
        _progress._set_tensor(self._uuid, enabled)

    def stats(self) -> dict[str, Any]:
        """What this tensor has done since it was created (or reset_stats):
        reads (a list read counts once), cached_reads (reads that computed
        none of its windows), windows computed, f_calls, seconds_in_f,
        seconds_reading (its reads' whole time, upstream work included),
        seconds_outside_f, bytes_read (returned by its reads), and what is
        cached now: cached_bytes, cached_tiles, and waiting_bytes (parts of
        windows kept until the windows before them are computed: a float sum
        adds each pixel's windows in window order, docs/architecture.md;
        included in cached_bytes, except those parked for tiles the cache
        wrote to the file and evicted).  Tensors sharing an id in one store
        share the counters.

        Returns:
            A new dict of those counters (ints; the ``seconds_*`` are floats).

        Raises:
            TileAccessError: The tensor was removed from its store
                (``clear_tensor``).
        """
        node = self._live_node()
        out = node.stats()
        out["seconds_outside_f"] = max(out["seconds_reading"] - out["seconds_in_f"], 0.0)
        out["cached_bytes"], out["cached_tiles"] = node.nbytes, node.ntiles
        out["waiting_bytes"] = node.waiting_bytes
        return out

    def reset_stats(self) -> None:
        """Zero the counters of stats().

        Raises:
            TileAccessError: The tensor was removed from its store
                (``clear_tensor``).
        """
        self._live_node().reset_stats()

    @property
    def f(self) -> Callable[..., Any]:
        """The window function as given (read-only; 0.3's ``_f`` assigns it)."""
        return self._fn

    @property
    def _f(self):
        return self._fn

    @_f.setter
    def _f(self, fn):
        # tests and users swap f by hand (e.g. before .to()); the node follows
        self._fn = fn
        if self._node is not None:
            self._node.set_callbacks(*self._callbacks())

    # -- what the store needs to build the node --------------------------
    def _is_mean(self):
        return isinstance(self._blend, str) and self._blend == "mean"

    def _callbacks(self):
        """(f as the node calls it, blend, the core's batch size: 0 unbatched).
        With allowed batch sizes, f is wrapped to pad each batch."""
        blend = None if self._is_mean() else self._blend  # the core weighs and divides itself
        if self._batch_size == "auto":
            return self._fn, blend, _sizing.auto_batch_size(self)
        if self._batch_sizes is None:
            return self._fn, blend, self._batch_size or 0
        return _padding_f(self._fn, self._batch_sizes), blend, self._batch_sizes[-1]

    def _rule(self):
        """How windows combine, as stores compare it on re-registration."""
        weight = self._weight
        if isinstance(weight, torch.Tensor):
            weight = ("tensor", tuple(weight.shape), hash(self._mean[0]))
        return (self._combine(), self._blend_init) + ((("mean", weight),) if self._is_mean() else ())

    def _combine(self):
        if self._blend is None or self._is_mean():
            return _core.COMBINE_SUM
        mode = _BUILTIN_BLENDS.get(self._blend, _core.COMBINE_CUSTOM)
        if self._dtype.is_complex and mode != _core.COMBINE_SUM:
            return _core.COMBINE_CUSTOM  # torch decides what max/min mean there
        return mode

    def _node_spec(self):
        """What the store builds this tensor's core node from."""
        f, blend, batch = self._callbacks()
        return _bridge.NodeSpec(
            shape=self._shape,
            window=self._output_window._core_tuple(),
            args=tuple(a._live_node() for a in self._args),
            arg_windows=tuple(w._core_tuple() for w in self._args_windows),
            dtype=self._dtype,
            device=self._device,
            fill=_bridge.fill_tensor(None if self._is_mean() else self._blend_init, self._dtype),
            f=f,
            blend=blend,
            batch_size=batch,
            combine=self._combine(),
            tensor_id=self._uuid,
            mean=self._mean,
        )

    def _live_node(self):
        node = self._node
        if node is None:
            raise TileAccessError(TILE_DELETED_MESSAGE)
        return node

    # -- reading -----------------------------------------------------------
    @overload
    def __getitem__(self, key: list[Any]) -> list[torch.Tensor]: ...

    @overload
    def __getitem__(self, key: Any) -> torch.Tensor: ...

    def __getitem__(self, key: Any) -> torch.Tensor | list[torch.Tensor]:
        """The values of a region, as a new torch.Tensor.

        ``key`` indexes like a tensor's (ints, slices, ``...``; infinite dims
        take literal coordinates and slices need both ends), or is a list of
        such regions: ``t[[sl[0:512, 0:512], sl[4096:4608, 0:512]]]``
        returns a list of tensors in the same order.  Every window any of the
        regions needs is planned once (deduplicated; a batched ``f`` gets them
        in batches in the order they are first seen, region by region) and
        the tiles stay pinned until every region has been read.  Any list is
        a list of regions (0.3 read a list as one tuple).

        Args:
            key: One region (an int, a slice with a positive step, ``...``,
                or a tuple of these; ints squeeze their dim, fewer indices
                than dims take the rest whole), or a list of regions (build
                them with ``sl``).

        Returns:
            A new contiguous tensor for one region; a list of them, in the
            list's order, for a list (``[]`` for ``[]``).

        Raises:
            IndexError: An index past a finite dim or past +-2**62, a slice
                on an infinite dim without both ends, or too many indices.
            ValueError: A slice step <= 0.
            TypeError: An index of the wrong type, or a list inside the list.
            MemoryError: The region is too large to hold (raised before any
                window is computed).
            TileAccessError: The tensor was removed from its store, or its
                persistent store is closed or read-only where a window must
                be computed.
            ShapeMismatchError, DtypeMismatchError, DeviceMismatchError:
                f (or blend) returned the wrong shape, dtype or device.
        """
        node = self._node
        if node is None:
            raise TileAccessError(TILE_DELETED_MESSAGE)
        owner = self._store._owner
        if owner is not None and owner != os.getpid():
            return _serve.read(self, key)  # another process holds the store's file
        if not self._access_hooks:
            return node[key]
        return self._with_access(node.__getitem__, key)  # stores with hooks of their own

    def plan(self, key: Any) -> _sizing.ReadPlan:
        """What ``self[key]`` would take, computing nothing: the windows f
        would compute and its calls, in this tensor and every tensor
        upstream, and the memory the read surely adds (the check that runs
        before large reads uses the same numbers).

        Args:
            key: A region or a list of regions, as for ``t[key]``.

        Returns:
            A ReadPlan: ``windows``, ``f_calls``, ``result_bytes``,
            ``tiles``, ``tile_bytes``, ``needed_bytes``,
            ``available_bytes``, ``fits``, and ``tensors`` (one TensorPlan
            per tensor of the pipeline); ``print(plan)`` shows them.

        Raises:
            IndexError, ValueError, TypeError: A bad region, as ``t[key]``.
            TileAccessError: The tensor was removed from its store.
        """
        return _sizing.plan(self, key)

    def iter_regions(self, regions: Iterable[Any], progress: bool | None = None) -> Iterator[list[torch.Tensor]]:
        """Read ``regions`` (any iterable, a lazy generator included) as their
        windows are computed, yielding lists of tensors.

        Windows are computed in region order, in full batches of
        ``batch_size``.  After each batch, the leading regions whose windows
        are all computed are read and yielded as one list, so the yielded
        lists, concatenated, equal ``t[list(regions)]``.  Without a
        ``batch_size`` everything is computed in one pass and yielded as a
        single list.  Regions already cached are yielded with the next batch.
        Only the regions waiting for a batch are held, never the whole
        iterable, so an endless generator streams in bounded memory.
        ``progress`` shows a bar of the regions yielded (None: the tensor's
        setting, then the package-wide one)::

            for chunk in t.iter_regions(sl[0:64, i:i + 64] for i in range(0, 4096, 64)):
                for tile in chunk:
                    ...

        Args:
            regions: An iterable of regions, each as ``t[region]`` takes one
                (build them with ``sl``); a list among them is a TypeError.
            progress: True or False shows or hides a bar of the regions
                yielded; None follows the tensor's ``progress``, then
                ``set_progress``.

        Yields:
            Lists of tensors, one per region, in the regions' order.

        Raises:
            ValidationError: ``progress`` is not True, False or None.
            TypeError: A region is a list.
            TileAccessError: The tensor was removed from its store.
            IndexError, ValueError, MemoryError: A bad region, as ``t[region]``
                raises it.
        """
        node = self._live_node()
        _progress.check_setting(progress)
        enabled = progress if progress is not None else self._progress
        enabled = enabled if enabled is not None else _progress.get_progress()
        bar = _progress._region_bar(enabled, len(regions) if hasattr(regions, "__len__") else None)  # type: ignore
        try:
            if _serve.is_foreign(self._store):
                yield from self._iter_served(regions, bar)
            else:
                yield from self._iter_regions(node, regions, bar)
        finally:
            if bar is not None:
                bar.close()

    def _iter_served(self, regions, bar):
        """iter_regions where another process holds the store's file: region
        by region, each read as t[region] reads it there."""
        for region in regions:
            if isinstance(region, list):
                raise TypeError(f"iter_regions takes regions such as sl[0:8, 0:8], got a list: {region!r}")
            out = [self[region]]
            if bar is not None:
                bar.update(1)
            yield out

    def _iter_regions(self, node, regions, bar):
        batch = self._callbacks()[2] or None
        waiting = _deque()  # (region, the batch it needs: -1 for none)
        pending, pending_set = [], set()
        batch_no = 0  # the batch `pending` fills; the ones before it are computed

        def run():
            nonlocal pending, pending_set, batch_no
            self._with_access(node.compute_windows, pending)
            pending, pending_set = [], set()
            batch_no += 1
            ready = []
            while waiting and waiting[0][1] < batch_no:
                ready.append(waiting.popleft()[0])
            # a window of an earlier batch evicted meanwhile is computed again
            out = self[ready] if ready else []
            if bar is not None:
                bar.update(len(out))
            return out

        for region in regions:
            if isinstance(region, list):
                raise TypeError(f"iter_regions takes regions such as sl[0:8, 0:8], got a list: {region!r}")
            needs = -1
            todo = _deque(node.missing_windows(region))  # lexicographic order
            while todo:
                w = todo.popleft()
                if w in pending_set:
                    needs = batch_no
                    continue
                if batch is not None and len(pending) == batch:
                    out = run()
                    if out:
                        yield out
                    # that batch may have computed some of the rest: look again
                    todo = _deque(x for x in node.missing_windows(region) if x >= w)
                    continue
                pending.append(w)
                pending_set.add(w)
                needs = batch_no
            waiting.append((region, needs))
            if batch is not None and len(pending) == batch:
                out = run()
                if out:
                    yield out
        if pending or waiting:
            out = run()
            if out:
                yield out

    def _with_access(self, fn, *args):
        """fn(*args) inside begin_access/end_access of every store with hooks
        of its own that the read may compute windows of (outermost: self)."""
        hooked = self._access_hooks
        if not hooked:
            return fn(*args)
        opened = []
        try:
            for store, tensor_id in hooked:
                store.begin_access(tensor_id)
                opened.append((store, tensor_id))
            return fn(*args)
        finally:
            for store, tensor_id in reversed(opened):
                store.end_access(tensor_id)

    # -- display -------------------------------------------------------------
    def to_dask(self, region: Any, chunks: Any = "auto") -> Any:
        """A dask array of a region, computed chunk by chunk through this
        tensor wherever dask runs the chunks.

        The graph holds the tensor once: each dask worker process gets its own
        copy (pickled as its definition, docs/api.md "Pickling"; f must be a
        module-level function) with its own cache, which the chunks it
        computes share; windows along the chunks' edges are computed by each
        worker that needs them (or read, if the tensor's store is a file all
        workers open).  With dask's threaded scheduler the chunks read this
        tensor itself.  Chunks are numpy arrays on the host.

        Args:
            region: What ``t[...]`` takes for one region, with step 1 and
                both ends on unbounded dims; int indices are not allowed
                (every dim of the region is a dim of the array).
            chunks: Dask's chunks for the region's shape ("auto", an int, a
                tuple per dim, ...).

        Returns:
            A ``dask.array.Array`` of the region's shape and the tensor's
            dtype (as numpy names it).

        Raises:
            ImportError: dask is not installed (``pip install dask``).
            TypeError: bfloat16 (numpy has no bfloat16), or an int index.
            ValueError: A step other than 1.
        """
        import dask.array as da
        from dask.base import tokenize

        slices, shape, np_dtype = self._array_region(region, "to_dask", "a dask array")
        chunks = da.core.normalize_chunks(chunks, shape, dtype=np_dtype)
        name = "infinite-tensor-" + tokenize(self._uuid, tuple((s.start, s.stop) for s in slices), chunks)
        tensor_key = "tensor-" + name
        graph: dict[Any, Any] = {tensor_key: self}
        starts = [[0] for _ in chunks]
        for d, cs in enumerate(chunks):
            for c in cs[:-1]:
                starts[d].append(starts[d][-1] + c)
        index: list[tuple[int, ...]] = [()]
        for cs in chunks:
            index = [i + (k,) for i in index for k in range(len(cs))]
        for block in index:
            box = tuple(slice(s.start + starts[d][k], s.start + starts[d][k] + chunks[d][k])
                        for d, (s, k) in enumerate(zip(slices, block)))
            graph[(name,) + block] = (_read_block, tensor_key, box)
        return da.Array(graph, name, chunks, dtype=np_dtype)

    def _array_region(self, region, what, container):
        """(slices, shape, numpy dtype) of a region exported as an array."""
        slices, collapse = standardize_indices(self._shape, region if isinstance(region, tuple) else (region,))
        if collapse:
            raise TypeError(f"{what} takes slices only: every dim of the region is a dim of the array")
        if any(s.step != 1 for s in slices):
            raise ValueError(f"{what} takes step-1 slices")
        if self._dtype == torch.bfloat16:
            raise TypeError(f"numpy has no bfloat16, so {container} cannot hold it: convert with "
                            ".to(dtype=...) or read with t[...]")
        np_dtype = torch.empty((), dtype=self._dtype).numpy().dtype
        return slices, tuple(max(s.stop - s.start, 0) for s in slices), np_dtype

    def _export(self, region, chunks, what, container, progress, open_array):
        """Write a region block by block (blocks of `chunks`, computed in
        batches through iter_regions) into the array open_array(shape,
        chunks, numpy dtype) returns."""
        slices, shape, np_dtype = self._array_region(region, what, container)
        if chunks is None:
            # whole finite dims; unbounded ones in blocks of up to 512
            chunks = tuple(n if d is not None else min(n, 512) for n, d in zip(shape, self._shape))
        elif _is_int(chunks):
            chunks = (chunks,) * len(shape)
        chunks = tuple(chunks)
        if len(chunks) != len(shape) or not all(_is_int(c) and c > 0 for c in chunks):
            raise ValidationError(f"chunks must be a positive int or one positive int per dim ({len(shape)}), "
                                  f"got {chunks!r}")
        chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape))
        array = open_array(shape, chunks, np_dtype)
        if 0 in shape:
            return array
        grid = [range(0, n, c) for n, c in zip(shape, chunks)]
        blocks: list[tuple[slice, ...]] = [()]
        for d, starts in enumerate(grid):
            blocks = [b + (slice(k, min(k + chunks[d], shape[d])),) for b in blocks for k in starts]
        boxes = (tuple(slice(s.start + b.start, s.start + b.stop) for s, b in zip(slices, block)) for block in blocks)
        done = 0
        for values in self.iter_regions(boxes, progress=progress):
            for v in values:
                array[blocks[done]] = v.cpu().numpy()
                done += 1
        return array

    def to_hdf5(self, path: str | os.PathLike[str], region: Any, dataset: str = "data", chunks: Any = None,
                compression: str | int | None = "gzip", mode: str = "a", progress: bool | None = None) -> None:
        """Write a region into a dataset of an HDF5 file (through h5py), block
        by block, so that memory holds one batch of blocks, never the region.

        Args:
            path: The file (created in modes "a", "w", "w-" and "x").
            region: What ``t[...]`` takes for one region, with step 1 and
                both ends on unbounded dims; no int indices.
            dataset: The dataset's name in the file (it must not exist).
            chunks: The dataset's chunk shape and the blocks written: an
                int, one int per dim, or None (whole finite dims, up to 512
                along unbounded ones).
            compression: h5py's compression ("gzip", "lzf", a gzip level,
                or None).
            mode: h5py's file mode: "a" (default), "w", "r+", "w-" or "x".
            progress: True or False shows or hides a bar of the blocks
                written; None follows the tensor's setting.

        Raises:
            ImportError: h5py is not installed (``pip install h5py``).
            TypeError: bfloat16, or an int index.
            ValueError: A step other than 1, or a dataset that exists.
            ValidationError: Bad chunks.
            OSError: A path h5py cannot open in the mode.
        """
        import h5py

        with h5py.File(path, mode) as f:
            def open_array(shape, chunks, dtype):
                return f.create_dataset(dataset, shape=shape, dtype=dtype, chunks=chunks if 0 not in shape else None,
                                        compression=compression)

            self._export(region, chunks, "to_hdf5", "an HDF5 dataset (through numpy)", progress, open_array)

    def export_crops(self, blob: Any, regions: Any, *, resume: bool = True, progress: bool | None = None) -> int:
        """Write ``self[region]`` for each region as one row of a TensorBlob;
        returns the rows written.  The same as
        ``infinite_tensor.data.export_crops(self, ...)``.

        Args:
            blob: A TensorBlob open for writing, or a path (a blob there is
                appended to, or created with this tensor's dtype and the
                first crop's shape).
            regions: An iterable of equal-shaped regions (``sl[...]``), read
                lazily, or a ``Crops`` dataset.
            resume: Skip as many regions as the blob has rows already.
            progress: A bar of the crops written (None: the tensor's setting).
        """
        from .data import export_crops

        return export_crops(self, blob, regions, resume=resume, progress=progress)

    def to_zarr(self, store: Any, region: Any, chunks: Any = None, mode: str = "w-",
                progress: bool | None = None, **kwargs: Any) -> Any:
        """Write a region into a new zarr array, block by block (one zarr
        chunk per block), so that memory holds one batch of blocks.

        Args:
            store: What ``zarr.open_array`` takes: a path, a URL or a store.
            region: What ``t[...]`` takes for one region, with step 1 and
                both ends on unbounded dims; no int indices.
            chunks: The zarr chunk shape: an int, one int per dim, or None
                (whole finite dims, up to 512 along unbounded ones).
            mode: zarr's mode for a new array: "w-" (default: fail if it
                exists) or "w" (overwrite).
            progress: True or False shows or hides a bar of the chunks
                written; None follows the tensor's setting.
            **kwargs: Passed on to ``zarr.open_array`` (compressors, ...).

        Returns:
            The ``zarr.Array`` written.

        Raises:
            ImportError: zarr is not installed (``pip install zarr``).
            TypeError: bfloat16, or an int index.
            ValueError: A step other than 1.
            ValidationError: Bad chunks, or a mode other than "w-" or "w".
        """
        import zarr

        if mode not in ("w-", "w"):
            raise ValidationError(f"to_zarr writes a new array: mode must be 'w-' or 'w', got {mode!r}")

        def open_array(shape, chunks, dtype):
            return zarr.open_array(store, mode=mode, shape=shape, chunks=chunks, dtype=dtype, **kwargs)

        return self._export(region, chunks, "to_zarr", "a zarr array (through numpy)", progress, open_array)

    def preview(self, region: Any, show: bool | None = None) -> torch.Tensor | None:
        """A region as a picture: read it, lay channels last, scale to [0, 1].

        The region must read as 2-d (H, W) or 3-d with 1, 3 or 4 channels
        first (C, H, W), dims indexed by an int dropped; it becomes a float32
        CPU tensor (H, W) or (H, W, C) scaled so its smallest finite value is
        0 and its largest 1 (all zeros when they are equal; NaN and infinities
        are clipped to the ends).  With show=True it is drawn with matplotlib
        (ImportError if it is not installed) and None is returned; show=None
        draws it in a Jupyter kernel when matplotlib is installed, and
        otherwise returns the tensor.

        Args:
            region: One region, as ``t[region]`` takes it (``sl[0:256, 0:256]``).
            show: True draws the picture, False returns it, None (default)
                draws it in a Jupyter kernel with matplotlib, else returns it.

        Returns:
            The scaled float32 CPU tensor, or None when it was drawn.

        Raises:
            TypeError: The tensor is complex.
            ValueError: The region does not read as (H, W) or (C, H, W).
            ImportError: ``show=True`` without matplotlib.
        """
        x = self[region]
        if x.dtype.is_complex:
            raise TypeError("preview shows real values: take .abs() or .real of a complex tensor's region first")
        x = x.detach().to("cpu", torch.float32)
        if x.dim() == 3 and x.shape[0] in (1, 3, 4):
            x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
        if x.dim() not in (2, 3):
            raise ValueError(f"preview needs a region that reads as (H, W) or (C, H, W) with 1, 3 or 4 channels, "
                             f"got shape {tuple(x.shape)}")
        finite = x[torch.isfinite(x)]
        lo, hi = (finite.min(), finite.max()) if finite.numel() else (torch.tensor(0.0), torch.tensor(0.0))
        x = torch.nan_to_num(x, nan=lo.item(), posinf=hi.item(), neginf=lo.item())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        if show is None:
            import importlib.util
            import sys
            show = "ipykernel" in sys.modules and importlib.util.find_spec("matplotlib") is not None
        if not show:
            return x
        import matplotlib.pyplot as plt
        plt.imshow(x.numpy(), cmap="gray" if x.dim() == 2 else None, vmin=0.0, vmax=1.0)
        plt.axis("off")
        plt.show()
        return None

    def _display_rows(self):
        w = self._output_window
        node = self._node
        window = f"size={w.size}, stride={w.stride}"
        if any(w.offset):
            window += f", offset={w.offset}"
        rows = [("shape", self._shape), ("dtype", self._dtype), ("device", self._device),
                ("window", window), ("blend", _display.callable_name(self._blend))]
        if self._is_mean():
            weight = self._weight if isinstance(self._weight, str) else \
                "constant" if self._weight is None else "a tensor"
            rows[-1] = ("blend", f"mean, {weight} weights")
        if self._batch_size is not None:
            rows.append(("batch_size", self._batch_size))
        if self._args:
            rows.append(("args", ", ".join(repr(a.uuid) for a in self._args)))
        rows.append(("store", type(self._store).__name__ + (
            f" '{self._store.filepath}'" if hasattr(self._store, "filepath") else "")))
        if node is None:
            rows.append(("cached", "deleted (clear_tensor)"))
        else:
            rows.append(("cached", f"{_display.size_text(node.nbytes)} in {node.ntiles} "
                                   f"tile{'' if node.ntiles == 1 else 's'}"))
        return rows

    def __repr__(self) -> str:
        rows = dict(self._display_rows())
        shape = "(" + ", ".join(str(d) for d in self._shape) + ("," if len(self._shape) == 1 else "") + ")"
        text = (f"InfiniteTensor(id={self._uuid!r}, shape={shape}, dtype={self._dtype}, "
                f"device={self._device}, window=({rows['window']}), blend={rows['blend']}")
        if "batch_size" in rows:
            text += f", batch_size={rows['batch_size']}"
        return text + f", store={rows['store']}, cached={rows['cached']})"

    def _repr_html_(self) -> str:
        return _display.html_table(f"InfiniteTensor '{self._uuid}'", self._display_rows())

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

    def __len__(self) -> int:
        """``shape[0]``; a TypeError when a dim is infinite."""
        self._finite_or_raise("{} has no len()", "len({})")
        return self._shape[0]  # type: ignore[return-value]  # finite: checked above

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The rows ``t[0]``, ``t[1]``, ...; a TypeError when a dim is infinite."""
        self._finite_or_raise("cannot iterate over {}", "for row in {}: ...")
        return (self[i] for i in range(self._shape[0]))  # type: ignore[misc, arg-type]  # finite: checked above

    def __contains__(self, value: Any) -> bool:
        """``value in t[...]``; a TypeError when a dim is infinite.

        Args:
            value: What to look for, as ``torch.Tensor.__contains__`` takes it.
        """
        self._finite_or_raise("cannot search {} ('in')", "value in {}")
        return value in self[...]

    def __bool__(self) -> bool:
        """Always True, as in 0.3 (computes nothing)."""
        return True

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        """``np.asarray(t)``: the whole tensor, ``t[...]``, as a numpy array;
        a TypeError when a dim is infinite.

        Args:
            dtype: The numpy dtype to convert to (None: the tensor's).
            copy: numpy's copy request; the array is always a fresh read.
        """
        self._finite_or_raise("cannot convert {} to a numpy array", "np.asarray({})")
        out = self[...].cpu().numpy()  # a fresh read: nothing else shares it
        return out if dtype is None else out.astype(dtype, copy=False)

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        """DLPack export of the whole tensor, ``t[...]`` (``torch.as_tensor(t)``,
        ``torch.from_dlpack(t)``); a TypeError when a dim is infinite.

        Args:
            *args: Passed to ``torch.Tensor.__dlpack__``.
            **kwargs: Passed to ``torch.Tensor.__dlpack__``.
        """
        # torch.as_tensor / torch.tensor / torch.from_dlpack take this path
        self._finite_or_raise("cannot convert {} to a torch.Tensor", "torch.as_tensor({})")
        return self[...].__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        """The DLPack (device type, device index) of the declared device."""
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

    def clear_cache(self) -> None:
        """Forget this tensor's cached values (recomputed on the next read).

        A persistent store first writes the tensor's changed tiles, and keeps
        what is on disk (later reads load it).
        """
        self._store.clear_cache(self._uuid)

    def to(self, *args: Any, **kwargs: Any) -> InfiniteTensor:
        """Change the declared device and/or dtype in place, migrating cached
        values; returns self.  f is not changed: it must produce the new
        dtype/device for windows computed afterwards.

        Called as ``torch.Tensor.to``: ``t.to(device)``, ``t.to(dtype)``,
        ``t.to(device, dtype)``, ``t.to(device=..., dtype=...)`` or
        ``t.to(other_tensor)`` (its device and dtype).  The move is all or
        nothing.

        Args:
            *args: A device (torch.device, str, or an int naming a CUDA
                device), a torch.dtype, both, or one torch.Tensor.
            **kwargs: ``device=`` and/or ``dtype=``.

        Returns:
            self.

        Raises:
            TypeError: A malformed call (as torch raises for one).
            ValidationError: A CUDA device without a GPU, or a dtype change
                on a persistent store.
        """
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
        if self._batch_size == "auto":  # sized for the new device's memory
            self._live_node().set_callbacks(*self._callbacks())
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as its definition: shape, f, windows, args (pickled the
        same way), dtype, device, blend, batch size, store and id.  The store
        pickles as what opens it again (a memory store: its limits, not its
        tiles; an HDF5 store: its path and options), so the copy in another
        process computes or reads the same values.  f and blend must pickle
        themselves (module-level functions do; lambdas and local functions
        do not): a clear error says so before anything is sent.

        Raises:
            pickle.PicklingError: f or blend cannot be pickled.
        """
        for what, obj in (("f", self._fn), ("blend", self._blend)):
            if obj is None or isinstance(obj, str):
                continue
            try:
                _pickle.dumps(obj)
            except Exception as e:  # noqa: BLE001 - any failure to pickle is reported the same way
                raise _pickle.PicklingError(
                    f"InfiniteTensor {self._uuid!r}: its {what} {obj!r} cannot be pickled ({type(e).__name__}: "
                    f"{e}). Processes started with 'spawn' or 'forkserver' (DataLoader workers, multiprocessing) "
                    f"receive tensors by pickling: define {what} as a module-level function (not a lambda or "
                    f"a function defined inside another), or start the workers with 'fork'") from None
        definition = dict(shape=self._shape, f=self._fn, output_window=self._output_window, args=list(self._args),
                          args_windows=list(self._args_windows), dtype=self._dtype, device=self._device,
                          tile_store=self._store, tensor_id=self._uuid, batch_size=self._batch_size,
                          blend=self._blend, blend_init=self._blend_init, progress=self._progress,
                          weight=self._weight)
        return _rebuild, (definition,)

    def to_json(self) -> dict[str, Any]:
        """The configuration a store checks when an id is registered again.

        Returns:
            ``{"shape", "dtype", "device", "args", "args_windows",
            "output_window"}`` as JSON-safe values (``args``: the upstream
            ids; the windows as ``TensorWindow.to_dict()``).  f, blend and
            batch_size are not part of it.
        """
        return {
            "shape": list(self._shape),
            "dtype": str(self._dtype).replace("torch.", ""),
            "device": str(self._device),
            "args": [a.uuid for a in self._args],
            "args_windows": [None if w is None else w.to_dict() for w in self._args_windows],
            "output_window": self._output_window.to_dict(),
        }

    def __enter__(self) -> InfiniteTensor:
        """``with t:`` does nothing (kept from 0.3); returns self."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        """Does nothing; exceptions propagate.

        Args:
            exc_type: The exception's class, or None.
            exc: The exception, or None.
            tb: Its traceback, or None.
        """
        return False


# keep the exception names importable from this module, as in 0.3
__all__ += ["InfiniteTensorError", "ShapeMismatchError", "DeviceMismatchError",
            "DtypeMismatchError", "ValidationError", "TileAccessError"]
