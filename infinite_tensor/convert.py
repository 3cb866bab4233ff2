"""Convert an HDF5 file written by infinite-tensor 0.3 or 0.4 (the pure-Python
package on PyPI) into this library's HDF5 format.

    python -m infinite_tensor.convert OLD.h5 NEW.h5 [--overwrite]

or, from Python::

    from infinite_tensor.convert import convert
    summary = convert("old.h5", "new.h5")

Open NEW.h5 with ``HDF5TileStore`` (with the ``tile_size`` you gave 0.3/0.4:
the summary lists each tensor's) and create each tensor again with the same
tensor_id, shape, windows, dtype and f: reads return the values the old
store held, and f is not called for the windows it had already processed.

What 0.3 and 0.4 store (both write the same layout; 0.3 has no blends), per
tensor id, under ``/tensors/<id>`` (an id with ``/`` nests groups):

- ``metadata``: a group whose attributes are ``meta`` (``to_json()`` as JSON)
  and ``tile_size`` (one entry per infinite dim);
- ``tiles/<i_j_...>``: one dataset per tile, holding the combination of the
  windows added into it so far (starting from 0 or ``blend_init``), with an
  attribute ``contributions`` listing those windows as strings ``"a_b"``;
- ``processed_windows``: the windows whose every tile had been written.

A tile here is the same as ours (docs/file-format.md: ``tile_size`` pixels
along each infinite dim, the whole extent of each finite dim), and so is the
metadata, so the conversion keeps each tile's values byte for byte and turns
its contribution list into our contribution bitmap.  It goes through the
engine: each tensor is registered in a new ``HDF5TileStore`` and every
window named in a contribution list is added (as zeros), so the engine
creates the tensor's group, its tile rows and their bitmaps; the rows'
values (and checksums) are then replaced by the stored ones, and each
bitmap is checked against (or, after a crash, set from) the old
contribution list.  A last pass opens the new file with the engine and
checks every tile (checksum and bitmap).

After a crash, 0.3/0.4 could leave a window in some of its tiles and not in
others (it records a window as processed once all its tiles are written).
Those windows are converted as they are: each tile keeps exactly the
windows it held, so the missing parts are computed again when read, as
0.3/0.4 would have done.  The summary counts them (``incomplete_windows``).

Tensors already in this library's format in the same file (a file opened
with this library's ``HDF5TileStore``, which adds its own tensors beside the
old ones) are copied unchanged.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import _bridge, _core
from .errors import InfiniteTensorError, ValidationError

__all__ = ["convert", "ConversionError", "main"]


class ConversionError(InfiniteTensorError, ValueError):
    """The source is not a file written by infinite-tensor 0.3/0.4's
    HDF5TileStore (or holds something this converter cannot carry over)."""


# ---- reading the 0.3 / 0.4 layout -----------------------------------------------

_UPSTREAM_PARTS = ("metadata", "tiles", "processed_windows")


def _decode_index(text):
    if isinstance(text, bytes):
        text = text.decode()
    text = str(text)
    return tuple(int(x) for x in text.split("_")) if text != "" else ()


class _Upstream:
    """One tensor of a 0.3/0.4 file: metadata, and for each tile the name of
    its dataset and its contribution set (values are read when written)."""

    def __init__(self, tid, group, src):
        self.id = tid
        self.group = group
        md = group["metadata"]
        try:
            self.meta = json.loads(md.attrs["meta"])
            self.tile_size = tuple(int(x) for x in md.attrs["tile_size"])
            self.shape = tuple(None if d is None else int(d) for d in self.meta["shape"])
            self.dtype = _dtype(self.meta["dtype"])
            win = self.meta["output_window"]
            from .tensor_window import TensorWindow
            self.window = TensorWindow.from_dict(win)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConversionError(f"tensor {tid!r} in {src} has metadata this converter cannot read ({e!r})") from None
        self.ndim = len(self.shape)
        self.ninf = sum(d is None for d in self.shape)
        if len(self.tile_size) != self.ninf:
            raise ConversionError(f"tensor {tid!r} in {src}: tile_size {self.tile_size} does not have one entry "
                                  f"per infinite dim ({self.ninf})")
        self.core_window = self.window._core_tuple()
        sizes = iter(self.tile_size)
        self.tile_shape = tuple(next(sizes) if d is None else d for d in self.shape)
        self.tiles = {}  # coords -> (dataset name, frozenset of windows)
        tiles = group.get("tiles")
        for name in (tiles.keys() if tiles is not None else ()):
            ds = tiles[name]
            try:
                coords = _decode_index(name)
                contrib = frozenset(_decode_index(w) for w in ds.attrs.get("contributions", []))
            except ValueError:
                raise ConversionError(f"tensor {tid!r} in {src}: tile {name!r} has an unreadable name or "
                                      "contribution list") from None
            if len(coords) != self.ninf or any(len(w) != self.ndim for w in contrib):
                raise ConversionError(f"tensor {tid!r} in {src}: tile {name!r} does not match the tensor's dims")
            if tuple(ds.shape) != self.tile_shape:
                raise ConversionError(f"tensor {tid!r} in {src}: tile {name!r} has shape {tuple(ds.shape)}, "
                                      f"expected {self.tile_shape}")
            if contrib:  # a tile without windows holds only the fill: as if absent
                self.tiles[coords] = (name, contrib)
        pw = group.get("processed_windows")
        self.processed = set()
        if pw is not None:
            self.processed = {_decode_index(w) for w in pw[:]}

    def touched_tiles(self, w):
        """The tile coordinates window w's pixels fall in."""
        bounds = _core.window_bounds(self.core_window, tuple(w))
        ranges = []
        k = 0
        for d, extent in enumerate(self.shape):
            if extent is None:
                t = self.tile_size[k]
                k += 1
                ranges.append(range(bounds[d].start // t, (bounds[d].stop - 1) // t + 1))
        out = [()]
        for r in ranges:
            out = [c + (x,) for c in out for x in r]
        return out

    def domain(self, coords):
        """(lo, n) of the box of windows that can touch tile coords (the
        layout of its bitmap, docs/file-format.md), or None."""
        starts, stops, k = [], [], 0
        for extent in self.shape:
            if extent is None:
                t = self.tile_size[k]
                starts.append(coords[k] * t)
                stops.append((coords[k] + 1) * t)
                k += 1
            else:
                starts.append(0)
                stops.append(extent)
        return _core.window_domain(self.core_window, self.ndim, list(self.shape), starts, stops)


def _dtype(name):
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    _bridge.dtype_code(dt)
    return dt


def _bitmap(domain, windows, row_bytes):
    row = np.zeros(row_bytes, dtype=np.uint8)
    if domain is None:
        if windows:
            raise ConversionError("a window is recorded in a tile it cannot touch: the file is damaged")
        return row
    lo, n = domain
    for w in windows:
        b = 0
        for c in range(len(lo)):
            r = w[c] - lo[c]
            if not 0 <= r < n[c]:
                raise ConversionError(f"window {w} is recorded in a tile it cannot touch: the file is damaged")
            b = b * n[c] + r
        if b // 8 >= row_bytes:
            raise ConversionError("internal error: a contribution bitmap is wider than its row")
        row[b // 8] |= np.uint8(1 << (b % 8))
    return row


def _walk_children(group, names, prefix, upstream, ours, other):
    """Sort the groups under /tensors: 0.3/0.4 tensors (a group holding a
    "metadata" group; an id with "/" nests groups), tensors in this
    library's format (attributes meta and tile_size on the group itself,
    directly under /tensors), and anything else."""
    for name in names:
        obj = group[name]
        path = f"{prefix}{name}"
        if not hasattr(obj, "keys"):
            other.append(path)
            continue
        if not prefix and "meta" in obj.attrs and "tile_size" in obj.attrs and "metadata" not in obj:
            ours.append(name)
            continue
        found = False
        if "metadata" in obj and hasattr(obj["metadata"], "attrs") and "meta" in obj["metadata"].attrs:
            upstream.append((path, obj))
            found = True
        children = [c for c in obj if not (found and c in _UPSTREAM_PARTS)]
        n_before = len(upstream)
        if children:
            _walk_children(obj, children, path + "/", upstream, ours, other)
        if not found and len(upstream) == n_before:
            other.append(path)


# ---- our checksum (tile_sum in csrc/core/h5store.c) ------------------------------

_M = (1 << 64) - 1
_K1, _K2 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _tile_sums(rows):
    """The checksums of equally long byte strings (numpy uint8 rows, shape
    (m, n)): the 64-bit sum our HDF5 backend stores per tile, computed for
    all rows at once."""
    m, n = rows.shape
    nb = n // 32
    lanes = np.tile(np.array([_K1, _K2, _K1 ^ _K2, (_K1 + _K2) & _M], dtype=np.uint64), (m, 1))
    if nb:
        words = np.ascontiguousarray(rows[:, :nb * 32]).view("<u8").reshape(m, nb, 4)
        words = np.ascontiguousarray(words.transpose(1, 0, 2))
        k1, k2 = np.uint64(_K1), np.uint64(_K2)
        s31, s33 = np.uint64(31), np.uint64(33)
        with np.errstate(over="ignore"):
            for i in range(nb):
                x = lanes + words[i] * k2
                lanes = ((x << s31) | (x >> s33)) * k1
    sums = []
    for j in range(m):
        r = (n * _K1) & _M
        for lane in lanes[j].tolist():
            r = (_rotl(r ^ lane, 27) * _K1 + _K2) & _M
        for byte in rows[j, nb * 32:].tolist():
            r = ((r ^ byte) * _K1) & _M
        r ^= r >> 33
        r = (r * _K2) & _M
        sums.append(r ^ (r >> 29))
    return sums


# ---- the conversion ----------------------------------------------------------------

def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("converting a file of infinite-tensor 0.3/0.4 needs h5py (pip install h5py)") from None
    return h5py


def _never_called(*args):
    raise RuntimeError("internal error: the converter computed a window")


def _group_of(tensors_group, tid):
    for name in tensors_group:
        g = tensors_group[name]
        if g.attrs.get("id") == tid:
            return g
    raise ConversionError(f"internal error: the new file has no group for tensor {tid!r}")


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Any]:
    """Convert ``src``, an HDF5 file written by infinite-tensor 0.3 or 0.4's
    ``HDF5TileStore``, into ``dst`` in this library's format.

    Args:
        src: The file written by infinite-tensor 0.3/0.4 (a str or path-like).
        dst: The file to write (a str or path-like).
        overwrite: Replace ``dst`` if it exists (default False).

    Returns a summary dict: ``tensors`` (one dict per converted tensor: id,
    shape, dtype, tile_size, tiles, windows, incomplete_windows),
    ``copied`` (ids already in this library's format, copied as they were)
    and ``skipped`` (other objects under /tensors, not carried over).

    Raises FileNotFoundError if src does not exist, FileExistsError if dst
    exists and overwrite is False, ConversionError (a ValueError) if src is
    not such a file, ImportError without h5py.  dst is written under a
    temporary name and renamed into place when complete.

    Returns:
        The summary dict above, plus ``source`` and ``destination`` (the
        paths as given, as str).

    Raises:
        FileNotFoundError, FileExistsError, IsADirectoryError: As above.
        ConversionError: ``src`` is not such a file, is damaged, is the same
            file as ``dst``, has a pending journal, or either file is open
            in a store of this process.
        ImportError: h5py is not installed.
    """
    h5py = _h5py()
    from .tilestore.hdf5_tilestore import HDF5TileStore, _open_here

    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.exists(src):
        raise FileNotFoundError(errno.ENOENT, "No such file", src)
    if os.path.isdir(src):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", src)
    if os.path.exists(dst):
        if not overwrite:
            raise FileExistsError(errno.EEXIST, "File exists (pass overwrite=True, or --overwrite, to replace it)",
                                  dst)
        if os.path.samefile(src, dst):
            raise ConversionError(f"source and destination are the same file: {src}")
        if os.path.isdir(dst):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
    if _open_here(src) is not None or (os.path.exists(dst) and _open_here(dst) is not None):
        raise ConversionError("close the HDF5TileStore this process has open on the source or destination first")
    if not h5py.is_hdf5(src):
        raise ConversionError(f"{src} is not an HDF5 file (not written by infinite-tensor 0.3/0.4's HDF5TileStore)")
    journal = src + "-journal"
    if os.path.exists(journal) and os.path.getsize(journal) > 0:
        raise ConversionError(f"{src} has a pending journal ({journal}): open it once with this library's "
                              "HDF5TileStore (which replays it), then convert it")

    tmp = os.path.join(os.path.dirname(os.path.abspath(dst)),
                       f".{os.path.basename(dst)}.converting-{os.getpid()}")
    try:
        with h5py.File(src, "r") as f:
            summary = _convert_open(f, src, tmp, h5py, HDF5TileStore)
        os.replace(tmp, dst)
    finally:
        for p in (tmp, tmp + "-journal"):
            if os.path.exists(p):
                os.remove(p)
    summary["source"], summary["destination"] = src, dst
    return summary


def _convert_open(f, src, tmp, h5py, HDF5TileStore):
    if "tensors" not in f or not hasattr(f["tensors"], "keys"):
        raise ConversionError(f"{src} was not written by infinite-tensor 0.3/0.4's HDF5TileStore (it has no "
                              "/tensors group)")
    upstream_groups, ours, other = [], [], []
    _walk_children(f["tensors"], list(f["tensors"]), "", upstream_groups, ours, other)
    fmt = f.attrs.get("infinite_tensor_format")
    if fmt is not None and not upstream_groups:
        raise ConversionError(f"{src} is already in this library's format (format {int(fmt)}) and holds no "
                              "tensors written by infinite-tensor 0.3/0.4: nothing to convert")
    if fmt is None and not upstream_groups and (ours or other):
        raise ConversionError(f"{src} holds no tensors written by infinite-tensor 0.3/0.4's HDF5TileStore "
                              f"(found under /tensors: {', '.join((ours + other)[:5])})")
    tensors = [_Upstream(path, g, src) for path, g in sorted(upstream_groups, key=lambda x: x[0])]
    clash = {t.id for t in tensors} & {f["tensors"][g].attrs.get("id") for g in ours}
    if clash:
        raise ConversionError(f"{src} holds tensors {sorted(clash)} in both formats")
    summaries = []
    # 1. the engine: metadata, tile rows and bitmaps (the values are placeholders)
    store = HDF5TileStore(tmp, mode="w", compression="gzip", compression_opts=4)
    try:
        for t in tensors:
            summaries.append(_build(store, t))
    finally:
        store.close()
    # 2. the stored values and their checksums; bitmaps checked (or set after a crash)
    with h5py.File(tmp, "r+") as out:
        for t, s in zip(tensors, summaries):
            _patch(out["tensors"], t, s)
        for name in ours:
            f.copy(f["tensors"][name], out["tensors"], name=name)
    # 3. the engine reads everything back: checksums, bitmaps
    _verify(tmp, tensors, summaries, HDF5TileStore)
    return {
        "tensors": [{k: v for k, v in s.items() if not k.startswith("_")} for s in summaries],
        "copied": sorted(f["tensors"][g].attrs.get("id") for g in ours),
        "skipped": sorted(other),
    }


def _node(store, t):
    spec = _bridge.NodeSpec(shape=t.shape, window=t.core_window, args=(), arg_windows=(), dtype=t.dtype,
                            device=torch.device("cpu"), fill=_bridge.fill_tensor(None, t.dtype), f=_never_called,
                            blend=None, batch_size=0, combine=_core.COMBINE_SUM, tensor_id=t.id)
    return _core.Tensor(store._cache, spec, t.tile_shape)


def _build(store, t):
    windows = set()
    for _, contrib in t.tiles.values():
        windows |= contrib
    touch = {}  # tile -> the windows named anywhere that touch it: what the engine will record
    incomplete = set()
    for w in windows:
        for c in t.touched_tiles(w):
            touch.setdefault(c, set()).add(w)
            rec = t.tiles.get(c)
            if rec is None or w not in rec[1]:
                incomplete.add(w)
    store._write_tensor_metadata(t.id, t.meta, t.tile_size)
    node = _node(store, t)
    store._attach(node, t.id)
    zeros = torch.zeros(tuple(t.window.size), dtype=t.dtype)
    for w in sorted(windows):
        node.contribute(w, zeros)
    node.flush()
    store._flush_backend()
    node.clear()
    return {"id": t.id, "shape": list(t.shape), "dtype": t.meta["dtype"], "tile_size": list(t.tile_size),
            "tiles": len(t.tiles), "windows": len(windows - incomplete), "incomplete_windows": len(incomplete),
            "_windows": windows, "_incomplete": incomplete, "_touch": touch}


_BATCH_BYTES = 32 << 20


def _patch(tensors_group, t, s):
    g = _group_of(tensors_group, t.id)
    n = g["tiles"].shape[0]
    index = g["index"][:] if t.ninf else np.zeros((n, 0), dtype=np.int64)
    bits = g["bits"]
    row_bytes = bits.shape[1]
    keep, drop = [], []
    for r in range(n):
        c = tuple(int(x) for x in index[r])
        (keep if c in t.tiles else drop).append((r, c))
    if len(keep) != len(t.tiles):
        raise ConversionError(f"internal error: tensor {t.id!r} got {len(keep)} tiles, expected {len(t.tiles)}")
    # bitmaps: the engine's may only mark windows named somewhere that touch the tile (a float
    # sum marks a window once the windows before it are there too).  A row may go on with fold
    # counts (docs/file-format.md); the old tiles' values were summed in their own order, so
    # their rows get none: a reader derives them from the bitmap.
    for r, c in keep:
        dom = t.domain(c)
        contrib = t.tiles[c][1]
        engine_row = bits[r]
        nbits = 0 if dom is None else int(np.prod(dom[1]))
        used = (nbits + 7) // 8
        touched = _bitmap(dom, s["_touch"].get(c, ()), row_bytes)[:used]
        if np.any(engine_row[:used] & ~touched):
            raise ConversionError(f"internal error: the engine's bitmap of tile {c} of tensor {t.id!r} is not "
                                  "the expected one")
        want = _bitmap(dom, contrib, row_bytes)
        if not np.array_equal(want, engine_row):  # the counts, or (after a crash) windows the tile lacks
            bits[r] = want
    # values and checksums, in batches
    tile_bytes = int(np.prod(t.tile_shape)) * torch.empty((), dtype=t.dtype).element_size()
    per = max(1, _BATCH_BYTES // max(tile_bytes, 1))
    tiles_ds, sums_ds = g["tiles"], g["sums"]
    src_tiles = t.group["tiles"]
    np_dtype = tiles_ds.dtype
    for i in range(0, len(keep), per):
        batch = keep[i:i + per]
        arrays = []
        for r, c in batch:
            a = src_tiles[t.tiles[c][0]][()]
            if a.dtype != np_dtype and (a.dtype.kind, a.dtype.itemsize) != (np_dtype.kind, np_dtype.itemsize):
                raise ConversionError(f"tensor {t.id!r}: a tile is stored as {a.dtype}, but its metadata says "
                                      f"{t.meta['dtype']}")
            a = np.ascontiguousarray(a)
            tiles_ds[r] = a
            arrays.append(np.frombuffer(a.tobytes(), dtype=np.uint8))
        for (r, _), total in zip(batch, _tile_sums(np.stack(arrays))):
            sums_ds[r] = total
    # tiles only incomplete windows created, which 0.3/0.4 never wrote: remove the rows
    if drop:
        _remove_rows(g, [r for r, _ in drop], t.ninf)


def _remove_rows(g, rows, ninf):
    names = [k for k in ("tiles", "bits", "sums", "index") if k in g]
    n = g["tiles"].shape[0]
    gone = set(rows)
    keep = [r for r in range(n) if r not in gone]
    for k in names:
        ds = g[k]
        for new, old in enumerate(keep):
            if new != old:
                ds[new] = ds[old]
        ds.resize((len(keep),) + ds.shape[1:])


def _verify(path, tensors, summaries, HDF5TileStore):
    store = HDF5TileStore(path, mode="r")
    try:
        for t, s in zip(tensors, summaries):
            record = store._read_tensor_metadata(t.id)
            if record is None or record["metadata"] != t.meta or tuple(record["tile_size"]) != t.tile_size:
                raise ConversionError(f"internal error: tensor {t.id!r} reads back with other metadata")
            node = _node(store, t)
            store._attach(node, t.id)
            for w in sorted(s["_windows"]):
                if node.window_done(w) != (w not in s["_incomplete"]):
                    raise ConversionError(f"internal error: window {w} of tensor {t.id!r} reads back wrong")
            node.clear()
    finally:
        store.close()


# ---- command line ------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """The command line, ``python -m infinite_tensor.convert SRC DST
    [--overwrite]``: converts SRC into DST and prints a summary.

    Args:
        argv: The arguments after the program name (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 after printing the error to stderr.

    Raises:
        SystemExit: Malformed arguments or ``--help`` (from argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m infinite_tensor.convert",
        description="Convert an HDF5 file written by infinite-tensor 0.3 or 0.4's HDF5TileStore into this "
                    "library's format (docs/file-format.md).")
    parser.add_argument("src", help="the file written by infinite-tensor 0.3/0.4")
    parser.add_argument("dst", help="the new file")
    parser.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.src, args.dst, overwrite=args.overwrite)
    except (OSError, ConversionError, ImportError, ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for t in summary["tensors"]:
        extra = f", {t['incomplete_windows']} windows left incomplete by a crash" if t["incomplete_windows"] else ""
        print(f"{t['id']}: shape {tuple(t['shape'])}, {t['dtype']}, tile_size {tuple(t['tile_size'])}: "
              f"{t['tiles']} tiles, {t['windows']} windows{extra}")
    for tid in summary["copied"]:
        print(f"{tid}: already in this format, copied")
    for path in summary["skipped"]:
        print(f"skipped /tensors/{path}: not a tensor of infinite-tensor 0.3/0.4")
    print(f"wrote {summary['destination']} ({len(summary['tensors'])} tensors); open it with "
          "HDF5TileStore(path, tile_size=...) using the tile_size listed above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
