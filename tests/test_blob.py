"""infinite_tensor.blob.TensorBlob: tensorblob 0.3.0's API over one memory-
mapped file.

The main test runs seeded random sequences of operations on a blob and on
BlobModel (tests/blob_util.py: a list of row tensors and a cursor with
tensorblob's semantics) and compares every result, cursor and length, with a
second, read-only handle on the same file that must see every committed row.
The others check the file format (np.memmap through read_header), zero-copy
views, errors, a writer with reader processes, DataLoader workers, pickling,
export_crops and durability="full".
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from blob_util import (DTYPES, BlobModel, BlobRows, index_rows, rand_rows, reader_proc, writer_proc,
                       wrong_dtype_rows)
from infinite_tensor.blob import CorruptBlobError, TensorBlob, read_header
from persist_util import REPO_ROOT, child_env

CONTEXTS = [c for c in ("fork", "spawn") if c in multiprocessing.get_all_start_methods()]


def assert_rows(got, want, what=""):
    assert isinstance(got, torch.Tensor), (what, type(got))
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert tuple(got.shape) == tuple(want.shape), (what, tuple(got.shape), tuple(want.shape))
    assert torch.equal(got, want), (what, got, want)


# -- the model test -------------------------------------------------------------------
CASES = [
    (0, "float32", (3,)),
    (1, "int64", ()),
    (2, "bool", (2, 3)),
    (3, "bfloat16", (3,)),
    (4, "float16", (2, 3)),
    (5, "complex64", ()),
    (6, "uint8", (4,)),
    (7, "float32", (2, 3)),
    (8, "int64", (5,)),
    (9, "uint8", ()),
]
N_OPS = 300

OPS = {  # name: weight
    "write_row": 6, "write_batch": 10, "write_bad": 2, "seek": 8, "tell": 2, "read": 8, "len": 2,
    "int": 6, "slice": 8, "fancy": 8, "iter": 4, "truncate": 4, "extend": 3, "flush": 1, "reopen": 3,
    "rows": 2, "view": 3, "getitems": 2, "refresh": 1,
}


class ModelRun:
    def __init__(self, tmp_path, seed, dtype_name, shape):
        self.tmp_path = tmp_path
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype_name = dtype_name
        self.dtype = DTYPES[dtype_name]
        self.shape = tuple(shape)
        self.path = tmp_path / "model.blob"
        self.block_size = self.rng.choice([1, 3, 8192])
        self.m = BlobModel(self.shape, self.dtype)
        self.m.open("w")
        self.b = TensorBlob.open(self.path, "w", dtype=dtype_name, shape=self.shape, block_size=self.block_size)
        self.obs = TensorBlob.open(self.path, "r")  # a reader: sees every committed row
        self.history = []
        self.n_other = 0

    # -- helpers ---------------------------------------------------------------------
    def rows(self, n):
        return rand_rows(self.gen, n, self.shape, self.dtype)

    def rand_pos(self, slack=3):
        n = len(self.m)
        if self.rng.random() < 0.05:
            return self.rng.choice([-(10 ** 9), 10 ** 9])
        return self.rng.randint(-n - slack, n + slack)

    def check_state(self):
        b, m = self.b, self.m
        assert len(b) == len(m), ("len", len(b), len(m))
        assert len(self.obs) == len(m), ("len seen by a reader", len(self.obs), len(m))
        assert b.tell() == m.pos, ("tell", b.tell(), m.pos)

    def check_all(self):
        assert_rows(self.b[:], self.m.slice(slice(None)), "all rows")
        assert_rows(self.obs[:], self.m.slice(slice(None)), "all rows seen by a reader")

    # -- operations --------------------------------------------------------------------
    def op_write_row(self):
        t = self.rows(1)[0]  # exactly one row of `shape` (0-d for shape ())
        self.history[-1] += f" row at {self.m.pos}"
        if not self.m.writable:
            with pytest.raises(OSError):
                self.b.write(t)
            return
        want = self.m.write(t)
        assert self.b.write(t) == want == 1

    def op_write_batch(self):
        if self.rng.random() < 0.5:
            p = self.rng.randint(0, len(self.m))  # overwrite in the middle, or extend from there
            assert self.b.seek(p) == self.m.seek(p)
        n = self.rng.choice([0, 1, 2, 3, 5, 8])
        t = self.rows(n)
        if self.rng.random() < 0.3:
            t = t.reshape(-1)  # view(-1, *shape) reinterprets any multiple of the row size
        self.history[-1] += f" {n} rows at {self.m.pos} as {tuple(t.shape)}"
        if not self.m.writable:
            with pytest.raises(OSError):
                self.b.write(t)
            return
        want = self.m.write(t)
        assert self.b.write(t) == want == n

    def op_write_bad(self):
        if not self.m.writable or self.m.appending:  # "a" moves the cursor first: test_append_quirks
            return
        numel = int(np.prod(self.shape)) if self.shape else 1
        if numel > 1 and self.rng.random() < 0.5:
            t = self.rows(2).reshape(-1)[: 2 * numel - 1].clone()  # not a whole number of rows
            self.history[-1] += f" {tuple(t.shape)}"
            with pytest.raises(RuntimeError):
                self.b.write(t)
        else:
            t = wrong_dtype_rows(2, self.shape, self.dtype)
            self.history[-1] += f" {t.dtype}"
            with pytest.raises(TypeError):
                self.b.write(t)

    def op_seek(self):
        whence = self.rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END, None])
        pos = self.rand_pos()
        self.history[-1] += f" {pos} whence={whence}"
        if whence is None:
            want = self.m.seek(pos)
            got = self.b.seek(pos)
        else:
            want = self.m.seek(pos, whence)
            got = self.b.seek(pos, whence)
        assert got == want, ("seek returned", got, want)

    def op_tell(self):
        assert self.b.tell() == self.m.pos

    def op_read(self):
        p = self.m.pos
        size = self.rng.choice([None, 0, "pos", "pos", "neg"])
        if size == "pos":
            size = self.rng.randint(1, len(self.m) + 3)
        elif size == "neg":  # back from the cursor, not past row 0 (test_read_negative_past_the_start)
            size = -self.rng.randint(1, p) if p else 0
        self.history[-1] += f" size={size} at {p}"
        if not self.m.readable:
            with pytest.raises(OSError):
                self.b.read(size)
            return
        want = self.m.read(size)
        got = self.b.read(size) if size is not None else self.b.read()
        assert_rows(got, want, f"read({size}) at {p}")

    def op_len(self):
        assert len(self.b) == len(self.m)

    def op_int(self):
        n = len(self.m)
        i = self.rng.randint(-n - 2, n + 1)
        self.history[-1] += f" [{i}]"
        if -n <= i < n:
            assert_rows(self.b[i], self.m.rows[i], f"blob[{i}]")
        else:
            with pytest.raises(IndexError):
                self.b[i]

    def op_slice(self):
        n = len(self.m)

        def end():
            return None if self.rng.random() < 0.25 else self.rng.randint(-n - 3, n + 3)

        s = slice(end(), end(), self.rng.choice([None, 1, 1, 2, 3, 5, -1, -1, -2, -3]))
        self.history[-1] += f" [{s}]"
        assert_rows(self.b[s], self.m.slice(s), f"blob[{s}]")

    def op_fancy(self):
        n = len(self.m)
        k = self.rng.choice([0, 1, 2, 4, 7])
        idx = [self.rng.randint(-n, n - 1) for _ in range(k)] if n else []
        if idx and self.rng.random() < 0.5:
            idx += [idx[0], idx[-1]]  # duplicates
        bad = self.rng.random() < 0.1 or (n == 0 and self.rng.random() < 0.5)
        if bad:
            idx.insert(self.rng.randint(0, len(idx)), self.rng.choice([n, n + 3, -n - 1]))
        kind = self.rng.choice(["list", "tuple", "tensor", "tensor32", "ndarray", "ndarray32"])
        index = {
            "list": lambda: list(idx),
            "tuple": lambda: tuple(idx),
            "tensor": lambda: torch.tensor(idx, dtype=torch.int64),
            "tensor32": lambda: torch.tensor(idx, dtype=torch.int32),
            "ndarray": lambda: np.array(idx, dtype=np.int64),
            "ndarray32": lambda: np.array(idx, dtype=np.int32),
        }[kind]()
        self.history[-1] += f" {kind} {idx}"
        if bad:
            with pytest.raises(IndexError):
                self.b[index]
        else:
            assert_rows(self.b[index], self.m.gather([i % n for i in idx]), f"blob[{kind} {idx}]")

    def op_iter(self):
        left = len(self.m) - self.m.pos
        if self.rng.random() < 0.4:
            got = list(self.b)
            want = self.m.take(left)
        else:
            k = self.rng.randint(0, left + 2)
            got = list(itertools.islice(iter(self.b), k))
            want = self.m.take(k)
        assert len(got) == len(want), ("iteration gave", len(got), "rows, want", len(want))
        for j, (g, w) in enumerate(zip(got, want)):
            assert_rows(g, w, f"iterated row {j}")

    def op_truncate(self):
        r = self.rng.random()
        pos = None if r < 0.3 else self.rng.randint(0, len(self.m) + 3)
        if self.m.writable and r > 0.95:
            with pytest.raises(ValueError):
                self.b.truncate(-self.rng.randint(1, 3))
            return
        self.history[-1] += f" {pos} (cursor {self.m.pos})"
        if not self.m.writable:
            with pytest.raises(OSError):
                self.b.truncate(pos)
            return
        want = self.m.truncate(pos)
        got = self.b.truncate() if pos is None else self.b.truncate(pos)
        assert got == want, ("truncate returned", got, want)

    def op_extend(self):
        order = self.rng.choice([False, True])
        if self.rng.random() < 0.3:
            self.history[-1] += f" self (len {len(self.m)}) maintain_order={order}"
            if not self.m.writable:
                with pytest.raises(OSError):
                    self.b.extend(self.b, maintain_order=order)
                return
            self.b.extend(self.b, maintain_order=order)
            self.m.extend(list(self.m.rows))
            return
        k = self.rng.choice([0, 1, 2, 5, 9])
        t = self.rows(k)
        self.n_other += 1
        opath = self.tmp_path / f"other{self.n_other}.blob"
        o = TensorBlob.open(opath, "w+", dtype=self.dtype, shape=self.shape,
                            block_size=self.rng.choice([1, 2, 8192]))
        o.write(t)
        if self.rng.random() < 0.5:
            o.close()
            o = TensorBlob.open(opath, "r")
        self.history[-1] += f" {k} rows from a {o.mode!r} blob, maintain_order={order}"
        try:
            if not self.m.writable:
                with pytest.raises(OSError):
                    self.b.extend(o, maintain_order=order)
                return
            self.b.extend(o, maintain_order=order)
            self.m.extend(list(t))
            assert len(o) == k
        finally:
            o.close()
        assert TensorBlob.unlink(opath) is True
        assert not opath.exists()

    def op_flush(self):
        if self.m.writable:
            self.b.flush()
        else:
            with pytest.raises(OSError):
                self.b.flush()

    def op_reopen(self):
        b = self.b
        b.close()
        assert b.closed
        b.close()  # idempotent
        for name, call in [("tell", b.tell), ("seek", lambda: b.seek(0)), ("read", b.read),
                           ("write", lambda: b.write(self.rows(1))), ("truncate", lambda: b.truncate(0)),
                           ("flush", b.flush)]:
            with pytest.raises(OSError):
                call()
                raise AssertionError(f"{name} on a closed blob did not raise")
        mode = self.rng.choice(["a", "a", "r+", "r+", "r", "r", "a+", "w+", "w"])
        self.history[-1] += f" as {mode!r}"
        self.b = TensorBlob.open(self.path, mode)
        self.m.open(mode)
        assert self.b.mode == mode and not self.b.closed
        assert self.b.dtype == self.dtype_name and self.b.shape == self.shape
        assert self.b.block_size == self.block_size
        assert self.b.filename == str(self.path.resolve())

    def op_rows(self):
        if not self.m.readable:  # a new method: write-only modes may refuse it
            return
        s = self.rng.randint(0, len(self.m))
        got = list(self.b.rows(s))
        want = self.m.rows[s:]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_rows(g, w, f"rows({s})")

    def op_view(self):
        if not self.m.readable:
            return
        n = len(self.m)
        if self.rng.random() < 0.2:
            got, want = self.b.view(), self.m.slice(slice(None))
        else:
            s = self.rng.randint(0, n)
            e = self.rng.randint(s, n)
            got, want = self.b.view(s, e), self.m.gather(range(s, e))
            self.history[-1] += f" ({s}, {e})"
        assert_rows(got, want, "view")

    def op_getitems(self):
        n = len(self.m)
        idx = [self.rng.randrange(n) for _ in range(self.rng.randint(0, 6))] if n else []
        got = self.b.__getitems__(idx)
        assert len(got) == len(idx)
        for i, g in zip(idx, got):
            assert_rows(g, self.m.rows[i], f"__getitems__ row {i}")

    def op_refresh(self):
        assert self.b.refresh() == len(self.m)

    # -- driver ---------------------------------------------------------------------
    def run(self, n_ops):
        names = list(OPS)
        weights = [OPS[k] for k in names]
        for step in range(n_ops):
            name = self.rng.choices(names, weights)[0]
            self.history.append(f"{step}: {name} [mode {self.m.mode!r}, len {len(self.m)}, cursor {self.m.pos}]")
            try:
                getattr(self, "op_" + name)()
                self.check_state()
                if step % 20 == 0 or name in ("truncate", "extend", "reopen"):
                    self.check_all()
            except Exception as e:
                raise AssertionError("after the operations\n  " + "\n  ".join(self.history[-15:]) +
                                     f"\n{type(e).__name__}: {e}") from e
        self.check_all()
        self.b.close()
        self.obs.close()
        with TensorBlob.open(self.path, "r") as b:
            assert_rows(b.read(), self.m.slice(slice(None)), "read back")
        h = read_header(self.path)
        assert h["length"] == len(self.m)


@pytest.mark.parametrize("seed,dtype_name,shape", CASES, ids=[f"{d}-{s}-{n}" for n, d, s in CASES])
def test_random_operations_match_the_model(tmp_path, seed, dtype_name, shape):
    ModelRun(tmp_path, seed, dtype_name, shape).run(N_OPS)


# -- tensorblob's quirks, one by one ------------------------------------------------------
def test_read_negative_past_the_start(tmp_path):
    """tensorblob's read(size) slices [cursor:min(cursor + size, len)]: a
    negative end counts from the end like a Python slice; the cursor clamps to 0."""
    with TensorBlob.open(tmp_path / "b", "w+", dtype="int64", shape=()) as b:
        b.write(torch.arange(10))
        m = BlobModel((), torch.int64)
        m.open("w+")
        m.write(torch.arange(10))
        for pos, size in [(5, -2), (5, -5), (2, -5), (0, -1), (9, -20), (3, None), (3, 0), (3, 100)]:
            b.seek(pos)
            m.seek(pos)
            assert_rows(b.read(size), m.read(size), f"read({size}) at {pos}")
            assert b.tell() == m.pos, (pos, size, b.tell(), m.pos)


def test_append_quirks(tmp_path):
    """"a": writes go to the end whatever the cursor; tensorblob moves the
    cursor there before it checks the tensor, so a refused write leaves it at the end."""
    p = tmp_path / "b"
    with TensorBlob.open(p, "w", dtype="float32", shape=(2,)) as b:
        b.write(torch.zeros(4, 2))
    with TensorBlob.open(p, "a") as b:
        assert b.tell() == 4
        assert b.seek(1) == 1
        assert b.write(torch.ones(1, 2)) == 1
        assert b.tell() == 5 and len(b) == 5
        assert torch.equal(b[1], torch.zeros(2)) and torch.equal(b[4], torch.ones(2))
        with pytest.raises(OSError):
            b.read()  # "a" does not read
        b.seek(0)
        with pytest.raises(TypeError):
            b.write(torch.ones(1, 2, dtype=torch.float64))
        assert len(b) == 5 and b.tell() == 5


def test_tensorblob_read_write_semantics(tmp_path):
    p = tmp_path / "b"
    with TensorBlob.open(p, "w", dtype=torch.float32, shape=(2, 3)) as b:
        assert b.dtype == "float32" and b.shape == (2, 3)
        assert b.write(torch.arange(12, dtype=torch.float32)) == 2  # 12 flat elements: two (2, 3) rows
        assert b.tell() == 2 and len(b) == 2
        with pytest.raises(OSError):
            b.read()  # "w" does not read
        assert_rows(b[1], torch.arange(6, 12, dtype=torch.float32).reshape(2, 3))
        assert b.seek(200) == 2 and b.seek(-5, io.SEEK_CUR) == 0 and b.seek(-1, io.SEEK_END) == 1
        with pytest.raises(ValueError):
            b.seek(0, 7)
    with TensorBlob.open(p, "r") as b:
        assert list(b) != [] and list(b) == []  # iteration starts at the cursor and moves it
        assert b.tell() == 2
        b.seek(0)
        assert_rows(b.read(0), torch.empty(0, 2, 3))
        assert len(b.read(1)) == 1 and b.tell() == 1
    with TensorBlob.open(p, "r+") as b:
        b.seek(1)
        assert b.truncate(10) == 2  # past the end: no-op (no growth), the cursor moves to the (clamped) pos
        assert len(b) == 2 and b.tell() == 2
        b.seek(1)
        assert b.truncate() == 1 and len(b) == 1 and b.tell() == 1
    with TensorBlob.open(p, "w") as b:  # "w" on an existing blob empties it and keeps its dtype and shape
        assert len(b) == 0 and b.dtype == "float32" and b.shape == (2, 3)
    with TensorBlob.open(tmp_path / "s", "w", dtype="int64", shape=4) as b:
        assert b.shape == (4,)
        b.write(torch.arange(8))
        assert_rows(b[True], torch.arange(4, 8))  # a bool is an int
        assert_rows(b[[]], torch.empty(0, 4, dtype=torch.int64))
        assert_rows(b[5:1], torch.empty(0, 4, dtype=torch.int64))
        assert_rows(b[np.array([], dtype=np.int64)], torch.empty(0, 4, dtype=torch.int64))


def test_indexing_errors(tmp_path):
    with TensorBlob.open(tmp_path / "b", "w", dtype="int64", shape=(2,)) as b:
        b.write(torch.arange(10))
        with pytest.raises(IndexError):
            b[5]
        with pytest.raises(IndexError):
            b[-6]
        with pytest.raises(IndexError):
            b[[0, 5]]
        with pytest.raises(ValueError):
            b[torch.tensor(1)]  # 0-d: "1-dimensional"
        with pytest.raises(ValueError):
            b[torch.tensor([[0, 1]])]
        with pytest.raises(TypeError):
            b[[0.5, 1.0]]
        with pytest.raises(TypeError):
            b[torch.tensor([True, False])]
        with pytest.raises(TypeError):
            b[1.5]
        with pytest.raises(TypeError):
            b["0"]


def test_indexing_after_close_still_works(tmp_path):
    """tensorblob checks neither mode nor closure when indexing."""
    p = tmp_path / "b"
    b = TensorBlob.open(p, "w", dtype="float32", shape=(3,))
    b.write(torch.ones(4, 3))
    b.close()
    assert_rows(b[2], torch.ones(3))
    assert_rows(b[1:3], torch.ones(2, 3))
    assert_rows(b[[0, 0]], torch.ones(2, 3))


def test_attributes_and_unlink(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with TensorBlob.open("sub/../x.blob", "w", dtype=torch.int64, shape=[2, 2], block_size=7) as b:
        assert b.filename == str((tmp_path / "x.blob").resolve())
        assert isinstance(b.filename, str)
        assert b.dtype == "int64" and b.shape == (2, 2) and b.block_size == 7 and b.mode == "w"
        assert b.config["dtype"] == "int64" and tuple(b.config["shape"]) == (2, 2)
        assert b.max_cached_blocks  # a falsy value means tensorblob's default
        assert b.durability == "process"
        assert not b.closed
    assert b.closed
    with TensorBlob.open(tmp_path / "x.blob") as b:  # default mode "r"
        assert b.mode == "r" and b.block_size == 7
    assert TensorBlob.unlink(tmp_path / "x.blob") is True
    assert not (tmp_path / "x.blob").exists()
    assert TensorBlob.unlink(tmp_path / "x.blob") is True  # missing: True


def test_extend_checks_dtype_and_shape(tmp_path):
    with TensorBlob.open(tmp_path / "a", "w", dtype="float32", shape=(3,)) as a, \
            TensorBlob.open(tmp_path / "b", "w", dtype="float32", shape=(4,)) as b, \
            TensorBlob.open(tmp_path / "c", "w", dtype="float64", shape=(3,)) as c:
        a.write(torch.ones(2, 3))
        for other in (b, c):
            with pytest.raises(ValueError):
                a.extend(other)
        assert len(a) == 2
    with TensorBlob.open(tmp_path / "a", "r") as a, TensorBlob.open(tmp_path / "d", "w", dtype="float32",
                                                                     shape=(3,)) as d:
        with pytest.raises(ValueError):
            a.extend(b)  # the dtype/shape check comes first
        with pytest.raises(OSError):
            a.extend(d)
        d.write(torch.zeros(1, 3))
        d.extend(a, maintain_order=False)  # order kept, whatever maintain_order says
        d.extend(d)
        want = torch.cat([torch.zeros(1, 3), torch.ones(2, 3)])
        assert_rows(d[:], torch.cat([want, want]))
        assert d.tell() == 6


# -- the file ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", [(), (2, 3)])
def test_np_memmap_reads_the_file(tmp_path, dtype_name, shape):
    p = tmp_path / "b.blob"
    dtype = DTYPES[dtype_name]
    t = rand_rows(torch.Generator().manual_seed(3), 7, shape, dtype)
    with TensorBlob.open(p, "w", dtype=dtype_name, shape=shape) as b:
        b.write(t)
        b.seek(2)
        b.truncate()
        b.write(t[2:6])  # 6 rows
    h = read_header(p)
    assert h["offset"] == 4096 and h["dtype"] == dtype_name and tuple(h["shape"]) == shape
    assert h["length"] == 6 and h["block_size"] == 8192
    assert h["row_bytes"] == t[0].numel() * t.element_size()
    assert isinstance(h["version"], int)
    np_dtype = np.uint16 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
    arr = np.memmap(p, dtype=np_dtype, mode="r", offset=h["offset"], shape=(h["length"], *h["shape"]))
    want = t[:6].contiguous()
    raw = want.view(torch.int16) if dtype == torch.bfloat16 else want
    assert arr.tobytes() == raw.numpy().tobytes()
    if dtype != torch.bfloat16:
        assert torch.equal(torch.from_numpy(np.array(arr)), want)
    assert os.path.getsize(p) >= 4096 + 6 * h["row_bytes"]
    del arr


def _mapping_of(addr, path):
    """(start, end, file offset) of this process's mapping of the file at
    path (matched by device and inode: the name a mapping shows may be one
    the file had when it was mapped) holding addr, or None."""
    st = os.stat(path)
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) < 5:
                continue
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            if int(parts[4]) != st.st_ino or os.makedev(major, minor) != st.st_dev:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return lo, hi, int(parts[2], 16)
    return None


def test_view_is_zero_copy_and_outlives_close(tmp_path):
    p = tmp_path / "b.blob"
    b = TensorBlob.open(p, "w+", dtype="float32", shape=(4,))
    b.write(index_rows(0, 10, 4))
    v = b.view(2, 6)
    assert_rows(v, index_rows(2, 4, 4))
    m = _mapping_of(v.data_ptr(), p)
    assert m is not None, "view() is not inside a mapping of the blob file"
    lo, hi, off = m
    assert off + (v.data_ptr() - lo) == 4096 + 2 * 16, "view(2, 6) does not start at row 2 of the file"
    assert v.data_ptr() + v.numel() * 4 <= hi
    b.seek(3)
    b.write(torch.full((2, 4), 99.0))  # rows 3, 4 through the blob
    assert torch.equal(v[1:3], torch.full((2, 4), 99.0)), "a write through the blob is not seen by a view"
    b.seek(0, io.SEEK_END)
    b.write(index_rows(10, 3000, 4))  # growth (may remap): the old view still holds
    assert torch.equal(v[0], index_rows(2, 1, 4)[0])
    whole = b.view()
    assert whole.shape == (3010, 4)
    assert torch.equal(whole[5:], torch.cat([index_rows(5, 5, 4), index_rows(10, 3000, 4)]))
    c = b[2]  # a copy
    c.fill_(-1)
    assert torch.equal(b[2], index_rows(2, 1, 4)[0])
    sl = b[2:4]
    sl.fill_(-1)
    fancy = b[[2, 2]]
    fancy.fill_(-1)
    assert torch.equal(b[2], index_rows(2, 1, 4)[0]) and torch.equal(v[0], index_rows(2, 1, 4)[0])
    b.close()
    assert torch.equal(v, torch.cat([index_rows(2, 1, 4), torch.full((2, 4), 99.0), index_rows(5, 1, 4)]))
    assert whole[3009, 0].item() == 3009.0
    with TensorBlob.open(p, "r") as r:
        rv = r.view(2, 6)  # a reader's view
        assert torch.equal(rv, v)
    assert torch.equal(rv, v)
    del v, whole, rv


def test_a_live_view_does_not_keep_the_blob_locked_after_close(tmp_path):
    """close() ends the writer: another writer may open while views of the
    closed blob live on (and they see what it writes)."""
    p = tmp_path / "b.blob"
    b = TensorBlob.open(p, "w", dtype="float32", shape=(4,))
    b.write(index_rows(0, 10, 4))
    v = b.view(2, 6)
    b.close()
    with TensorBlob.open(p, "r+") as b2:
        b2.seek(5)
        b2.write(torch.full((1, 4), 7.0))
    assert torch.equal(v[3], torch.full((4,), 7.0))
    assert torch.equal(v[:3], index_rows(2, 3, 4))
    del v


def test_a_live_view_keeps_its_rows_in_the_file(tmp_path):
    """A writer that truncates and closes trims the file only when no
    other open, or view of a closed one, still maps rows past its end."""
    p = tmp_path / "b.blob"
    with TensorBlob.open(p, "w", dtype="float32", shape=(4,)) as b:
        b.write(index_rows(0, 1000, 4))
    reader = TensorBlob.open(p, "r")
    v = reader.view(0, 1000)
    reader.close()
    with TensorBlob.open(p, "r+") as w:
        w.truncate(10)
    assert os.path.getsize(p) >= 4096 + 1000 * 16  # not trimmed: touching v[999] would fault
    assert torch.equal(v[:10], index_rows(0, 10, 4))
    v[999].sum()  # readable (the rows past the truncation read as holes or old data)
    del v
    with TensorBlob.open(p, "r+") as w:
        assert len(w) == 10
    assert os.path.getsize(p) == 4096 + 10 * 16  # the last close trims


def test_rows_does_not_move_the_cursor(tmp_path):
    with TensorBlob.open(tmp_path / "b", "w+", dtype="int64", shape=()) as b:
        b.write(torch.arange(5))
        b.seek(2)
        assert [int(r) for r in b.rows()] == [0, 1, 2, 3, 4]
        assert [int(r) for r in b.rows(3)] == [3, 4]
        assert b.tell() == 2
        assert b.refresh() == 5


# -- bad input ---------------------------------------------------------------------
def test_write_errors_commit_nothing(tmp_path):
    p = tmp_path / "b"
    with TensorBlob.open(p, "w", dtype="float32", shape=(3,)) as b:
        b.write(torch.ones(2, 3))
        with pytest.raises(TypeError):
            b.write(torch.zeros(2, 3, dtype=torch.float64))
        with pytest.raises(TypeError):
            b.write(torch.zeros(2, 3, dtype=torch.int32))
        with pytest.raises(RuntimeError):
            b.write(torch.zeros(4))
        with pytest.raises(RuntimeError):
            b.write(torch.zeros(2, 3).t())  # (3, 2), strides (1, 3): view(-1, 3) cannot flatten it
        assert len(b) == 2 and b.tell() == 2
        assert read_header(p)["length"] == 2
    with TensorBlob.open(p, "r") as b:
        with pytest.raises(OSError):
            b.write(torch.ones(1, 3))
        with pytest.raises(OSError):
            b.truncate(0)
        with pytest.raises(OSError):
            b.flush()
        assert len(b) == 2
    with TensorBlob.open(p, "r+") as b:
        with pytest.raises(ValueError):
            b.truncate(-1)
        assert len(b) == 2


@pytest.mark.parametrize("mode", ["x", "+", "rw", "r++", "rr", "rb", "rt", "", "wa", "ab", "w+a"])
def test_invalid_modes(tmp_path, mode):
    p = tmp_path / "b"
    with pytest.raises(ValueError):
        TensorBlob.open(p, mode, dtype="float32", shape=(3,))
    assert not p.exists()


@pytest.mark.parametrize("mode", ["r", "r+", "a", "a+"])
def test_missing_file(tmp_path, mode):
    with pytest.raises(FileNotFoundError, match="Blob not found"):
        TensorBlob.open(tmp_path / "nope", mode)
    assert not (tmp_path / "nope").exists()


def test_new_blob_needs_dtype_shape_and_a_place_for_its_folder(tmp_path):
    # missing folders are made (as tensorblob makes its directory's parents)
    with TensorBlob.open(tmp_path / "new" / "dir" / "b", "w", dtype="float32", shape=(3,)) as b:
        b.write(index_rows(0, 2, 3))
    assert len(TensorBlob.open(tmp_path / "new" / "dir" / "b", "r")) == 2
    # ... but not through a file, nor for a bad configuration
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OSError):
        TensorBlob.open(tmp_path / "file" / "b", "w", dtype="float32", shape=(3,))
    with pytest.raises(ValueError):
        TensorBlob.open(tmp_path / "other" / "b", "w", dtype="float32")
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError):
        TensorBlob.open(tmp_path / "b", "w", shape=(3,))
    with pytest.raises(ValueError):
        TensorBlob.open(tmp_path / "b", "w", dtype="float32")
    with pytest.raises(TypeError):
        TensorBlob.open(tmp_path / "b", "w", dtype=3, shape=(3,))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kw", [dict(dtype="float33"), dict(dtype="notadtype"), dict(dtype=""),
                                dict(block_size=0), dict(block_size=-4)])
def test_bad_configuration_creates_nothing(tmp_path, kw):
    args = dict(dtype="float32", shape=(3,))
    args.update(kw)
    with pytest.raises(ValueError):
        TensorBlob.open(tmp_path / "b", "w", **args)
    assert os.listdir(tmp_path) == []


def _valid_blob(p, n=5):
    with TensorBlob.open(p, "w", dtype="float32", shape=(3,)) as b:
        b.write(index_rows(0, n, 3))
    return p.read_bytes()


def _foreign(tmp_path):
    """{name: path} of files that are not blobs."""
    out = {}
    rnd = random.Random(5)
    out["random"] = tmp_path / "random"
    out["random"].write_bytes(bytes(rnd.getrandbits(8) for _ in range(8192)))
    out["empty"] = tmp_path / "empty"
    out["empty"].write_bytes(b"")
    out["text"] = tmp_path / "text"
    out["text"].write_text("hello\n" * 1000)
    good = _valid_blob(tmp_path / "good")
    for cut in (16, 100, 4095):
        out[f"header cut at {cut}"] = tmp_path / f"cut{cut}"
        out[f"header cut at {cut}"].write_bytes(good[:cut])
    bad = bytearray(good)
    bad[0] ^= 0x01  # the magic
    out["flipped magic"] = tmp_path / "magic"
    out["flipped magic"].write_bytes(bytes(bad))
    at = good.find(b"float32")
    assert 0 < at < 4096, "the dtype name is not in the header"
    bad = bytearray(good)
    bad[at + 5] ^= 0x01  # "float32" -> "float22": a checksummed superblock byte
    out["flipped dtype byte"] = tmp_path / "dtypebyte"
    out["flipped dtype byte"].write_bytes(bytes(bad))
    return out


@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_foreign_files_are_corrupt_blobs(tmp_path, mode):
    assert issubclass(CorruptBlobError, OSError) and issubclass(CorruptBlobError, ValueError)
    for name, path in _foreign(tmp_path).items():
        before = path.read_bytes()
        with pytest.raises(CorruptBlobError):
            TensorBlob.open(path, mode)
            raise AssertionError(f"{name} opened as a blob")
        with pytest.raises(CorruptBlobError):
            read_header(path)
        assert path.read_bytes() == before, f"{name}: a refused open changed the file"


def test_a_file_shorter_than_its_length_does_not_crash(tmp_path):
    """The header says 5 rows, the file holds 2: a clean error, never SIGBUS."""
    p = tmp_path / "short"
    good = _valid_blob(p)
    p.write_bytes(good[:4096 + 2 * 12])
    code = r"""
