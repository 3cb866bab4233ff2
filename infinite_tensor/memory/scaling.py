"""The scaling strategies: deep-dimensions' two, and an exact solver.

``linear`` and ``exponential`` reproduce deep-dimensions 0.2.5 to the bit, so
they keep its quirks (docs/memory.md states them with a worked example).  With
``target = int(available * (memory_threshold - safety_margin))`` and
``required = prod(dims) * itemsize``:

* a request with ``required <= target`` comes back unchanged, bounds unread
  (unless ``maximize``);
* otherwise ``f = (target / required) ** (1 / n)``, n being the number of
  scalable positions, clamped to [0.01, 1] (to [0.01, 100] with maximize);
* linear: each scalable dim d becomes ``max(1, round(d * f))``;
  exponential: ``max(1, round(d * f * (1 - 0.1 * (d / dmax) ** 2)))`` when
  f < 1, where dmax is the largest scalable dim, so the largest shrink 10 %
  more; ``round`` is Python's (half to even);
* then each is clamped to ``min_dimensions[i]`` and ``max_dimensions[i]``
  where those tuples reach position i;
* the result may exceed the target; ``InsufficientMemoryError`` is raised
  only when it does and ``prod(min_dimensions) * itemsize`` exceeds it too.

``fit`` (``fit_shape``) is ours: an exact integer solver that changes only
the listed dims, always applies the maximum, returns a shape that fits the
budget after rounding, and is greedy-maximal: no changed dim can move up to
its next allowed size without exceeding the budget.  Allowed sizes for a
listed dim are the multiples of ``multiple_of`` within [min, max] plus the
requested size itself when it lies within the bounds.  It starts from the
largest uniform factor whose shape, each dim rounded up to an allowed
size, fits (a bisection over the factor) and then raises each dim, least-scaled first, to the largest allowed
size the remaining budget admits; since raising one dim only shrinks the
room of the others, a single pass leaves every dim maximal.
"""
from __future__ import annotations

import logging
import math
import operator
from typing import Any, Sequence, Tuple

from .config import ScalingConfig
from .errors import ConfigTypeError, ConfigurationError, ConfigValueError, InsufficientMemoryError
from .interfaces import IScalingStrategy, ScalingContext, ScalingResult
from .sources import MemoryInfo

__all__ = [
    "validate_dimensions",
    "estimate_tensor_memory",
    "LinearScalingStrategy",
    "ExponentialScalingStrategy",
    "FitScalingStrategy",
    "fit_shape",
    "calculate",
]

logger = logging.getLogger("infinite_tensor.memory.scaling")

_INSUFFICIENT = "Cannot fit minimum dimensions in available memory"


def validate_dimensions(dimensions: Any, name: str = "dimensions") -> Tuple[int, ...]:
    """Check a request as deep-dimensions does and return it as a tuple.

    A tuple (torch.Size included) or list of positive Python ints; anything
    else raises ConfigurationError with the original's message.
    """
    if dimensions is None:
        raise ConfigurationError(f"{name} cannot be None")
    if isinstance(dimensions, list):
        dimensions = tuple(dimensions)
    if not isinstance(dimensions, tuple):
        raise ConfigurationError(f"{name} must be a tuple or list, got {type(dimensions).__name__}")
    if not dimensions:
        raise ConfigurationError(f"{name} cannot be empty")
    for i, d in enumerate(dimensions):
        if not isinstance(d, int):
            raise ConfigurationError(f"{name}[{i}] must be an integer, got {type(d).__name__}")
        if d <= 0:
            raise ConfigurationError(f"{name}[{i}] must be positive, got {d}")
    return dimensions


def estimate_tensor_memory(dimensions: Sequence[int], dtype_size: int) -> int:
    """prod(dimensions) * dtype_size, in exact integers."""
    n = 1
    for d in dimensions:
        n *= d
    return n * dtype_size


def _scaled_count(context: ScalingContext, scalable_indices: Sequence[int] | None) -> int:
    return len(scalable_indices) if scalable_indices is not None else len(context.original_dimensions)


