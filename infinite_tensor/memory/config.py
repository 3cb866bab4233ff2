"""ScalingConfig: the frozen settings of an AutoScaler.

The first ten fields, their order, defaults and validation messages are those
of deep-dimensions 0.2.5, so ``ScalingConfig(...)`` calls written for it build
the same object here and fail with the same message on the same bad value.
Our fields follow them, so positional construction keeps working:

``memory_source``
    ``"host"`` (default) measures memory as deep-dimensions does: host-wide
    ``MemAvailable`` for the CPU, the device total minus this process's
    reserved bytes for CUDA.  ``"effective"`` applies the limits that really
    bind: the cgroup (v1 or v2), RLIMIT_AS/RLIMIT_DATA, and for CUDA what the
    driver reports free plus what the caching allocator holds unused, capped
    by the per-process memory fraction (see sources.py).
``scalable_indices``, ``maximize``
    Defaults for the arguments of the same names that
    ``AutoScaler.scale_dimensions`` takes.
``multiple_of``
    For ``strategy="fit"``: every dimension the solver changes becomes a
    multiple of this (an int, or one int per position).

Validation happens at construction.  The original's checks keep their
messages and raise ``ConfigValueError``, which is a ``ValueError`` as the
original's were; values of the wrong type and names outside the documented
choices (an unknown strategy, memory_source or log_level), on which the
original failed later with an unrelated exception, now fail here with
``ConfigTypeError`` or ``ConfigValueError``.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Tuple

from .errors import ConfigTypeError, ConfigValueError

__all__ = ["ScalingConfig", "STRATEGIES", "MEMORY_SOURCES"]

STRATEGIES = ("linear", "exponential", "fit")
MEMORY_SOURCES = ("host", "effective")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral)


def _check_real(name: str, value: Any) -> None:
    if not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"{name} must be a real number, got {type(value).__name__}")


def _check_dims(name: str, dims: Any) -> None:
    if dims is None:
        return
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__len__") or not hasattr(dims, "__iter__"):
        raise ConfigTypeError(f"{name} must be a tuple of ints, got {type(dims).__name__}")
    if not dims:
        raise ConfigValueError(f"{name} cannot be empty tuple")
    for i, d in enumerate(dims):
        if not _is_int(d):
            raise ConfigTypeError(f"{name}[{i}] must be an integer, got {type(d).__name__}")
    if any(d <= 0 for d in dims):
        raise ConfigValueError(f"All {name} must be positive")


@dataclass(frozen=True)
class ScalingConfig:
    """Immutable settings of an AutoScaler.

    Attributes:
        memory_threshold: share of the available memory a scaled tensor may
            use, in (0, 1].
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
            Any other string measures the CPU, as in deep-dimensions.
        cuda_device_index: the CUDA device measured and allocated on.
        strategy: ``"linear"``, ``"exponential"`` or ``"fit"``.
        framework: ``"pytorch"``, ``"tensorflow"`` or ``"auto"``.
        min_dimensions, max_dimensions: per-position bounds on the scaled
            dimensions (shorter tuples leave later positions free).
        preserve_aspect_ratio: kept for compatibility; no strategy reads it.
        safety_margin: subtracted from memory_threshold, in [0, 1).
        log_level: level of the ``infinite_tensor.memory`` logger.
        memory_source: ``"host"`` (deep-dimensions' figures) or ``"effective"``.
        scalable_indices: positions the strategies may change (None: all).
        maximize: let the strategies grow dimensions to fill the budget.
        multiple_of: for ``strategy="fit"``, changed dims are multiples of it.
    """

    memory_threshold: float = 0.8
    device: Literal["cpu", "cuda", "auto"] = "auto"
    cuda_device_index: int = 0
    strategy: Literal["linear", "exponential", "fit"] = "linear"
    framework: Literal["pytorch", "tensorflow", "auto"] = "auto"
    min_dimensions: Tuple[int, ...] | None = None
    max_dimensions: Tuple[int, ...] | None = None
    preserve_aspect_ratio: bool = True
    safety_margin: float = 0.1
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    memory_source: Literal["host", "effective"] = "host"
    scalable_indices: Tuple[int, ...] | None = None
    maximize: bool = False
    multiple_of: int | Tuple[int, ...] = 1

    def __post_init__(self) -> None:
        _check_real("memory_threshold", self.memory_threshold)
        _check_real("safety_margin", self.safety_margin)
        # The original's checks, in its order and with its messages.
        if not 0.0 < self.memory_threshold <= 1.0:
            raise ConfigValueError(f"memory_threshold must be between 0 and 1, got {self.memory_threshold}")
        if not 0.0 <= self.safety_margin < 1.0:
            raise ConfigValueError(f"safety_margin must be between 0 and 1, got {self.safety_margin}")
        if self.memory_threshold + self.safety_margin > 1.0:
            raise ConfigValueError(
                f"memory_threshold ({self.memory_threshold}) + safety_margin "
                f"({self.safety_margin}) must not exceed 1.0"
            )
        if not _is_int(self.cuda_device_index):
            raise ConfigTypeError(f"cuda_device_index must be an integer, got {type(self.cuda_device_index).__name__}")
        if self.cuda_device_index < 0:
            raise ConfigValueError(f"cuda_device_index must be non-negative, got {self.cuda_device_index}")
        _check_dims("min_dimensions", self.min_dimensions)
        _check_dims("max_dimensions", self.max_dimensions)
        if self.min_dimensions is not None and self.max_dimensions is not None:
            if len(self.min_dimensions) != len(self.max_dimensions):
                raise ConfigValueError(
                    f"min_dimensions ({len(self.min_dimensions)}) and "
                    f"max_dimensions ({len(self.max_dimensions)}) must have same length"
                )
            for i, (lo, hi) in enumerate(zip(self.min_dimensions, self.max_dimensions)):
                if lo > hi:
                    raise ConfigValueError(f"min_dimensions[{i}] ({lo}) cannot exceed max_dimensions[{i}] ({hi})")
        # Checks the original did not make (it failed later, or not at all).
        if self.strategy not in STRATEGIES:
            raise ConfigValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.log_level, str) or not isinstance(
            logging.getLevelName(self.log_level.upper()), int
        ):
            raise ConfigValueError(
                f"log_level must be a logging level name such as 'INFO' or 'DEBUG', got {self.log_level!r}"
            )
        if self.memory_source not in MEMORY_SOURCES:
            raise ConfigValueError(f"memory_source must be one of {list(MEMORY_SOURCES)}, got {self.memory_source!r}")
        if self.scalable_indices is not None:
            if isinstance(self.scalable_indices, (str, bytes)) or not hasattr(self.scalable_indices, "__iter__"):
                raise ConfigTypeError(
                    f"scalable_indices must be a tuple of ints, got {type(self.scalable_indices).__name__}"
                )
            for i, d in enumerate(self.scalable_indices):
                if not _is_int(d):
                    raise ConfigTypeError(f"scalable_indices[{i}] must be an integer, got {type(d).__name__}")
        if not isinstance(self.maximize, bool):
            raise ConfigTypeError(f"maximize must be a bool, got {type(self.maximize).__name__}")
        multiples: Any = (self.multiple_of,) if _is_int(self.multiple_of) else self.multiple_of
        if isinstance(multiples, (str, bytes)) or not hasattr(multiples, "__iter__"):
            raise ConfigTypeError(f"multiple_of must be an int or a tuple of ints, got {type(multiples).__name__}")
        for m in multiples:
            if not _is_int(m):
                raise ConfigTypeError(f"multiple_of must hold integers, got {type(m).__name__}")
            if m < 1:
                raise ConfigValueError(f"multiple_of must be at least 1, got {m}")

    @property
    def effective_threshold(self) -> float:
        """memory_threshold minus safety_margin (0.7 with the defaults; the
        float subtraction is kept, so 0.8 - 0.1 gives 0.7000000000000001)."""
        return self.memory_threshold - self.safety_margin

    def with_overrides(self, **kwargs: Any) -> "ScalingConfig":
        """Return a copy with the given fields replaced (validated again)."""
        return dataclasses.replace(self, **kwargs)