import sys, torch
from infinite_tensor.blob import TensorBlob, CorruptBlobError
try:
    b = TensorBlob.open(sys.argv[1], "r")
except CorruptBlobError:
    print("corrupt"); sys.exit(0)
try:
    print(len(b), b[:].tolist(), b[4].tolist())
except OSError as e:
    print("oserror", type(e).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(p)], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.split()[0] in ("corrupt", "oserror"), proc.stdout


SECOND_WRITER = r"""
import sys
from infinite_tensor.blob import TensorBlob
for mode in ("a", "r+", "w", "a+", "w+"):
    try:
        TensorBlob.open(sys.argv[1], mode).close()
        print(mode, "opened")
    except Exception as e:
        print(mode, type(e).__name__)
with TensorBlob.open(sys.argv[1], "r") as b:
    print("r", len(b))
"""


def test_second_writer_is_refused_readers_are_not(tmp_path):
    p = tmp_path / "b"
    w = TensorBlob.open(p, "w", dtype="float32", shape=(3,))
    w.write(torch.ones(4, 3))
    for mode in ("a", "r+", "w", "a+", "w+"):
        with pytest.raises(BlockingIOError):
            TensorBlob.open(p, mode)
            raise AssertionError(f"a second writer ({mode!r}) opened in the same process")
    assert len(w) == 4 and read_header(p)["length"] == 4  # the refused "w" emptied nothing
    with TensorBlob.open(p, "r") as r:
        assert len(r) == 4
        proc = subprocess.run([sys.executable, "-c", SECOND_WRITER, str(p)], cwd=REPO_ROOT, env=child_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[:6] == ["a BlockingIOError", "r+ BlockingIOError", "w BlockingIOError",
                                               "a+ BlockingIOError", "w+ BlockingIOError", "r 4"], proc.stdout
        w.write(torch.ones(1, 3))
        assert len(r) == 5
    w.close()
    with TensorBlob.open(p, "a") as w2:  # free again
        w2.write(torch.ones(1, 3))
    assert read_header(p)["length"] == 6


# -- processes ---------------------------------------------------------------------
def test_a_writer_and_two_reader_processes(tmp_path):
    """Readers check len() and every row below it while a writer appends:
    they never see a wrong row, and see the length grow."""
    p = str(tmp_path / "b.blob")
    ctx = multiprocessing.get_context("spawn")
    with TensorBlob.open(p, "w", dtype="float32", shape=(64,)):
        pass
    start, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=reader_proc, args=(p, done, results, f"reader{k}")) for k in range(2)]
    procs.append(ctx.Process(target=writer_proc, args=(p, 400, 7, start, done, results)))
    for proc in procs:
        proc.start()
    got = {}
    try:
        ready = 0
        while len(got) < 3:
            name, status, value = results.get(timeout=180)
            if status == "ready":
                ready += 1
                if ready == 2:
                    start.set()
                continue
            assert status == "ok", f"{name}:\n{value}"
            got[name] = value
    finally:
        start.set()
        done.set()
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    total = got["writer"]
    for k in range(2):
        checks, distinct, final = got[f"reader{k}"]
        assert final == total
    assert max(got[f"reader{k}"][1] for k in range(2)) >= 3, ("the readers saw no append happen", got)
    with TensorBlob.open(p, "r") as b:
        assert len(b) == total and torch.equal(b[:], index_rows(0, total))


