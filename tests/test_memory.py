"""infinite_tensor.memory against deep-dimensions 0.2.5 (golden parity) and its public API.

tests/data/memory_golden.json holds what the pinned wheel answered for a grid
of requests under injected memory figures (bench/memory_golden.py writes it).
Each case is replayed here under override_info with the same figures; the
scaled tuple, the ScalingResult, the exception class (or a subclass of it)
and the message must all match.  The deep-dimensions README snippets run with
only the import changed.
"""
import json
import logging
import math
import os
import re
import sys
import threading

import pytest
import torch

import infinite_tensor
from infinite_tensor import memory
from memory_cases import make_dims, make_dtype, tuner_work
from infinite_tensor.memory import (
    AutoScaleError,
    AutoScaler,
    AutoTuner,
    ConfigTypeError,
    ConfigurationError,
    ConfigValueError,
    DeviceMemory,
    FakeCuda,
    FakeGpu,
    FrameworkNotAvailableError,
    InsufficientMemoryError,
    MemoryInfo,
    ScalingConfig,
    ScalingResult,
    UnsupportedDeviceError,
    override_info,
)

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = json.load(open(os.path.join(HERE, "data", "memory_golden.json")))
GiB, MiB = 2 ** 30, 2 ** 20
NO_CUDA = FakeCuda(available=False)


