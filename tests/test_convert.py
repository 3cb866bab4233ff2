"""python -m infinite_tensor.convert: files written by upstream infinite-tensor
0.3 / 0.4's HDF5TileStore, converted to this library's format.

The upstream files are tests/data/upstream/*.h5, written by upstream itself
(tests/data/upstream/make_fixtures.py says how; its SCENARIOS define the
tensors, shared here).  After conversion every tensor is created again with
this library and read: the values must equal a plain-torch reference
(computed here, without either library) and the values upstream had stored
(read from the upstream file with h5py), and f must not be called for the
windows upstream had processed.

With INFINITE_TENSOR_UPSTREAM_0_3 / INFINITE_TENSOR_UPSTREAM_0_4 set to a
directory holding upstream's infinite_tensor package, the fixtures are also
made afresh by upstream in a subprocess and checked against what upstream
read.
"""
import itertools
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

h5py = pytest.importorskip("h5py")

import infinite_tensor as it  # noqa: E402
from infinite_tensor.convert import ConversionError, convert  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "upstream")
sys.path.insert(0, DATA)
import make_fixtures as mf  # noqa: E402

FILES = [("world", "0.3"), ("world", "0.4"), ("blend", "0.4"), ("crash", "0.3"), ("crash", "0.4")]


# ---- a plain-torch reference ---------------------------------------------------

def _window_range(size, stride, offset, a, b, extent):
    lo = math.ceil((a - offset - size + 1) / stride)
    hi = (b - 1 - offset) // stride
    out = []
    for i in range(lo, hi + 1):
        s = i * stride + offset
        if extent is not None and (s < 0 or s + size > extent):
            continue
        out.append(i)
    return out


def windows_meeting(spec, region):
    size, stride, offset = spec["window"]
    per = [_window_range(size[d], stride[d], offset[d], a, b, spec["shape"][d]) for d, (a, b) in enumerate(region)]
    return list(itertools.product(*per))


def bounds(window, w):
    size, stride, offset = window
    return [(w[d] * stride[d] + offset[d], w[d] * stride[d] + offset[d] + size[d]) for d in range(len(size))]


def reference(scenario, tid, region):
    """Values of region of tensor tid: every window meeting it, combined in
    lexicographic order from the fill (the scenarios' blends commute)."""
    spec = scenario[tid]
    dtype = getattr(torch, spec["dtype"])
    fill = 0 if spec.get("blend") is None else spec["blend_init"]
    out = torch.full(tuple(b - a for a, b in region), fill, dtype=dtype)
    blend = mf.blend_fn(spec.get("blend"))
    for w in windows_meeting(spec, region):
        args = [reference(scenario, a, bounds(aw, w)) for a, aw in zip(spec.get("args", []), spec.get("args_windows", []))]
        v = mf.output(spec, tid, w, args)
        bw = bounds(spec["window"], w)
        src, dst = [], []
        for (a, b), (s, e) in zip(region, bw):
            lo, hi = max(a, s), min(b, e)
            if lo >= hi:
                break
            dst.append(slice(lo - a, hi - a))
            src.append(slice(lo - s, hi - s))
        else:
            cur = out[tuple(dst)]
            out[tuple(dst)] = cur + v[tuple(src)] if blend is None else blend(cur, v[tuple(src)])
    return out


# ---- what upstream stored ----------------------------------------------------------

def upstream_group(f, tid):
    return f["tensors"][tid]


