"""Benchmark of infinite_tensor.blob.TensorBlob (issue 18): prints numbers,
never asserts on them.

    make bench-blob                           # also makes .bench/tensorblob (tensorblob 0.3.0)
    .venv/bin/python bench/blob_bench.py      # ours; tensorblob too when its venv exists
    .venv/bin/python bench/blob_bench.py --rows 20000 --repeat 3 --json

A blob of --rows x --cols float32 rows (default 100,000 x 768, 293 MiB) is
written, in --batch-row batches and as one write(), into a fresh blob in a
temporary folder (--dir; the same folder, so the same disk, for every file),
then read back sequentially (read(), blob[:], read(batch) until the end,
and `for row in blob`) and at random (blob[i] over --items random i, and
blob[idx] over --gathers random index tensors of --gather-size rows), the
page cache warm.  Every measurement runs once untimed, then --repeat times:
the tables give the best run and, in brackets, the median; verdicts judge
the best run (a line says when the median would judge otherwise).  Torch
runs on one thread (as in bench/run.py).  GB/s are 10^9 bytes per second.

References, measured in the same run, in this process:
- memcpy: torch copy_ of the same bytes into a preallocated, touched tensor
  (and, for reads that must return a new tensor, into a new torch.empty);
- the disk: the same bytes written with os.write to a new file in the same
  folder (one call, and one call per batch; page cache, no fsync; with
  --fsync also fsync before close), and read back with readinto into a
  preallocated buffer (page cache);
- in memory: data[i].clone() and data[idx] on the source tensor.

tensorblob 0.3.0 runs the same measurements in its own venv: this script
re-runs itself with `--impl tensorblob` under the python that
INFINITE_TENSOR_BENCH_TENSORBLOB (or --tensorblob-python) names, by default
.bench/tensorblob/bin/python when it exists (`make bench-blob` makes it); the
child prints its numbers as JSON on its last line.  Opening and closing a
blob are inside the write times (close commits/flushes) and outside the read
times (the blob is opened once for the reads).

Targets (issue 18): sequential write and read >= 0.8x memcpy and >= 0.8x the
disk (both reported); random blob[i] < 5 us; blob[i] faster than
tensorblob's.

This file imports nothing of infinite_tensor at the top: it also runs under
tensorblob's venv.
"""
import argparse
import importlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TENSORBLOB_ENV = "INFINITE_TENSOR_BENCH_TENSORBLOB"
DEFAULT_TENSORBLOB_PYTHON = os.path.join(ROOT, ".bench", "tensorblob", "bin", "python")
JSON_MARK = "BLOB-BENCH-JSON "
GB = 1e9

# the targets
BANDWIDTH_TARGET = 0.8     # x memcpy, x disk: sequential write and read
ITEM_TARGET_US = 5.0       # random blob[i], strictly below


