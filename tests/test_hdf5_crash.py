"""Crash safety of HDF5TileStore: a child process writes heavily and is
killed with SIGKILL at random moments; every value it wrote is then checked.

Each run r starts a child on the file the previous run's kill left behind.
The child first re-reads part of the previous run's area (computing again
what that crash lost), then sweeps a band of its own: one new region after
another (random sizes, overlapping), alternately into an int64 and an
integer-valued float64 tensor whose windows overlap (so sums matter), with
a cache of a few tiles shared by both (eviction writes all the time), and
flush() every few reads.  Between flushes it also calls clear_cache() on the
int64 tensor, which commits the file while the float64 tensor has windows
written into some of their tiles (evicted ones) but not yet into others
(still cached): that committed state is only correct if recovery adds such
a window to exactly the tiles lacking it.  The child logs how far it got
and which flush() / clear_cache() calls returned.

After the kill the parent reopens a copy of the file (and of anything the
store keeps next to it) and compares every value of the area the child
touched with a fresh plain-torch computation, exactly.  Windows the crash
lost are recomputed, never counted twice; windows made durable by a flush()
that returned before the kill are not computed again (for the float sum,
whose windows wait on a tile for the ones before them, those saved whole:
see whole()).  Finally the crashed
original itself is verified in place, then once more read-only.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import torch

import infinite_tensor as it
from persist_util import REPO_ROOT, Win, assert_same, child_env, duplicates, make, pattern, windows_in

SHAPE = (3, None, None)
WIN = Win((3, 6, 6), (3, 4, 4), (0, 1, -2))
TILE = (8, 16)
N_READS = 1500  # per band: more than a child gets through before its kill
BAND_H = 40
TENSORS = {"i": torch.int64, "f": torch.float64}
RECOVER = 60  # regions of the previous band a child re-reads first


def pure_for(name):
    dtype = TENSORS[name]
    base = 0 if name == "i" else 11

    def pure(ctx):
        return pattern(ctx, WIN.size, dtype, base=base)

    return pure


def band_regions(run):
    """The boxes (rows, cols of the infinite dims) run `run` reads, in order."""
    rng = random.Random(run)
    y_base = run * 64
    out = []
    for i in range(N_READS):
        h, w = rng.randint(3, 20), rng.randint(3, 20)
        y = y_base + rng.randint(0, BAND_H - h)
        x = 6 * i + rng.randint(-12, 4)
        out.append(((y, y + h), (x, x + w)))
    return out


CHILD = r"""
import os, sys, time
import infinite_tensor as it
from test_hdf5_crash import SHAPE, WIN, TILE, TENSORS, RECOVER, pure_for, band_regions
path, log_path, run = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
store = it.HDF5TileStore(path, tile_size=TILE, cache_size_tiles=3)
ts = [it.InfiniteTensor(SHAPE, pure_for(n), WIN.lib(), dtype=d, tile_store=store, tensor_id=n)
      for n, d in TENSORS.items()]
store.flush()
print("ready", flush=True)

def read(box):
    (y0, y1), (x0, x1) = box
    for t in ts:
        t[:, y0:y1, x0:x1]

if run > 0:
    for box in band_regions(run - 1)[:RECOVER]:
        read(box)
    store.flush()
    os.write(log, b"recovered\n")
for i, box in enumerate(band_regions(run)):
    if i % 10 == 0:
        os.write(log, f"at {i}\n".encode())
    read(box)
    if i % 5 == 4:
        store.flush()
        os.write(log, f"flushed {i + 1}\n".encode())
    elif i % 5 == 2:
        store.clear_cache("i")
        os.write(log, f"cleared {i + 1}\n".encode())
