"""AutoScaler and AutoTuner: deep-dimensions' user-facing classes.

``AutoScaler`` is a facade over three parts: a memory provider chosen once at
construction (CUDA for ``device="cuda"`` or ``"auto"`` when CUDA is present,
otherwise the CPU; the figures are read again on every call), a framework
adapter, and the strategies of scaling.py.  Its results, messages and log
lines are deep-dimensions 0.2.5's; what differs is listed in docs/memory.md:
the tensor is allocated on ``cuda:<cuda_device_index>``, ``log_level`` sets
only the ``infinite_tensor.memory`` logger, and the opt-ins of ScalingConfig
(``memory_source``, ``strategy="fit"``, ``scalable_indices``, ``maximize``,
``multiple_of``) are read.

``AutoTuner`` is the search deep-dimensions 0.2.5 ships in
``deep_dimensions/core/autotuner.py`` (its ``__init__`` imports it, though
``__all__`` omits it): ``find_max_config`` probes a workload with doubling
values until one fails, then bisects; ``predict_max_config`` fits a line
through the peak CUDA memory of two probes.  The search order is the
original's, so a workload sees the same sequence of values.
"""
from __future__ import annotations

import gc
import logging
import sys
from typing import Any, Callable, Literal, Optional, Tuple

from . import sources
from .config import ScalingConfig
from .frameworks import resolve_adapter
from .interfaces import IFrameworkAdapter, IMemoryProvider, ScalingResult
from .scaling import calculate, estimate_tensor_memory, validate_dimensions
from .sources import MemoryInfo

__all__ = ["AutoScaler", "AutoTuner", "SystemMemoryProvider", "CUDAMemoryProvider"]

PACKAGE_LOGGER = "infinite_tensor.memory"
_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"
_handler: logging.Handler | None = None

logger = logging.getLogger(PACKAGE_LOGGER + ".scaler")


def configure_logging(level: str) -> None:
    """Set the level of the ``infinite_tensor.memory`` logger and, once per
    process, give it a stderr handler in deep-dimensions' format.  No other
    logger (the root one included) is touched."""
    global _handler
    package = logging.getLogger(PACKAGE_LOGGER)
    package.setLevel(logging.getLevelName(level.upper()))
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter(_FORMAT))
        package.addHandler(_handler)


class SystemMemoryProvider(IMemoryProvider):
    """The CPU, under the host rule (deep-dimensions') or the effective rule."""

    def __init__(self, source: str = "host") -> None:
        self._source = source

    def get_memory_info(self) -> MemoryInfo:
        if self._source == "effective":
            return sources.effective_cpu_info()
        return sources.host_cpu_info()

    def is_available(self) -> bool:
        return True

    @property
    def device_type(self) -> Literal["cpu"]:
        return "cpu"


class CUDAMemoryProvider(IMemoryProvider):
    """One CUDA device, under the host rule (total - reserved) or the effective rule."""

    def __init__(self, device_index: int = 0, source: str = "host") -> None:
        if device_index < 0:
            raise ValueError("Device index must be non-negative")
        self._index = device_index
        self._source = source

    def get_memory_info(self) -> MemoryInfo:
        if not self.is_available():
            raise RuntimeError("CUDA is not available")
        return sources.cuda_info(self._index, self._source)

    def is_available(self) -> bool:
        return sources.cuda_available()

    @property
    def device_type(self) -> Literal["cuda"]:
        return "cuda"

    @property
    def device_index(self) -> int:
        return self._index


def _choose_provider(config: ScalingConfig) -> IMemoryProvider:
    if config.device in ("cuda", "auto"):
        cuda = CUDAMemoryProvider(config.cuda_device_index, config.memory_source)
        if cuda.is_available():
            if config.device == "auto":
                logger.info("Auto-detected CUDA device, using GPU memory")
            return cuda
        if config.device == "cuda":
            logger.warning("CUDA not available, falling back to CPU")
        else:
            logger.info("CUDA not available, using system memory")
    return SystemMemoryProvider(config.memory_source)