# -- options ------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows in the blob (default 100000)")
    ap.add_argument("--cols", type=int, default=768, help="float32 values per row (default 768)")
    ap.add_argument("--batch", type=int, default=1024, help="rows per batch for the batched write and read (1024)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement, after one untimed (5)")
    ap.add_argument("--items", type=int, default=100_000, help="random blob[i] reads per run (100000)")
    ap.add_argument("--gathers", type=int, default=1000, help="random blob[idx] gathers per run (1000)")
    ap.add_argument("--gather-size", type=int, default=256, help="indices per gather (256)")
    ap.add_argument("--dir", help="make the temporary folder in this folder (default: the system's temp folder)")
    ap.add_argument("--fsync", action="store_true",
                    help="also the disk write with fsync, and ours with durability='full'")
    ap.add_argument("--json", action="store_true", help="also print every number as JSON on the last line")
    ap.add_argument("--impl", choices=["ours", "tensorblob"], default="ours",
                    help="(internal) the implementation a child process measures; ours runs the whole bench")
    ap.add_argument("--workdir", help="(internal) the folder a child writes in")
    ap.add_argument("--tensorblob-python",
                    help=f"python of a venv with tensorblob 0.3.0 (default ${TENSORBLOB_ENV}, else "
                         f".bench/tensorblob/bin/python when it exists); 'none' skips tensorblob")
    ap.add_argument("--ours-module", default="infinite_tensor.blob", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    for name in ("rows", "cols", "batch", "repeat", "items", "gathers", "gather_size"):
        if getattr(opts, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return opts


def child_args(opts):
    """The options a child process gets to measure the same things."""
    args = ["--rows", str(opts.rows), "--cols", str(opts.cols), "--batch", str(opts.batch),
            "--repeat", str(opts.repeat), "--items", str(opts.items), "--gathers", str(opts.gathers),
            "--gather-size", str(opts.gather_size)]
    return args + (["--fsync"] if opts.fsync else [])


# -- timing ---------------------------------------------------------------------------

def counted(run):
    """(seconds run() returns, the minor page faults of the process during the call)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = run()
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def summary(samples):
    """{"best", "median", "runs"} in seconds, "faults" (median per run) of [(seconds, faults)]."""
    runs = [s for s, _ in samples]
    return {"best": min(runs), "median": statistics.median(runs), "runs": runs,
            "faults": statistics.median(f for _, f in samples)}


def timed(run, repeat, warmup=1):
    """run() (which returns the seconds it measured) warmup times untimed,
    then repeat times: summary() of those."""
    for _ in range(warmup):
        run()
    return summary([counted(run) for _ in range(repeat)])


def interleaved(runs, repeat, warmup=1):
    """Like timed() for several runs {name: run}, taking turns (run A, run B,
    ..., then again), so that drift (writeback, other load) hits them alike."""
    out = {name: [] for name in runs}
    for i in range(warmup + repeat):
        for name, run in runs.items():
            sample = counted(run)
            if i >= warmup:
                out[name].append(sample)
    return {name: summary(v) for name, v in out.items()}


def guarded(results, key, fn):
    """results[key] = fn(), or {"error": ...} when it raises (an API problem
    is reported, not fatal)."""
    try:
        results[key] = fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc(file=sys.stderr)


# -- the data and the random indices (the same in every process) ------------------------

def make_data(opts):
    gen = torch.Generator().manual_seed(18)
    return torch.randn(opts.rows, opts.cols, generator=gen)


def make_indices(opts):
    gen = torch.Generator().manual_seed(1818)
    items = torch.randint(opts.rows, (opts.items,), generator=gen).tolist()
    gathers = list(torch.randint(opts.rows, (opts.gathers, opts.gather_size), generator=gen).unbind(0))
    return items, gathers


# -- the references (this process) ------------------------------------------------------

def write_all(fd, view):
    """os.write until every byte of the memoryview is written."""
    while view:
        view = view[os.write(fd, view):]


def raw_write_run(path, data, batch, fsync):
    """A run writing data to a new file with os.write (per batch rows, or
    one call): the seconds from open to close."""
    raw = memoryview(data.numpy()).cast("B")
    step = (batch or data.shape[0]) * data.shape[1] * data.element_size()

    def run():
        if os.path.exists(path):
            os.unlink(path)
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for start in range(0, len(raw), step):
                write_all(fd, raw[start:start + step])
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return time.perf_counter() - t0
    return run


def references(opts, data, workdir, items, gathers):
    """The memcpy, disk and in-memory references: {name: timing}."""
    ref = {}
    dst = torch.empty_like(data)
    dst.copy_(data)  # touched before timing

    def memcpy():
        t0 = time.perf_counter()
        dst.copy_(data)
        return time.perf_counter() - t0
    ref["memcpy"] = timed(memcpy, opts.repeat)

    def memcpy_new():
        t0 = time.perf_counter()
        out = torch.empty_like(data)
        out.copy_(data)
        seconds = time.perf_counter() - t0
        del out
        return seconds
    ref["memcpy_new"] = timed(memcpy_new, opts.repeat)
    del dst

    def memcpy_batched():
        t0 = time.perf_counter()
        for start in range(0, data.shape[0], opts.batch):
            part = data[start:start + opts.batch]
            torch.empty_like(part).copy_(part)
        return time.perf_counter() - t0
    ref["memcpy_batched"] = timed(memcpy_batched, opts.repeat)

    path = os.path.join(workdir, "raw.bin")
    raw_write_run(path, data, None, False)()  # the file the read reads
    buf = torch.empty_like(data)
    buf.fill_(0)
    view = memoryview(buf.numpy()).cast("B")

    def disk_read():
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise EOFError(f"{path}: {got} of {len(view)} bytes")
                got += n
        return time.perf_counter() - t0
    ref["disk_read"] = timed(disk_read, opts.repeat)
    os.unlink(path)
    ref["disk_read_matches"] = bool(torch.equal(buf, data))
    del buf, view

    def item_clone():
        t0 = time.perf_counter()
        for i in items:
            data[i].clone()
        return time.perf_counter() - t0
    ref["memory_item"] = timed(item_clone, opts.repeat)

    def gather_memory():
        t0 = time.perf_counter()
        for idx in gathers:
            data[idx]
        return time.perf_counter() - t0
    ref["memory_gather"] = timed(gather_memory, opts.repeat)
    return ref


# -- one implementation (ours here, tensorblob in its child) -----------------------------

def load_impl(opts):
    """(TensorBlob, {facts}) of the implementation opts.impl names."""
    if opts.impl == "tensorblob":
        from importlib import metadata
        mod = importlib.import_module("tensorblob")
        facts = {"name": "tensorblob", "version": metadata.version("tensorblob"), "file": mod.__file__,
                 "tensordict": metadata.version("tensordict")}
    else:
        sys.path.insert(0, ROOT)
        mod = importlib.import_module(opts.ours_module)
        import infinite_tensor
        facts = {"name": "infinite_tensor", "version": infinite_tensor.__version__, "file": mod.__file__}
    facts.update(python=sys.executable, torch=torch.__version__)
    return mod.TensorBlob, facts


def measure_impl(opts, TensorBlob, data, workdir, items, gathers, extra_writes=None):
    """Every measurement of one TensorBlob class: {name: timing or error},
    plus "checks" (what the reads returned compared with data).  extra_writes
    ({name: run}) take turns with the blob writes (the disk references)."""
    res, checks = {}, {}
    n, cols = data.shape
    path = os.path.join(workdir, "bench.blob")
    ours = opts.impl == "ours"

    def write_run(batch, **open_kw):
        def run():
            TensorBlob.unlink(path)
            t0 = time.perf_counter()
            with TensorBlob.open(path, "w", dtype="float32", shape=(cols,), **open_kw) as blob:
                if batch:
                    for start in range(0, n, batch):
                        blob.write(data[start:start + batch])
                else:
                    blob.write(data)
            return time.perf_counter() - t0
        return run

    writes = dict(extra_writes or {})
    writes["write_batched"] = write_run(opts.batch)
    writes["write_whole"] = write_run(None)
    if opts.fsync and ours:
        writes["write_batched_full"] = write_run(opts.batch, durability="full")
        writes["write_whole_full"] = write_run(None, durability="full")
    try:
        res.update(interleaved(writes, opts.repeat))
    except Exception:  # noqa: BLE001 - then each on its own, to find the one that fails
        traceback.print_exc(file=sys.stderr)
        for name, run in writes.items():
            guarded(res, name, lambda run=run: timed(run, opts.repeat))

    # the blob the reads read: one write (it is also the last one above)
    try:
        write_run(None)()
        blob = TensorBlob.open(path, "r")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        error = {"error": f"{type(exc).__name__}: {exc}"}
        for name in ("read", "getitem_all", "read_batched", "iterate", "item", "gather"):
            res[name] = error
        res["checks"] = checks
        return res

    with blob:
        checks["len"] = len(blob) == n
        blob.seek(0)
        checks["read"] = bool(torch.equal(blob.read(), data))
        checks["getitem_all"] = bool(torch.equal(blob[:], data))
        checks["item"] = all(torch.equal(blob[i], data[i]) for i in items[:1000])
        checks["item_negative"] = bool(torch.equal(blob[-1], data[-1]))
        checks["gather"] = all(torch.equal(blob[idx], data[idx]) for idx in gathers[:50])
        blob.seek(0)

        def read_whole():
            blob.seek(0)
            t0 = time.perf_counter()
            out = blob.read()
            seconds = time.perf_counter() - t0
            del out
            return seconds
        guarded(res, "read", lambda: timed(read_whole, opts.repeat))

        def getitem_all():
            t0 = time.perf_counter()
            out = blob[:]
            seconds = time.perf_counter() - t0
            del out
            return seconds
        guarded(res, "getitem_all", lambda: timed(getitem_all, opts.repeat))

        batches = math.ceil(n / opts.batch)

        def read_batched():
            blob.seek(0)
            t0 = time.perf_counter()
            for _ in range(batches):
                blob.read(opts.batch)
            return time.perf_counter() - t0
        guarded(res, "read_batched", lambda: timed(read_batched, opts.repeat))

        def iterate():
            blob.seek(0)
            count = 0
            t0 = time.perf_counter()
            for _ in blob:
                count += 1
            seconds = time.perf_counter() - t0
            if count != n:
                raise AssertionError(f"iteration gave {count} rows, not {n}")
            return seconds
        guarded(res, "iterate", lambda: timed(iterate, opts.repeat))

        def index_each(keys):
            def run():
                t0 = time.perf_counter()
                for key in keys:
                    blob[key]
                return time.perf_counter() - t0
            return run
        guarded(res, "item", lambda: timed(index_each(items), opts.repeat))
        guarded(res, "gather", lambda: timed(index_each(gathers), opts.repeat))

        if ours and hasattr(blob, "__getitems__"):
            lists = [idx.tolist() for idx in gathers]
            checks["getitems"] = all(torch.equal(torch.stack(blob.__getitems__(lst)), data[lst])
                                     for lst in lists[:50])

            def getitems():
                t0 = time.perf_counter()
                for lst in lists:
                    blob.__getitems__(lst)
                return time.perf_counter() - t0
            guarded(res, "getitems", lambda: timed(getitems, opts.repeat))
        if ours and hasattr(blob, "view"):
            checks["view"] = bool(torch.equal(blob.view(), data))

            def view_sum():
                t0 = time.perf_counter()
                blob.view().sum()
                return time.perf_counter() - t0
            guarded(res, "view_sum", lambda: timed(view_sum, opts.repeat))

            def memory_sum():
                t0 = time.perf_counter()
                data.sum()
                return time.perf_counter() - t0
            res["memory_sum"] = timed(memory_sum, opts.repeat)
    try:
        TensorBlob.unlink(path)
    except Exception:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
    res["checks"] = checks
    return res


# -- tensorblob in its child process ------------------------------------------------------

def tensorblob_python(opts):
    """The python to run tensorblob under, or None (and why)."""
    python = opts.tensorblob_python or os.environ.get(TENSORBLOB_ENV, "").strip()
    if python.lower() == "none":
        return None, "skipped (--tensorblob-python none)"
    if not python:
        if os.path.exists(DEFAULT_TENSORBLOB_PYTHON):
            python = DEFAULT_TENSORBLOB_PYTHON
        else:
            return None, f"not run (set {TENSORBLOB_ENV} or run `make bench-blob`)"
    return python, None


def run_tensorblob(opts, python, workdir):
    """The child's JSON ({"facts", "results"}), or {"error": ...}."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    sub = os.path.join(workdir, "tensorblob")
    os.makedirs(sub, exist_ok=True)
    cmd = [python, os.path.abspath(__file__), "--impl", "tensorblob", "--workdir", sub] + child_args(opts)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=sub, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{python}: {type(exc).__name__}: {exc}"}
    sys.stderr.write(proc.stderr)
    marked = [line for line in proc.stdout.splitlines() if line.startswith(JSON_MARK)]
    if proc.returncode != 0 or not marked:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{python}: exit {proc.returncode}: {tail}"}
    return json.loads(marked[-1][len(JSON_MARK):])


def child_main(opts):
    torch.set_num_threads(1)
    TensorBlob, facts = load_impl(opts)
    data = make_data(opts)
    items, gathers = make_indices(opts)
    workdir = opts.workdir or tempfile.mkdtemp(prefix="blob-bench-")
    results = measure_impl(opts, TensorBlob, data, workdir, items, gathers)
    print(JSON_MARK + json.dumps({"facts": facts, "results": results}))


# -- the report ----------------------------------------------------------------------------

def gbps(nbytes, seconds):
    return nbytes / seconds / GB


def fs_facts(path):
    """'fstype on device (mount point)' for the folder path."""
    path = os.path.realpath(path)
    best = None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and (best is None or len(mnt) > len(best[1])):
                    best = (dev, mnt, fstype)
    except OSError:
        pass
    return f"{best[2]} on {best[0]} (mounted at {best[1]})" if best else "filesystem unknown"


def main_ours(opts):
    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    import measure as m  # bench/measure.py: machine facts

    start = time.perf_counter()
    TensorBlob, facts = load_impl(opts)
    import infinite_tensor as it
    base = opts.dir or tempfile.gettempdir()
    workdir = tempfile.mkdtemp(prefix="blob-bench-", dir=base)
    try:
        data = make_data(opts)
        items, gathers = make_indices(opts)
        nbytes = data.numel() * data.element_size()
        print(f"{m.source_version(it)}; {m.machine_facts()}")
        print(f"blob: {opts.rows:,} x {opts.cols} float32 ({nbytes / 2**20:.1f} MiB); batches of {opts.batch} rows; "
              f"{opts.items:,} random blob[i], {opts.gathers:,} gathers of {opts.gather_size}")
        print(f"files in {workdir}: {fs_facts(workdir)}")
        print(f"each measurement: 1 untimed run, then {opts.repeat} timed; best [median]; GB/s = 10^9 B/s; "
              "verdicts judge the best run\n", flush=True)

        ref = references(opts, data, workdir, items, gathers)
        # the disk writes take turns with ours (measure_impl), then move to the references
        disk_path = os.path.join(workdir, "raw.bin")
        disk = {"disk_write": raw_write_run(disk_path, data, None, False),
                "disk_write_batched": raw_write_run(disk_path, data, opts.batch, False)}
        if opts.fsync:
            disk["disk_write_fsync"] = raw_write_run(disk_path, data, None, True)
        ours = measure_impl(opts, TensorBlob, data, workdir, items, gathers, extra_writes=disk)
        for key in list(disk) + ["memory_sum"]:
            if key in ours:
                ref[key] = ours.pop(key)
        if os.path.exists(disk_path):
            os.unlink(disk_path)
        ours_seconds = time.perf_counter() - start
        del data

        python, why = tensorblob_python(opts)
        if python:
            tb = run_tensorblob(opts, python, workdir)
            tb_line = (f"tensorblob: {tb['error']}" if "error" in tb else
                       f"tensorblob {tb['facts']['version']} (tensordict {tb['facts']['tensordict']}, torch "
                       f"{tb['facts']['torch']}) via {python}, in its own process")
        else:
            tb, tb_line = None, f"tensorblob 0.3.0: {why}"
        report = Report(opts, ref, ours, tb)
        print(f"ours: {facts['file']}; {tb_line}\n")
        print("\n".join(report.references_table()) + "\n")
        print("\n".join(report.main_table()) + "\n")
        print("ours / memcpy and ours / disk: the reference's best time over ours (above 1: ours is faster); "
              "for reads, (new:) is against a memcpy into a new tensor, as read() must return one, "
              "(batched:) against the same per batch")
        for line in report.checks():
            print(line)
        targets = report.targets()
        print("\nTargets (issue 18):")
        for verdict, text in targets:
            print(f"  {verdict}  {text}")
        verdicts = [v for v, _ in targets]
        print(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS; "
              f"total {time.perf_counter() - start:.1f} s (ours and the references {ours_seconds:.1f} s)")
        if opts.json:
            print(JSON_MARK + json.dumps({
                "config": {k: getattr(opts, k) for k in ("rows", "cols", "batch", "repeat", "items", "gathers",
                                                         "gather_size", "fsync")},
                "workdir": workdir, "facts": facts, "references": ref, "ours": ours, "tensorblob": tb,
                "targets": [{"verdict": v, "text": t} for v, t in targets]}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    opts = parse_args()
    if opts.impl == "tensorblob":
        child_main(opts)
    else:
        main_ours(opts)


if __name__ == "__main__":
    main()