def upstream_values(path, scenario, tid, region):
    """Assemble region from the upstream file's tiles (h5py only)."""
    spec = scenario[tid]
    with h5py.File(path, "r") as f:
        g = upstream_group(f, tid)
        ts = [int(x) for x in g["metadata"].attrs["tile_size"]]
        out = torch.empty(tuple(b - a for a, b in region), dtype=getattr(torch, spec["dtype"]))
        inf = [d for d, e in enumerate(spec["shape"]) if e is None]
        ranges = [range(region[d][0] // ts[k], (region[d][1] - 1) // ts[k] + 1) for k, d in enumerate(inf)]
        for c in itertools.product(*ranges):
            tile = torch.from_numpy(g["tiles"]["_".join(map(str, c))][()])
            dst, src = [], []
            for d, (a, b) in enumerate(region):
                if d in inf:
                    k = inf.index(d)
                    s = c[k] * ts[k]
                    lo, hi = max(a, s), min(b, s + ts[k])
                    dst.append(slice(lo - a, hi - a))
                    src.append(slice(lo - s, hi - s))
                else:
                    dst.append(slice(0, b - a))
                    src.append(slice(a, b))
            out[tuple(dst)] = tile[tuple(src)]
        return out


def upstream_processed(path, tid):
    with h5py.File(path, "r") as f:
        g = upstream_group(f, tid)
        return {tuple(int(x) for x in (w.decode() if isinstance(w, bytes) else w).split("_"))
                for w in g["processed_windows"][:]}


# ---- helpers -------------------------------------------------------------------------

def fixture(name, version):
    return os.path.join(DATA, f"{name}-{version}.h5")


def open_tensors(path, scenario, tids, calls):
    """Our store on path and the tensors tids (with the args they need), with
    the scenario's tile size."""
    need = set()
    for tid in tids:
        need |= {tid, *scenario[tid].get("args", [])}
    sizes = {scenario[t]["tile_size"] for t in need}
    assert len(sizes) == 1
    store = it.HDF5TileStore(path, tile_size=sizes.pop())
    part = {k: v for k, v in scenario.items() if k in need}
    return store, mf.build(it, store, part, calls)


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a, b)
    assert torch.equal(a, b), (a, b)


def bigger(region, by=5):
    return tuple((a - by, b + by) for a, b in region)


def clip(spec, region):
    return tuple((max(a, 0), min(b, e)) if e is not None else (a, b) for (a, b), e in zip(region, spec["shape"]))


# ---- conversion of each upstream file -------------------------------------------------

@pytest.mark.parametrize("name,version", FILES, ids=[f"{n}-{v}" for n, v in FILES])
def test_converted_file_reads_what_upstream_stored(tmp_path, name, version):
    src = fixture(name, version)
    dst = str(tmp_path / "new.h5")
    summary = convert(src, dst)
    scenario = mf.SCENARIOS[name]
    assert sorted(t["id"] for t in summary["tensors"]) == sorted(scenario)
    assert summary["copied"] == [] and summary["skipped"] == []
    for tid, spec in scenario.items():
        # the regions upstream read: no f call, the reference, upstream's bytes
        reads = spec["reads"] if name != "crash" else []
        calls = {}
        store, tensors = open_tensors(dst, scenario, [tid], calls)
        with store:
            for r in reads:
                got = tensors[tid][mf.region(r)]
                if spec.get("blend") == "prod":
                    # a custom blend completes the tiles a read touches
                    # (docs/architecture.md): windows upstream never computed
                    assert not set(calls.get(tid, [])) & upstream_processed(src, tid)
                else:
                    assert calls == {}, f"{tid}: f called for windows upstream had processed: {calls}"
                same(got, reference(scenario, tid, r))
                same(got, upstream_values(src, scenario, tid, r))
        # a larger region: only the windows upstream had not processed are computed
        calls = {}
        store, tensors = open_tensors(dst, scenario, [tid], calls)
        processed = upstream_processed(src, tid)
        with store:
            regions = [clip(spec, bigger(r)) for r in reads] or [((-4, 20),)]
            for r in regions:
                same(tensors[tid][mf.region(r)], reference(scenario, tid, r))
            needed = set().union(*(windows_meeting(spec, r) for r in regions))
            if spec.get("blend") == "prod":
                assert set(calls[tid]) >= needed - processed and not set(calls[tid]) & processed
            else:
                assert sorted(calls.get(tid, [])) == sorted(needed - processed), tid
            for arg in spec.get("args", []):
                assert not set(calls.get(arg, [])) & upstream_processed(src, arg)
            for got in calls.values():
                assert len(got) == len(set(got)), "a window was computed twice"


def test_tiles_are_kept_byte_for_byte(tmp_path):
    src = fixture("world", "0.4")
    dst = str(tmp_path / "new.h5")
    convert(src, dst)
    with h5py.File(src, "r") as old, h5py.File(dst, "r") as new:
        assert new.attrs["infinite_tensor_format"] == 2
        groups = {new["tensors"][g].attrs["id"]: new["tensors"][g] for g in new["tensors"]}
        assert "half/precision" in groups  # the id with "/" (upstream nests groups)
        for tid in mf.WORLD:
            g = groups[tid]
            tiles = old["tensors"][tid]["tiles"]
            rows = {tuple(int(x) for x in c): i for i, c in enumerate(g["index"][:])}
            assert set(rows) == {tuple(int(x) for x in k.split("_")) for k in tiles}
            for k in tiles:
                a = tiles[k][()]
                b = g["tiles"][rows[tuple(int(x) for x in k.split("_"))]]
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (tid, k)


def test_crash_leftovers_are_converted_as_they_were(tmp_path):
    # upstream's crash-V.h5: tile 0 holds window 0, tile 1 only window 1,
    # tile 2 window 1; window 0 must be computed again (for tile 1 only)
    src = fixture("crash", "0.4")
    dst = str(tmp_path / "new.h5")
    summary = convert(src, dst)
    (t,) = summary["tensors"]
    assert (t["tiles"], t["windows"], t["incomplete_windows"]) == (3, 1, 1)
    calls = {}
    store, tensors = open_tensors(dst, mf.CRASH, ["crash"], calls)
    with store:
        same(tensors["crash"][8:12], reference(mf.CRASH, "crash", ((8, 12),)))
        assert calls == {}
        same(tensors["crash"][0:12], reference(mf.CRASH, "crash", ((0, 12),)))
        assert calls == {"crash": [(0,)]}


def test_a_file_our_store_opened_converts_with_our_tensors_copied(tmp_path):
    path = str(tmp_path / "old.h5")
    shutil.copy(fixture("world", "0.4"), path)
    calls = {}
    with it.HDF5TileStore(path, tile_size=8) as store:
        with pytest.raises(it.ValidationError, match=r"python -m infinite_tensor\.convert"):
            mf.build(it, store, {"terrain": mf.WORLD["terrain"]})
        mine = it.InfiniteTensor((None,), lambda w: torch.full((4,), float(w[0])), it.TensorWindow((4,)),
                                 tile_store=store, tensor_id="mine")
        mine[0:16]
    dst = str(tmp_path / "new.h5")
    summary = convert(path, dst)
    assert summary["copied"] == ["mine"] and len(summary["tensors"]) == len(mf.WORLD)
    with it.HDF5TileStore(dst, tile_size=8) as store:
        again = it.InfiniteTensor((None,), lambda w: 1 / 0, it.TensorWindow((4,)), tile_store=store,
                                  tensor_id="mine")
        same(again[0:16], torch.arange(4).repeat_interleave(4).float())
        t = mf.build(it, store, {"terrain": mf.WORLD["terrain"]}, calls)["terrain"]
        r = mf.WORLD["terrain"]["reads"][0]
        same(t[mf.region(r)], reference(mf.WORLD, "terrain", r))
        assert calls == {}


# ---- errors and the command line ------------------------------------------------------

def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert(str(tmp_path / "nope.h5"), str(tmp_path / "new.h5"))


def test_existing_destination_needs_overwrite(tmp_path):
    dst = tmp_path / "new.h5"
    dst.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        convert(fixture("crash", "0.3"), str(dst))
    assert dst.read_bytes() == b"keep me"
    convert(fixture("crash", "0.3"), str(dst), overwrite=True)
    assert h5py.is_hdf5(str(dst))
    assert [p.name for p in tmp_path.iterdir()] == ["new.h5"]  # no temporary left


def test_files_not_written_by_upstream_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ConversionError, match="not an HDF5 file"):
        convert(str(text), str(tmp_path / "a.h5"))
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as f:
        f["data"] = [1, 2, 3]
    with pytest.raises(ConversionError, match="no /tensors group"):
        convert(other, str(tmp_path / "b.h5"))
    ours = str(tmp_path / "ours.h5")
    with it.HDF5TileStore(ours) as store:
        it.InfiniteTensor((None,), lambda w: torch.ones(4), it.TensorWindow((4,)), tile_store=store,
                          tensor_id="x")[0:4]
    with pytest.raises(ConversionError, match="already in this library's format"):
        convert(ours, str(tmp_path / "c.h5"))
    assert issubclass(ConversionError, ValueError) and issubclass(ConversionError, it.InfiniteTensorError)
    assert not any(p.name.startswith(("a.h5", "b.h5", "c.h5", ".")) for p in tmp_path.iterdir())


