"""Helpers shared by the persistent-store tests (test_persistent_store.py,
test_hdf5_store.py, test_hdf5_crash.py).

Nothing here asserts on the library by itself; it builds tensors next to
their plain-torch reference (tests/reference.py, through tests/pairs.py),
runs child Python processes, and does the tile geometry of the persistent
format (tile k along an infinite dim of tile size T covers [k*T, (k+1)*T);
finite dims are whole).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import subprocess
import sys

import torch

from pairs import Win, assert_same, make, pattern  # noqa: F401  (re-exported)
from reference import RefTensor

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


# -- child processes ------------------------------------------------------------
def child_env():
    """Environment for a child python that imports infinite_tensor from this
    source tree and the test helpers from tests/."""
    env = dict(os.environ)
    parts = [REPO_ROOT, TESTS_DIR]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def run_python(code, *args, timeout=120):
    """Run `code` in a fresh python process; fail with its output on error."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"child python failed (rc={proc.returncode}):\n"
                             f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def file_digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


# -- geometry ---------------------------------------------------------------------
def windows_in(win: Win, box, shape):
    """The set of window indices a read of box ([(start, stop)] per dim, step
    1) needs: those meeting the box and lying inside every finite dim."""
    return set(win.windows([tuple(b) for b in box], shape))


def infinite_dims(shape):
    return [d for d, ext in enumerate(shape) if ext is None]


def effective_tile_size(shape, tile_size):
    n = len(infinite_dims(shape))
    if isinstance(tile_size, int):
        return (tile_size,) * n
    return tuple(tile_size)


def tile_box(shape, tile_size, tile_index):
    """[(start, stop)] per dim of the tile with the given index (one entry
    per infinite dim)."""
    ts = effective_tile_size(shape, tile_size)
    box, k = [], 0
    for ext in shape:
        if ext is None:
            box.append((tile_index[k] * ts[k], (tile_index[k] + 1) * ts[k]))
            k += 1
        else:
            box.append((0, ext))
    return box


def tile_shape(shape, tile_size):
    ts = iter(effective_tile_size(shape, tile_size))
    return tuple(next(ts) if ext is None else ext for ext in shape)


def tiles_meeting(shape, tile_size, box):
    """Tile indices of every tile meeting box ([(start, stop)] per dim)."""
    ts = effective_tile_size(shape, tile_size)
    ranges = []
    for (start, stop), t in zip([b for b, ext in zip(box, shape) if ext is None], ts):
        ranges.append(range(start // t, (stop - 1) // t + 1))
    return set(itertools.product(*ranges))


def intersect(a, b):
    """Intersection of two boxes, or None when empty."""
    out = []
    for (a0, a1), (b0, b1) in zip(a, b):
        lo, hi = max(a0, b0), min(a1, b1)
        if lo >= hi:
            return None
        out.append((lo, hi))
    return out


def as_slices(box):
    return tuple(slice(a, b) for a, b in box)


def check_tile_values(tile, tbox, ref: RefTensor, complete_box):
    """tile (the full tile tensor over tbox) must equal the reference on the
    part of tbox inside complete_box (a box every window of which was
    computed).  Returns True when something was compared."""
    part = intersect(tbox, complete_box)
    if part is None:
        return False
    local = tuple(slice(lo - t0, hi - t0) for (lo, hi), (t0, _) in zip(part, tbox))
    got = torch.as_tensor(tile)[local]
    assert_same(got.contiguous(), ref.region(part))
    return True


def duplicates(calls):
    return sorted(c for c, n in collections.Counter(calls).items() if n > 1)


# -- tensors used by several files (the child processes import them too) -----------
DEMO_SHAPE = (None, None)
DEMO_WIN = Win((6, 6), (4, 4), (-1, 2))  # overlapping: sums matter
DEMO_TILE = 8


def demo_pure(ctx):
    return pattern(ctx, DEMO_WIN.size, torch.int64)


def demo_pair(store, tensor_id="demo", **kw):
    return make(DEMO_SHAPE, demo_pure, DEMO_WIN, store=store, dtype=torch.int64, tensor_id=tensor_id, **kw)
