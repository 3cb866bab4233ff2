"""Connects the C extension to torch (the extension never imports torch).

The binding exchanges buffers with torch through DLPack; here we pick the
fastest entry points this torch offers and hand them over once.  A torch that
publishes the DLPack C exchange table (``Tensor.__dlpack_c_exchange_api__``,
DLPack 1.3) lets the binding convert without capsules or Python calls; the
capsule functions remain the fallback (older torch, tensor subclasses).

Tiles of tensors on CUDA are torch allocations, and every copy or combine the
C core does on them is a torch op (``_device_alloc`` and ``_device_apply``
below, called from csrc/python/device.c): the extension needs no CUDA to
build and no GPU to import.
"""
import contextlib
import math
from typing import Any, NamedTuple

import torch
import torch.utils.dlpack

from . import _core, errors

_from = getattr(torch._C, "_from_dlpack", None) or torch.utils.dlpack.from_dlpack
_to = getattr(torch._C, "_to_dlpack", None) or torch.utils.dlpack.to_dlpack
_exchange = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)


_CPU = torch.device("cpu")


def _device_alloc(nbytes, device_type, device_id):
    """A block of device memory for the core (freed when the core drops it)."""
    device = _CPU if device_type == 1 else torch.device("cuda", device_id)
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)


def _maximum(dst, src):
    torch.maximum(dst, src, out=dst)


def _minimum(dst, src):
    torch.minimum(dst, src, out=dst)


# the core's it_combine codes: SUM, MAX, MIN, COPY
_APPLY = (torch.Tensor.add_, _maximum, _minimum, torch.Tensor.copy_)


def _device_apply(op, dst, src):
    """dst (op)= src for the core, on torch's current stream."""
    _APPLY[op](dst, src)


@contextlib.contextmanager
def device_ops_on_cpu(on=True):
    """CPU tensors created (or migrated) inside use the device path that CUDA
    tensors use (tiles allocated and combined by torch) when on is true, the
    core's host kernels otherwise: tests run the device path without a GPU."""
    previous = _core._device_ops_on_cpu(on)
    try:
        yield
    finally:
        _core._device_ops_on_cpu(previous)


def configure(from_dlpack=_from, to_dlpack=_to, exchange_api=_exchange):
    """(Re)configure the binding; tests use it to try each conversion path
    (``exchange_api=None`` forces the capsule functions)."""
    _core._configure(
        from_dlpack=from_dlpack,
        to_dlpack=to_dlpack,
        tensor_type=torch.Tensor,
        is_grad_enabled=torch.is_grad_enabled,
        set_grad_enabled=torch._C._set_grad_enabled,
        errors={name: getattr(errors, name) for name in errors.__all__},
        exchange_api=exchange_api,
        device_alloc=_device_alloc,
        device_apply=_device_apply,
    )


configure()

#: torch dtype -> core dtype code
DTYPE_CODES = {}
for _name, _code in _core.DTYPES.items():
    _dt = getattr(torch, _name, None)
    if isinstance(_dt, torch.dtype):
        DTYPE_CODES[_dt] = _code


def dtype_code(dtype):
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise errors.ValidationError(f"dtype {dtype} is not supported") from None


def device_code(device):
    """DLPack (device_type, device_id) of a torch.device (ValidationError for
    a device the core cannot hold)."""
    return _core.device_code(device)


class NodeSpec(NamedTuple):
    """What ``_core.Tensor(cache, spec, tile_shape=None)`` builds a tensor
    node from.  The binding reads it as a tuple, in this order (Tensor_new in
    csrc/python/tensor.c); it converts, and the core checks the values."""

    shape: tuple        # ints, None for an infinite dim
    window: tuple       # the output window, TensorWindow._core_tuple()
    args: tuple         # the upstream tensors' nodes
    arg_windows: tuple  # their windows, as window
    dtype: torch.dtype
    device: torch.device
    fill: torch.Tensor  # 0-d CPU tensor of dtype: the value before any window
    f: Any
    blend: Any          # callable or None
    batch_size: int     # 0: f takes one window
    combine: int        # _core.COMBINE_*
    tensor_id: str      # for messages
    mean: Any = None    # blend="mean": (weights, norm, norm_shape, empty), see _mean.py


def short_repr(value, limit=40):
    """repr(value), cut short: a huge int would fill the screen."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit - 3]}... ({len(r)} characters)"


def fill_tensor(blend_init, dtype):
    """blend_init (or 0) as a 0-d tensor of dtype, for the core."""
    value = 0 if blend_init is None else blend_init
    try:
        fill = torch.tensor(value, dtype=dtype)
    except (RuntimeError, OverflowError, TypeError, ValueError) as e:
        raise errors.ValidationError(
            f"blend_init {short_repr(blend_init)} cannot be represented as {dtype}: {e}") from None
    finite = not isinstance(value, float) or math.isfinite(value)
    if (dtype.is_floating_point or dtype.is_complex) and finite and not bool(torch.isfinite(fill)):
        raise errors.ValidationError(
            f"blend_init {short_repr(blend_init)} cannot be represented as {dtype}: it overflows to {fill.item()}")
    return fill
