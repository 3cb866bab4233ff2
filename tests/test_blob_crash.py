"""Crash safety of infinite_tensor.blob.TensorBlob: a writer killed with
SIGKILL at any moment leaves the blob at a committed length L with every row
below L intact, and the blob stays usable; damaged commit records fall back
to the other one.

The writers are forked from the test process (no interpreter start, so kills
can land a few milliseconds in).  Row i of every blob here holds float(i)
in each of its 64 float32 elements (blob_util.index_rows), so a row in the
wrong place, a torn row or a stale one shows.  Each child logs what it is
about to do and what returned (unbuffered writes to a file, which survive
the kill), so the parent knows exactly which lengths the file may hold: the
last one a call returned, or the one the call in flight would make.
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
import zlib

import pytest
import torch

from blob_util import ROW, bad_rows, index_rows
from infinite_tensor.blob import CorruptBlobError, TensorBlob, read_header

SLOT_A, SLOT_B = 512, 1024  # the commit records (infinite_tensor/blob.py read_header, csrc/include/it_blob.h)


def _log(fd, text):
    os.write(fd, (text + "\n").encode())


def _writer_child(path, log_path, seed, fresh, ready_fd):
    """Append index rows forever (truncating and extending now and then);
    a byte on ready_fd once the blob is open."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        rng = random.Random(seed)
        src_path = path + ".src"
        _log(log, "opening")
        b = TensorBlob.open(path, "w" if fresh else "a", dtype="float32", shape=(ROW,))
        _log(log, f"open {len(b)}")
        os.write(ready_fd, b"r")
        while True:
            n = len(b)
            r = rng.random()
            if n > 20000 or (0.75 <= r < 0.87 and n):
                pos = rng.randint(0, n) if n <= 20000 else rng.randint(0, 5000)
                _log(log, f"truncate {n} {pos}")
                got = b.truncate(pos)
                _log(log, f"ok {got}")
            elif r >= 0.87:
                k = rng.randint(1, 3000)
                with TensorBlob.open(src_path, "w", dtype="float32", shape=(ROW,)) as src:
                    src.write(index_rows(n, k))
                with TensorBlob.open(src_path, "r") as src:
                    _log(log, f"extend {n} {k}")
                    b.extend(src, maintain_order=rng.random() < 0.5)
                    _log(log, f"ok {len(b)}")
            else:
                k = rng.choice([1, 3, 17, 64, 200, 1000, 2000, 4000])
                rows = index_rows(n, k)
                _log(log, f"write {n} {k}")
                got = b.write(rows)
                _log(log, f"ok {n + got}")
    except BaseException as e:
        _log(log, f"error {type(e).__name__}: {e}")
    finally:
        os._exit(3)


def _fork(target, *args):
    pid = os.fork()
    if pid == 0:
        try:
            # torch's OpenMP pool does not survive fork: a parallel op would hang
            torch.set_num_threads(1)
            target(*args)
        finally:
            os._exit(3)
    return pid


def _kill(pid):
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status


def _allowed_lengths(log_text, before, fresh):
    """The lengths a kill may leave, from the child's log (complete lines
    only), and what was in flight ("", "open", "write", "truncate", "extend")."""
    lines = [ln for ln in log_text.split("\n")[:-1]]  # the last piece has no newline: cut by the kill
    for ln in lines:
        assert not ln.startswith("error"), f"the writer failed: {ln}"
    committed = before
    pending = set()
    if fresh:  # "w" empties (or creates) the blob
        pending = {0}
    inflight = "open" if lines and lines[-1] == "opening" else ""
    for ln in lines:
        word, *nums = ln.split()
        nums = [int(x) for x in nums]
        if word == "open":
            committed, pending, inflight = nums[0], set(), ""
        elif word == "write":
            assert nums[0] == committed, (ln, committed)
            pending, inflight = {nums[0] + nums[1]}, "write"
        elif word == "extend":
            assert nums[0] == committed, (ln, committed)
            pending, inflight = {nums[0] + nums[1]}, "extend"
        elif word == "truncate":
            assert nums[0] == committed, (ln, committed)
            pending, inflight = {nums[1]}, "truncate"
        elif word == "ok":
            assert nums[0] in pending, (ln, pending)
            committed, pending, inflight = nums[0], set(), ""
    if committed is None and not pending:
        return {None}, inflight
    return ({committed} | pending), inflight


