"""Issue 13's store bugs: two stores on one file in one process, recovery
after a write failure, temporary files of killed creators, file names near
NAME_MAX, the OSError classes of bad paths, and what a store tells about
itself (tensor_ids, repr, the warning for a random id beside a stored
tensor).  Values are checked against the plain-torch reference
(tests/reference.py, through persist_util.demo_pair)."""

import errno
import os
import random
import subprocess
import sys
import warnings

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import _core
from persist_util import DEMO_TILE, REPO_ROOT, child_env, demo_pair, run_python

# (6, 6) windows at stride (4, 4), offset (-1, 2): overlapping, so a window
# added twice or lost shows in the sums
ROWS = (slice(0, 16),)


def region(lo, hi):
    return ROWS + (slice(lo, hi),)


def full_check(path, lo=-40, hi=200):
    """Everything the file holds reads right in a fresh store (and a read of
    the whole area computes only what was never stored)."""
    with it.HDF5TileStore(path, tile_size=DEMO_TILE) as s:
        p = demo_pair(s)
        p.check(region(lo, hi))
    return p


# -- two stores on one file in one process ----------------------------------------
def test_two_stores_on_one_file_lose_nothing(tmp_path):
    """The notebook cell run twice: the issue's reproducer.  Before, each
    store kept its own tile rows and the file ended "damaged" (a tile listed
    twice), or with windows lost."""
    path = tmp_path / "two.h5"
    s1 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    a = demo_pair(s1)
    a.check(region(0, 40))
    s1.flush()
    s2 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    b = demo_pair(s2)
    b.check(region(30, 80))
    s2.flush()
    a.check(region(60, 120))
    s1.flush()
    b.check(region(100, 160))
    s2.flush()
    s1.close()
    s2.close()
    full_check(path)
    # the second store reused the first one's values: no window ran twice
    assert sorted(set(a.calls + b.calls)) == sorted(a.calls + b.calls)


@pytest.mark.parametrize("seed", range(6))
def test_any_order_of_calls_on_stores_sharing_a_file(tmp_path, seed):
    """Random reads, flushes, closes and reopens over three store objects on
    one file (one by another name: a symlink): every value reads right, the
    file reopens with everything, and no window is computed twice while the
    file stays open."""
    rng = random.Random(seed)
    path = tmp_path / "shared.h5"
    os.symlink(path.name, tmp_path / "alias.h5")
    names = [path, path, tmp_path / "alias.h5"]
    stores, pairs = [], []
    for name in names:
        s = it.HDF5TileStore(name, tile_size=DEMO_TILE)
        stores.append(s)
        pairs.append(demo_pair(s))
    for _ in range(40):
        k = rng.randrange(3)
        s, p = stores[k], pairs[k]
        op = rng.random()
        if s._closed:
            if op < 0.5:
                s.__enter__()  # `with s:` reopens it
            continue
        if op < 0.55:
            lo = rng.randrange(-60, 200)
            p.check((slice(rng.randrange(-8, 8), rng.randrange(9, 24)), slice(lo, lo + rng.randrange(1, 60))))
        elif op < 0.7:
            s.flush()
        elif op < 0.85:
            s.close()
        else:
            p.lib.clear_cache()
    for s in stores:
        s.close()
    assert not any(s._closed is False for s in stores)
    full_check(path, -70, 270)
    # a file closed by its last store can be opened by another process
    run_python("import infinite_tensor as it, sys; it.HDF5TileStore(sys.argv[1], mode='r+').close()", path)


def test_stores_sharing_a_file_share_values_cache_and_close_last(tmp_path):
    path = tmp_path / "s.h5"
    s1 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    a = demo_pair(s1)
    a.check(region(0, 30))
    s2 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    b = demo_pair(s2)
    b.check(region(0, 30))
    assert b.calls == []  # served from the tiles a computed
    assert s2.cache_info() == s1.cache_info()
    s1.close()
    # s2 still has the file: another process cannot open it for writing ...
    with pytest.raises(AssertionError, match="another process"):
        run_python("import infinite_tensor as it, sys; it.HDF5TileStore(sys.argv[1])", path)
    # ... and the tensors keep reading (the file is open through s2)
    a.check(region(20, 50))
    b.check(region(40, 60))
    s2.close()
    run_python("import infinite_tensor as it, sys; it.HDF5TileStore(sys.argv[1]).close()", path)
    with pytest.raises(it.TileAccessError, match="closed"):
        b.lib[region(0, 8)]
    full_check(path)


