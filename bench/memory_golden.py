"""Write tests/data/memory_golden.json: what deep-dimensions 0.2.5 answers.

tests/test_memory.py replays every case against infinite_tensor.memory with
the same injected memory figures and requires the same answer: the scaled
tuple, the ScalingResult fields, can_fit, estimate_memory, MemoryInfo, repr,
or the exception class and message (and InsufficientMemoryError's
attributes).  It also records AutoTuner.find_max_config's result and probe
sequence, and psutil.virtual_memory() on fixture /proc/meminfo files (the
host rule reads /proc/meminfo itself, psutil's way).

Run it in a scratch environment that has the pinned wheel and psutil, never
in the project's .venv:

    python3 -m venv /tmp/ddvenv
    echo /work/main/.venv/lib/python3.11/site-packages > \
        /tmp/ddvenv/lib/python3.11/site-packages/mainvenv.pth   # reuse torch
    /tmp/ddvenv/bin/pip install --no-deps deep_dimensions-0.2.5-py3-none-any.whl psutil
    /tmp/ddvenv/bin/python bench/memory_golden.py

deep-dimensions 0.2.5 does not import as published: utils/oom.py annotates
with ``Callable`` without importing it (NameError).  We define
``builtins.Callable`` for the duration of the import and nothing else.

Memory is injected by replacing ``psutil.virtual_memory`` (CPU) and
``torch.cuda.is_available/get_device_properties/memory_reserved`` (CUDA) as
the wheel's providers see them.
"""
from __future__ import annotations

import builtins
import json
import os
import random
import sys
import tempfile
import typing
from types import SimpleNamespace

import torch

builtins.Callable = typing.Callable  # the wheel's NameError, see above
try:
    import deep_dimensions as dd
    from deep_dimensions.memory import system as dd_system
finally:
    del builtins.Callable
import psutil

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
OUT = os.path.join(TESTS, "data", "memory_golden.json")
sys.path.insert(0, TESTS)
from memory_cases import make_dims, make_dtype, tuner_work  # noqa: E402  (shared with tests/test_memory.py)
GiB, MiB = 2 ** 30, 2 ** 20


class Inject:
    """Fixed CPU figures, and optionally a CUDA device, as the wheel reads them."""

    def __init__(self, cpu=None, cuda=None):
        self.cpu, self.cuda = cpu, cuda

    def __enter__(self):
        self.saved = (dd_system.psutil.virtual_memory, torch.cuda.is_available,
                      torch.cuda.get_device_properties, torch.cuda.memory_reserved)
        if self.cpu is not None:
            total, avail = self.cpu
            dd_system.psutil.virtual_memory = lambda: SimpleNamespace(total=total, available=avail,
                                                                      used=total - avail)
        if self.cuda is None:
            torch.cuda.is_available = lambda: False
        else:
            total, reserved = self.cuda["total"], self.cuda["reserved"]
            torch.cuda.is_available = lambda: True
            torch.cuda.get_device_properties = lambda i: SimpleNamespace(total_memory=total)
            torch.cuda.memory_reserved = lambda i=None: reserved
        return self

    def __exit__(self, *exc):
        (dd_system.psutil.virtual_memory, torch.cuda.is_available,
         torch.cuda.get_device_properties, torch.cuda.memory_reserved) = self.saved


def error(e: BaseException) -> dict:
    out = {"error": type(e).__name__, "message": str(e)}
    if isinstance(e, dd.InsufficientMemoryError):
        out["required_memory"] = e.required_memory
        out["available_memory"] = e.available_memory
        out["min_dimensions"] = list(e.min_dimensions) if e.min_dimensions is not None else None
    if isinstance(e, dd.FrameworkNotAvailableError):
        out["framework"] = e.framework
    return out


def run_case(case: dict) -> dict:
    cfg = case.get("config", {})
    try:
        config = dd.ScalingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    except Exception as e:  # noqa: BLE001 - the class is what we record
        return error(e)
    if case["call"] == "config":
        return {"effective_threshold": config.effective_threshold}
    with Inject(case.get("cpu"), case.get("cuda")):
        try:
            scaler = dd.AutoScaler(config, framework=case.get("framework"))
            call = case["call"]
            if call == "repr":
                return {"repr": repr(scaler), "device_type": scaler.device_type, "framework": scaler.framework}
            if call == "get_memory_info":
                m = scaler.get_memory_info()
                return {"total": m.total, "available": m.available, "used": m.used,
                        "device_type": m.device_type, "device_index": m.device_index,
                        "available_memory": scaler.get_available_memory()}
            dims = make_dims(case["dims"])
            dtype = make_dtype(case.get("dtype"))
            kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in case.get("kwargs", {}).items()}
            if call == "scale":
                r = scaler.scale_dimensions_with_info(dims, dtype, **kw)
                plain = scaler.scale_dimensions(dims, dtype, **kw)
                assert plain == r.scaled_dimensions
                return {"scaled_dimensions": list(r.scaled_dimensions), "scale_factor": r.scale_factor,
                        "estimated_memory": r.estimated_memory, "was_scaled": r.was_scaled}
            if call == "can_fit":
                return {"can_fit": scaler.can_fit(dims, dtype)}
            if call == "estimate_memory":
                return {"estimate_memory": scaler.estimate_memory(dims, dtype)}
            raise ValueError(call)
        except Exception as e:  # noqa: BLE001
            return error(e)