def _check_blob(path, allowed, what):
    """Reopen path read-only: its length is allowed and every row is right.
    Returns the length."""
    if not os.path.exists(path):
        assert None in allowed, f"{what}: the blob is gone"
        return None
    with TensorBlob.open(path, "r") as b:
        n = len(b)
        assert n in allowed, f"{what}: {n} rows after the kill; allowed: {sorted(allowed, key=str)}"
        rows = b[:]
        assert rows.shape == (n, ROW)
        bad = bad_rows(rows)
        assert not bad, f"{what}: rows {bad[:10]} of {n} are wrong (row {bad[0]}: {rows[bad[0], :4].tolist()})"
        if n:
            assert torch.equal(b.view(n - 1, n)[0], index_rows(n - 1, 1)[0])
    assert read_header(path)["length"] == n
    return n


def test_sigkill_at_random_moments(tmp_path):
    path = str(tmp_path / "crash.blob")
    log_path = str(tmp_path / "log.txt")
    rng = random.Random(2024)
    trials = 40
    # most kills come 0-30 ms after the child has the blob open (inside its
    # writes, truncates and extends); some from the fork (inside the open)
    delays = [("open", rng.uniform(0, 0.03)) for _ in range(trials - 10)]
    delays += [("fork", rng.uniform(0, 0.02)) for _ in range(10)]
    rng.shuffle(delays)
    length = None  # what the blob holds now (None: no file yet)
    inflight_counts = {}
    for trial, (after, delay) in enumerate(delays):
        fresh = length is None or trial % 9 == 4  # "w": create, or empty an existing blob
        open(log_path, "w").close()
        r_fd, w_fd = os.pipe()
        pid = _fork(_writer_child, path, log_path, trial, fresh, w_fd)
        os.close(w_fd)
        try:
            if after == "open":
                ready, _, _ = select.select([r_fd], [], [], 60)
                assert ready, "the writer did not open the blob"
            time.sleep(delay)
            status = _kill(pid)
        finally:
            os.close(r_fd)
        with open(log_path) as fh:
            log_text = fh.read()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (status, log_text[-500:])
        allowed, inflight = _allowed_lengths(log_text, length, fresh)
        inflight_counts[inflight] = inflight_counts.get(inflight, 0) + 1
        what = (f"trial {trial} (killed {delay * 1000:.1f} ms after the {after}, during "
                f"{inflight or 'nothing'!r}; log tail {log_text[-120:]!r})")
        length = _check_blob(path, allowed, what)
        if length is None:
            continue
        # the blob stays usable: append, check, and leave it for the next child
        with TensorBlob.open(path, "a") as b:
            k = rng.randint(1, 50)
            assert b.write(index_rows(length, k)) == k
            length += k
            assert len(b) == length
        _check_blob(path, {length}, f"{what}, then {k} rows appended")
    assert length is not None
    print("kills landed during:", inflight_counts)
    landed = sum(v for k, v in inflight_counts.items() if k)
    assert landed >= 5, f"few kills landed inside a call: {inflight_counts}"


def _creator_child(folder):
    i = 0
    while True:
        p = os.path.join(folder, f"b{i}")
        with TensorBlob.open(p, "w", dtype="float32", shape=(ROW,)) as b:
            b.write(index_rows(0, 3))
        i += 1


def test_sigkill_while_creating(tmp_path):
    """A kill while a blob file is being created leaves no half-made blob:
    each name is missing or a blob (its rows right)."""
    rng = random.Random(7)
    for k in range(6):
        folder = tmp_path / f"c{k}"
        folder.mkdir()
        pid = _fork(_creator_child, str(folder))
        time.sleep(rng.uniform(0.001, 0.03))
        _kill(pid)
        names = sorted(n for n in os.listdir(folder) if not n.endswith(".tmp"))
        for n in names:
            _check_blob(str(folder / n), {0, 3}, f"{folder.name}/{n}")
        if names:  # the next create at the last name works (after a kill while it was being made)
            last = str(folder / names[-1])
            with TensorBlob.open(last, "w", dtype="float32", shape=(ROW,)) as b:
                b.write(index_rows(0, 2))
            _check_blob(last, {2}, f"{folder.name}/{names[-1]} recreated")


def _appender_child(path, seed):
    rng = random.Random(seed)
    b = TensorBlob.open(path, "a")
    while True:
        n = len(b)
        if n > 50_000:  # enough: keep the file small
            time.sleep(0.01)
            continue
        k = rng.choice([1, 5, 40, 300])
        b.write(index_rows(n, k))
        time.sleep(0.0002)


