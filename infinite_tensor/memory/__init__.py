"""infinite_tensor.memory: size tensors to the memory there is.

A drop-in replacement for deep-dimensions 0.2.5: change
``from deep_dimensions import AutoScaler, ScalingConfig`` to
``from infinite_tensor.memory import AutoScaler, ScalingConfig`` and every
result, exception class, message and MemoryInfo field stays the same (see
docs/memory.md for the exact rules and the few fixes).  On top of it:

* module functions the engine uses: ``get_memory_info(device)`` ->
  ``DeviceMemory``, ``available_bytes(device)``, ``estimate_bytes(shape,
  dtype)``, ``budget(device)`` and ``fit_shape(...)``, all measuring with the
  *effective* rule (cgroups, rlimits, the CUDA allocator and memory fraction);
* opt-ins on ScalingConfig: ``memory_source="effective"``, ``strategy="fit"``
  (an exact integer solver), ``scalable_indices``, ``maximize``, ``multiple_of``;
* ``override_info(...)``: a context manager that makes all of the above see
  given numbers, a fixture /proc tree or a fake CUDA device, for tests.

This package sits beside the tensor: it imports torch and the package's error
classes, never infinite_tensor.infinite_tensor.
"""
from .config import ScalingConfig
from .errors import (
    AutoScaleError,
    ConfigTypeError,
    ConfigValueError,
    ConfigurationError,
    FrameworkNotAvailableError,
    InsufficientMemoryError,
    UnsupportedDeviceError,
)
from .interfaces import IFrameworkAdapter, IMemoryProvider, IScalingStrategy, ScalingContext, ScalingResult
from .scaler import AutoScaler, AutoTuner
from .scaling import fit_shape
from .sources import (
    DeviceMemory,
    FakeCuda,
    FakeGpu,
    MemoryInfo,
    SystemReader,
    available_bytes,
    budget,
    estimate_bytes,
    get_memory_info,
    override_info,
)

__all__ = [
    # deep-dimensions' public names
    "AutoScaler",
    "ScalingConfig",
    "IMemoryProvider",
    "IScalingStrategy",
    "IFrameworkAdapter",
    "AutoScaleError",
    "ConfigurationError",
    "InsufficientMemoryError",
    "UnsupportedDeviceError",
    "FrameworkNotAvailableError",
    # importable from deep_dimensions though not in its __all__
    "AutoTuner",
    "ScalingResult",
    "ScalingContext",
    "MemoryInfo",
    # ours
    "ConfigValueError",
    "ConfigTypeError",
    "DeviceMemory",
    "get_memory_info",
    "available_bytes",
    "estimate_bytes",
    "budget",
    "fit_shape",
    "override_info",
    "SystemReader",
    "FakeCuda",
    "FakeGpu",
]