def tuner_case(case: dict) -> dict:
    probes = []
    work = tuner_work(case, probes)
    result = dd.AutoTuner(verbose=False).find_max_config(work, **case["args"])
    return {"result": result, "probes": probes}


MEMINFO = """MemTotal:       {total} kB
MemFree:        {free} kB
{avail}Buffers:          102400 kB
Cached:          {cached} kB
SwapCached:            0 kB
Active:          3000000 kB
Inactive:        2000000 kB
Active(file):    {afile} kB
Inactive(file):  {ifile} kB
Shmem:             50000 kB
Slab:             400000 kB
SReclaimable:     {srec} kB
"""
ZONEINFO = """Node 0, zone      DMA
  pages free     3977
        min      {m}
        low      {low}
        high     {h}
Node 0, zone   Normal
  pages free     1000
        min      11000
        low      {low2}
        high     16000
"""


def psutil_case(case: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "meminfo"), "w") as f:
            f.write(case["meminfo"])
        if case.get("zoneinfo") is not None:
            with open(os.path.join(d, "zoneinfo"), "w") as f:
                f.write(case["zoneinfo"])
        old = psutil.PROCFS_PATH
        psutil.PROCFS_PATH = d
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = psutil.virtual_memory()
        finally:
            psutil.PROCFS_PATH = old
    return {"total": m.total, "available": m.available, "used": m.used}