def test_a_closed_store_rejoins_the_file_or_refuses_a_newer_handle(tmp_path):
    path = tmp_path / "r.h5"
    s1 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    a = demo_pair(s1)
    s2 = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    s1.close()
    with s1:  # rejoins s2's open file
        a.check(region(0, 20))
    s2.close()
    s3 = it.HDF5TileStore(path, tile_size=DEMO_TILE)  # a new handle on the closed file
    with pytest.raises(it.TileAccessError, match="opened again in this process"):
        with s1:
            pass
    c = demo_pair(s3)
    c.check(region(0, 20))
    assert c.calls == []
    s3.close()
    with s1:  # s3 closed: s1 opens the file again itself
        a.check(region(10, 40))
    full_check(path)


@pytest.mark.parametrize("first, second, exc, words", [
    ({}, {"cache_size_bytes": 2**20}, it.ValidationError, "cache_size_bytes"),
    ({}, {"cache_size_tiles": 4}, it.ValidationError, "cache_size_tiles"),
    ({}, {"compression": None}, it.ValidationError, "compression"),
    ({}, {"mode": "r"}, it.ValidationError, "read-only"),
    ({"mode": "r"}, {"mode": "a"}, it.ValidationError, "read-only"),
    ({}, {"mode": "w"}, it.TileAccessError, "truncate"),
    ({}, {"mode": "x"}, FileExistsError, "File exists"),
])
def test_a_second_store_must_agree_with_the_open_one(tmp_path, first, second, exc, words):
    path = tmp_path / "o.h5"
    it.HDF5TileStore(path).close()
    s1 = it.HDF5TileStore(path, **first)
    with pytest.raises(exc, match=words) as info:
        it.HDF5TileStore(path, **second)
    if exc is not FileExistsError:
        assert "in this process" in str(info.value)
    s1.close()
    if exc is not FileExistsError:
        it.HDF5TileStore(path, **second).close()  # alone, the same options are fine


def test_two_read_only_stores_share(tmp_path):
    path = tmp_path / "ro.h5"
    with it.HDF5TileStore(path, tile_size=DEMO_TILE) as s:
        demo_pair(s).check(region(0, 40))
    r1 = it.HDF5TileStore(path, mode="r", tile_size=DEMO_TILE)
    r2 = it.HDF5TileStore(path, mode="r", tile_size=DEMO_TILE)
    p1, p2 = demo_pair(r1), demo_pair(r2)
    p1.check(region(0, 40))
    p2.check(region(4, 30))
    assert p1.calls == p2.calls == []
    r1.close()
    r2.close()


def test_the_core_refuses_a_second_handle_on_an_open_file(tmp_path):
    """The C layer's own guard (the Python stores share instead of getting
    here), by another name too: a hard link."""
    path = tmp_path / "c.h5"
    f = _core.H5File(str(path), 2, -1)
    os.link(path, tmp_path / "hard.h5")
    for name in (path, tmp_path / "hard.h5"):
        for mode in (0, 1, 2, 3):
            with pytest.raises(it.TileAccessError, match="already open in this process"):
                _core.H5File(str(name), mode, -1)
    f.close()
    _core.H5File(str(tmp_path / "hard.h5"), 1, -1).close()


# -- recovery after a failed write -------------------------------------------------
CHILD_FSIZE = r"""
import resource, signal, sys, torch
import infinite_tensor as it
from persist_util import DEMO_TILE, demo_pair
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
store = it.HDF5TileStore(path, tile_size=DEMO_TILE, compression=None)
p = demo_pair(store)
p.check((slice(0, 16), slice(0, 16)))
store.flush()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
failed = None
try:
    p.check((slice(-400, 400), slice(-400, 400)))
    store.flush()
except it.InfiniteTensorError as e:
    failed = e
assert failed is not None, "the write never failed: raise the data size"
print("failed:", failed, flush=True)
# the documented recovery: close() (which reports the failure again), then `with store:`
try:
    store.close()
except it.InfiniteTensorError as e:
    print("close:", e, flush=True)
assert store._closed, "close() after a failed write must leave the store closed"
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
with store:
    p.check((slice(-400, 400), slice(-400, 400)))
print("ok", flush=True)
"""


