"""Helpers for tests/test_blob.py and tests/test_blob_crash.py.

BlobModel is an in-memory model of a tensorblob 0.3.0 TensorBlob: a Python
list of row tensors and a cursor, with tensorblob's semantics (the cursor
clamps to [0, len], read() slices like tensorblob's read() does, truncate()
moves the cursor, "a" seeks to the end before every write, iteration starts
at the cursor and advances it).  The functions below it run in other
processes (multiprocessing with "spawn" imports them from here by name).
"""

from __future__ import annotations

import io
import os
import random
import time
import traceback

import torch

DTYPES = {
    "float32": torch.float32,
    "int64": torch.int64,
    "bool": torch.bool,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "complex64": torch.complex64,
    "uint8": torch.uint8,
}


def rand_rows(gen: torch.Generator, n: int, shape, dtype: torch.dtype) -> torch.Tensor:
    """n random rows of `shape` (never NaN, so torch.equal compares them)."""
    size = (n, *shape)
    if dtype.is_complex:
        return torch.randn(size, generator=gen, dtype=dtype)
    if dtype.is_floating_point:
        return torch.randn(size, generator=gen).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, size, generator=gen).bool()
    if dtype == torch.uint8:
        return torch.randint(0, 256, size, generator=gen, dtype=torch.uint8)
    return torch.randint(-(2 ** 40), 2 ** 40, size, generator=gen, dtype=dtype)


def wrong_dtype_rows(n: int, shape, dtype: torch.dtype) -> torch.Tensor:
    """n rows of `shape` in a dtype that is not `dtype` (for write-with-wrong-dtype checks)."""
    return torch.zeros((n, *shape), dtype=torch.float64 if dtype != torch.float64 else torch.float32)


class BlobModel:
    """tensorblob 0.3.0's observable state: rows, cursor, mode."""

    def __init__(self, shape, dtype: torch.dtype):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.rows: list[torch.Tensor] = []
        self.pos = 0
        self.mode = "w"
        self.closed = False

    # -- mode ---------------------------------------------------------------
    def open(self, mode: str) -> None:
        self.mode = mode
        self.closed = False
        if mode[0] == "w":
            self.rows = []
        self.pos = len(self.rows) if mode[0] == "a" else 0

    @property
    def readable(self) -> bool:
        return self.mode[0] == "r" or "+" in self.mode

    @property
    def writable(self) -> bool:
        return self.mode[0] in "wa" or "+" in self.mode

    @property
    def appending(self) -> bool:
        return self.mode[0] == "a"

    # -- values -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def stack(self, rows) -> torch.Tensor:
        rows = list(rows)
        if not rows:
            return torch.empty((0, *self.shape), dtype=self.dtype)
        return torch.stack(rows)

    def gather(self, indices) -> torch.Tensor:
        return self.stack(self.rows[i] for i in indices)

    def slice(self, s: slice) -> torch.Tensor:
        return self.gather(range(*s.indices(len(self.rows))))

    # -- cursor ---------------------------------------------------------------
    def _clamp(self, p: int) -> int:
        return max(min(p, len(self.rows)), 0)

    def seek(self, pos: int = 0, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.rows)}[whence]
        self.pos = self._clamp(base + pos)
        return self.pos

    def read(self, size=None) -> torch.Tensor:
        n = len(self.rows)
        end = min(self.pos + (size if size is not None else n), n)
        out = self.stack(self.rows[self.pos:end])  # tensorblob: self[self._pos:end] (a Python slice)
        self.pos = self._clamp(end)
        return out

    def write(self, t: torch.Tensor) -> int:
        if self.appending:
            self.pos = len(self.rows)
        batch = t.reshape(-1, *self.shape)
        for r in batch:
            if self.pos < len(self.rows):
                self.rows[self.pos] = r.clone()
            else:
                self.rows.append(r.clone())
            self.pos += 1
        return batch.shape[0]

    def truncate(self, pos=None) -> int:
        self.pos = self._clamp(self.pos if pos is None else pos)
        del self.rows[self.pos:]
        return self.pos

    def extend(self, rows) -> None:
        self.rows.extend([r.clone() for r in rows])
        self.pos = len(self.rows)

    def take(self, k: int) -> list[torch.Tensor]:
        """What k steps of iter(blob) give (each step advances the cursor)."""
        out = self.rows[self.pos:self.pos + k]
        self.pos += len(out)
        return out


