"""A torch Dataset of random crops of a noise -> blur pipeline, for
tests/test_dataloader.py.  It lives in its own module so that DataLoader
workers started with the "spawn" context can import it.

The values are integers held in float32 (noise in [0, 16), the blur a 3x3
box sum), so every sum is exact whatever order the windows are combined in:
a worker's crop must equal the single-process crop bit for bit.

Each process builds its own pipeline (and opens its own HDF5 store) the first
time it reads, except that a forked worker keeps the tensors its parent had
built (the memory store and its cached tiles come along with fork), which is
the case that shows whether the core's locks and copy threads survive fork.
An HDF5 store is never shared across fork: a worker opens the file itself,
read-only.
"""

from __future__ import annotations

import os

import torch

import infinite_tensor as it

WIN = 32
NOISE_MAX = 16
TILE = 64  # of the HDF5 store


def noise_f(ctx):
    g = torch.Generator().manual_seed((ctx[0] * 1_000_003 + ctx[1] * 7_919 + 12_345) & 0x7FFFFFFF)
    return torch.randint(0, NOISE_MAX, (WIN, WIN), generator=g).to(torch.float32)


def blur_f(ctx, a):
    # a: (WIN + 2, WIN + 2), the window padded by one on each side
    out = torch.zeros(WIN, WIN)
    for dy in range(3):
        for dx in range(3):
            out += a[dy:dy + WIN, dx:dx + WIN]
    return out


def pipeline(store_noise=None, store_blur=None):
    noise = it.InfiniteTensor((None, None), noise_f, it.TensorWindow((WIN, WIN)), tile_store=store_noise,
                              tensor_id="noise")
    blur = it.InfiniteTensor((None, None), blur_f, it.TensorWindow((WIN, WIN)), args=[noise],
                             args_windows=[it.TensorWindow((WIN + 2, WIN + 2), stride=(WIN, WIN),
                                                           offset=(-1, -1))],
                             tile_store=store_blur, tensor_id="blur")
    return noise, blur


