"""The three extension points of deep-dimensions, kept under their names.

``IMemoryProvider`` measures one device, ``IScalingStrategy`` turns a memory
budget into dimensions, and ``IFrameworkAdapter`` knows a framework's dtypes
and how to allocate.  The frozen records they exchange (``MemoryInfo``,
``ScalingContext``, ``ScalingResult``) carry the original's fields and checks.
An AutoScaler accepts a custom provider through its ``memory_provider``
keyword; the strategies and adapters shipped are in scaling.py and
frameworks.py.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Tuple

from .errors import ConfigValueError
from .sources import MemoryInfo

__all__ = [
    "IMemoryProvider",
    "IScalingStrategy",
    "IFrameworkAdapter",
    "MemoryInfo",
    "ScalingContext",
    "ScalingResult",
    "DTypeInfo",
]


class IMemoryProvider(ABC):
    """Measures the memory of one device."""

    @abstractmethod
    def get_memory_info(self) -> MemoryInfo:
        """The current figures of the device."""

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the device exists and can be measured."""

    @property
    @abstractmethod
    def device_type(self) -> str:
        """``"cpu"``, ``"cuda"`` or ``"tpu"``."""


@dataclass(frozen=True)
class ScalingContext:
    """What a strategy needs to know: the budget, the request and its dtype.

    The effective threshold must be in (0, 1]; a ScalingConfig whose
    memory_threshold - safety_margin is 0 or negative fails here, when a
    request needs scaling, as in deep-dimensions.
    """

    available_memory: int
    required_memory: int
    original_dimensions: Tuple[int, ...]
    dtype: Any
    dtype_size: int
    memory_threshold: float

    def __post_init__(self) -> None:
        if self.available_memory < 0:
            raise ConfigValueError("Available memory cannot be negative")
        if self.required_memory < 0:
            raise ConfigValueError("Required memory cannot be negative")
        if not self.original_dimensions:
            raise ConfigValueError("Original dimensions cannot be empty")
        if any(d <= 0 for d in self.original_dimensions):
            raise ConfigValueError("All dimensions must be positive")
        if not 0.0 < self.memory_threshold <= 1.0:
            raise ConfigValueError("Memory threshold must be between 0 and 1")

    @property
    def target_memory(self) -> int:
        """The budget in bytes: int(available_memory * memory_threshold)."""
        return int(self.available_memory * self.memory_threshold)


@dataclass(frozen=True)
class ScalingResult:
    """The outcome of a scaling request.

    Attributes:
        scaled_dimensions: the dimensions to allocate.
        scale_factor: the per-dimension factor the strategy computed (1.0
            when nothing was scaled).
        estimated_memory: bytes the scaled dimensions need.
        was_scaled: whether the strategy changed anything.
    """

    scaled_dimensions: Tuple[int, ...]
    scale_factor: float
    estimated_memory: int
    was_scaled: bool


class IScalingStrategy(ABC):
    """Turns a ScalingContext into scaled dimensions."""

    @abstractmethod
    def calculate_scale_factor(self, context: ScalingContext) -> float:
        """The per-dimension factor for this context."""

    @abstractmethod
    def apply_to_dimensions(self, dimensions: Tuple[int, ...], scale_factor: float,
                            min_dimensions: Tuple[int, ...] | None = None,
                            max_dimensions: Tuple[int, ...] | None = None) -> Tuple[int, ...]:
        """Apply a factor to dimensions, clamping to the bounds by position."""

    @abstractmethod
    def scale(self, context: ScalingContext, min_dimensions: Tuple[int, ...] | None = None,
              max_dimensions: Tuple[int, ...] | None = None) -> ScalingResult:
        """Factor and application in one call."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The strategy's name in ScalingConfig.strategy."""


@dataclass(frozen=True)
class DTypeInfo:
    """A dtype with its size, for adapters that describe their dtypes."""

    name: str
    size_bytes: int
    framework: str
    native_dtype: Any


class IFrameworkAdapter(ABC):
    """A deep-learning framework: its dtypes, allocation and CUDA view."""

    @property
    @abstractmethod
    def name(self) -> str:
        """``"pytorch"`` or ``"tensorflow"``."""

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the framework can be imported."""

    @abstractmethod
    def get_dtype_size(self, dtype: Any) -> int:
        """Bytes per element of a supported dtype (ConfigValueError otherwise)."""

    @abstractmethod
    def get_default_dtype(self) -> Any:
        """The dtype used when none is given (float32)."""

    @abstractmethod
    def create_tensor(self, dimensions: Tuple[int, ...], dtype: Any, device: str,
                      fill_value: float | None = None, requires_grad: bool = False) -> Any:
        """Allocate a tensor on ``device`` ("cpu" or "cuda:<i>")."""

    @abstractmethod
    def is_cuda_available(self) -> bool:
        """Whether the framework sees a CUDA device."""

    @abstractmethod
    def get_cuda_memory_info(self, device_index: int = 0) -> Tuple[int, int, int]:
        """(total, available, used) bytes of a CUDA device."""

    @abstractmethod
    def validate_dtype(self, dtype: Any) -> bool:
        """Whether ``dtype`` is supported."""