store.flush()
print("finished", flush=True)
time.sleep(120)
"""


def parse_log(text):
    """(regions started, {tensor: regions made durable}, recovery flushed) from a child log."""
    started = 0
    durable = {name: 0 for name in TENSORS}
    recovered = False
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # the kill cut this line
        parts = line.split()
        if parts[0] == "at":
            started = int(parts[1]) + 10
        elif parts[0] == "flushed":
            durable = {name: int(parts[1]) for name in TENSORS}
        elif parts[0] == "cleared":
            durable["i"] = int(parts[1])
        elif parts[0] == "recovered":
            recovered = True
    return started, durable, recovered


def bbox(boxes, margin):
    return [(min(b[d][0] for b in boxes) - margin, max(b[d][1] for b in boxes) + margin) for d in range(2)]


def expected_values(name, area):
    """Plain-torch values of tensor `name` over [0:3] x area (rows, cols): the
    pattern of every window meeting it, summed (vectorised over the window
    grid; test_fast_reference_matches_reference_py checks it against
    tests/reference.py)."""
    (y0, y1), (x0, x1) = area
    size, stride, offset = WIN.size, WIN.stride, WIN.offset
    lo = [(a - offset[d] - size[d]) // stride[d] + 1 for d, a in ((1, y0), (2, x0))]
    hi = [-((offset[d] - b) // stride[d]) - 1 for d, b in ((1, y1), (2, x1))]
    ii = torch.arange(lo[0], hi[0] + 1, dtype=torch.int64)
    jj = torch.arange(lo[1], hi[1] + 1, dtype=torch.int64)
    # pattern()'s key for ctx (0, i, j), then its values for every window at once
    key = (((0 + 7) * 3) * 31 + (ii[:, None] + 7) * 4) * 31 + (jj[None, :] + 7) * 5
    n = size[0] * size[1] * size[2]
    base = 0 if name == "i" else 11
    vals = (torch.arange(n, dtype=torch.int64)[None, None, :] * 3 + key[:, :, None] * 5 + base) % 97 - 40
    vals = vals.reshape(len(ii), len(jj), *size)
    top, left = lo[0] * stride[1] + offset[1], lo[1] * stride[2] + offset[2]
    buf = torch.zeros(3, (len(ii) - 1) * stride[1] + size[1], (len(jj) - 1) * stride[2] + size[2],
                      dtype=torch.int64)
    for dy in range(size[1]):
        for dx in range(size[2]):
            rows = slice(dy, dy + (len(ii) - 1) * stride[1] + 1, stride[1])
            cols = slice(dx, dx + (len(jj) - 1) * stride[2] + 1, stride[2])
            buf[:, rows, cols] += vals[:, :, :, dy, dx].permute(2, 0, 1)
    out = buf[:, y0 - top:y1 - top, x0 - left:x1 - left]
    return out.to(TENSORS[name]).contiguous()


def test_fast_reference_matches_reference_py():
    for name, dtype in TENSORS.items():
        ref = make(SHAPE, pure_for(name), WIN, dtype=dtype).ref
        for area in ([(-13, 9), (-7, 30)], [(64, 104), (100, 131)], [(3, 4), (-2, -1)]):
            assert_same(expected_values(name, area), ref.region([(0, 3)] + area))


def whole(durable, name):
    """The windows of durable saved whole.  A float sum adds each pixel's
    windows in window order (docs/architecture.md): a window whose earlier
    neighbours were not computed yet waits on the tiles it shares with them,
    and that part is not written.  A window is saved whole when every window
    overlapping it was computed before the flush too, in a run whose band no
    earlier crash left half saved: so the windows a recovery recomputes in
    the previous run's band are not counted (a window of that band whose
    part in a tile the crash lost is computed again only when a read needs
    that part, and the recovered windows after it wait for it)."""
    if TENSORS[name] != torch.float64:
        return durable
    reach = [-(-size // stride) - 1 for size, stride in zip(WIN.size, WIN.stride)]

    def neighbours(w):
        ranges = [range(c - r, c + r + 1) for c, r in zip(w, reach)]
        return ((a, b, c) for a in ranges[0] for b in ranges[1] for c in ranges[2])

    return {w for w in durable if all(n in durable for n in neighbours(w) if n[0] == 0)}


def verify(path, areas, durable, tag, mode="a"):
    """Reopen path and compare every value of each (run, area) in areas for
    both tensors; no window is computed twice, none of durable[tensor] at all."""
    with it.HDF5TileStore(path, mode=mode, tile_size=TILE) as store:
        for name, dtype in TENSORS.items():
            p = make(SHAPE, pure_for(name), WIN, store=store, dtype=dtype, tensor_id=name)
            for run, area in areas:
                (y0, y1), (x0, x1) = area
                got = p.lib[:, y0:y1, x0:x1]
                expected = expected_values(name, area)
                try:
                    assert_same(got, expected)
                except AssertionError as e:
                    bad = (got != expected).nonzero()[:5].tolist()
                    raise AssertionError(f"{tag}: tensor {name} band {run} differs (first at {bad}, "
                                         f"relative to {area}): {e}") from None
            assert not duplicates(p.calls), (tag, name)
            again = set(p.calls) & whole(durable[name], name)
            assert not again, (f"{tag}: {name}: windows made durable by a flush() or clear_cache() that returned were "
                               f"computed again: {sorted(again)[:10]}")
            if mode == "r":
                assert p.calls == []


def test_sigkill_at_random_moments(tmp_path):
    path = str(tmp_path / "crash.h5")
    log_path = str(tmp_path / "log.txt")
    rng = random.Random(1234)
    delays = [0.02, 0.4, 1.0, 1.8] + [rng.uniform(0.05, 1.8) for _ in range(3)]
    durable = {name: set() for name in TENSORS}  # windows saved by a flush()/clear_cache() that returned
    touched = {}  # run -> the regions of its band that some child read
    areas = {}  # run -> the area to check: those regions' bounding box, with a margin for their windows
    start = time.monotonic()
    for run, delay in enumerate(delays):
        if time.monotonic() - start > 40:
            break
        open(log_path, "w").close()
        err_path = tmp_path / f"stderr{run}.txt"
        with open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, path, log_path, str(run)], cwd=REPO_ROOT,
                                    env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    proc.wait(timeout=30)
                    raise AssertionError(f"run {run}: the child did not start: {line!r}\n{err_path.read_text()}")
                time.sleep(delay)
                exited = proc.poll() is not None
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
        assert not exited, f"run {run}: the child exited by itself:\n{err_path.read_text()}"
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err_path.read_text())
        with open(log_path) as fh:
            started, flushed, recovered = parse_log(fh.read())
        regions = band_regions(run)
        if started:
            touched[run] = regions[:min(started, N_READS)]
        if run > 0:  # the recovery phase may have touched these, flushed or not
            touched[run - 1] = touched.get(run - 1, []) + band_regions(run - 1)[:RECOVER]
        areas = {r: bbox(boxes, 8) for r, boxes in touched.items()}
        for name, n in flushed.items():
            for box in regions[:n]:
                durable[name] |= windows_in(WIN, [(0, 3)] + list(box), SHAPE)
        if recovered:
            for box in band_regions(run - 1)[:RECOVER]:
                # the float sum's recovered windows may wait on parts of the
                # previous run's windows that its crash lost and that no
                # read of the recovery needed again (see whole())
                for name in ("i",):
                    durable[name] |= windows_in(WIN, [(0, 3)] + list(box), SHAPE)
        # verify a copy (with any file the store keeps next to it, e.g. "<file>-journal"):
        # the original keeps its crashed state for the next child
        copy_path = str(tmp_path / f"verify{run}.h5")
        copied = [copy_path]
        for name in os.listdir(tmp_path):
            if name.startswith("crash.h5"):
                dst = copy_path + name[len("crash.h5"):]
                shutil.copyfile(tmp_path / name, dst)
                copied.append(dst)
        check = [(r, areas[r]) for r in (run - 1, run) if r in areas]
        verify(copy_path, check, durable, f"run {run} (killed {delay:.2f}s after start, "
                                               f"{started} regions started, saved {flushed})")
        for dst in copied:
            if os.path.exists(dst):
                os.remove(dst)
    assert areas, "no child got to write anything"
    assert len(areas) >= 3
    verify(path, sorted(areas.items()), durable, "final, in place")
    verify(path, sorted(areas.items()), durable, "final, read-only", mode="r")


CHILD_CREATE = r"""
import sys
import infinite_tensor as it
from persist_util import demo_pair
with it.HDF5TileStore(sys.argv[1] + "warm", tile_size=8) as store:  # first calls are slow
    demo_pair(store).check((slice(0, 9), slice(0, 9)))
