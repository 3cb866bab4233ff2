"""TensorBlob: a growable, memory-mapped file of same-shaped tensors.

A drop-in for tensorblob 0.3.0's ``TensorBlob`` (change the import to
``from infinite_tensor.blob import TensorBlob``): the same ``open`` modes,
file-like cursor (``read``, ``write``, ``seek``, ``tell``, ``truncate``),
indexing (ints, slices with any step, index lists and tensors), iteration,
``extend``, ``unlink`` and their messages.  Underneath, the C core keeps
the rows in one file (docs/blob.md has the format): every ``write`` commits,
so a process killed at any moment leaves the blob at its last committed
length with every committed row intact; one writer and any number of reader
processes can have a blob open at once, readers seeing each row as it is
committed; the file grows in place without copying, and a blob larger than
memory reads like any other.

Where this class differs from tensorblob on purpose (docs/blob.md, "Coming
from tensorblob"): one file instead of a directory of blocks (so
``block_size`` and ``max_cached_blocks`` are kept for the API but shape
nothing); ``extend`` always keeps row order; a bad dtype or block size is a
ValueError at ``open``, before anything is created; a second writer gets
BlockingIOError.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator

import torch

from . import _core
from .errors import CorruptBlobError

__all__ = ["TensorBlob", "CorruptBlobError", "read_header", "from_tensorblob"]

_DURABILITY = {"process": 0, "full": 1}
# rows copied per step when extending from another blob (bounded memory)
_EXTEND_BYTES = 64 << 20


def _torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype a blob dtype name means, or None if it names none the
    core stores."""
    dt = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dt, torch.dtype) or str(dt).split(".")[-1] not in _core.DTYPES:
        return None
    return dt


# the core's dtype codes (the file stores one) as torch dtypes
_CODE_DTYPES = {code: getattr(torch, name) for name, code in _core.DTYPES.items()}


def _check_mode(mode: str) -> None:
    if not isinstance(mode, str) or set(mode) - set("rwa+") or len(set(mode)) != len(mode):
        raise ValueError(f"Invalid mode: {mode}")
    if sum(mode.count(c) for c in "rwa") != 1 or mode.count("+") > 1:
        raise ValueError(f"Must have exactly one of read/write/append mode and at most one plus: {mode}")