def test_a_reader_sees_only_committed_rows_and_they_never_change(tmp_path):
    path = str(tmp_path / "b.blob")
    with TensorBlob.open(path, "w", dtype="float32", shape=(ROW,)) as b:
        b.write(index_rows(0, 10))
    pid = _fork(_appender_child, path, 1)
    killed = False
    try:
        r = TensorBlob.open(path, "r")
        views = []  # (length then, a zero-copy view of rows [0, length))
        last = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:
            if not killed and time.monotonic() - t0 > 0.8:
                _kill(pid)
                killed = True
            n = len(r)
            assert n >= last, f"len went back from {last} to {n}"
            last = n
            got = r[:n]
            bad = bad_rows(got)
            assert not bad, f"rows {bad[:10]} of {n} are wrong"
            for k in range(3):  # past the length seen: IndexError, or committed since (and right)
                try:
                    row = r[n + k]
                except IndexError:
                    break
                assert torch.equal(row, index_rows(n + k, 1)[0]), f"row {n + k} is readable but wrong"
            if len(views) < 50:
                views.append((n, r.view(0, n)))
            for m, v in views[:: max(1, len(views) // 5)]:
                assert v.shape[0] == m and not bad_rows(v), "a view of committed rows changed"
        assert killed
        assert last > 10, "the writer appended nothing"
        final = len(r)
        assert not bad_rows(r[:final])
        for m, v in views:
            assert not bad_rows(v)
        r.close()
        _check_blob(path, {final}, "after the kill")
    finally:
        if not killed:
            _kill(pid)


# -- damaged commit records -------------------------------------------------------
def _slots(data):
    out = {}
    for at in (SLOT_A, SLOT_B):
        seq, length = struct.unpack_from("<Qq", data, at)
        ok = zlib.crc32(data[at:at + 16]) == struct.unpack_from("<I", data, at + 16)[0]
        out[at] = (seq, length, ok)
    return out


def _three_commits(path):
    with TensorBlob.open(path, "w", dtype="float32", shape=(ROW,)) as b:
        b.write(index_rows(0, 3))
        b.write(index_rows(3, 4))
        b.write(index_rows(7, 5))
    data = open(path, "rb").read()
    slots = _slots(data)
    assert all(ok for _, _, ok in slots.values()), slots
    assert sorted(length for _, length, _ in slots.values()) == [7, 12], slots
    newer = max(slots, key=lambda at: slots[at][0])
    older = SLOT_A + SLOT_B - newer
    assert slots[newer][1] == 12
    return data, newer, older


def _flipped(data, path, *offsets):
    b = bytearray(data)
    for at in offsets:
        b[at] ^= 0x10
    with open(path, "wb") as fh:
        fh.write(bytes(b))
    return path


@pytest.mark.parametrize("field", [0, 8, 16], ids=["seq", "length", "crc"])
def test_a_damaged_newer_commit_record_falls_back_to_the_older(tmp_path, field):
    data, newer, older = _three_commits(str(tmp_path / "good"))
    p = _flipped(data, str(tmp_path / "bad"), newer + field)
    _check_blob(p, {7}, "newer record damaged")
    with TensorBlob.open(p, "a") as b:  # usable: the next commit goes on
        assert len(b) == 7
        b.write(index_rows(7, 2))
    _check_blob(p, {9}, "appended after the fallback")
    with TensorBlob.open(p, "r+") as b:
        b.seek(9)
        b.write(index_rows(9, 30))
    _check_blob(p, {39}, "appended twice after the fallback")


def test_a_damaged_older_commit_record_changes_nothing(tmp_path):
    data, newer, older = _three_commits(str(tmp_path / "good"))
    p = _flipped(data, str(tmp_path / "bad"), older + 8)
    _check_blob(p, {12}, "older record damaged")
    with TensorBlob.open(p, "a") as b:
        b.write(index_rows(12, 1))
        b.write(index_rows(13, 1))  # both records rewritten by now
    _check_blob(p, {14}, "appended")
    assert all(ok for _, _, ok in _slots(open(p, "rb").read()).values())


def test_both_commit_records_damaged_is_corrupt(tmp_path):
    data, newer, older = _three_commits(str(tmp_path / "good"))
    p = _flipped(data, str(tmp_path / "bad"), newer + 8, older + 8)
    before = open(p, "rb").read()
    for mode in ("r", "r+", "a", "w"):
        with pytest.raises(CorruptBlobError):
            TensorBlob.open(p, mode)
            raise AssertionError(f"mode {mode!r} opened a blob with both commit records damaged")
    with pytest.raises(CorruptBlobError):
        read_header(p)
    assert open(p, "rb").read() == before, "a refused open changed the file"
