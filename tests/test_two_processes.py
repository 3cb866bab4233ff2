"""Two processes and one HDF5 file (docs/api.md "Persistent stores",
docs/file-format.md "Locking"): the file is locked, shared for mode "r" and
exclusive otherwise.  A second process that conflicts gets TileAccessError
at open, whose message says another process has the file open, and changes
nothing; the first keeps reading and computing, and the file it leaves
holds every window it computed (a reopen reads them without calling f).
Two readers share the file.

test_hdf5_store.py::test_a_second_process_cannot_open_a_file_being_written
checks the exception classes for "a" and "r" against a writer; this file
adds the messages, every mode, a reader as the first process, and the
state of the file afterwards.
"""

import json

import pytest
import torch

import infinite_tensor as it
from persist_util import run_python

WIN = (8, 8)
LOCKED = "another process has it open"

CHILD = r"""
import json, sys, torch
import infinite_tensor as it
path = sys.argv[1]
for mode in sys.argv[2:]:  # one line of json each
    calls = []
    def f(ctx):
        calls.append(ctx)
        return torch.full((8, 8), float(ctx[0] * 100 + ctx[1]))
    try:
        store = it.HDF5TileStore(path, mode=mode, tile_size=16)
    except Exception as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        continue
    t = it.InfiniteTensor((None, None), f, it.TensorWindow((8, 8)), tile_store=store, tensor_id="t")
    v = t[0:16, 0:16]
    store.close()
    print(json.dumps({"sum": v.sum().item(), "calls": len(calls)}))
"""


def window_value(ctx):
    return float(ctx[0] * 100 + ctx[1])


class Counted:
    def __init__(self):
        self.calls = []

    def __call__(self, ctx):
        self.calls.append(ctx)
        return torch.full(WIN, window_value(ctx))


def tensor(store, f):
    return it.InfiniteTensor((None, None), f, it.TensorWindow(WIN), tile_store=store, tensor_id="t")


def expected(y0, y1, x0, x1):
    return torch.tensor([[window_value((y // 8, x // 8)) for x in range(x0, x1)] for y in range(y0, y1)])


def child(path, *modes):
    """A second process opens the file with each mode in turn: for each, its
    error or the sum of [0, 16) x [0, 16) and how many windows it computed."""
    out = [json.loads(line) for line in run_python(CHILD, path, *modes).stdout.strip().splitlines()]
    assert len(out) == len(modes), out
    return out if len(modes) > 1 else out[0]


def fill(path):
    """A file holding the windows of [0, 16) x [0, 16)."""
    with it.HDF5TileStore(path, mode="w", tile_size=16) as store:
        f = Counted()
        assert torch.equal(tensor(store, f)[0:16, 0:16], expected(0, 16, 0, 16))
        assert len(f.calls) == 4


def assert_file_holds(path, y1, x1):
    """The file holds every window of [0, y1) x [0, x1): read, nothing computed."""
    with it.HDF5TileStore(path, mode="r", tile_size=16) as store:
        f = Counted()
        assert torch.equal(tensor(store, f)[0:y1, 0:x1], expected(0, y1, 0, x1))
        assert f.calls == []


def assert_refused(out, path):
    assert out.get("error") == "TileAccessError", out
    assert LOCKED in out["message"] and path in out["message"], out


@pytest.fixture
def path(tmp_path):
    p = str(tmp_path / "two.h5")
    fill(p)
    return p


@pytest.mark.parametrize("first", ["a", "r+", "w"])
def test_a_writer_refuses_every_other_process(path, first):
    with it.HDF5TileStore(path, mode=first, tile_size=16) as store:
        f = Counted()
        t = tensor(store, f)
        assert torch.equal(t[0:8, 0:8], expected(0, 8, 0, 8))
        store.flush()  # committed: a second process that trampled the file would see it
        for out in child(path, "a", "r+", "w", "r", "a"):
            assert_refused(out, path)
        # the first process goes on: computes new windows and reads old ones
        assert torch.equal(t[0:32, 0:32], expected(0, 32, 0, 32))
        assert len(f.calls) == (16 if first == "w" else 12)
    assert_file_holds(path, 32, 32)


def test_two_readers_share_the_file(path):
    with it.HDF5TileStore(path, mode="r", tile_size=16) as store:
        f = Counted()
        t = tensor(store, f)
        assert torch.equal(t[0:16, 0:16], expected(0, 16, 0, 16))
        assert child(path, "r") == {"sum": expected(0, 16, 0, 16).sum().item(), "calls": 0}
        assert torch.equal(t[0:16, 0:16], expected(0, 16, 0, 16))
        assert f.calls == []
    # both have closed: a writer may open it now
    assert child(path, "a") == {"sum": expected(0, 16, 0, 16).sum().item(), "calls": 0}


def test_a_reader_refuses_writers(path):
    with it.HDF5TileStore(path, mode="r", tile_size=16) as store:
        f = Counted()
        t = tensor(store, f)
        *writers, reader = child(path, "a", "r+", "w", "r")
        for out in writers:
            assert_refused(out, path)
        assert reader == {"sum": expected(0, 16, 0, 16).sum().item(), "calls": 0}
        assert torch.equal(t[0:16, 0:16], expected(0, 16, 0, 16))
        with pytest.raises(it.TileAccessError, match="(?i)read.only"):
            t[16:24, 0:8]  # still mode "r": nothing computed
        assert f.calls == []
    assert_file_holds(path, 16, 16)


def test_the_file_is_free_again_after_the_writer_closes(path):
    store = it.HDF5TileStore(path, mode="a", tile_size=16)
    assert_refused(child(path, "r"), path)
    store.close()
    with store:  # reopened (the same mode, "a")
        assert_refused(child(path, "a"), path)
    assert child(path, "r", "a", "w") == [{"sum": expected(0, 16, 0, 16).sum().item(), "calls": 0}] * 2 + [
        {"sum": expected(0, 16, 0, 16).sum().item(), "calls": 4}]  # "w" truncated it