def crop_box(seed, i, span, max_crop, big_every=0):
    """The i-th crop: deterministic in (seed, i).  Every big_every-th crop is
    max_crop square (large reads go through the copy threads)."""
    g = torch.Generator().manual_seed(seed * 100_003 + i)
    y, x = (int(v) for v in torch.randint(-span, span, (2,), generator=g))
    if big_every and i % big_every == 0:
        h = w = max_crop
    else:
        h, w = (int(v) for v in torch.randint(1, max_crop // 4, (2,), generator=g))
    return y, x, h, w


class CropDataset(torch.utils.data.Dataset):
    """kind "memory": the pipeline in one MemoryTileStore.  kind "hdf5": both
    tensors in the HDF5 file `path`, opened with mode "r" (the parent must
    have filled every window the crops need)."""

    def __init__(self, kind, n, seed=0, span=400, max_crop=256, big_every=0, path=None):
        assert kind in ("memory", "hdf5")
        self.kind, self.n, self.seed, self.span = kind, n, seed, span
        self.max_crop, self.big_every, self.path = max_crop, big_every, path
        self._pid = None
        self._store = self._blur = None

    def __getstate__(self):  # spawn: the worker builds its own pipeline
        state = dict(self.__dict__)
        state.update(_pid=None, _store=None, _blur=None)
        return state

    def _tensor(self):
        if self._pid == os.getpid():
            return self._blur
        if self.kind == "memory":
            if self._blur is None:  # a forked worker keeps its parent's tensors
                store = it.MemoryTileStore()
                self._store, (_, self._blur) = store, pipeline(store, store)
        else:
            # never use a store opened by another process (an inherited HDF5
            # handle is the parent's): the object is left alone, not closed
            self._store = it.HDF5TileStore(self.path, mode="r", tile_size=TILE)
            self._blur = pipeline(self._store, self._store)[1]
        self._pid = os.getpid()
        return self._blur

    def box(self, i):
        return crop_box(self.seed, i, self.span, self.max_crop, self.big_every)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        y, x, h, w = self.box(i)
        return self._tensor()[y:y + h, x:x + w]

    def close(self):
        if self.kind == "hdf5" and self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._pid = None
        self._store = self._blur = None


def fill_hdf5(path, seed, n, span, max_crop, big_every=0):
    """Compute (in this process) every window the crops of a dataset need,
    into the HDF5 file `path`, and close it."""
    with it.HDF5TileStore(path, mode="w", tile_size=TILE) as store:
        _, blur = pipeline(store, store)
        for i in range(n):
            y, x, h, w = crop_box(seed, i, span, max_crop, big_every)
            blur[y:y + h, x:x + w]


class PickledTensorCrops(torch.utils.data.Dataset):
    """Crops of a tensor the dataset holds and sends to its workers as it is
    (pickled under spawn: the tensor rebuilds itself from its definition)."""

    def __init__(self, tensor, n, seed=0, span=400, max_crop=64):
        self.tensor, self.n, self.seed, self.span, self.max_crop = tensor, n, seed, span, max_crop

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        y, x, h, w = crop_box(self.seed, i, self.span, self.max_crop)
        return self.tensor[y:y + h, x:x + w]


CALLS = []


def counted_noise_f(ctx):
    CALLS.append(ctx)
    return noise_f(ctx)


def read_pickled(blob, box):
    """In a child process: unpickle a tensor, read box, return the values and
    how many windows this process computed."""
    import pickle

    t = pickle.loads(blob)
    (y0, y1), (x0, x1) = box
    out = t[y0:y1, x0:x1]
    store = t._store
    if hasattr(store, "close"):
        store.close()
    return out, len(CALLS)


def noise_f8(ctx):
    g = torch.Generator().manual_seed((ctx[0] * 1_000_003 + ctx[1] * 7_919 + 5) & 0x7FFFFFFF)
    return torch.rand(8, 8, generator=g)


def noise_f8_batched(ctxs):
    return [noise_f8(c).to(torch.float64) for c in ctxs]


def ones4(ctx):
    return torch.ones(4)


def double(x):
    return x * 2


def rgb_f(ctx):
    g = torch.Generator().manual_seed((ctx[1] * 7_919 + ctx[2] * 104_729 + 3) & 0x7FFFFFFF)
    return torch.rand(3, 8, 8, generator=g)


def corner_sampler(g):
    return [int(v) * 100 for v in torch.randint(0, 2, (2,), generator=g)]


def ones_f(ctx):
    return torch.ones(4, 4)


# -- one world for many processes (tests/test_world.py) -----------------------
def world_crops(seed, n, span=150, max_crop=80):
    return [crop_box(seed, i, span, max_crop) for i in range(n)]


def read_crops(tensor, boxes):
    """In a worker: the crops of boxes, read through tensor."""
    return [tensor[y:y + h, x:x + w] for y, x, h, w in boxes]


def flush_store(store):
    store.flush()
    return True


def build_and_read(store, boxes):
    """In a worker: build a tensor the owner has never seen (a module-level
    f: the owner learns it by unpickling) and read it."""
    t = it.InfiniteTensor((None, None), noise_f, it.TensorWindow((WIN, WIN)), tile_store=store,
                          tensor_id="built-in-worker")
    return read_crops(t, boxes)


def read_until_killed(tensor, progress):
    """In a worker that the test kills: read crops forever, saying how many."""
    i = 0
    while True:
        y, x, h, w = crop_box(99, i, 400, 64)
        tensor[y:y + h, x:x + w]
        i += 1
        progress.put(i)


def raising_f(ctx, *args):
    raise AssertionError(f"window {ctx} should have come from the file")


def noise_failing_at_1_1(ctx):
    if tuple(ctx) == (1, 1):
        raise RuntimeError("no window (1, 1) today")
    return noise_f(ctx)


def noise_tensor(store, f=noise_f, tid="n"):
    return it.InfiniteTensor((None, None), f, it.TensorWindow((WIN, WIN)), tile_store=store, tensor_id=tid)


def read_noise(store, box, f_name="noise_f"):
    """In a worker: build the noise tensor on store (f named in this module)
    and read box; the error's text if the read fails."""
    (y0, y1), (x0, x1) = box
    try:
        return noise_tensor(store, globals()[f_name])[y0:y1, x0:x1]
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def read_in_a_fork(tensor, box):
    """In a (spawned) worker: fork a child that reads box through tensor
    and hands it back through a pipe (the child's store is served by the
    first process, whose address the worker got in the pickle)."""
    import pickle

    (y0, y1), (x0, x1) = box
    tensor[y0:y0 + 1, x0:x0 + 1]  # the worker's own store is served now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.write(w, pickle.dumps(tensor[y0:y1, x0:x1]))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    return pickle.loads(data)
