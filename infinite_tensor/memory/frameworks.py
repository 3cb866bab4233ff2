"""Framework adapters: what AutoScaler needs to know about torch or TensorFlow.

An adapter maps a framework's dtypes to item sizes (the twelve torch dtypes
deep-dimensions supports, the fifteen TensorFlow ones), allocates the scaled
tensor on a device, and reports CUDA figures.  ``resolve_adapter`` picks one
for ``framework="pytorch" | "tensorflow" | "auto"`` and raises
``FrameworkNotAvailableError`` with deep-dimensions' message when the
framework cannot be imported.  TensorFlow is imported only when asked for, and
never just to list what is installed (``importlib.util.find_spec`` answers
that without running it).

Two changes from the original, both fixes: tensors go to ``cuda:<index>`` (or
``/GPU:<index>``) rather than the current device, and CUDA figures always come
from the CUDA provider of sources.py, so they can be injected in tests.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any, Tuple

from .errors import ConfigValueError, FrameworkNotAvailableError
from .interfaces import IFrameworkAdapter
from . import sources

__all__ = ["PyTorchAdapter", "TensorFlowAdapter", "available_frameworks", "resolve_adapter"]

logger = logging.getLogger("infinite_tensor.memory.frameworks")


def _module_present(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class PyTorchAdapter(IFrameworkAdapter):
    """torch: the twelve dtypes deep-dimensions sizes, allocation by torch.empty/zeros/ones/full."""

    def __init__(self) -> None:
        import torch
        self._torch = torch
        self.DTYPE_SIZES = {
            torch.float16: 2, torch.float32: 4, torch.float64: 8, torch.bfloat16: 2,
            torch.int8: 1, torch.int16: 2, torch.int32: 4, torch.int64: 8,
            torch.uint8: 1, torch.bool: 1, torch.complex64: 8, torch.complex128: 16,
        }

    @property
    def name(self) -> str:
        return "pytorch"

    def is_available(self) -> bool:
        return True

    def get_dtype_size(self, dtype: Any) -> int:
        if dtype in self.DTYPE_SIZES:
            return self.DTYPE_SIZES[dtype]
        raise ConfigValueError(f"Unsupported dtype: {dtype}")

    def get_default_dtype(self) -> Any:
        return self._torch.float32

    def create_tensor(self, dimensions: Tuple[int, ...], dtype: Any, device: str,
                      fill_value: float | None = None, requires_grad: bool = False) -> Any:
        torch = self._torch
        kw = dict(dtype=dtype, device=device, requires_grad=requires_grad)
        if fill_value is None:
            return torch.empty(*dimensions, **kw)
        if fill_value == 0.0:
            return torch.zeros(*dimensions, **kw)
        if fill_value == 1.0:
            return torch.ones(*dimensions, **kw)
        return torch.full(tuple(dimensions), fill_value, **kw)

    def is_cuda_available(self) -> bool:
        return sources.cuda_available()

    def get_cuda_memory_info(self, device_index: int = 0) -> Tuple[int, int, int]:
        info = sources.cuda_info(device_index, "host")
        return info.total, info.available, info.used

    def validate_dtype(self, dtype: Any) -> bool:
        return dtype in self.DTYPE_SIZES


class TensorFlowAdapter(IFrameworkAdapter):
    """TensorFlow: fifteen dtypes (unsigned 16/32/64 included), tf.zeros/ones/fill,
    a tf.Variable when requires_grad."""

    def __init__(self, tf: Any = None) -> None:
        self._tf = tf if tf is not None else _import("tensorflow")
        self.DTYPE_SIZES = {}
        if self._tf is not None:
            tf = self._tf
            self.DTYPE_SIZES = {
                tf.float16: 2, tf.float32: 4, tf.float64: 8, tf.bfloat16: 2,
                tf.int8: 1, tf.int16: 2, tf.int32: 4, tf.int64: 8,
                tf.uint8: 1, tf.uint16: 2, tf.uint32: 4, tf.uint64: 8,
                tf.bool: 1, tf.complex64: 8, tf.complex128: 16,
            }

    @property
    def name(self) -> str:
        return "tensorflow"

    def is_available(self) -> bool:
        return self._tf is not None

    def get_dtype_size(self, dtype: Any) -> int:
        if dtype in self.DTYPE_SIZES:
            return self.DTYPE_SIZES[dtype]
        raise ConfigValueError(f"Unsupported dtype: {dtype}")

    def get_default_dtype(self) -> Any:
        if self._tf is None:
            raise FrameworkNotAvailableError("TensorFlow is not available", framework="tensorflow")
        return self._tf.float32

    @staticmethod
    def tf_device(device: str) -> str:
        """"cpu" -> "/CPU:0", "cuda" -> "/GPU:0", "cuda:<i>" -> "/GPU:<i>"."""
        if device == "cpu":
            return "/CPU:0"
        if device == "cuda":
            return "/GPU:0"
        if device.startswith("cuda:"):
            return f"/GPU:{device[5:]}"
        return device

    def create_tensor(self, dimensions: Tuple[int, ...], dtype: Any, device: str,
                      fill_value: float | None = None, requires_grad: bool = False) -> Any:
        tf = self._tf
        if tf is None:
            raise FrameworkNotAvailableError("TensorFlow is not available", framework="tensorflow")
        with tf.device(self.tf_device(device)):
            if fill_value is None or fill_value == 0.0:  # TensorFlow has no uninitialised tensors
                tensor = tf.zeros(dimensions, dtype=dtype)
            elif fill_value == 1.0:
                tensor = tf.ones(dimensions, dtype=dtype)
            else:
                tensor = tf.fill(dimensions, tf.cast(fill_value, dtype))
            if requires_grad:
                return tf.Variable(tensor, trainable=True)
            return tensor

    def is_cuda_available(self) -> bool:
        if self._tf is None:
            return False
        return len(self._tf.config.list_physical_devices("GPU")) > 0

    def get_cuda_memory_info(self, device_index: int = 0) -> Tuple[int, int, int]:
        info = sources.cuda_info(device_index, "host")
        return info.total, info.available, info.used

    def validate_dtype(self, dtype: Any) -> bool:
        return dtype in self.DTYPE_SIZES


def available_frameworks() -> list[str]:
    """The frameworks that can be imported, in preference order (nothing is imported)."""
    return [name for name, module in (("pytorch", "torch"), ("tensorflow", "tensorflow"))
            if _module_present(module)]


def resolve_adapter(framework: str) -> IFrameworkAdapter:
    """The adapter for "pytorch", "tensorflow" or "auto" (PyTorch first).

    Raises:
        FrameworkNotAvailableError: the framework cannot be imported (or is
            not one of the two), with deep-dimensions' message.
    """
    found = available_frameworks()
    logger.info(f"Discovered frameworks: {found}")
    if framework == "auto":
        for name in ("pytorch", "tensorflow"):
            if name in found:
                adapter = _make(name)
                if adapter is not None:
                    logger.info(f"Using default framework: {name}")
                    return adapter
        raise FrameworkNotAvailableError(
            "No deep learning frameworks available. Please install PyTorch or TensorFlow.", framework="auto")
    adapter = _make(framework) if framework in found else None
    if adapter is None:
        present = [name for name in found if name != framework]
        raise FrameworkNotAvailableError(
            f"Framework '{framework}' is not available. Available frameworks: {present}", framework=framework)
    return adapter


def _make(name: str) -> IFrameworkAdapter | None:
    if name == "pytorch":
        return PyTorchAdapter()
    if name == "tensorflow":
        adapter = TensorFlowAdapter()
        return adapter if adapter.is_available() else None
    return None
