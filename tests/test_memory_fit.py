"""strategy="fit" and fit_shape: the exact integer solver, checked by properties.

The properties are checked against an independent description of the
allowed sizes (written here, not imported): the result fits the budget, only
the listed dims change, every changed dim is a multiple within [min, max],
and no listed dim can move up to its next allowed size without exceeding the
budget.  Small cases are also checked by brute force for maximality.
"""
import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinite_tensor.memory import (
    AutoScaler,
    ConfigValueError,
    FakeCuda,
    InsufficientMemoryError,
    ScalingConfig,
    fit_shape,
    override_info,
)

GiB, MiB = 2 ** 30, 2 ** 20


def allowed(v, request, m, lo, hi):
    """Whether size v is allowed for a listed dim (the documented rule)."""
    lo = lo or 1
    if request < lo:  # a request below its minimum stays as asked
        return v == request
    top = request if hi is None else min(hi, request)
    return (lo <= v <= top and v % m == 0) or (v == request and (hi is None or request <= hi))


def next_allowed(v, request, m, lo, hi):
    top = request if hi is None else min(hi, request)
    for w in range(v + 1, top + 1):
        if allowed(w, request, m, lo, hi):
            return w
    return None


@st.composite
def problems(draw):
    n = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 300)) for _ in range(n)]
    dims = sorted(draw(st.sets(st.integers(0, n - 1), min_size=0, max_size=n)))
    if draw(st.booleans()):
        dims = None
    listed = range(n) if dims is None else dims
    m = draw(st.sampled_from([1, 1, 2, 3, 8, 16]))
    mults = [m] * n if draw(st.booleans()) else [draw(st.sampled_from([1, 2, 4, 5, 8])) for _ in range(n)]
    mins = [draw(st.one_of(st.none(), st.none(), st.integers(1, 12))) for _ in range(n)]
    maxs = []
    for i in range(n):
        hi = draw(st.one_of(st.none(), st.integers(16, 400)))
        if hi is not None and mins[i] is not None and hi < mins[i]:
            hi = mins[i]
        maxs.append(hi)
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    full = math.prod(shape) * itemsize
    share = draw(st.floats(min_value=0.0, max_value=1.2))  # squared: many tight budgets, some loose
    budget = int(full * share * share) if draw(st.integers(0, 9)) else draw(st.integers(0, 64))
    return shape, itemsize, dims, list(listed), mults, mins, maxs, budget


def check(shape, itemsize, dims, listed, mults, mins, maxs, budget):
    try:
        out = fit_shape(shape, itemsize, dims=dims, budget=budget, multiple_of=mults, min_shape=mins,
                        max_shape=maxs)
    except InsufficientMemoryError as e:
        # the smallest allowed shape really does not fit
        smallest = list(shape)
        for i in listed:
            smallest[i] = min(v for v in range(1, max(shape[i], mins[i] or 1) + 1)
                              if allowed(v, shape[i], mults[i], mins[i], maxs[i]))
        assert math.prod(smallest) * itemsize > budget
        assert e.required_memory == math.prod(smallest) * itemsize and e.available_memory == budget
        assert list(e.min_dimensions) == smallest
        return None
    except ConfigValueError:
        # only when a listed dim has no allowed size at all
        assert any(not any(allowed(v, shape[i], mults[i], mins[i], maxs[i]) for v in range(1, shape[i] + 1))
                   for i in listed)
        return None
    assert isinstance(out, tuple) and len(out) == len(shape)
    assert math.prod(out) * itemsize <= budget
    for i, v in enumerate(out):
        if i not in listed:
            assert v == shape[i]
            continue
        assert allowed(v, shape[i], mults[i], mins[i], maxs[i]), (i, v)
        if maxs[i] is not None:
            assert v <= maxs[i] or v == shape[i] < (mins[i] or 1)
        if v != shape[i]:
            assert v % mults[i] == 0
        w = next_allowed(v, shape[i], mults[i], mins[i], maxs[i])
        if w is not None:
            bigger = list(out)
            bigger[i] = w
            assert math.prod(bigger) * itemsize > budget, f"dim {i} could be {w}"
            if v != shape[i]:  # the phrasing: one more multiple exceeds budget or max
                more = v + mults[i]
                top = shape[i] if maxs[i] is None else min(maxs[i], shape[i])
                assert more > top or math.prod(out) // v * more * itemsize > budget or \
                    not allowed(more, shape[i], mults[i], mins[i], maxs[i])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_shape_properties(problem):
    check(*problem)


@pytest.mark.parametrize("shape, m, budget", [((12, 10), 3, 60), ((7, 9, 5), 2, 100), ((30, 4), 4, 64),
                                              ((10, 10, 3), 1, 150)])