def build_cases() -> list[dict]:
    rng = random.Random(20250605)
    cases: list[dict] = []

    def add(**case):
        cases.append(case)

    T = lambda v: {"kind": "tuple", "values": list(v)}  # noqa: E731
    # the spec's and the README's examples
    add(name="spec 8192^2x3 at 1 GiB", call="scale", cpu=[2 * GiB, GiB], dims=T((8192, 8192, 3)), dtype="float32")
    add(name="spec exponential", call="scale", cpu=[2 * GiB, GiB], dims=T((8192, 8192, 3)), dtype="float32",
        config={"strategy": "exponential"})
    add(name="spec 1e6^2", call="scale", cpu=[64 * GiB, 32 * GiB], dims=T((10 ** 6, 10 ** 6)))
    for avail in (3 * MiB, 8 * MiB, 12 * MiB + 1):
        add(name="readme linear 1024", call="scale", cpu=[GiB, avail], dims=T((1024, 1024, 3)))
        add(name="readme exponential 1024x256", call="scale", cpu=[GiB, avail], dims=T((1024, 256, 3)),
            config={"strategy": "exponential"})
    add(name="readme pytorch", call="scale", cpu=[GiB, 40 * MiB], dims=T((2048, 2048, 3)), dtype="float16",
        config={"memory_threshold": 0.7, "strategy": "exponential", "device": "auto"}, framework="pytorch")
    add(name="readme config", call="scale", cpu=[GiB, 40 * MiB], dims=T((8192, 8192, 3)),
        config={"memory_threshold": 0.8, "safety_margin": 0.1, "device": "auto", "strategy": "linear",
                "framework": "auto", "min_dimensions": [32, 32], "max_dimensions": [4096, 4096]})

    dims_pool = [(8192, 8192, 3), (4096, 4096, 3), (2048, 2048, 3), (1024, 1024, 3), (1024, 256, 3), (512, 512),
                 (10 ** 6, 10 ** 6), (3, 5, 7, 11), (100000,), (1, 1, 1), (640, 480, 3, 16), (7,), (33, 2, 1000)]
    mem_pool = [[2 * GiB, GiB], [16 * GiB, 3 * GiB + 12345], [GiB, 100 * MiB], [10 ** 9, 10 ** 6], [MiB, 1000],
                [16 * GiB, 0], [64 * GiB, 64 * GiB], [8 * GiB, 777777777]]
    dtype_pool = [None, "float32", "float16", "float64", "uint8", "bool", "complex128", "bfloat16", "int64", "int8"]
    config_pool = [
        {}, {"memory_threshold": 0.7, "strategy": "exponential"}, {"memory_threshold": 0.6},
        {"strategy": "exponential"}, {"min_dimensions": [32, 32]}, {"max_dimensions": [4096, 4096]},
        {"min_dimensions": [32, 32], "max_dimensions": [4096, 4096], "strategy": "exponential"},
        {"memory_threshold": 1.0, "safety_margin": 0.0}, {"min_dimensions": [64, 64, 3], "strategy": "exponential"},
        {"max_dimensions": [100]}, {"min_dimensions": [5000, 5000]}, {"memory_threshold": 0.3, "safety_margin": 0.4},
        {"memory_threshold": 0.5, "safety_margin": 0.5}, {"memory_threshold": 0.95, "safety_margin": 0.05},
        {"min_dimensions": [1, 1, 1, 1, 1, 1]}, {"max_dimensions": [300, 300, 2], "min_dimensions": [10, 10, 1]},
    ]
    for _ in range(170):
        add(name="grid", call="scale", cpu=rng.choice(mem_pool), dims=T(rng.choice(dims_pool)),
            dtype=rng.choice(dtype_pool), config=rng.choice(config_pool))
    for _ in range(20):
        add(name="can_fit", call="can_fit", cpu=rng.choice(mem_pool), dims=T(rng.choice(dims_pool)),
            dtype=rng.choice(dtype_pool), config=rng.choice(config_pool[:8]))
    for dt in dtype_pool + ["complex64", "int16", "int32", "uint16", "float8_e4m3fn", "uint32", "str:float32"]:
        add(name="estimate " + str(dt), call="estimate_memory", cpu=[GiB, GiB], dims=T((3, 5, 7)), dtype=dt)
    # scalable_indices and maximize (deep-dimensions 0.2.5 exposes both on the methods)
    for strategy in ("linear", "exponential"):
        for kw in ({"scalable_indices": [0, 1]}, {"scalable_indices": [0]}, {"scalable_indices": [-1]},
                   {"maximize": True}, {"scalable_indices": [0, 1], "maximize": True},
                   {"scalable_indices": [1, 0], "maximize": True}):
            for mem in ([2 * GiB, GiB], [GiB, 10 * MiB], [64 * GiB, 64 * GiB]):
                add(name="kw", call="scale", cpu=mem, dims=T((4096, 4096, 3)), kwargs=kw,
                    config={"strategy": strategy, "max_dimensions": [6000, 6000]} if kw.get("maximize") and
                    mem[1] == 64 * GiB else {"strategy": strategy})
    add(name="linear empty indices", call="scale", cpu=[GiB, MiB], dims=T((4096, 4096, 3)),
        kwargs={"scalable_indices": []})
    add(name="linear out-of-range index", call="scale", cpu=[GiB, MiB], dims=T((4096, 4096, 3)),
        kwargs={"scalable_indices": [0, 5]})
    # validation
    for spec in ({"kind": "tuple", "values": []}, {"kind": "tuple", "values": [0, 3]},
                 {"kind": "tuple", "values": [3, -1]}, {"kind": "str", "values": None},
                 {"kind": "none", "values": None}, {"kind": "float", "values": [3, 2]},
                 {"kind": "numpy", "values": [3, 2]}, {"kind": "bool", "values": [1, 1]},
                 {"kind": "size", "values": [8192, 8192, 3]}, {"kind": "list", "values": [8192, 8192, 3]},
                 {"kind": "list", "values": []}):
        for call in ("scale", "estimate_memory", "can_fit"):
            add(name="dims " + spec["kind"], call=call, cpu=[2 * GiB, GiB], dims=spec)
    for dt in ("uint16", "float8_e4m3fn", "str:float32", "complex32"):
        add(name="dtype " + dt, call="scale", cpu=[2 * GiB, GiB], dims=T((8, 8)), dtype=dt)
    for cfg in ({"memory_threshold": 0}, {"memory_threshold": 1.5}, {"memory_threshold": -0.1},
                {"safety_margin": 1.0}, {"safety_margin": -0.1}, {"memory_threshold": 0.9, "safety_margin": 0.2},
                {"cuda_device_index": -1}, {"min_dimensions": []}, {"min_dimensions": [0, 3]},
                {"max_dimensions": []}, {"max_dimensions": [3, -3]},
                {"min_dimensions": [1, 2], "max_dimensions": [3]},
                {"min_dimensions": [10, 20], "max_dimensions": [30, 10]},
                {"memory_threshold": 0.8, "safety_margin": 0.2}, {"memory_threshold": 0.35, "safety_margin": 0.3}):
        add(name="config", call="config", config=cfg)
    # CUDA under the original rule (total - reserved), devices 0 and 1
    for index in (0, 1):
        for device in ("cuda", "auto"):
            cuda = {"total": 80 * GiB, "reserved": 10 * GiB + 512}
            cfg = {"device": device, "cuda_device_index": index}
            add(name="cuda info", call="get_memory_info", cpu=[GiB, GiB], cuda=cuda, config=cfg)
            add(name="cuda repr", call="repr", cpu=[GiB, GiB], cuda=cuda, config=cfg)
            add(name="cuda scale", call="scale", cpu=[GiB, GiB], cuda=cuda, config=cfg,
                dims=T((8192, 8192, 3, 64)), dtype="bfloat16")
    add(name="cuda requested, none present", call="get_memory_info", cpu=[3 * GiB, GiB],
        config={"device": "cuda"})
    add(name="cpu info", call="get_memory_info", cpu=[3 * GiB, GiB + 7], config={"device": "cpu"})
    add(name="unknown device string", call="get_memory_info", cpu=[3 * GiB, GiB + 7], config={"device": "gpu"})
    add(name="cpu repr", call="repr", cpu=[GiB, GiB], config={"memory_threshold": 0.65})
    # frameworks
    add(name="tensorflow", call="repr", cpu=[GiB, GiB], framework="tensorflow")
    add(name="tensorflow in config", call="repr", cpu=[GiB, GiB], config={"framework": "tensorflow"})
    add(name="jax", call="repr", cpu=[GiB, GiB], framework="jax")
    add(name="pytorch", call="repr", cpu=[GiB, GiB], framework="pytorch")
    for i, case in enumerate(cases):
        case["id"] = i
    return cases