def test_command_line(tmp_path):
    dst = str(tmp_path / "new.h5")
    run = [sys.executable, "-m", "infinite_tensor.convert"]
    p = subprocess.run(run + [fixture("blend", "0.4"), dst], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "peak:" in p.stdout and "tile_size (8, 8)" in p.stdout
    p = subprocess.run(run + [fixture("blend", "0.4"), dst], capture_output=True, text=True)
    assert p.returncode == 1 and "exists" in p.stderr
    p = subprocess.run(run + [fixture("blend", "0.4"), dst, "--overwrite"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# ---- fixtures made afresh by upstream ----------------------------------------------------

@pytest.mark.parametrize("version", ["0.3", "0.4"])
def test_files_made_now_by_upstream(tmp_path, version):
    src_dir = os.environ.get(f"INFINITE_TENSOR_UPSTREAM_{version.replace('.', '_')}")
    if not src_dir:
        pytest.skip(f"set INFINITE_TENSOR_UPSTREAM_{version.replace('.', '_')} to a directory holding upstream "
                    f"infinite-tensor {version}'s infinite_tensor package to make the files with it")
    env = dict(os.environ, PYTHONPATH=src_dir)
    out = tmp_path / "made"
    p = subprocess.run([sys.executable, os.path.join(DATA, "make_fixtures.py"), version, str(out)],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["version"] == version and src_dir in record["upstream_file"]
    for fname, reads in record["files"].items():
        name = fname.split("-")[0]
        scenario = mf.SCENARIOS[name]
        dst = str(tmp_path / f"conv-{fname}")
        convert(str(out / fname), dst)
        for tid, values in reads.items():
            calls = {}
            store, tensors = open_tensors(dst, scenario, [tid], calls)
            with store:
                for r, v in zip(scenario[tid]["reads"], values):
                    got = tensors[tid][mf.region(r)]
                    same(got, torch.tensor(v, dtype=got.dtype))
                    if scenario[tid].get("blend") != "prod":  # custom blends complete tiles (see above)
                        assert calls == {}
