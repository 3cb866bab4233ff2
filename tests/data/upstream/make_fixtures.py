"""Make the HDF5 files of tests/test_convert.py with upstream infinite-tensor.

The .h5 files next to this script were written by the pure-Python package
infinite-tensor (PyPI) 0.3.0 and 0.4.0's HDF5TileStore, with:

    PYTHONPATH=<dir holding upstream 0.3.0's infinite_tensor package> \\
        .venv/bin/python tests/data/upstream/make_fixtures.py 0.3 tests/data/upstream
    PYTHONPATH=<dir holding upstream 0.4.0's infinite_tensor package> \\
        .venv/bin/python tests/data/upstream/make_fixtures.py 0.4 tests/data/upstream

(run from outside the repository, or with the repository not on sys.path, so
that `import infinite_tensor` finds upstream: the script refuses to run with
this library).  Upstream needs only torch and h5py; unzip its wheel
(`pip download --no-deps infinite-tensor==0.4.0`) and point PYTHONPATH at the
unpacked folder.

The scenarios are plain data and plain-torch functions (SCENARIOS below),
shared with the test, which re-creates the same tensors with this library and
computes its references without either library.  Every value is a small
integer (or a sum or product of a few), so float32/float16 arithmetic is
exact and any order of combination gives the same bits.

Files, per version V in {0.3, 0.4}:

- world-V.h5: several tensors in one file: sums with overlapping windows
  and an offset, a pipeline (a tensor reading another), a finite dim with
  int32, float16 and float64 with an id holding "/", int64; each partly
  explored (some windows processed).
- blend-0.4.h5 (0.4 only: 0.3 has no blend): max with blend_init=-inf and a
  custom (product) blend with blend_init=1.
- crash-V.h5: a store killed without close() (os._exit) after its cache had
  written some tiles of a window but not all: tile 0 holds window 0, tile 1
  holds window 1 only, tile 2 was never written.
"""
import json
import os
import sys

import torch


def _vals(w, shape, dtype, scale=1):
    """Deterministic small-integer window output for window index w."""
    n = 1
    for s in shape:
        n *= s
    base = sum((i + 2) * c for i, c in enumerate(w))
    v = (torch.arange(n, dtype=torch.int64) % 5) + (base % 7) - 3
    return (v * scale).reshape(shape).to(dtype)


# Each scenario: id -> spec.  window/args_windows: (size, stride, offset).
# blend: None (sum), "max" or "prod".  reads: the regions upstream reads
# (tuples of (start, stop) per dim) before the file is closed.
WORLD = {
    "terrain": dict(shape=(None, None), window=((6, 6), (4, 4), (-2, 1)), dtype="float32", tile_size=8,
                    reads=[((-3, 13), (0, 9))]),
    "rivers": dict(shape=(None, None), window=((4, 4), (4, 4), (0, 0)), dtype="float32", tile_size=8,
                   args=["terrain"], args_windows=[((4, 4), (4, 4), (0, 0))], reads=[((0, 8), (0, 8))]),
    "chan": dict(shape=(3, None), window=((3, 5), (3, 3), (0, 0)), dtype="int32", tile_size=4,
                 reads=[((0, 3), (-4, 11))]),
    "half/precision": dict(shape=(None,), window=((5,), (2,), (0,)), dtype="float16", tile_size=6,
                           reads=[((-3, 14),)]),
    "wide": dict(shape=(None, 2), window=((3, 2), (2, 2), (1, 0)), dtype="int64", tile_size=5,
                 reads=[((0, 9), (0, 2)), ((20, 23), (0, 2))]),
    "f64": dict(shape=(None,), window=((4,), (3,), (0,)), dtype="float64", tile_size=7, reads=[((0, 10),)]),
}
BLEND = {
    "peak": dict(shape=(None, None), window=((5, 5), (3, 3), (0, 0)), dtype="float32", tile_size=8, blend="max",
                 blend_init=float("-inf"), reads=[((0, 9), (2, 12))]),
    "prod": dict(shape=(None,), window=((4,), (3,), (0,)), dtype="float64", tile_size=5, blend="prod",
                 blend_init=1.0, reads=[((1, 11),)]),
}
CRASH = {
    "crash": dict(shape=(None,), window=((6,), (6,), (0,)), dtype="float32", tile_size=4, reads=[]),
}
SCENARIOS = {"world": WORLD, "blend": BLEND, "crash": CRASH}
# what the crash scenario reads, in order, before the process dies
CRASH_READS = [((6, 12),), ((0, 6),)]