def _factor(context: ScalingContext, scalable_indices: Sequence[int] | None, maximize: bool) -> float:
    target = context.target_memory
    if context.required_memory <= target and not maximize:
        return 1.0
    if context.required_memory == 0:
        return 1.0
    ratio = target / context.required_memory
    n = _scaled_count(context, scalable_indices)
    if n == 0:
        logger.warning("No scalable indices provided, returning 1.0")
        return 1.0
    f = math.pow(ratio, 1.0 / n)
    return max(0.01, min(100.0 if maximize else 1.0, f))


def _clamp(i: int, value: int, min_dimensions: Sequence[int] | None, max_dimensions: Sequence[int] | None) -> int:
    # positional bounds, read only where the tuples reach (negative i counts from their end)
    if min_dimensions is not None and i < len(min_dimensions):
        value = max(value, min_dimensions[i])
    if max_dimensions is not None and i < len(max_dimensions):
        value = min(value, max_dimensions[i])
    return value


class _FactorStrategy(IScalingStrategy):
    """What "linear" and "exponential" share: the factor (_factor) and scale();
    they differ in how apply_to_dimensions spends it.  Only "linear" logs
    what it did, as in deep-dimensions 0.2.5."""

    _logs = False

    def calculate_scale_factor(self, context: ScalingContext, scalable_indices: Sequence[int] | None = None,
                               maximize: bool = False) -> float:
        return _factor(context, scalable_indices, maximize)

    def scale(self, context: ScalingContext, min_dimensions: Sequence[int] | None = None,
              max_dimensions: Sequence[int] | None = None, scalable_indices: Sequence[int] | None = None,
              maximize: bool = False) -> ScalingResult:
        f = self.calculate_scale_factor(context, scalable_indices, maximize)
        if f == 1.0:
            return ScalingResult(context.original_dimensions, 1.0, context.required_memory, False)
        dims = self.apply_to_dimensions(context.original_dimensions, f, min_dimensions, max_dimensions,
                                        scalable_indices)
        if self._logs and maximize and f > 1.0:
            logger.info(f"Scaled UP: {context.original_dimensions} -> {dims} (Factor: {f:.2f})")
        elif self._logs and f < 1.0:
            logger.info(f"Scaled DOWN: {context.original_dimensions} -> {dims} (Factor: {f:.2f})")
        return ScalingResult(dims, f, estimate_tensor_memory(dims, context.dtype_size), True)


class LinearScalingStrategy(_FactorStrategy):
    """Every scalable dim times the same factor (deep-dimensions' "linear")."""

    _logs = True

    @property
    def name(self) -> str:
        return "linear"

    def apply_to_dimensions(self, dimensions: Tuple[int, ...], scale_factor: float,
                            min_dimensions: Sequence[int] | None = None,
                            max_dimensions: Sequence[int] | None = None,
                            scalable_indices: Sequence[int] | None = None) -> Tuple[int, ...]:
        if scale_factor == 1.0:
            return dimensions
        out = list(dimensions)
        for i in (scalable_indices if scalable_indices is not None else range(len(dimensions))):
            if i >= len(dimensions):
                continue
            value = max(1, int(round(dimensions[i] * scale_factor)))
            out[i] = _clamp(i, value, min_dimensions, max_dimensions)
        return tuple(out)


class ExponentialScalingStrategy(_FactorStrategy):
    """The linear factor, with an extra cut of up to 10 % for the largest dims
    (deep-dimensions 0.2.5's "exponential")."""

    def __init__(self, exponent: float = 2.0) -> None:
        if exponent <= 0:
            raise ConfigValueError("Exponent must be positive")
        self._exponent = exponent

    @property
    def exponent(self) -> float:
        return self._exponent

    @property
    def name(self) -> str:
        return "exponential"

    def apply_to_dimensions(self, dimensions: Tuple[int, ...], scale_factor: float,
                            min_dimensions: Sequence[int] | None = None,
                            max_dimensions: Sequence[int] | None = None,
                            scalable_indices: Sequence[int] | None = None) -> Tuple[int, ...]:
        if scale_factor == 1.0:
            return dimensions
        indices = scalable_indices if scalable_indices is not None else range(len(dimensions))
        indices = [i for i in indices if i < len(dimensions)]
        if not indices:
            return dimensions
        largest = max(dimensions[i] for i in indices)
        out = list(dimensions)
        for i in indices:
            d = dimensions[i]
            weight = (d / largest) ** self._exponent
            if scale_factor < 1:
                f = scale_factor * (1.0 - (weight * 0.1))
                f = max(scale_factor * 0.5, f)
            else:
                f = scale_factor
            out[i] = _clamp(i, max(1, int(round(d * f))), min_dimensions, max_dimensions)
        return tuple(out)


