"""How the golden cases of tests/data/memory_golden.json spell their
arguments, shared by the generator (bench/memory_golden.py, run under
deep-dimensions' venv) and the replay (tests/test_memory.py)."""
import torch


def make_dims(spec):
    """A case's dims, in the type the case asks for (tuple, list,
    torch.Size, numpy ints, floats, bools, None, a string)."""
    kind, values = spec["kind"], spec["values"]
    if kind == "tuple":
        return tuple(values)
    if kind == "list":
        return list(values)
    if kind == "size":
        return torch.Size(values)
    if kind == "numpy":
        import numpy as np
        return tuple(np.int64(v) for v in values)
    if kind == "float":
        return tuple(float(v) for v in values)
    if kind == "bool":
        return tuple(bool(v) for v in values)
    if kind == "none":
        return None
    if kind == "str":
        return "abc"
    raise ValueError(f"unknown dims kind {kind!r}")


def make_dtype(name):
    """None, a torch dtype by name, or "str:<text>" for a dtype given as a string."""
    if name is None:
        return None
    return name[4:] if name.startswith("str:") else getattr(torch, name)


def tuner_work(case, probes):
    """An AutoTuner case's workload: records each probed value in probes,
    and fails above case["limit"] with an out-of-memory error (or, for
    fails_with "other", an unrelated one)."""
    limit, kind = case["limit"], case["fails_with"]

    def work(v):
        probes.append(v)
        if v > limit:
            if kind == "oom":
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise ValueError("not an OOM")
    return work