def build_tuner_cases() -> list[dict]:
    out = []
    for limit in (0, 1, 5, 37, 64, 1000):
        for args in ({}, {"min_val": 3}, {"min_val": 1, "max_val": 50}, {"min_val": 8, "max_val": 8},
                     {"steps": 4}, {"min_val": 2, "steps": 9}, {"min_val": 0, "max_val": 3}):
            out.append({"limit": limit, "args": args, "fails_with": "oom"})
    out.append({"limit": 37, "args": {}, "fails_with": "other"})
    out.append({"limit": 37, "args": {"max_val": 100}, "fails_with": "other"})
    return out


def build_psutil_cases() -> list[dict]:
    out = []
    base = dict(total=16000000, free=2000000, cached=5000000, afile=2500000, ifile=2000000, srec=300000)
    zone = ZONEINFO.format(m=10, low=12, h=14, low2=13800)
    for avail in ("MemAvailable:    9000000 kB\n", "", "MemAvailable:          0 kB\n",
                  "MemAvailable:   99000000 kB\n"):
        for z in (zone, None):
            out.append({"meminfo": MEMINFO.format(avail=avail, **base), "zoneinfo": z})
    low_free = dict(base, free=10000)
    out.append({"meminfo": MEMINFO.format(avail="", **low_free), "zoneinfo": zone})
    return out


def main() -> None:
    cases = build_cases()
    for case in cases:
        case["expect"] = run_case(case)
    tuner = build_tuner_cases()
    for case in tuner:
        case["expect"] = tuner_case(case)
    meminfo = build_psutil_cases()
    for case in meminfo:
        case["expect"] = psutil_case(case)
    doc = {
        "about": "deep-dimensions 0.2.5 answers, written by bench/memory_golden.py; replayed by tests/test_memory.py",
        "pagesize": os.sysconf("SC_PAGE_SIZE"),
        "psutil": psutil.__version__,
        "cases": cases,
        "tuner": tuner,
        "meminfo": meminfo,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:  # one case a line: small, and diffs read well
        f.write("{\n")
        for n, (key, value) in enumerate(doc.items()):
            end = ",\n" if n + 1 < len(doc) else "\n"
            if isinstance(value, list):
                rows = ",\n".join("  " + json.dumps(v, sort_keys=True) for v in value)
                f.write(f" {json.dumps(key)}: [\n{rows}\n ]{end}")
            else:
                f.write(f" {json.dumps(key)}: {json.dumps(value)}{end}")
        f.write("}\n")
    errors = sum("error" in c["expect"] for c in cases)
    print(f"wrote {OUT}: {len(cases)} cases ({errors} errors), {len(tuner)} tuner, {len(meminfo)} meminfo",
          file=sys.stderr)


if __name__ == "__main__":
    main()