def test_close_then_with_recovers_from_a_failed_write(tmp_path):
    """A write failure (here RLIMIT_FSIZE) makes the handle refuse to commit;
    the error says to close and reopen.  Before, close() raised inside its
    finally block and the store never counted as closed, so `with store:`
    did not reopen it.  Now the recovery works and loses nothing."""
    path = tmp_path / "full.h5"
    out = run_python(CHILD_FSIZE, path, timeout=300).stdout
    assert "failed:" in out and "close and reopen" in out, out
    assert out.strip().endswith("ok"), out
    p = full_check(path, -50, 50)
    # windows near the origin were saved; with the same reads in a fresh store
    # they are not computed again
    p.reset_calls()
    with it.HDF5TileStore(path, tile_size=DEMO_TILE) as s:
        q = demo_pair(s)
        q.check((slice(-400, 400), slice(-400, 400)))
        assert q.calls == []  # the recovered store saved every window


# -- temporary files and long names ------------------------------------------------
def _fnv1a(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def creating_stem(name):
    """The stem of a new file's temporary name, as docs/file-format.md
    describes it: the name, or (when "<name>.creating-<pid>-journal" could
    pass 255 bytes) its first bytes, "~" and a 64-bit FNV-1a hash."""
    raw = name.encode()
    room = len(".creating-") + 10 + len("-journal")
    if len(raw) + room <= 255:
        return name
    return raw[:255 - room - 17].decode() + f"~{_fnv1a(raw):016x}"


@pytest.mark.parametrize("length", [8, 240, 250])
@pytest.mark.parametrize("mode", ["w", "a"])
def test_temporaries_and_journals_of_dead_creators_are_removed(tmp_path, length, mode):
    """A kill while creating leaves <stem>.creating-<pid> and its journal
    <stem>.creating-<pid>-journal; the next creation or writable open
    removes both when that pid is gone (before, the journal stayed)."""
    name = "t" * (length - 3) + ".h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stem = creating_stem(name)
    stale = [tmp_path / f"{stem}.creating-{dead.pid}", tmp_path / f"{stem}.creating-{dead.pid}-journal"]
    kept = [tmp_path / f"{stem}.creating-1-journal", tmp_path / f"{stem}.creating-{dead.pid}-journal.bak"]
    if mode == "a":
        it.HDF5TileStore(tmp_path / name).close()
    for p in stale + kept:
        p.write_bytes(b"x")
    it.HDF5TileStore(tmp_path / name, mode=mode).close()
    assert [p.name for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)


def test_a_kill_while_creating_leaves_nothing_after_the_next_open(tmp_path):
    """The real thing: children killed while creating files; one more store
    on each of their files leaves no temporary of theirs behind."""
    code = r"""
import sys, infinite_tensor as it
print("ready", flush=True)
i = 0
while True:
    it.HDF5TileStore(sys.argv[1] + str(i % 4), mode="w").close()
    i += 1
"""
    rng = random.Random(5)
    for k in range(3):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder / "f")], cwd=REPO_ROOT, env=child_env(),
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        import time
        time.sleep(rng.uniform(0.05, 0.3))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        for i in range(4):
            it.HDF5TileStore(folder / f"f{i}").close()
        left = sorted(n for n in os.listdir(folder) if ".creating-" in n or n.endswith("-journal"))
        assert left == [], left


