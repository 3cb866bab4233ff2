"""Leak loop: 100,000 small reads (windows in the cache, windows computed
anew because the bounded cache dropped them, pipelines, a memory and an HDF5
store), with stores and tensors created and dropped all along, must leave
the resident memory of the process flat once warmed up.

The measure is /proc/self/statm's resident pages, in a fresh Python process
(the heap of a process that ran other tests holds freed memory a leak would
quietly reuse), after malloc_trim(0) (so that freed memory is not counted
and memory leaked later must become resident).  After a warm-up (the
allocator's arenas, torch's and HDF5's own caches, the first files), the
growth over the measured reads, divided by their number, must stay under
LEAK_BYTES_PER_READ.  A leak of a few hundred bytes per read (say one small
struct per window or per read) adds tens of MB over 80,000 reads and fails;
test_the_check_sees_a_small_leak proves it by leaking 256 bytes of C heap
per read on purpose through the same loop.
"""

import ctypes
import gc
import json
import os

import torch

import infinite_tensor as it

PAGE = os.sysconf("SC_PAGE_SIZE")
WIN = 16
RING = 64  # windows per row of the ring the "new window" reads walk around
READS = 100_000
WARMUP = 20_000
# measured (fresh process, 80,000 reads after 20,000): 0.26 to 0.87 bytes per
# read without a leak; with a malloc(64) per read on purpose 148, with a
# malloc(256) 295.  The bound sits far from both.
LEAK_BYTES_PER_READ = 48


LIBC = ctypes.CDLL(None)
LIBC.malloc.restype = ctypes.c_void_p


def rss():
    gc.collect()
    LIBC.malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


COMPUTED = [0]  # noise windows computed


def noise_f(ctx):
    COMPUTED[0] += 1
    return torch.full((WIN, WIN), float((ctx[0] * 31 + ctx[1]) % 17))


def blur_f(ctx, a):
    return a[:-2, 1:-1] + a[1:-1, 1:-1] + a[2:, 1:-1]


def pipeline(store, tag=""):
    noise = it.InfiniteTensor((None, None), noise_f, it.TensorWindow((WIN, WIN)), tile_store=store,
                              tensor_id="noise" + tag)
    blur = it.InfiniteTensor((None, None), blur_f, it.TensorWindow((WIN, WIN)), args=[noise],
                             args_windows=[it.TensorWindow((WIN + 2, WIN + 2), stride=(WIN, WIN), offset=(-1, -1))],
                             tile_store=store, tensor_id="blur" + tag)
    return noise, blur


def expected_blur(y, x):
    """blur at (y, x): the column of three noise values above/at/below."""
    return sum(float(((yy // WIN) * 31 + x // WIN) % 17) for yy in (y - 1, y, y + 1))


class Workload:
    """One read per step; every 500 steps a round ends: the HDF5 store is
    closed and reopened (truncated), and a throwaway tensor is made and
    dropped."""

    def __init__(self, path, leak=0):
        self.path, self.leak, self.step = path, leak, 0
        # a bounded memory store: ~40 windows of each tensor fit, the ring has 64 per row
        self.mem = it.MemoryTileStore(cache_size_bytes=80 * WIN * WIN * 4)
        self.mem_noise, self.mem_blur = pipeline(self.mem)
        self.h5 = None
        self._new_round()

    def _new_round(self):
        if self.h5 is not None:
            self.h5.close()
        self.h5 = it.HDF5TileStore(self.path, mode="w", tile_size=32, compression=None,
                                   cache_size_bytes=32 * 32 * 4 * 16)
        self.h5_noise, self.h5_blur = pipeline(self.h5)
        # a tensor created, read and dropped (its store too)
        store = it.MemoryTileStore()
        t = it.InfiniteTensor((None, 3), lambda c: torch.ones(WIN, 3) * c[0], it.TensorWindow((WIN, 3)),
                              tile_store=store)
        assert t[WIN * 2, 1].item() == 2.0
        store.clear_tensor(t.uuid)
        # and a tensor of the long-lived store, registered and cleared
        u = it.InfiniteTensor((None,), lambda c: torch.ones(WIN), it.TensorWindow((WIN,)), tile_store=self.mem)
        assert u[3:5].sum().item() == 2.0
        self.mem.clear_tensor(u.uuid)

    def read(self):
        i = self.step
        self.step += 1
        if i % 500 == 499:
            self._new_round()
        kind = i % 10
        if kind < 4:  # a cached window of the memory store (the first row stays hot)
            y, x = 1 + i % 7, (i * 5) % (4 * WIN)
            v = self.mem_blur[y:y + 2, x:x + 2]
        elif kind < 6:  # a window the bounded cache dropped: computed anew, with its noise
            y, x = WIN * (2 + (i // 10) % 3), WIN * ((i // 10) % RING)
            v = self.mem_blur[y:y + 2, x:x + 2]
        elif kind < 7:  # the noise alone, one value
            v = self.mem_noise[i % 50, (i * 3) % 50]
            assert v.item() == float((((i % 50) // WIN) * 31 + ((i * 3) % 50) // WIN) % 17)
            v = None
        elif kind < 9:  # HDF5: new windows and cached ones
            y, x = WIN * ((i // 10) % 5), WIN * ((i // 7) % 9)
            v = self.h5_blur[y:y + 3, x:x + 1]
        else:
            v = self.h5_noise[i % 40:i % 40 + 2, 5]
            v = None
        if v is not None:
            assert v[0, 0].item() == expected_blur(y, x)
        if self.leak:
            LIBC.malloc(self.leak)

    def close(self):
        self.h5.close()


def growth_per_read(path, reads, warmup, leak=0):
    w = Workload(path, leak)
    try:
        for _ in range(warmup):
            w.read()
        before, computed = rss(), COMPUTED[0]
        for _ in range(reads - warmup):
            w.read()
        after, computed = rss(), COMPUTED[0] - computed
    finally:
        w.close()
    return (after - before) / (reads - warmup), before, after, computed


def measure_in_a_child(path, reads, warmup, leak=0):
    from persist_util import run_python

    out = run_python("import test_leaks, sys; test_leaks.child_main(sys.argv[1:])", path, reads, warmup, leak)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(argv):
    path, reads, warmup, leak = argv[0], *map(int, argv[1:])
    per_read, before, after, computed = growth_per_read(path, reads, warmup, leak)
    print(json.dumps(dict(per_read=per_read, before=before, after=after, computed=computed)))


def test_resident_memory_stays_flat(tmp_path):
    m = measure_in_a_child(str(tmp_path / "leak.h5"), READS, WARMUP)
    print(f"resident {m['before'] / 2**20:.1f} MiB -> {m['after'] / 2**20:.1f} MiB over {READS - WARMUP} reads: "
          f"{m['per_read']:.2f} bytes per read; {m['computed']} noise windows computed")
    # the loop does compute: the bounded cache and the new HDF5 files make it
    assert m["computed"] > (READS - WARMUP) // 10, m
    assert m["per_read"] < LEAK_BYTES_PER_READ, m


def test_the_check_sees_a_small_leak(tmp_path):
    """The same loop, shorter, leaking 256 bytes per read on purpose."""
    m = measure_in_a_child(str(tmp_path / "leak.h5"), 25_000, 5_000, leak=256)
    assert m["per_read"] >= LEAK_BYTES_PER_READ, m
