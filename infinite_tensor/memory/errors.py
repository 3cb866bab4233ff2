"""The exceptions infinite_tensor.memory raises.

The five public classes carry the names, the hierarchy and the attributes of
deep-dimensions 0.2.5, so code that catches them keeps working after the
import changes.  Two things are added, and neither changes what an existing
``except`` clause catches:

* ``AutoScaleError`` derives from the package-wide ``InfiniteTensorError``,
  and ``InsufficientMemoryError`` is also a ``MemoryError``.
* Where deep-dimensions raised a bare built-in exception for a bad argument
  (``ValueError`` for a bad ``ScalingConfig`` field or an unsupported dtype,
  ``TypeError`` when a field has the wrong type), we raise ``ConfigValueError``
  or ``ConfigTypeError``: subclasses of both ``ConfigurationError`` and the
  built-in class the original raised, with the original's message.
"""
from __future__ import annotations

from ..errors import InfiniteTensorError, ValidationError

__all__ = [
    "AutoScaleError",
    "ConfigurationError",
    "ConfigValueError",
    "ConfigTypeError",
    "InsufficientMemoryError",
    "UnsupportedDeviceError",
    "FrameworkNotAvailableError",
]


class AutoScaleError(InfiniteTensorError):
    """Base class of every error raised by infinite_tensor.memory."""


class ConfigurationError(AutoScaleError):
    """A configuration value or an argument (dimensions, dtype, indices) is invalid."""


class ConfigValueError(ConfigurationError, ValidationError):
    """A ConfigurationError that is also a ValueError: raised where
    deep-dimensions raised ValueError (ScalingConfig validation, an
    unsupported dtype)."""


class ConfigTypeError(ConfigurationError, TypeError):
    """A ConfigurationError that is also a TypeError: a field or argument has
    the wrong type (deep-dimensions failed there with an unrelated TypeError)."""


class InsufficientMemoryError(AutoScaleError, MemoryError):
    """Even the smallest allowed dimensions do not fit in the memory budget.

    Attributes:
        required_memory: bytes the minimum dimensions need (or None).
        available_memory: the budget in bytes they were checked against (or None).
        min_dimensions: the minimum dimensions that did not fit (or None).
    """

    def __init__(
        self,
        message: str,
        required_memory: int | None = None,
        available_memory: int | None = None,
        min_dimensions: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.required_memory = required_memory
        self.available_memory = available_memory
        self.min_dimensions = min_dimensions


class UnsupportedDeviceError(AutoScaleError):
    """The device named is not one this module can measure (or it does not exist).

    Attributes:
        device: the device as given (or None).
    """

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class FrameworkNotAvailableError(AutoScaleError):
    """The framework asked for (pytorch, tensorflow) cannot be imported.

    Attributes:
        framework: the framework name as given (or None).
    """

    def __init__(self, message: str, framework: str | None = None) -> None:
        super().__init__(message)
        self.framework = framework