class AutoScaler:
    """Scales tensor dimensions to the memory available (deep-dimensions' API).

    Args:
        config: the settings (a default ScalingConfig when None).
        framework: "pytorch", "tensorflow" or "auto"; overrides config.framework.
        memory_provider: an IMemoryProvider to measure with instead of the one
            the config selects (keyword only; ours).

    Raises:
        FrameworkNotAvailableError: the framework cannot be imported.
    """

    def __init__(self, config: ScalingConfig | None = None,
                 framework: Literal["pytorch", "tensorflow", "auto"] | None = None, *,
                 memory_provider: IMemoryProvider | None = None) -> None:
        self._config = config or ScalingConfig()
        configure_logging(self._config.log_level)
        choice = framework or self._config.framework
        self._adapter = resolve_adapter(choice)
        self._provider = memory_provider if memory_provider is not None else _choose_provider(self._config)
        logger.info(f"AutoScaler initialized: framework={self._adapter.name}, "
                    f"device={self._config.device}, threshold={self._config.memory_threshold}")

    # -- properties ---------------------------------------------------------
    @property
    def config(self) -> ScalingConfig:
        """The settings."""
        return self._config

    @property
    def framework(self) -> str:
        """"pytorch" or "tensorflow"."""
        return self._adapter.name

    @property
    def device_type(self) -> str:
        """"cpu" or "cuda": the device measured and allocated on."""
        return self._provider.device_type

    @property
    def device(self) -> str:
        """Where create_scaled_tensor allocates: "cpu" or "cuda:<cuda_device_index>"."""
        if self.device_type == "cuda":
            return f"cuda:{self._config.cuda_device_index}"
        return "cpu"

    @property
    def adapter(self) -> IFrameworkAdapter:
        """The framework adapter."""
        return self._adapter

    # -- memory ---------------------------------------------------------------
    def get_memory_info(self) -> MemoryInfo:
        """The device's current figures."""
        return self._provider.get_memory_info()

    def get_available_memory(self) -> int:
        """Available bytes on the device."""
        return self._provider.get_memory_info().available

    def refresh_memory_info(self) -> MemoryInfo:
        """The device's current figures (read again; nothing is cached)."""
        return self._provider.get_memory_info()

    def _dtype_size(self, dtype: Any) -> tuple[Any, int]:
        if dtype is None:
            dtype = self._adapter.get_default_dtype()
        return dtype, self._adapter.get_dtype_size(dtype)

    def estimate_memory(self, dimensions: Tuple[int, ...], dtype: Any = None) -> int:
        """prod(dimensions) * itemsize, in bytes."""
        dims = validate_dimensions(dimensions)
        _, size = self._dtype_size(dtype)
        return estimate_tensor_memory(dims, size)

    # -- scaling ----------------------------------------------------------------
    def scale_dimensions_with_info(self, dimensions: Tuple[int, ...], dtype: Any = None,
                                   scalable_indices: Tuple[int, ...] | None = None,
                                   maximize: bool = False) -> ScalingResult:
        """Scale ``dimensions`` and return the ScalingResult.

        ``scalable_indices`` (default: the config's, else all positions) limits
        the positions scaled; ``maximize`` (or the config's) lets them grow to
        fill the budget.
        """
        dims = validate_dimensions(dimensions)
        dtype, size = self._dtype_size(dtype)
        if scalable_indices is None:
            scalable_indices = self._config.scalable_indices
        maximize = bool(maximize) or self._config.maximize
        info = self._provider.get_memory_info()
        return calculate(dims, dtype, size, info, self._config, scalable_indices=scalable_indices,
                         maximize=maximize)

    def scale_dimensions(self, dimensions: Tuple[int, ...], dtype: Any = None,
                         scalable_indices: Tuple[int, ...] | None = None, maximize: bool = False,
                         ) -> Tuple[int, ...]:
        """The scaled dimensions (see scale_dimensions_with_info)."""
        return self.scale_dimensions_with_info(dimensions, dtype, scalable_indices, maximize).scaled_dimensions

    def create_scaled_tensor(self, dimensions: Tuple[int, ...], dtype: Any = None,
                             fill_value: float | None = None, requires_grad: bool = False,
                             scalable_indices: Tuple[int, ...] | None = None, maximize: bool = False) -> Any:
        """Allocate a tensor of the scaled dimensions on ``self.device``.

        fill_value None leaves it uninitialised (torch.empty; TensorFlow zeros).
        """
        if dtype is None:
            dtype = self._adapter.get_default_dtype()
        dims = self.scale_dimensions(dimensions, dtype, scalable_indices=scalable_indices, maximize=maximize)
        tensor = self._adapter.create_tensor(dims, dtype, self.device, fill_value, requires_grad)
        logger.debug(f"Created tensor: original={dimensions}, scaled={dims}, framework={self.framework}")
        return tensor

    def can_fit(self, dimensions: Tuple[int, ...], dtype: Any = None) -> bool:
        """Whether the request needs at most available * effective_threshold bytes."""
        dims = validate_dimensions(dimensions)
        _, size = self._dtype_size(dtype)
        info = self._provider.get_memory_info()
        return estimate_tensor_memory(dims, size) <= int(info.available * self._config.effective_threshold)

    def __repr__(self) -> str:
        return (f"AutoScaler(framework={self.framework!r}, device={self.device_type!r}, "
                f"threshold={self._config.memory_threshold})")


# -- AutoTuner ---------------------------------------------------------------------

tuner_logger = logging.getLogger(PACKAGE_LOGGER + ".tuner")


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if sources.current_cuda_provider() is sources._default_cuda and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "allocate" in text