def output(spec, tid, w, args):
    """The window output f returns (args: the upstream regions)."""
    size = spec["window"][0]
    dtype = getattr(torch, spec["dtype"])
    if spec.get("blend") == "prod":
        return (1 + (_vals(w, size, torch.int64) % 2)).to(dtype)  # 1 or 2: products stay exact
    out = _vals(w, size, dtype)
    if args:
        out = out + (args[0] * 2).to(dtype)
    return out


def blend_fn(kind):
    if kind == "max":
        return torch.maximum
    if kind == "prod":
        return lambda a, b: a * b
    return None


def build(it, store, scenario, calls=None):
    """Create the scenario's tensors in store with library module it (upstream
    or ours); calls, a dict, counts f's calls per tensor id."""
    tensors = {}
    for tid, spec in scenario.items():
        size, stride, offset = spec["window"]
        args = [tensors[a] for a in spec.get("args", [])]
        awins = [it.TensorWindow(*w) for w in spec.get("args_windows", [])]

        def f(w, *a, _tid=tid, _spec=spec):
            if calls is not None:
                calls.setdefault(_tid, []).append(tuple(w))
            return output(_spec, _tid, tuple(w), a)

        kw = {}
        if spec.get("blend"):
            kw = dict(blend=blend_fn(spec["blend"]), blend_init=spec["blend_init"])
        tensors[tid] = it.InfiniteTensor(spec["shape"], f, it.TensorWindow(size, stride, offset), args=args or None,
                                         args_windows=awins or None, dtype=getattr(torch, spec["dtype"]),
                                         tile_store=store, tensor_id=tid, **kw)
    return tensors


def region(r):
    return tuple(slice(a, b) for a, b in r)


def main(version, out_dir):
    import infinite_tensor as it

    here = os.path.dirname(os.path.abspath(__file__))
    repo_pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "infinite_tensor")
    if os.path.dirname(os.path.abspath(it.__file__)) == os.path.abspath(repo_pkg) or hasattr(it, "_core"):
        sys.exit(f"this is not upstream infinite-tensor ({it.__file__}); see the docstring")
    os.makedirs(out_dir, exist_ok=True)
    record = {"version": version, "upstream_file": it.__file__, "files": {}}
    for name, scenario in SCENARIOS.items():
        if name == "blend" and version == "0.3":
            continue
        path = os.path.join(out_dir, f"{name}-{version}.h5")
        if os.path.exists(path):
            os.remove(path)
        if name == "crash":
            _crash(it, path, scenario)
            record["files"][os.path.basename(path)] = {}
            continue
        # one tile_size per store: group the scenario's tensors by tile size
        sizes = sorted({s["tile_size"] for s in scenario.values()})
        reads = {}
        for ts in sizes:
            part = {k: v for k, v in scenario.items() if v["tile_size"] == ts or k in
                    {a for s in scenario.values() if s["tile_size"] == ts for a in s.get("args", [])}}
            store = it.HDF5TileStore(path, tile_size=ts, compression=None, compression_opts=None)  # smaller files
            tensors = build(it, store, part)
            for tid, spec in part.items():
                if spec["tile_size"] != ts:
                    continue
                for r in spec["reads"]:
                    reads.setdefault(tid, []).append(tensors[tid][region(r)].tolist())
            store.close()
        record["files"][os.path.basename(path)] = reads
    for name in os.listdir(out_dir):
        if name.endswith(f"-{version}.h5"):
            _compact(os.path.join(out_dir, name))
    print(json.dumps(record))


def _compact(path):
    """Copy every object into a fresh file (as h5repack does): upstream
    deletes and re-creates a tile's dataset at each write, and HDF5 never
    gives the space back.  The objects, attributes and values are unchanged."""
    import h5py

    tmp = path + ".compact"
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(tmp, path)


def _crash(it, path, scenario):
    """Run in a child process: it dies without closing the store."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import make_fixtures as m; m._crash_child({path!r})")
    subprocess.run([sys.executable, "-c", code], check=True)


def _crash_child(path):
    import infinite_tensor as it

    store = it.HDF5TileStore(path, tile_size=CRASH["crash"]["tile_size"], cache_size_tiles=1, compression=None, compression_opts=None)
    t = build(it, store, CRASH)["crash"]
    for r in CRASH_READS:
        t[region(r)]
    store._flush_backend()  # what eviction wrote is on disk; the cached tile is not
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("0.3", "0.4"):
        sys.exit("usage: make_fixtures.py {0.3|0.4} OUT_DIR")
    main(sys.argv[1], sys.argv[2])