print("ready", flush=True)
for i in range(1000000):
    store = it.HDF5TileStore(sys.argv[1] + str(i), tile_size=8)
    if i % 16 == 15:
        demo_pair(store).check((slice(0, 9), slice(0, 9)))
    store.close()
"""


def test_sigkill_while_creating_new_files(tmp_path):
    """A program killed during its very first start (the file being created)
    must be able to start again: the half-created file reopens.  Each child
    creates file after file, so a kill often lands inside a creation; several
    children are killed at different moments to make that near certain."""
    from persist_util import demo_pair

    rng = random.Random(99)
    children = []
    for k in range(6):
        folder = tmp_path / f"c{k}"
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", CHILD_CREATE, str(folder / "new")], cwd=REPO_ROOT,
                                env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        children.append((folder, proc))
    try:
        for _, proc in children:
            assert proc.stdout.readline().strip() == "ready"
        for _, proc in children:
            time.sleep(rng.uniform(0.02, 0.15))
            proc.send_signal(signal.SIGKILL)
        for _, proc in children:
            proc.wait(timeout=30)
    finally:
        for _, proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    for folder, _ in children:
        made = sorted(int(n[len("new"):]) for n in os.listdir(folder)
                      if not n.endswith("-journal") and not n.startswith("newwarm") and ".creating-" not in n)
        assert made, "the child created no file"
        for i in made[-2:]:  # the one being created when killed, and the one before
            path = str(folder / f"new{i}")
            try:
                with it.HDF5TileStore(path, tile_size=8) as store:
                    p = demo_pair(store)
                    p.check((slice(-3, 12), slice(0, 9)))
            except it.InfiniteTensorError as e:
                raise AssertionError(f"{folder.name}/new{i} ({os.path.getsize(path)} bytes) cannot be "
                                     f"reopened after a kill during its creation: {e}") from None


def test_creation_temporaries_of_dead_processes_are_removed(tmp_path):
    """A crash while creating leaves <file>.creating-<pid>; the next creation
    removes those whose process is gone, and nothing else."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"s.h5.creating-{dead.pid}"
    alive = tmp_path / "s.h5.creating-1"  # init: always running
    other = tmp_path / "s.h5.creating-notapid"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    it.HDF5TileStore(tmp_path / "s.h5").close()
    assert not stale.exists()
    assert alive.exists() and other.exists()