def test_fit_shape_is_not_dominated_brute_force(shape, m, budget):
    out = check(list(shape), 1, None, list(range(len(shape))), [m] * len(shape), [None] * len(shape),
                [None] * len(shape), budget)
    ranges = [[v for v in range(1, s + 1) if allowed(v, s, m, None, None)] for s in shape]
    for combo in itertools.product(*ranges):
        if math.prod(combo) <= budget and combo != out:
            assert not all(c >= o for c, o in zip(combo, out)), f"{combo} dominates {out}"


def test_fit_shape_examples():
    assert fit_shape((8192, 8192, 3), torch.float32, budget=int(GiB * 0.7000000000000001)) == (7914, 7914, 3)
    out = fit_shape((8192, 8192, 3), torch.float32, dims=(0, 1), budget=751619276, multiple_of=64)
    assert out[2] == 3 and out[0] % 64 == 0 and out[1] % 64 == 0
    assert math.prod(out) * 4 <= 751619276 < (out[0] + 64) * out[1] * 3 * 4
    # a request that fits comes back as is, but the maximum always applies
    assert fit_shape((100, 100), torch.uint8, budget=10 ** 6) == (100, 100)
    assert fit_shape((100, 100), torch.uint8, budget=10 ** 6, max_shape=(64, None), multiple_of=16) == (64, 100)
    assert fit_shape((100, 100), torch.uint8, dims=[-1], budget=1000) == (100, 10)


def test_fit_shape_errors():
    with pytest.raises(InsufficientMemoryError) as e:
        fit_shape((100, 100), torch.float32, budget=1000, min_shape=(16, 16))
    assert isinstance(e.value, MemoryError) and e.value.min_dimensions == (16, 16)
    assert e.value.required_memory == 16 * 16 * 4 and e.value.available_memory == 1000
    with pytest.raises(ConfigValueError, match="out of range"):
        fit_shape((4, 4), 1, dims=(2,), budget=10)
    with pytest.raises(ConfigValueError, match="twice"):
        fit_shape((4, 4), 1, dims=(1, -1), budget=10)
    with pytest.raises(ConfigValueError, match="no size is a multiple of 32"):
        fit_shape((100, 4), 1, budget=10, multiple_of=32, max_shape=(20, None))
    with pytest.raises(ConfigValueError, match="exceeds max_shape"):
        fit_shape((100, 4), 1, budget=10, min_shape=(30, None), max_shape=(20, None))
    with pytest.raises(ConfigValueError, match="must have 2 entries"):
        fit_shape((100, 4), 1, budget=10, multiple_of=(1, 2, 3))
    with pytest.raises(ConfigValueError, match="budget"):
        fit_shape((100, 4), 1, budget=-1)


def test_fit_strategy_in_autoscaler():
    with override_info(cpu=(2 * GiB, GiB), cuda_provider=FakeCuda(available=False)):
        target = int(GiB * 0.7000000000000001)
        s = AutoScaler(ScalingConfig(device="cpu", strategy="fit"))
        r = s.scale_dimensions_with_info((8192, 8192, 3))
        assert r.scaled_dimensions == (7914, 7914, 3) and r.estimated_memory <= target and r.was_scaled
        assert r.estimated_memory == 7914 * 7914 * 3 * 4
        # only the listed dims, multiples of 64
        s = AutoScaler(ScalingConfig(device="cpu", strategy="fit", scalable_indices=(0, 1), multiple_of=64))
        out = s.scale_dimensions((8192, 8192, 3))
        assert out[2] == 3 and all(v % 64 == 0 for v in out[:2]) and math.prod(out) * 4 <= target
        # max applies even when the request fits (linear skips it then)
        cfg = ScalingConfig(device="cpu", strategy="fit", max_dimensions=(100, 100))
        assert AutoScaler(cfg).scale_dimensions((300, 50)) == (100, 50)
        assert AutoScaler(cfg.with_overrides(strategy="linear")).scale_dimensions((300, 50)) == (300, 50)
        # the minimum that does not fit raises, even where linear returns an oversized shape
        cfg = ScalingConfig(device="cpu", strategy="fit", min_dimensions=(20000, 20000))
        with pytest.raises(InsufficientMemoryError):
            AutoScaler(cfg).scale_dimensions((30000, 30000))
        # maximize grows to the budget, up to max_dimensions
        cfg = ScalingConfig(device="cpu", strategy="fit", maximize=True, max_dimensions=(10 ** 9, 3))
        out = AutoScaler(cfg).scale_dimensions((10, 3))
        assert out[1] == 3 and out[0] * 3 * 4 <= target < (out[0] + 1) * 3 * 4