def _fork_check(child):
    """Run child() in a forked process; return what it printed (it must exit 0)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            out = child()
            os.write(w, str(out).encode())
            code = 0
        except BaseException as e:
            os.write(w, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        c = os.read(r, 65536)
        if not c:
            break
        chunks.append(c)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


def test_a_forked_child_reads_but_cannot_write(tmp_path):
    p = tmp_path / "b"
    b = TensorBlob.open(p, "w+", dtype="float32", shape=(64,))
    b.write(index_rows(0, 50))

    def child():
        assert len(b) == 50 and torch.equal(b[:], index_rows(0, 50))
        try:
            b.write(index_rows(50, 1))
        except OSError as e:
            return f"refused {type(e).__name__}"
        return "wrote"

    assert _fork_check(child).startswith("refused")
    assert len(b) == 50
    b.write(index_rows(50, 5))
    assert torch.equal(b[:], index_rows(0, 55))
    b.close()


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("how", ["blob-batched", "blob-rows", "wrapper"])
def test_dataloader_workers(tmp_path, context, how):
    p = tmp_path / "b.blob"
    with TensorBlob.open(p, "w", dtype="float32", shape=(64,)) as w:
        w.write(index_rows(0, 103))
    b = TensorBlob.open(p, "r")
    kw = dict(num_workers=2, multiprocessing_context=context)
    if how == "blob-batched":  # __getitems__ gives a list of rows; default_collate stacks them
        got = torch.cat(list(torch.utils.data.DataLoader(b, batch_size=8, **kw)))
    elif how == "blob-rows":
        got = torch.stack(list(torch.utils.data.DataLoader(b, batch_size=None, **kw)))
    else:
        loader = torch.utils.data.DataLoader(BlobRows(str(p)), batch_size=5, shuffle=True,
                                             generator=torch.Generator().manual_seed(1), **kw)
        got = torch.cat([rows for rows, _ in loader])
        got = got[got[:, 0].argsort()]
    assert torch.equal(got, index_rows(0, 103))
    b.close()


def test_pickle_round_trip(tmp_path):
    p = tmp_path / "b.blob"
    b = TensorBlob.open(p, "w+", dtype="int64", shape=(2,))
    b.write(torch.arange(20))
    b.seek(4)
    c = pickle.loads(pickle.dumps(b))
    try:
        assert c.mode == "r" and c.tell() == 4 and c.filename == b.filename
        assert c.dtype == "int64" and c.shape == (2,)
        assert torch.equal(c[:], b[:])
        assert torch.equal(c.read(), torch.arange(8, 20).reshape(6, 2))
        with pytest.raises(OSError):
            c.write(torch.zeros(1, 2, dtype=torch.int64))
        b.write(torch.zeros(3, 2, dtype=torch.int64))  # the original still writes; the copy sees it
        assert len(c) == 10
        assert b.tell() == 7
    finally:
        c.close()
        b.close()


# -- export_crops -------------------------------------------------------------------
def _crop_f(calls):
    def f(ctx):
        calls.append(tuple(ctx))
        i, j = ctx
        g = torch.Generator().manual_seed((i * 1_000_003 + j * 7_919 + 5) & 0x7FFFFFFF)
        return torch.randint(0, 16, (8, 8), generator=g).to(torch.float32)
    return f


def _crop_tensor(calls):
    from infinite_tensor import InfiniteTensor, TensorWindow

    return InfiniteTensor((None, None), _crop_f(calls), TensorWindow((8, 8), stride=(4, 4)))


def _crop_regions(n=20, seed=0):
    from infinite_tensor import sl

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y, x = rng.randint(-40, 40), rng.randint(-40, 40)
        out.append(sl[y:y + 5, x:x + 7])
    return out


def test_export_crops(tmp_path):
    from infinite_tensor.data import export_crops

    regions = _crop_regions()
    calls = []
    t = _crop_tensor(calls)
    with TensorBlob.open(tmp_path / "crops", "w", dtype="float32", shape=(5, 7)) as b:
        n = export_crops(t, b, regions)
        assert len(b) == 20 and n == 20
        ref = _crop_tensor([])
        for k, r in enumerate(regions):
            assert torch.equal(b[k], ref[r]), k
        assert len(calls) == len(set(calls))
        again = []
        t2 = _crop_tensor(again)
        assert export_crops(t2, b, regions, resume=True) == 0  # complete: nothing to do
        assert len(b) == 20 and again == []


def test_export_crops_resumes(tmp_path):
    from infinite_tensor.data import export_crops

    regions = _crop_regions(seed=1)
    p = tmp_path / "crops"
    with TensorBlob.open(p, "w", dtype="float32", shape=(5, 7)) as b:
        assert export_crops(_crop_tensor([]), b, regions[:8]) == 8
    calls = []
    with TensorBlob.open(p, "a") as b:
        n = _crop_tensor(calls).export_crops(b, regions, resume=True)  # the method form
        assert len(b) == 20 and n == 12
    direct = []
    want = _crop_tensor(direct)[regions[8:]]  # the windows the missing regions need
    assert sorted(calls) == sorted(set(direct)), "resume computed windows the first 8 regions needed only"
    with TensorBlob.open(p, "r") as b:
        ref = _crop_tensor([])
        for k, r in enumerate(regions):
            assert torch.equal(b[k], ref[r]), k
        for k, w in enumerate(want):
            assert torch.equal(b[8 + k], w), k


# -- durability -------------------------------------------------------------------
def test_durability_full(tmp_path):
    p = tmp_path / "b"
    with TensorBlob.open(p, "w", dtype="float32", shape=(64,), durability="full") as b:
        assert b.durability == "full"
        for k in range(5):
            b.write(index_rows(10 * k, 10))
        b.seek(3)
        b.write(index_rows(3, 2))
        b.truncate(45)
        b.flush()
    with TensorBlob.open(p, "a", durability="full") as b:
        b.write(index_rows(45, 5))
        assert len(b) == 50
    with TensorBlob.open(p, "r") as b:
        assert torch.equal(b[:], index_rows(0, 50))