@pytest.mark.parametrize("length", [240, 250, 255])
def test_file_names_up_to_name_max(tmp_path, length):
    """Linux takes names of up to 255 bytes; the temporary name (+25 bytes)
    and the journal (+8) used to push such names past it."""
    name = "n" * (length - 3) + ".h5"
    path = tmp_path / name
    with it.HDF5TileStore(path, mode="w", tile_size=DEMO_TILE) as s:
        demo_pair(s).check(region(0, 60))
    with it.HDF5TileStore(path, mode="a", tile_size=DEMO_TILE) as s:
        p = demo_pair(s)
        p.check(region(-20, 100))
    run_python("import infinite_tensor as it, sys\n"
               "from persist_util import DEMO_TILE, demo_pair\n"
               "with it.HDF5TileStore(sys.argv[1], mode='r', tile_size=DEMO_TILE) as s:\n"
               "    p = demo_pair(s); p.check((slice(0, 16), slice(-20, 100))); assert p.calls == []\n", path)
    assert all(len(n.encode()) <= 255 for n in os.listdir(tmp_path))


def test_a_file_name_over_name_max_is_refused_up_front(tmp_path):
    path = tmp_path / ("n" * 253 + ".h5")
    with pytest.raises(OSError) as info:
        it.HDF5TileStore(path)
    assert info.value.errno == errno.ENAMETOOLONG
    assert info.value.filename == str(path)
    assert os.listdir(tmp_path) == []


# -- paths: OSError subclasses naming the user's path --------------------------------
@pytest.mark.parametrize("mode", ["r", "r+", "a", "w", "x"])
def test_a_path_in_a_missing_directory(tmp_path, mode):
    path = tmp_path / "nowhere" / "x.h5"
    with pytest.raises(FileNotFoundError) as info:
        it.HDF5TileStore(path, mode=mode)
    assert info.value.filename == str(path)
    assert "nowhere" in str(info.value) and "creating" not in str(info.value)


@pytest.mark.parametrize("mode", ["r", "a", "w"])
def test_a_directory_or_a_file_as_directory(tmp_path, mode):
    with pytest.raises(IsADirectoryError) as info:
        it.HDF5TileStore(tmp_path, mode=mode)
    assert info.value.filename == str(tmp_path)
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as info:
        it.HDF5TileStore(tmp_path / "plain" / "x.h5", mode=mode)
    assert info.value.filename == str(tmp_path / "plain" / "x.h5")


def test_missing_and_existing_files_by_mode(tmp_path):
    path = tmp_path / "m.h5"
    for mode in ("r", "r+"):
        with pytest.raises(FileNotFoundError) as info:
            it.HDF5TileStore(path, mode=mode)
        assert info.value.errno == errno.ENOENT and info.value.filename == str(path)
    it.HDF5TileStore(path).close()
    for mode in ("x", "w-"):
        with pytest.raises(FileExistsError) as info:
            it.HDF5TileStore(path, mode=mode)
        assert info.value.errno == errno.EEXIST and info.value.filename == str(path)


PERMISSIONS = r"""
import os, sys, infinite_tensor as it
d = sys.argv[1]
cases = [("ro-file.h5", "a"), ("ro-file.h5", "r+"), ("no-read.h5", "r"), ("ro-dir/new.h5", "a"),
         ("ro-dir/old.h5", "a"), ("ro-dir/old.h5", "w")]
for name, mode in cases:
    path = os.path.join(d, name)
    try:
        it.HDF5TileStore(path, mode=mode).close()
        print(name, mode, "opened")
    except PermissionError as e:
        assert e.filename == path, (e.filename, path)
        print(name, mode, "PermissionError")
it.HDF5TileStore(os.path.join(d, "ro-dir/old.h5"), mode="r").close()  # reading needs no write access
print("read ok")
"""


def _drop_file_capabilities():
    """In a child running as root: drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so that permission bits apply to it as to anyone
    (the files are root's own: their owner bits decide)."""
    import ctypes
    import platform

    numbers = {"x86_64": (125, 126), "aarch64": (90, 91)}.get(platform.machine())
    if numbers is None:
        os._exit(77)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # out of the bounding set too, or exec gives root every capability back
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(77)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.syscall(numbers[0], ctypes.byref(header), data) != 0:
        os._exit(77)
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.syscall(numbers[1], ctypes.byref(header), data) != 0:
        os._exit(77)