class AutoTuner:
    """Finds the largest integer setting (a batch size, a side length) a workload survives.

    Args:
        verbose: kept for compatibility (the original stores it and reads it nowhere).
        oom_only: ours.  False (the default, as in deep-dimensions): any
            exception from the workload counts as "too big".  True: only
            RuntimeErrors that read as out-of-memory do; others propagate.
    """

    def __init__(self, verbose: bool = True, *, oom_only: bool = False) -> None:
        self.verbose = verbose
        self.oom_only = oom_only

    def _try_run(self, func: Callable[[int], Any], value: int) -> bool:
        free_memory()
        try:
            func(value)
            return True
        except RuntimeError as e:
            if _is_oom(e):
                return False
            if self.oom_only:
                raise
            tuner_logger.warning(f"Trial failed with error: {e}")
            return False
        except Exception as e:
            if self.oom_only:
                raise
            tuner_logger.warning(f"Trial failed with generic error: {e}")
            return False
        finally:
            free_memory()

    def find_max_config(self, func: Callable[[int], Any], min_val: int = 1, max_val: Optional[int] = None,
                        steps: Optional[int] = None) -> int:
        """The largest value v >= min_val for which ``func(v)`` succeeds.

        Without max_val the upper end is found by doubling from min_val; then
        [low, high] is bisected, probing safe + 1 when the midpoint equals the
        last safe value.  ``steps`` caps the number of probes after the first
        (the doubling and the bisection share it).  Returns 0 when min_val
        itself fails (only checked when max_val is None, as in the original).
        """
        low, high = min_val, max_val
        tuner_logger.info(f"AutoTuner: Starting discovery from {min_val}")
        if high is None:
            tuner_logger.info("AutoTuner: No upper limit provided. Probing for OOM boundary...")
            if not self._try_run(func, low):
                tuner_logger.error(f"AutoTuner: Starting value {low} failed immediately.")
                return 0
            cur = low * 2
            while True:
                if steps is not None:
                    steps -= 1
                    if steps <= 0:
                        tuner_logger.warning("AutoTuner: Step limit reached during expansion.")
                        return low
                tuner_logger.info(f"AutoTuner: Probing upper bound {cur}...")
                if self._try_run(func, cur):
                    low, cur = cur, cur * 2
                else:
                    tuner_logger.info(f"AutoTuner: Found upper bound limit at {cur}")
                    high = cur
                    break
        tuner_logger.info(f"AutoTuner: Refining search in range [{low}, {high}]")
        safe = low
        while low <= high:
            if steps is not None:
                steps -= 1
                if steps <= 0:
                    tuner_logger.warning("AutoTuner: Step limit reached during refinement.")
                    break
            mid = (low + high) // 2
            if mid == 0:
                low = 1
                continue
            if mid == safe:
                if safe + 1 > high:
                    break
                mid = safe + 1
            tuner_logger.debug(f"AutoTuner: Probing value {mid}...")
            if self._try_run(func, mid):
                tuner_logger.info(f"AutoTuner: Value {mid} SUCCESS")
                safe, low = mid, mid + 1
            else:
                tuner_logger.info(f"AutoTuner: Value {mid} FAILED")
                high = mid - 1
        tuner_logger.info(f"AutoTuner: Found optimal max value: {safe}")
        return safe

    def predict_max_config(self, func: Callable[[int], Any], min_val: int = 1, step_factor: float = 2.0,
                           safety_buffer: float = 0.95) -> int:
        """Predict the largest value from the peak CUDA memory of two probes.

        Probes min_val and int(min_val * step_factor), fits peak memory as a
        line in the value, solves for (total - allocated) * safety_buffer,
        verifies the prediction and falls back to find_max_config where a
        probe or the prediction fails.  Without CUDA it is find_max_config.
        (deep-dimensions 0.2.5 calls torch.cuda.reset_peek_memory_stats, a
        name torch lacks, so its version fails on every CUDA machine.)
        """
        import torch

        if not torch.cuda.is_available():
            tuner_logger.warning("AutoTuner: Predictive tuning requires CUDA to measure memory. "
                                 "Falling back to search.")
            return self.find_max_config(func, min_val)
        tuner_logger.info("AutoTuner: Starting Mathematical Extrapolation...")
        free_memory()
        total = torch.cuda.get_device_properties(0).total_memory
        target = (total - torch.cuda.memory_allocated(0)) * safety_buffer

        def probe(x: int) -> int | None:
            free_memory()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            if not self._try_run(func, x):
                return None
            return torch.cuda.max_memory_allocated() - start

        x1 = min_val
        y1 = probe(x1)
        if y1 is None:
            tuner_logger.error("AutoTuner: Probe 1 failed. Cannot predict.")
            return 0
        x2 = int(min_val * step_factor)
        y2 = probe(x2)
        if y2 is None:
            tuner_logger.warning(f"AutoTuner: Probe 2 failed at {x2}. Fallback to finding max in range "
                                 f"[{x1}, {x2}].")
            return self.find_max_config(func, min_val=x1, max_val=x2)
        if x2 == x1:
            return x1
        slope = (y2 - y1) / (x2 - x1)
        intercept = y1 - slope * x1
        if slope <= 0:
            tuner_logger.warning("AutoTuner: Non-positive memory slope detected (memory didn't increase). "
                                 "Extrapolation unreliable.")
            return self.find_max_config(func, min_val=x2)
        predicted = int((target - intercept) / slope)
        if predicted <= x2:
            return x2
        if self._try_run(func, predicted):
            return predicted
        tuner_logger.info("AutoTuner: Refining prediction with search...")
        return self.find_max_config(func, min_val=x2, max_val=predicted)