# -- the exact solver -------------------------------------------------------------

class _Dim:
    """The allowed sizes of one listed dim: multiples of m in [lo, hi], plus keep."""

    __slots__ = ("m", "lo", "hi", "keep", "bottom")

    def __init__(self, m: int, lo: int, hi: int | None, keep: int | None) -> None:
        self.m = m
        self.lo = -(-lo // m) * m  # the smallest multiple >= lo
        self.hi = hi
        self.keep = keep
        bottoms = [v for v in (self.lo if hi is None or self.lo <= hi else None, keep) if v is not None]
        self.bottom = min(bottoms) if bottoms else None

    def floor(self, x: int) -> int | None:
        """The largest allowed size <= x, or None."""
        best: int | None = None
        top = x if self.hi is None else min(x, self.hi)
        if top >= self.lo:
            best = top // self.m * self.m
        if self.keep is not None and self.keep <= x and (best is None or self.keep > best):
            best = self.keep
        return best

    def ceil(self, x: float) -> int:
        """The smallest allowed size >= x, or the largest allowed size when none is."""
        multiple = max(self.lo, math.ceil(x / self.m) * self.m)
        best: int | None = multiple if self.hi is None or multiple <= self.hi else None
        if self.keep is not None and self.keep >= x and (best is None or self.keep < best):
            best = self.keep
        if best is None:  # x is above every allowed size (so hi is finite)
            cap = self.hi if self.hi is not None else multiple
            top = self.floor(cap if self.keep is None else max(cap, self.keep))
            best = top if top is not None else self.lo
        return best


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigTypeError(f"{what} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigTypeError(f"{what} must be an integer, got {type(value).__name__}") from None


def _per_position(value: Any, n: int, what: str, allow_none: bool) -> list:
    if value is None:
        return [None] * n
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigTypeError(f"{what} must be a sequence of {n} ints, got {type(value).__name__}")
    value = list(value)
    out: list[int | None] = []
    if len(value) != n:
        raise ConfigValueError(f"{what} must have {n} entries (one per dim), got {len(value)}")
    for i, v in enumerate(value):
        if v is None and allow_none:
            out.append(None)
            continue
        v = _as_int(v, f"{what}[{i}]")
        if v < 1:
            raise ConfigValueError(f"{what}[{i}] must be positive, got {v}")
        out.append(v)
    return out


def _solve(shape: Sequence[int], itemsize: int, idx: Sequence[int], mins: Sequence[int | None],
           maxs: Sequence[int | None], mults: Sequence[int], budget: int, grow: bool) -> Tuple[int, ...]:
    shape = list(shape)
    allowed: dict[int, _Dim] = {}
    low: dict[int, int] = {}
    for i in idx:
        s, lo, hi, m = shape[i], mins[i] or 1, maxs[i], mults[i]
        if lo > s and not grow:
            allowed[i] = _Dim(m, s, s, s)  # a request already below its minimum stays as asked
            low[i] = s
            continue
        if not grow:
            hi = s if hi is None else min(hi, s)
        keep = s if lo <= s and (hi is None or s <= hi) else None
        d = _Dim(m, lo, hi, keep)
        if d.bottom is None:
            raise ConfigValueError(f"dimension {i}: no size is a multiple of {m} within [{lo}, {hi}]")
        allowed[i] = d
        low[i] = d.bottom
    fixed = itemsize
    for j, s in enumerate(shape):
        if j not in allowed:
            fixed *= s

    def nbytes(v: dict[int, int]) -> int:
        n = fixed
        for x in v.values():
            n *= x
        return n

    def at(f: float) -> dict[int, int]:
        # each dim at the smallest allowed size >= f * its request: rounding up
        # keeps small dims (channels) from losing a whole step to the floor
        return {i: d.ceil(f * shape[i]) for i, d in allowed.items()}

    if nbytes(low) > budget:
        smallest = tuple(low.get(j, s) for j, s in enumerate(shape))
        raise InsufficientMemoryError(_INSUFFICIENT, required_memory=nbytes(low), available_memory=budget,
                                      min_dimensions=smallest)
    # the largest uniform factor whose rounded shape fits
    f_lo, f_hi = 0.0, 1.0
    while nbytes(at(f_hi)) <= budget:
        if at(f_hi) == at(f_hi * 2):  # every dim at its top: nothing more to gain
            f_lo = f_hi
            break
        f_lo, f_hi = f_hi, f_hi * 2
    else:
        for _ in range(64):
            mid = (f_lo + f_hi) / 2
            if nbytes(at(mid)) <= budget:
                f_lo = mid
            else:
                f_hi = mid
    v = at(f_lo)
    # one greedy pass, least-scaled dims first, leaves every dim maximal
    for i in sorted(allowed, key=lambda k: (v[k] / shape[k], k)):
        rest = nbytes({k: x for k, x in v.items() if k != i})
        c = allowed[i].floor(budget // rest if rest else budget)
        if c is not None and c > v[i]:
            v[i] = c
    return tuple(v.get(j, s) for j, s in enumerate(shape))


def _normalise_dims(dims: Any, n: int) -> list[int]:
    if dims is None:
        return list(range(n))
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise ConfigTypeError(f"dims must be a sequence of dim indices, got {type(dims).__name__}")
    out = []
    for k, i in enumerate(dims):
        i = _as_int(i, f"dims[{k}]")
        if not -n <= i < n:
            raise ConfigValueError(f"dims[{k}] = {i} is out of range for {n} dimensions")
        i %= n
        if i in out:
            raise ConfigValueError(f"dims lists dimension {i} twice")
        out.append(i)
    return out


def fit_shape(shape: Sequence[int], dtype: Any, *, dims: Sequence[int] | None = None, budget: int,
              multiple_of: int | Sequence[int] = 1, min_shape: Sequence[int | None] | None = None,
              max_shape: Sequence[int | None] | None = None) -> Tuple[int, ...]:
    """The largest shape, changing only ``dims``, whose tensor fits ``budget`` bytes.

    Args:
        shape: the requested shape (positive ints).
        dtype: a torch.dtype, or the item size in bytes.
        dims: the positions that may shrink (default: all; negative counts
            from the end).  Other positions keep their requested size.
        budget: bytes the tensor may take.
        multiple_of: an int or one int per position: every changed dim
            becomes a multiple of it.
        min_shape, max_shape: one bound per position (None entries: no
            bound), read for the listed dims.  The maximum always applies,
            even when the request fits.

    Returns:
        A tuple whose ``prod * itemsize <= budget`` where no listed dim can be
        raised to its next allowed size without exceeding the budget or its
        maximum.  A listed dim keeps its requested size when that fits; a
        request below its minimum is kept as asked.

    Raises:
        InsufficientMemoryError: even the smallest allowed shape exceeds the budget.
        ConfigValueError / ConfigTypeError: a malformed argument, or bounds
            that leave a dim no allowed size.
    """
    from .sources import _itemsize  # torch is imported lazily there

    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ConfigTypeError(f"shape must be a sequence of ints, got {type(shape).__name__}")
    shape = [_as_int(s, f"shape[{i}]") for i, s in enumerate(shape)]
    for i, s in enumerate(shape):
        if s < 1:
            raise ConfigValueError(f"shape[{i}] must be positive, got {s}")
    n = len(shape)
    itemsize = _itemsize(dtype)
    budget = _as_int(budget, "budget")
    if budget < 0:
        raise ConfigValueError(f"budget must be non-negative, got {budget}")
    idx = _normalise_dims(dims, n)
    if isinstance(multiple_of, (list, tuple)):
        mults = _per_position(multiple_of, n, "multiple_of", allow_none=False)
    else:
        m = _as_int(multiple_of, "multiple_of")
        if m < 1:
            raise ConfigValueError(f"multiple_of must be at least 1, got {m}")
        mults = [m] * n
    mins = _per_position(min_shape, n, "min_shape", allow_none=True)
    maxs = _per_position(max_shape, n, "max_shape", allow_none=True)
    for i in idx:
        if mins[i] is not None and maxs[i] is not None and mins[i] > maxs[i]:
            raise ConfigValueError(f"min_shape[{i}] ({mins[i]}) exceeds max_shape[{i}] ({maxs[i]})")
    return _solve(shape, itemsize, idx, mins, maxs, mults, budget, grow=False)


class FitScalingStrategy:
    """``strategy="fit"``: fit_shape driven by a ScalingConfig."""

    name = "fit"

    def scale(self, dims: Tuple[int, ...], dtype_size: int, target: int, config: ScalingConfig,
              scalable_indices: Sequence[int] | None, maximize: bool) -> ScalingResult:
        n = len(dims)
        required = estimate_tensor_memory(dims, dtype_size)
        idx = _normalise_dims(scalable_indices, n)

        def positional(bounds: Sequence[int] | None) -> list[int | None]:
            bounds = list(bounds) if bounds is not None else []
            return [bounds[i] if i < len(bounds) else None for i in range(n)]

        mins, maxs = positional(config.min_dimensions), positional(config.max_dimensions)
        if isinstance(config.multiple_of, int):
            mults = [config.multiple_of] * n
        else:
            given = list(config.multiple_of)
            mults = [given[i] if i < len(given) else 1 for i in range(n)]
        capped = any(dims[i] > hi for i in idx for hi in (maxs[i],) if hi is not None)
        if required <= target and not maximize and not capped:
            return ScalingResult(dims, 1.0, required, False)
        shape = _solve(dims, dtype_size, idx, mins, maxs, mults, target, grow=maximize)
        est = estimate_tensor_memory(shape, dtype_size)
        factor = (est / required) ** (1.0 / len(idx)) if idx else 1.0
        if shape != dims:
            logger.info(f"Fitted: {dims} -> {shape} ({est} of {target} bytes)")
        return ScalingResult(shape, factor, est, shape != dims)


_STRATEGIES: dict[str, LinearScalingStrategy | ExponentialScalingStrategy] = {"linear": LinearScalingStrategy(), "exponential": ExponentialScalingStrategy()}
_FIT = FitScalingStrategy()


def calculate(dims: Tuple[int, ...], dtype: Any, dtype_size: int, memory_info: MemoryInfo,
              config: ScalingConfig, scalable_indices: Sequence[int] | None = None,
              maximize: bool = False) -> ScalingResult:
    """Scale ``dims`` to ``memory_info.available * config.effective_threshold``.

    deep-dimensions' calculator for "linear" and "exponential" (see the module
    notes), the exact solver for "fit".
    """
    dims = validate_dimensions(dims)
    required = estimate_tensor_memory(dims, dtype_size)
    logger.debug(f"Calculating dimensions: dims={dims}, required_memory={required:,}, "
                 f"available_memory={memory_info.available:,}")
    target = int(memory_info.available * config.effective_threshold)
    if config.strategy == "fit":
        return _FIT.scale(dims, dtype_size, target, config, scalable_indices, maximize)
    if required <= target and not maximize:
        return ScalingResult(dims, 1.0, required, False)
    context = ScalingContext(available_memory=memory_info.available, required_memory=required,
                             original_dimensions=dims, dtype=dtype, dtype_size=dtype_size,
                             memory_threshold=config.effective_threshold)
    result = _STRATEGIES[config.strategy].scale(context, min_dimensions=config.min_dimensions,
                                                max_dimensions=config.max_dimensions,
                                                scalable_indices=scalable_indices, maximize=maximize)
    if result.estimated_memory > target and not maximize and config.min_dimensions is not None:
        min_memory = estimate_tensor_memory(config.min_dimensions, dtype_size)
        if min_memory > target:
            raise InsufficientMemoryError(_INSUFFICIENT, required_memory=min_memory, available_memory=target,
                                          min_dimensions=config.min_dimensions)
    return result