def test_permission_errors(tmp_path):
    """PermissionError naming the user's path, as an ordinary user would get
    it (as root, in a child without the capabilities that bypass permission
    bits)."""
    for name in ("ro-file.h5", "no-read.h5"):
        it.HDF5TileStore(tmp_path / name).close()
    (tmp_path / "ro-dir").mkdir()
    it.HDF5TileStore(tmp_path / "ro-dir" / "old.h5").close()
    os.chmod(tmp_path / "ro-file.h5", 0o444)
    os.chmod(tmp_path / "no-read.h5", 0o000)
    os.chmod(tmp_path / "ro-dir" / "old.h5", 0o644)
    os.chmod(tmp_path / "ro-dir", 0o555)
    try:
        proc = subprocess.run([sys.executable, "-c", PERMISSIONS, str(tmp_path)], cwd=REPO_ROOT, env=child_env(),
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None)
    finally:
        os.chmod(tmp_path / "ro-dir", 0o755)
    if proc.returncode == 77:
        pytest.skip("cannot drop root's file capabilities here")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[:6] == [f"{n} {m} PermissionError" for n, m in
                         [("ro-file.h5", "a"), ("ro-file.h5", "r+"), ("no-read.h5", "r"),
                          ("ro-dir/new.h5", "a"), ("ro-dir/old.h5", "a"), ("ro-dir/old.h5", "w")]], proc.stdout
    assert lines[6] == "read ok"


# -- what a store tells about itself ------------------------------------------------
def test_tensor_ids_and_repr(tmp_path):
    path = tmp_path / "ids.h5"
    s = it.HDF5TileStore(path, tile_size=DEMO_TILE)
    assert s.tensor_ids() == []
    demo_pair(s, tensor_id="b/x").check(region(0, 20))
    demo_pair(s, tensor_id="a")
    long_id = "L" * 70_000  # a group name far longer than any fixed buffer
    demo_pair(s, tensor_id=long_id)
    assert s.tensor_ids() == ["L" * 70_000, "a", "b/x"]
    s.clear_tensor(long_id)
    assert s.tensor_ids() == ["a", "b/x"]
    text = repr(s)
    assert text.startswith(f"<HDF5TileStore '{path}' mode='a' 2 tensors, cache ")
    assert "of 100.0 MiB in" in text and "tiles>" in text
    s.close()
    assert repr(s) == f"<HDF5TileStore '{path}' mode='a' closed>"
    with pytest.raises(it.TileAccessError, match="closed"):
        s.tensor_ids()
    with it.HDF5TileStore(path, mode="r") as r:
        assert r.tensor_ids() == ["a", "b/x"]  # from the file: nothing registered yet
    m = it.MemoryTileStore(cache_size_bytes=2**20)
    assert repr(m) == "<MemoryTileStore 0 tensors, cache 0 B of 1.0 MiB in 0 tiles>"
    demo_pair(m, tensor_id="z").check(region(0, 8))
    assert m.tensor_ids() == ["z"]
    assert repr(it.MemoryTileStore()).endswith("of unbounded in 0 tiles>")


def test_a_random_id_beside_a_stored_tensor_of_the_same_configuration_warns(tmp_path):
    path = tmp_path / "w.h5"
    with it.HDF5TileStore(path, tile_size=DEMO_TILE) as s:
        demo_pair(s, tensor_id="kept").check(region(0, 20))
    with it.HDF5TileStore(path, tile_size=DEMO_TILE) as s:
        with pytest.warns(UserWarning, match="tensor_id='kept'") as record:
            demo_pair(s, tensor_id=None)
        assert record[0].filename == __file__ or record[0].filename.endswith("pairs.py")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            demo_pair(s, tensor_id="another")  # an explicit id: deliberate
            from persist_util import make, pattern
            from reference import Win
            make((None, None), lambda c: pattern(c, (5, 5)), Win((5, 5)), store=s)  # another configuration
        assert "kept" in s.tensor_ids() and len(s.tensor_ids()) == 4  # kept, another and two random ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        demo_pair(it.MemoryTileStore(), tensor_id=None)  # a memory store keeps nothing across sessions