@pytest.fixture(autouse=True)
def _no_tensorflow(monkeypatch):
    """TensorFlow is absent for these tests even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)


def _memory(case):
    """override_info arguments that make us see what the wheel saw."""
    total, avail = case["cpu"]
    kw = {"cpu": MemoryInfo(total, avail, total - avail, "cpu", 0)}
    if "cuda" in case:
        c = case["cuda"]
        gpu = FakeGpu(total=c["total"], free=c["total"] - c["reserved"], reserved=c["reserved"])
        kw["cuda_provider"] = FakeCuda([gpu, gpu])
    else:
        kw["cuda_provider"] = NO_CUDA
    return kw


def _config(case):
    return ScalingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in case.get("config", {}).items()})


def _replay(case):
    try:
        config = _config(case)
    except Exception as e:  # noqa: BLE001 - compared below
        return e
    if case["call"] == "config":
        return {"effective_threshold": config.effective_threshold}
    with override_info(**_memory(case)):
        try:
            scaler = AutoScaler(config, framework=case.get("framework"))
            call = case["call"]
            if call == "repr":
                return {"repr": repr(scaler), "device_type": scaler.device_type, "framework": scaler.framework}
            if call == "get_memory_info":
                m = scaler.get_memory_info()
                assert scaler.refresh_memory_info() == m
                return {"total": m.total, "available": m.available, "used": m.used, "device_type": m.device_type,
                        "device_index": m.device_index, "available_memory": scaler.get_available_memory()}
            dims, dtype = make_dims(case["dims"]), make_dtype(case.get("dtype"))
            kw = {k: tuple(v) if isinstance(v, list) else v for k, v in case.get("kwargs", {}).items()}
            if call == "scale":
                r = scaler.scale_dimensions_with_info(dims, dtype, **kw)
                assert isinstance(r, ScalingResult)
                assert scaler.scale_dimensions(dims, dtype, **kw) == r.scaled_dimensions
                assert isinstance(r.scaled_dimensions, tuple)
                return {"scaled_dimensions": list(r.scaled_dimensions), "scale_factor": r.scale_factor,
                        "estimated_memory": r.estimated_memory, "was_scaled": r.was_scaled}
            if call == "can_fit":
                return {"can_fit": scaler.can_fit(dims, dtype)}
            if call == "estimate_memory":
                return {"estimate_memory": scaler.estimate_memory(dims, dtype)}
        except Exception as e:  # noqa: BLE001
            return e
    raise AssertionError(case["call"])


_BUILTIN = {"ValueError": ValueError, "TypeError": TypeError}


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[f"{c['id']}-{c['name']}" for c in GOLDEN["cases"]])
def test_golden_parity(case):
    got, want = _replay(case), case["expect"]
    if "error" in want:
        assert isinstance(got, BaseException), f"expected {want['error']}, got {got!r}"
        cls = _BUILTIN.get(want["error"]) or getattr(memory, want["error"])
        assert isinstance(got, cls), f"{type(got).__name__} is not a {want['error']}"
        if cls in (ValueError, TypeError):  # ours also says what it is about
            assert isinstance(got, ConfigurationError)
        else:
            assert type(got) is cls
        assert str(got) == want["message"]
        if want["error"] == "InsufficientMemoryError":
            assert got.required_memory == want["required_memory"]
            assert got.available_memory == want["available_memory"]
            assert list(got.min_dimensions) == want["min_dimensions"]
        if want["error"] == "FrameworkNotAvailableError":
            assert got.framework == want["framework"]
        return
    assert not isinstance(got, BaseException), f"unexpected {got!r}"
    assert got == want


def test_golden_covers_the_spec_examples():
    """The file itself holds the numbers the spec quotes, so the replay checks them."""
    by_name = {c["name"]: c["expect"] for c in GOLDEN["cases"]}
    assert by_name["spec 8192^2x3 at 1 GiB"]["scaled_dimensions"] == [8006, 8006, 3]
    assert by_name["spec 8192^2x3 at 1 GiB"]["estimated_memory"] == 8006 * 8006 * 3 * 4
    # the 0.2.5 "exponential" generation over-shrinks: about 594 MiB
    assert round(by_name["spec exponential"]["estimated_memory"] / MiB) == 594
    assert len(GOLDEN["cases"]) >= 300


def _reference_linear(dims, itemsize, available, threshold=0.7000000000000001):
    """The linear rule written out independently of the package."""
    required = math.prod(dims) * itemsize
    target = int(available * threshold)
    if required <= target:
        return tuple(dims)
    f = max(0.01, min(1.0, (target / required) ** (1.0 / len(dims))))
    return tuple(max(1, round(d * f)) for d in dims)


def test_spec_example_with_independent_reference():
    with override_info(cpu=(2 * GiB, GiB), cuda_provider=NO_CUDA):
        scaler = AutoScaler(ScalingConfig(device="cpu"))
        got = scaler.scale_dimensions((8192, 8192, 3))
        info = scaler.scale_dimensions_with_info((8192, 8192, 3))
    assert got == (8006, 8006, 3) == _reference_linear((8192, 8192, 3), 4, GiB)
    assert info.estimated_memory == 8006 * 8006 * 3 * 4 > int(GiB * 0.7)  # the documented overshoot
    assert info.was_scaled and 0.97 < info.scale_factor < 0.98


@pytest.fixture
def no_gc(monkeypatch):
    """AutoTuner collects garbage around every probe (slow in a big test
    process); the probe sequence does not depend on it."""
    import infinite_tensor.memory.scaler as scaler_mod

    calls = []
    monkeypatch.setattr(scaler_mod, "free_memory", lambda: calls.append(1))
    return calls


@pytest.mark.parametrize("case", GOLDEN["tuner"], ids=lambda c: f"{c['limit']}-{c['args']}-{c['fails_with']}")
def test_autotuner_golden(case, no_gc):
    probes = []
    work = tuner_work(case, probes)
    with override_info(cuda_provider=NO_CUDA):
        result = AutoTuner(verbose=False).find_max_config(work, **case["args"])
    assert {"result": result, "probes": probes} == case["expect"]


def test_autotuner_oom_only_lets_other_errors_through(no_gc):
    def work(v):
        if v > 5:
            raise ValueError("a bug, not a size problem")

    with pytest.raises(ValueError, match="a bug"):
        AutoTuner(oom_only=True).find_max_config(work)
    assert AutoTuner().find_max_config(work) == 5
    assert len(no_gc) > 0 and len(no_gc) % 2 == 0  # before and after every probe


def test_autotuner_predict_falls_back_to_search_without_cuda(no_gc):
    if torch.cuda.is_available():
        pytest.skip("the fallback is the CPU path")
    assert AutoTuner().predict_max_config(lambda v: None if v <= 21 else (_ for _ in ()).throw(
        RuntimeError("out of memory"))) == 21


# -- the README of deep-dimensions, import changed ------------------------------------

README_QUICK_START = """
from infinite_tensor.memory import AutoScaler