def _default_max_cached_blocks() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            count = int(f.read())
    except (OSError, ValueError):
        count = 65536
    return max(count // 16, 128)


class TensorBlob:
    """A file of same-shaped tensors (rows), memory-mapped, with a file-like
    cursor and list-like indexing.  Open one with :meth:`TensorBlob.open`::

        with TensorBlob.open("embeddings.blob", "w", dtype="float32", shape=768) as blob:
            blob.write(torch.randn(100_000, 768))
        with TensorBlob.open("embeddings.blob", "r") as blob:
            e = blob[42]

    Reads (``blob[i]``, slices, index lists, ``read``, iteration) return new
    tensors; :meth:`view` returns rows without copying.
    """

    def __init__(self, core: Any, filename: str, mode: str, max_cached_blocks: int, durability: str):
        # use TensorBlob.open
        self._core = core
        self._reader: Any = None  # a read-only handle for indexing after close()
        self.filename = filename
        self.mode = mode
        self.max_cached_blocks = max_cached_blocks
        self.durability = durability
        code, name, shape, row_bytes, block_size, _, _ = core.info()
        self.dtype: str = name
        self.shape: tuple[int, ...] = tuple(shape)
        self.block_size: int = block_size
        self._torch_dtype = _CODE_DTYPES[code]
        self._row_bytes = row_bytes
        self._readable = "r" in mode or "+" in mode
        self._writable = "w" in mode or "a" in mode or "+" in mode
        self._append = "a" in mode
        self._pos = core.length() if self._append else 0

    # ---- opening ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        filename: str | os.PathLike,
        mode: str = "r",
        *,
        dtype: str | torch.dtype | None = None,
        shape: int | tuple[int, ...] | None = None,
        block_size: int = 8192,
        max_cached_blocks: int | None = None,
        durability: str = "process",
    ) -> "TensorBlob":
        """Open or create a blob.

        Args:
            filename: The blob's file (``~`` expands; relative paths resolve
                against the working directory).
            mode: ``"r"`` read; ``"r+"`` read and write; ``"w"``/``"w+"``
                create, or empty an existing blob (keeping its dtype and
                shape); ``"a"``/``"a+"`` append to an existing blob (every
                write goes to the end).
            dtype: The rows' dtype (a name such as ``"float32"`` or a
                torch.dtype); needed only to create a blob.
            shape: The rows' shape (an int or a tuple; ``()`` for scalars);
                needed only to create a blob.
            block_size: Kept for tensorblob's API and stored in the file; it
                does not change the layout.  A positive int.
            max_cached_blocks: Kept for tensorblob's API (None: its default).
            durability: ``"process"`` (default): committed rows survive the
                process being killed.  ``"full"``: each commit is also
                flushed to the disk (msync + fdatasync before and after), so
                they survive a power loss; much slower for small writes.

        Raises:
            ValueError: A bad mode, a missing dtype or shape for a new blob,
                an unknown dtype, a block_size that is not a positive int.
            TypeError: dtype is neither a str nor a torch.dtype.
            FileNotFoundError: The blob is missing (``r``, ``r+``, ``a``,
                ``a+``).  ``w`` creates missing parent directories, as
                tensorblob does (OSError if one is a file).
            BlockingIOError: A writable open while another writer (in any
                process) has the blob open.
            CorruptBlobError: The file is not a blob this version reads.
        """
        _check_mode(mode)
        if durability not in _DURABILITY:
            raise ValueError(f"durability must be 'process' or 'full', got {durability!r}")
        path = Path(filename).expanduser().resolve()
        name = os.fspath(path)
        if max_cached_blocks is not None and max_cached_blocks < 0:
            raise ValueError(f"maxsize must be a positive integer, got {max_cached_blocks}!")
        cached = max_cached_blocks or _default_max_cached_blocks()
        writable = "r" not in mode or "+" in mode
        dur = _DURABILITY[durability]
        if not path.exists():
            if "r" in mode or "a" in mode:
                raise FileNotFoundError(f"Blob not found: {path!r}")
            core = cls._create(path, dtype, shape, block_size, dur)
        else:
            cls._refuse_directory(path)
            core = _core.Blob(name, writable, dur)
        if "w" in mode and core.length():
            core.truncate(0)
        return cls(core, name, mode, cached, durability)

    @staticmethod
    def _create(path: Path, dtype: Any, shape: Any, block_size: Any, dur: int) -> Any:
        if dtype is None or shape is None:
            raise ValueError(
                f"Arguments ``dtype`` and ``shape`` are required for new blob; got: {dtype!r} and {shape!r}"
            )
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).split(".")[-1]
        elif not isinstance(dtype, str):
            raise TypeError(f"dtype must be str or torch.dtype, got {type(dtype).__name__!r}")
        tdt = _torch_dtype(dtype)
        if tdt is None:
            names = ", ".join(sorted(_core.DTYPES))
            raise ValueError(f"Unknown dtype {dtype!r} for a blob; a torch dtype name such as {names}")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"A blob's row shape must be non-negative ints, got {shape!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        code = _core.DTYPES[str(tdt).split(".")[-1]]
        name = os.fspath(path)
        path.parent.mkdir(parents=True, exist_ok=True)  # as tensorblob does
        try:
            return _core.blob_create(name, code, dtype, shape, block_size, 0, dur)
        except FileExistsError:  # another process created it meanwhile: "w" empties it
            return _core.Blob(name, True, dur)

    @staticmethod
    def _refuse_directory(path: Path) -> None:
        if path.is_dir():
            if (path / ".conf").exists():
                raise CorruptBlobError(
                    f"{os.fspath(path)} is a tensorblob directory; this TensorBlob keeps a blob in one "
                    "file. Convert it with infinite_tensor.blob.from_tensorblob(src, dst)"
                )
            raise IsADirectoryError(21, "Is a directory (a blob is one file)", os.fspath(path))

    @classmethod
    def unlink(cls, filename: str | os.PathLike) -> bool:
        """Remove a blob file.  True when it is gone (or was never there);
        False, with one UserWarning, when it could not be removed or is not
        a blob (then it is left as it was)."""
        path = Path(filename).expanduser().resolve()
        if not path.exists():
            return True
        try:
            read_header(path)
            path.unlink()
        except (OSError, ValueError) as exc:
            warnings.warn(f"Failed to unlink blob at {path!r}: {exc}", UserWarning, stacklevel=2)
            return False
        return True

    # ---- state -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._core is None

    @property
    def config(self) -> dict[str, Any]:
        """What the file stores about its rows: dtype, shape and block_size."""
        return {"dtype": self.dtype, "shape": self.shape, "block_size": self.block_size}

    def get_config_json(self) -> str:
        return json.dumps({**self.config, "shape": list(self.shape)}, indent=2, sort_keys=True)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} rows, mode={self.mode!r}"
        return f"TensorBlob {self.get_config_json()} ({self.filename}, {state})"

    def _open_core(self) -> Any:
        if self._core is None:
            raise OSError("I/O operation on closed blob.")
        return self._core

    def _rows_core(self) -> Any:
        """The handle reads use: the blob's own, or after close() a read-only
        one (tensorblob lets a closed blob be indexed)."""
        if self._core is not None:
            return self._core
        if self._reader is None:
            self._reader = _core.Blob(self.filename, False, 0)
        return self._reader

    def _check_writable(self) -> Any:
        if not self._writable:
            raise OSError(f"Blob is not open for writing (mode='{self.mode}')")
        return self._open_core()

    def _check_readable(self) -> Any:
        if not self._readable:
            raise OSError(f"Blob is not open for reading (mode='{self.mode}')")
        return self._open_core()

    def __len__(self) -> int:
        return self._rows_core().length()

    def refresh(self) -> int:
        """The committed length now (a reader sees rows other processes
        committed; ``len()`` re-reads it as well)."""
        return len(self)

    def __enter__(self) -> "TensorBlob":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def flush(self) -> None:
        """Commits happen at every write; with durability "full" this also
        flushes everything to the disk."""
        core = self._check_writable()
        if self.durability == "full":
            core.sync()

    def close(self) -> None:
        """Close (idempotent).  Views from :meth:`view` stay valid."""
        if self._core is not None:
            self._core.close()
            self._core = None

    def __reduce__(self) -> tuple[Any, ...]:
        # by path: the copy opens the file read-only (one writer at a time)
        return (_reopen, (self.filename, self._pos, self.max_cached_blocks, self.durability))

    # ---- cursor ------------------------------------------------------------

    def tell(self) -> int:
        self._open_core()
        return self._pos

    def seek(self, pos: int = 0, whence: int = io.SEEK_SET) -> int:
        """Move the cursor; positions clamp to [0, len] (tensorblob's rule)."""
        self._open_core()
        if whence == io.SEEK_SET:
            target = pos
        elif whence == io.SEEK_CUR:
            target = self._pos + pos
        elif whence == io.SEEK_END:
            target = len(self) + pos
        else:
            raise ValueError(f"Invalid whence: {whence!r}")
        self._pos = max(min(target, len(self)), 0)
        return self._pos

    def read(self, size: int | None = None) -> torch.Tensor:
        """Rows from the cursor: ``size`` of them (None: to the end), fewer
        at the end; the cursor moves past them.  A negative size reads
        nothing and moves the cursor back (tensorblob's rule)."""
        self._check_readable()
        n = len(self)
        end = min(self._pos + (size if size is not None else n), n)
        rows = self[self._pos:end]
        self.seek(end)
        return rows

    def write(self, t: torch.Tensor) -> int:
        """Write rows at the cursor (at the end in append modes), overwriting
        or extending, and commit them; returns the number of rows.  ``t`` is
        one row or a batch: anything ``t.view(-1, *shape)`` takes (as in
        tensorblob, any tensor with a multiple of a row's elements)."""
        core = self._check_writable()
        if self._append:
            self._pos = core.length()
        rows = t.view(-1, *self.shape)
        if rows.dtype != self._torch_dtype:
            raise TypeError(f"Tensor dtype {rows.dtype} does not match blob dtype {self._torch_dtype}!")
        if rows.device.type != "cpu":
            rows = rows.cpu()
        core.write(self._pos, rows)
        self._pos += rows.shape[0]
        return rows.shape[0]

    def truncate(self, pos: int | None = None) -> int:
        """Cut the blob to ``pos`` rows (None: the cursor) and move the
        cursor there; never grows it (positions clamp, as in tensorblob)."""
        core = self._check_writable()
        if pos is not None and pos < 0:
            raise ValueError(f"Truncate position must be non-negative, got {pos}!")
        n = self.seek(pos if pos is not None else self._pos)
        if n < core.length():
            core.truncate(n)
        return n

    def extend(self, other: Any, maintain_order: bool = False) -> None:
        """Append every row of ``other`` (a blob of the same dtype and
        shape), in order.  ``maintain_order`` is accepted for tensorblob's
        API: rows always keep their order here.  ``extend(self)`` doubles
        the blob."""
        other_dtype = getattr(other, "dtype", None)
        if (
            not isinstance(other_dtype, str)
            or _torch_dtype(other_dtype) != self._torch_dtype
            or tuple(getattr(other, "shape", ())) != self.shape
        ):
            raise ValueError("Blob data types and shapes must match to extend blobs!")
        core = self._check_writable()
        n = len(other)  # a snapshot: extend(self) copies only what was there
        self._pos = core.length()
        step = max(1, _EXTEND_BYTES // max(self._row_bytes, 1))
        own = isinstance(other, TensorBlob)
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows = other._rows_core().view(start, stop) if own else other[start:stop]
            core.write(self._pos, rows)
            self._pos += stop - start

    # ---- indexing ----------------------------------------------------------

    def _empty(self) -> torch.Tensor:
        return torch.empty((0, *self.shape), dtype=self._torch_dtype)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        """``blob[i]`` (negative counts from the end), ``blob[a:b:c]`` (any
        step), ``blob[[i, j, ...]]`` (a list, tuple, tensor or array of
        ints; order and repeats kept).  Always a new tensor."""
        core = self._rows_core()
        if isinstance(idx, int):
            n = core.length()
            if not -n <= idx < n:
                raise IndexError(f"Index out of bounds: {idx!r} (length: {n})")
            return core.row(int(idx))
        if isinstance(idx, slice):
            r = range(*idx.indices(core.length()))
            return core.read(r.start, r.step, len(r)) if len(r) else self._empty()
        if isinstance(idx, (list, tuple, torch.Tensor)) or hasattr(idx, "__array__"):
            return self._gather(core, idx)
        raise TypeError(f"Index must be int, slice, or a sequence of int, got {type(idx).__name__!r}!")

    def _gather(self, core: Any, idx: Any) -> torch.Tensor:
        index = torch.as_tensor(idx)
        if index.numel() and (index.dtype == torch.bool or index.is_floating_point() or index.is_complex()):
            if isinstance(idx, torch.Tensor):
                got = f"dtype {idx.dtype}"
            else:
                try:
                    got = f"elements of type {type(idx[0]).__name__!r}"
                except (IndexError, TypeError):
                    got = f"dtype {index.dtype}"
            raise TypeError(f"Batch index must have an integer dtype, got {got}!")
        if index.ndim != 1:
            raise ValueError(f"Batch index must be 1-dimensional, got {index.ndim}!")
        if not index.numel():
            return self._empty()
        try:
            return core.gather(index.to(device="cpu", dtype=torch.int64).contiguous())
        except IndexError:
            raise IndexError(f"Index out of bounds (length: {core.length()})") from None

    def __getitems__(self, indices: Any) -> list[torch.Tensor]:
        """Rows for a batch of indices (what a DataLoader's fetcher asks a
        map-style dataset for): one gather, then one tensor per row."""
        return list(self._gather(self._rows_core(), list(indices)).unbind(0))

    def __iter__(self) -> Iterator[torch.Tensor]:
        # tensorblob's rule: from the cursor, moving it one row per item
        for i in range(self._pos, len(self)):
            self._pos += 1
            yield self[i]

    def rows(self, start: int = 0, stop: int | None = None, chunk: int = 1024) -> Iterator[torch.Tensor]:
        """Iterate over rows [start, stop) without moving the cursor, reading
        ``chunk`` rows at a time."""
        core = self._rows_core()
        end = core.length() if stop is None else min(stop, core.length())
        for a in range(max(start, 0), end, chunk):
            yield from core.read(a, 1, min(chunk, end - a)).unbind(0)

    def view(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) (None: to the end) without copying: a tensor
        over the file's mapping.  It stays valid after close() and while the
        blob grows.  Writing into it writes the file (read-only blobs:
        only this process's copy), without a commit.  After a truncation
        below its rows it reads zeros (or, once every handle of the file
        is closed and the file trimmed, must not be read)."""
        core = self._rows_core()
        n = core.length()
        return core.view(start, n if stop is None else stop)


def _reopen(filename: str, pos: int, max_cached_blocks: int, durability: str) -> TensorBlob:
    blob = TensorBlob.open(filename, "r", max_cached_blocks=max_cached_blocks, durability=durability)
    blob.seek(pos)
    return blob


# ---- the format, without the C core -------------------------------------

_MAGIC = b"\x89ITBLOB\n"


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """What a blob file's header says, read with plain Python (docs/blob.md
    has the layout): ``version``, ``offset`` (where row 0 starts),
    ``dtype`` (a torch dtype name as stored), ``shape`` (of one row),
    ``row_bytes``, ``block_size`` and ``length`` (committed rows).  With it,
    numpy reads a blob::

        h = read_header("x.blob")
        rows = np.memmap("x.blob", dtype=h["dtype"], mode="r", offset=h["offset"],
                         shape=(h["length"], *h["shape"]))

    (numpy has no bfloat16: read those as ``"uint16"``.)

    Raises:
        CorruptBlobError: The file is not a blob of a version this reads.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) < 4096 or head[:8] != _MAGIC:
        raise CorruptBlobError(f"{os.fspath(path)} is not a readable blob file: no blob header")
    if zlib.crc32(head[:216]) != struct.unpack_from("<I", head, 216)[0]:
        raise CorruptBlobError(f"{os.fspath(path)} is not a readable blob file: its header fails its checksum")
    version, offset, _, code = struct.unpack_from("<4I", head, 8)
    if version != 1:
        raise CorruptBlobError(f"{os.fspath(path)} is blob format version {version}; this reads version 1")
    name = head[24:56].rstrip(b"\0").decode("ascii")
    (ndim,) = struct.unpack_from("<I", head, 56)
    shape = struct.unpack_from(f"<{ndim}q", head, 64)
    row_bytes, block_size = struct.unpack_from("<2q", head, 192)
    best = None
    for at in (512, 1024):
        seq, length = struct.unpack_from("<Qq", head, at)
        if zlib.crc32(head[at:at + 16]) == struct.unpack_from("<I", head, at + 16)[0] and length >= 0:
            if best is None or seq > best[0]:
                best = (seq, length)
    if best is None:
        raise CorruptBlobError(f"{os.fspath(path)} is not a readable blob file: both commit records are damaged")
    canonical = next(k for k, v in _core.DTYPES.items() if v == code) if code in _core.DTYPES.values() else name
    return {
        "version": version,
        "offset": offset,
        "dtype": canonical,
        "shape": tuple(shape),
        "row_bytes": row_bytes,
        "block_size": block_size,
        "length": best[1],
    }