# -- rows whose value is their index (concurrency and crash tests) ---------------
ROW = 64


def index_rows(start: int, n: int, width: int = ROW) -> torch.Tensor:
    """Rows start..start+n-1 of a float32 blob of shape (width,): row i is all float(i)."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, width).contiguous()


def bad_rows(t: torch.Tensor, start: int = 0) -> list[int]:
    """Indices (relative to start) of rows of t that are not index rows."""
    want = index_rows(start, t.shape[0], t.shape[1])
    return (t != want).any(dim=1).nonzero().flatten().tolist()


def writer_proc(path, n_batches, seed, start, done, results):
    """Concurrency test: once `start` is set, empty the blob at path ("w")
    and append n_batches batches of index rows, slowly."""
    try:
        from infinite_tensor.blob import TensorBlob

        rng = random.Random(seed)
        start.wait(120)
        with TensorBlob.open(path, "w", dtype="float32", shape=(ROW,)) as b:
            i = 0
            for _ in range(n_batches):
                n = rng.randint(1, 40)
                assert b.write(index_rows(i, n)) == n
                i += n
                if rng.random() < 0.5:
                    time.sleep(rng.random() * 0.003)
        results.put(("writer", "ok", i))
    except BaseException:
        results.put(("writer", "error", traceback.format_exc()))
    finally:
        done.set()


def reader_proc(path, done, results, name):
    """Concurrency test: check len() and every row below it until the writer is done."""
    try:
        from infinite_tensor.blob import TensorBlob

        rng = random.Random(name)
        b = TensorBlob.open(path, "r")
        results.put((name, "ready", None))
        last, checks, lengths = 0, 0, set()
        while True:
            finished = done.is_set()
            n = len(b)
            assert n >= last, f"len went back from {last} to {n}"
            last = n
            lengths.add(n)
            got = b[:n]
            assert got.shape == (n, ROW), got.shape
            bad = bad_rows(got)
            assert not bad, f"rows {bad[:10]} of {n} are wrong: {got[bad[0], :4].tolist()}"
            if n:
                i = rng.randrange(n)
                assert torch.equal(b[i], index_rows(i, 1)[0]), i
                idx = [rng.randrange(n) for _ in range(5)]
                assert torch.equal(b[idx], torch.stack([index_rows(j, 1)[0] for j in idx])), idx
            try:  # a row past the length seen: IndexError, or (committed since) right
                row = b[n]
            except IndexError:
                pass
            else:
                assert torch.equal(row, index_rows(n, 1)[0]), ("row past the length has a wrong value", n)
            checks += 1
            if finished:
                break
        n = len(b)
        assert not bad_rows(b[:n])
        b.close()
        results.put((name, "ok", (checks, len(lengths), n)))
    except BaseException:
        results.put((name, "error", traceback.format_exc()))


class BlobRows(torch.utils.data.Dataset):
    """A map-style Dataset over a blob file, opened lazily in each process."""

    def __init__(self, path):
        self.path = path
        self._blob = None

    def _b(self):
        if self._blob is None:
            from infinite_tensor.blob import TensorBlob

            self._blob = TensorBlob.open(self.path, "r")
        return self._blob

    def __len__(self):
        return len(self._b())

    def __getitem__(self, i):
        return self._b()[i], os.getpid()

    def __getstate__(self):
        return {"path": self.path, "_blob": None}