# Auto-detects framework (PyTorch or TensorFlow)
scaler = AutoScaler()

# Scale dimensions to fit memory
dims = scaler.scale_dimensions((4096, 4096, 3))
print(f"Scaled: {dims}")

# Create a memory-safe tensor
tensor = scaler.create_scaled_tensor((8192, 8192, 3), fill_value=0.0)
"""

README_PYTORCH = """
import torch
from infinite_tensor.memory import AutoScaler, ScalingConfig

config = ScalingConfig(
    memory_threshold=0.7,      # Use max 70% of available memory
    strategy="exponential",    # Reduce larger dims more aggressively
    device="auto",             # CPU or CUDA auto-detection
)

scaler = AutoScaler(config, framework="pytorch")
tensor = scaler.create_scaled_tensor((2048, 2048, 3), dtype=torch.float16)
"""

README_CONFIG = """
from infinite_tensor.memory import ScalingConfig

config = ScalingConfig(
    memory_threshold=0.8,      # Max memory usage ratio (0-1)
    safety_margin=0.1,         # Additional safety buffer
    device="auto",             # "cpu", "cuda", or "auto"
    strategy="linear",         # "linear" or "exponential"
    framework="auto",          # "pytorch", "tensorflow", or "auto"
    min_dimensions=(32, 32),   # Minimum allowed dimensions
    max_dimensions=(4096, 4096),  # Maximum allowed dimensions
)
"""


def test_readme_quick_start_runs_unchanged(capsys):
    ns = {}
    with override_info(cpu=(GiB, 16 * MiB), cuda_provider=NO_CUDA):
        exec(compile(README_QUICK_START, "README", "exec"), ns)
    want = _reference_linear((4096, 4096, 3), 4, 16 * MiB)
    assert ns["dims"] == want
    assert f"Scaled: {want}" in capsys.readouterr().out
    assert tuple(ns["tensor"].shape) == _reference_linear((8192, 8192, 3), 4, 16 * MiB)
    assert ns["tensor"].dtype == torch.float32 and not ns["tensor"].any()


def test_readme_pytorch_snippet_runs_unchanged():
    ns = {}
    with override_info(cpu=(GiB, 16 * MiB), cuda_provider=NO_CUDA):
        exec(compile(README_PYTORCH, "README", "exec"), ns)
    t = ns["tensor"]
    assert t.dtype == torch.float16 and t.device.type == "cpu"
    # exponential: f = (target/required)^(1/3), largest dims cut a further 10 %
    target, required = int(16 * MiB * (0.7 - 0.1)), 2048 * 2048 * 3 * 2
    f = (target / required) ** (1 / 3)
    assert tuple(t.shape) == (round(2048 * f * 0.9), round(2048 * f * 0.9),
                              round(3 * f * (1 - 0.1 * (3 / 2048) ** 2)))


def test_readme_config_snippet():
    ns = {}
    exec(compile(README_CONFIG, "README", "exec"), ns)
    c = ns["config"]
    assert (c.min_dimensions, c.max_dimensions, c.effective_threshold) == ((32, 32), (4096, 4096), 0.8 - 0.1)


def test_readme_tensorflow_snippet_raises_the_original_error_without_tensorflow():
    snippet = README_PYTORCH.replace('framework="pytorch"', 'framework="tensorflow"')
    with pytest.raises(FrameworkNotAvailableError) as e:
        exec(compile(snippet, "README", "exec"), {})
    assert str(e.value) == "Framework 'tensorflow' is not available. Available frameworks: ['pytorch']"
    assert e.value.framework == "tensorflow"


# -- the API beyond the golden grid ----------------------------------------------------

def test_public_names():
    for name in ("AutoScaler", "ScalingConfig", "ScalingResult", "MemoryInfo", "AutoScaleError",
                 "ConfigurationError", "InsufficientMemoryError", "UnsupportedDeviceError",
                 "FrameworkNotAvailableError", "IMemoryProvider", "IScalingStrategy", "IFrameworkAdapter",
                 "AutoTuner", "get_memory_info", "available_bytes", "estimate_bytes", "override_info",
                 "DeviceMemory", "fit_shape", "budget"):
        assert name in memory.__all__ and hasattr(memory, name)
    # arrows go down: no module of the package imports the tensor, and psutil is not needed
    folder = os.path.dirname(memory.__file__)
    for path in sorted(os.listdir(folder)):
        if path.endswith(".py"):
            text = open(os.path.join(folder, path)).read()
            imports = re.findall(r"^\s*(?:from\s+(\S+)\s+import\s+(.*)|import\s+(\S+))", text, re.M)
            for frm, names, plain in imports:
                assert "infinite_tensor.infinite_tensor" not in frm + plain, path
                assert not (frm == ".." and "infinite_tensor" in names), path
                assert frm != "..infinite_tensor", path
                assert "psutil" not in frm + plain, path


def test_exception_hierarchy():
    assert issubclass(InsufficientMemoryError, MemoryError)
    assert issubclass(InsufficientMemoryError, AutoScaleError)
    assert issubclass(AutoScaleError, infinite_tensor.InfiniteTensorError)
    assert issubclass(ConfigValueError, ValueError) and issubclass(ConfigValueError, ConfigurationError)
    assert issubclass(ConfigTypeError, TypeError) and issubclass(ConfigTypeError, ConfigurationError)
    for cls in (ConfigurationError, UnsupportedDeviceError, FrameworkNotAvailableError):
        assert issubclass(cls, AutoScaleError)


def test_config_defaults_and_frozen():
    c = ScalingConfig()
    assert (c.memory_threshold, c.device, c.cuda_device_index, c.strategy, c.framework, c.min_dimensions,
            c.max_dimensions, c.preserve_aspect_ratio, c.safety_margin, c.log_level) == \
        (0.8, "auto", 0, "linear", "auto", None, None, True, 0.1, "INFO")
    assert (c.memory_source, c.scalable_indices, c.maximize, c.multiple_of) == ("host", None, False, 1)
    assert c.effective_threshold == 0.8 - 0.1
    with pytest.raises(AttributeError):
        c.memory_threshold = 0.5
    d = c.with_overrides(strategy="exponential", memory_threshold=0.6)
    assert (d.strategy, d.memory_threshold, c.strategy) == ("exponential", 0.6, "linear")
    with pytest.raises(ValueError, match="must not exceed 1.0"):
        c.with_overrides(memory_threshold=0.95)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        c.with_overrides(colour="red")
    # positional construction in the original's field order still works
    assert ScalingConfig(0.5, "cpu", 0, "exponential").strategy == "exponential"


@pytest.mark.parametrize("kw, cls, text", [
    ({"strategy": "cubic"}, ConfigValueError, "strategy must be one of"),
    ({"log_level": "LOUD"}, ConfigValueError, "log_level must be"),
    ({"memory_source": "psutil"}, ConfigValueError, "memory_source must be one of"),
    ({"memory_threshold": "0.5"}, ConfigTypeError, "memory_threshold must be a real number"),
    ({"cuda_device_index": 1.0}, ConfigTypeError, "cuda_device_index must be an integer"),
    ({"min_dimensions": (32.5, 3)}, ConfigTypeError, r"min_dimensions\[0\] must be an integer"),
    ({"scalable_indices": ("a",)}, ConfigTypeError, "scalable_indices"),
    ({"maximize": 1}, ConfigTypeError, "maximize must be a bool"),
    ({"multiple_of": 0}, ConfigValueError, "multiple_of must be at least 1"),
])
def test_config_rejects_at_construction(kw, cls, text):
    with pytest.raises(cls, match=text):
        ScalingConfig(**kw)


def test_log_level_is_case_insensitive_like_the_original():
    assert ScalingConfig(log_level="debug").log_level == "debug"


def test_memory_info_checks():
    assert MemoryInfo(10, 4, 6, "cpu").usage_ratio == 0.6
    assert MemoryInfo(0, 0, 0, "cpu").usage_ratio == 0.0
    with pytest.raises(ValueError, match="Available memory cannot exceed total memory"):
        MemoryInfo(10, 11, 0, "cpu")
    with pytest.raises(ValueError, match="Total memory cannot be negative"):
        MemoryInfo(-1, 0, 0, "cpu")


def test_create_scaled_tensor_fill_values():
    with override_info(cpu=(GiB, 8 * MiB), cuda_provider=NO_CUDA):
        s = AutoScaler(ScalingConfig(device="cpu"))
        want = _reference_linear((2048, 2048), 4, 8 * MiB)
        for fill, check in ((0.0, lambda t: not t.any()), (1.0, lambda t: bool((t == 1).all())),
                            (2.5, lambda t: bool((t == 2.5).all())), (None, lambda t: True)):
            t = s.create_scaled_tensor((2048, 2048), fill_value=fill)
            assert tuple(t.shape) == want and t.dtype == torch.float32 and check(t)
        t = s.create_scaled_tensor([4, 5], dtype=torch.float64, fill_value=3, requires_grad=True)
        assert t.shape == (4, 5) and t.requires_grad and t.dtype == torch.float64 and bool((t == 3).all())


def test_create_scaled_tensor_uses_the_configured_cuda_index(monkeypatch):
    gpus = [FakeGpu(total=16 * GiB, free=16 * GiB), FakeGpu(total=8 * GiB, free=6 * GiB, reserved=GiB)]
    with override_info(cuda_provider=FakeCuda(gpus)):
        s = AutoScaler(ScalingConfig(device="cuda", cuda_device_index=1))
        assert (s.device_type, s.device) == ("cuda", "cuda:1")
        assert s.get_memory_info() == MemoryInfo(8 * GiB, 7 * GiB, GiB, "cuda", 1)
        calls = []
        monkeypatch.setattr(s.adapter, "create_tensor", lambda *a: calls.append(a) or "tensor")
        assert s.create_scaled_tensor((1 << 20, 1 << 20)) == "tensor"
    dims, dtype, device, fill, grad = calls[0]
    assert device == "cuda:1" and dtype == torch.float32 and fill is None and grad is False
    assert dims == _reference_linear((1 << 20, 1 << 20), 4, 7 * GiB)


def test_auto_device_prefers_cuda_and_cuda_falls_back(caplog):
    gpus = [FakeGpu(total=16 * GiB, free=16 * GiB)]
    with override_info(cpu=(GiB, GiB), cuda_provider=FakeCuda(gpus)):
        assert AutoScaler().device_type == "cuda"
        assert repr(AutoScaler()) == "AutoScaler(framework='pytorch', device='cuda', threshold=0.8)"
    with override_info(cpu=(GiB, GiB), cuda_provider=NO_CUDA), caplog.at_level(logging.INFO):
        s = AutoScaler(ScalingConfig(device="cuda", cuda_device_index=3))
    assert (s.device_type, s.device) == ("cpu", "cpu")
    assert "CUDA not available, falling back to CPU" in caplog.text


def test_custom_memory_provider():
    class Fixed(memory.IMemoryProvider):
        def get_memory_info(self):
            return MemoryInfo(2 * GiB, GiB, GiB, "cpu")

        def is_available(self):
            return True

        @property
        def device_type(self):
            return "cpu"

    assert AutoScaler(memory_provider=Fixed()).scale_dimensions((8192, 8192, 3)) == (8006, 8006, 3)


def test_scalable_indices_and_maximize_from_config():
    with override_info(cpu=(2 * GiB, GiB), cuda_provider=NO_CUDA):
        by_arg = AutoScaler(ScalingConfig(device="cpu")).scale_dimensions((8192, 8192, 3), scalable_indices=(0, 1))
        by_cfg = AutoScaler(ScalingConfig(device="cpu", scalable_indices=(0, 1))).scale_dimensions((8192, 8192, 3))
        grown = AutoScaler(ScalingConfig(device="cpu", maximize=True)).scale_dimensions((64, 64))
    assert by_arg == by_cfg and by_arg[2] == 3 and by_arg[0] < 8192
    f = (int(GiB * 0.7000000000000001) / (8192 * 8192 * 3 * 4)) ** 0.5
    assert by_arg == (round(8192 * f), round(8192 * f), 3)
    assert grown[0] > 64 and math.prod(grown) * 4 <= int(GiB * 0.71)


def test_exponential_without_scalable_positions_returns_the_request():
    # deep-dimensions 0.2.5 divides by zero here (and indexes past the end for
    # an out-of-range index); we do what its linear strategy does
    with override_info(cpu=(GiB, MiB), cuda_provider=NO_CUDA):
        s = AutoScaler(ScalingConfig(device="cpu", strategy="exponential"))
        assert s.scale_dimensions((4096, 4096, 3), scalable_indices=()) == (4096, 4096, 3)
        lin = AutoScaler(ScalingConfig(device="cpu")).scale_dimensions((4096, 4096, 3), scalable_indices=(0, 5))
        exp = s.scale_dimensions((4096, 4096, 3), scalable_indices=(0, 5))
    assert lin[1:] == exp[1:] == (4096, 3) and exp[0] < lin[0] < 4096


def test_logging_touches_only_our_logger(caplog):
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    pkg = logging.getLogger("infinite_tensor.memory")
    old_level = pkg.level
    try:
        with override_info(cpu=(2 * GiB, GiB), cuda_provider=NO_CUDA), caplog.at_level(logging.INFO):
            s = AutoScaler(ScalingConfig(device="cpu", log_level="DEBUG"))
            assert pkg.level == logging.DEBUG
            s.scale_dimensions((8192, 8192, 3))
        assert (root.level, list(root.handlers)) == before
        msgs = [(r.name, r.getMessage()) for r in caplog.records]
        assert ("infinite_tensor.memory.scaling",
                "Scaled DOWN: (8192, 8192, 3) -> (8006, 8006, 3) (Factor: 0.98)") in msgs
        assert ("infinite_tensor.memory.scaler",
                "AutoScaler initialized: framework=pytorch, device=cpu, threshold=0.8") in msgs
        assert sum(isinstance(h, logging.StreamHandler) for h in pkg.handlers) == 1
        AutoScaler(ScalingConfig(device="cpu", log_level="ERROR"))
        assert pkg.level == logging.ERROR and len(pkg.handlers) == 1
    finally:
        pkg.setLevel(old_level)


def test_get_memory_info_reads_again_each_call():
    with override_info(cuda_provider=NO_CUDA):
        s = AutoScaler(ScalingConfig(device="cpu"))
        with override_info(cpu=(4 * GiB, GiB)):
            assert s.get_available_memory() == GiB
            with override_info(cpu=(4 * GiB, 3 * GiB)):
                assert s.refresh_memory_info().available == 3 * GiB
            assert s.get_available_memory() == GiB


def test_override_is_seen_by_other_threads_and_removed_on_exit():
    seen = []
    with override_info(cpu=DeviceMemory(100, 40, 0, None, 60, "override")):
        t = threading.Thread(target=lambda: seen.append(memory.available_bytes("cpu")))
        t.start()
        t.join()
    assert seen == [40]
    assert memory.get_memory_info("cpu").source != "override"


def test_docs_examples_run():
    """Every python block of docs/memory.md runs (on small sizes, under fixed figures)."""
    text = open(os.path.join(HERE, "..", "docs", "memory.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        with override_info(cpu=(GiB, 64 * MiB), cuda_provider=NO_CUDA):
            exec(compile(block, "docs/memory.md", "exec"), {})