def from_tensorblob(src: str | os.PathLike, dst: str | os.PathLike) -> TensorBlob:
    """Copy a blob in tensorblob's directory format (``.conf``, ``.stat`` and
    block files) into a new blob file ``dst``, returned open in mode "a".
    Reads the directory with plain file reads: tensorblob need not be
    installed.

    Raises:
        FileExistsError: ``dst`` exists.
        FileNotFoundError: ``src`` lacks ``.conf`` or ``.stat``.
        ValueError: ``src`` holds a dtype a blob cannot store.
    """
    src = Path(src).expanduser()
    if os.path.exists(dst):
        raise FileExistsError(17, "from_tensorblob writes a new blob; the destination exists", os.fspath(dst))
    conf = json.loads((src / ".conf").read_text())
    stat = json.loads((src / ".stat").read_text())
    dtype, shape, bs = conf["dtype"], tuple(conf["shape"]), int(conf["block_size"])
    tdt = _torch_dtype(dtype)
    if tdt is None:
        raise ValueError(f"{os.fspath(src)} holds dtype {dtype!r}, which a blob cannot store")
    out = TensorBlob.open(dst, "w", dtype=dtype, shape=shape, block_size=bs)
    left = int(stat["len"])
    for block in stat["bds"]:
        if left <= 0:
            break
        n = min(bs, left)
        data = torch.from_file(os.fspath(src / block), size=bs * max(1, _numel(shape)), dtype=tdt)
        out.write(data.view(bs, *shape)[:n])
        left -= n
    out.close()
    return TensorBlob.open(dst, "a")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
