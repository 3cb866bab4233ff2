"""0.4 compatibility: what upstream infinite-tensor 0.4.0 added over 0.3.

* ``sl`` (a region builder) and ``t[[region, ...]]`` (a list is always a
  list of regions; one pass over every window they need, deduplicated and
  batched together);
* ``t.iter_regions(iterable)`` (windows in region order, in full batches,
  each batch followed by the list of regions it completed);
* the order of the windows inside the batches ``f`` receives: first seen,
  region by region, each region's windows in lexicographic order; for an
  upstream tensor of a pipeline, the windows first seen across the pending
  windows' argument regions, in that order;
* ``begin_access`` / ``end_access`` called on the stores around reads;
* ``blend`` / ``blend_init`` (new InfiniteTensor kwargs in 0.4) and
  ``TypeError`` for index objects that are not int, slice or Ellipsis;
* ``HDF5TileStore(cache_size_bytes=..., cache_size_tiles=...)``.

Values are checked against the plain-torch reference (tests/reference.py
through tests/pairs.py).  Where a test pins the exact batches ``f`` gets, the
expected lists were recorded by running upstream 0.4.0 itself on the same
calls (each such list says so).  This file also runs against upstream:
``PYTHONPATH=<dir holding upstream's infinite_tensor> python -m pytest
tests/test_compat04.py`` from outside the checkout.
"""

import inspect

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import HDF5TileStore, InfiniteTensor, MemoryTileStore, TensorWindow
from pairs import Win, assert_same, make, pattern

try:
    from infinite_tensor import sl
except ImportError:  # keep the module importable: only the tests that use sl fail

    class _Missing:
        def __getitem__(self, key):
            pytest.fail("infinite_tensor.sl is missing")

    sl = _Missing()

F64 = torch.float64
S = slice


def line(batch_size=None, store=None, win=Win((4,)), shape=(None,), **kw):
    """A tensor of distinct integer values per window and position."""
    return make(shape, lambda c: pattern(c, win.size), win, store=store, dtype=F64,
                batch_size=batch_size, **kw)


def assert_list_same(got, expected):
    assert isinstance(got, list), type(got)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_same(g, e)


# ---------------------------------------------------------------- sl


def test_sl_builds_region_tuples():
    assert sl[0:512, 5] == (slice(0, 512, None), 5)
    assert sl[0:8] == (slice(0, 8, None),)  # always a tuple, even for one dim
    assert sl[3] == (3,)
    assert sl[-5] == (-5,)
    assert sl[...] == (Ellipsis,)
    assert sl[..., 1:5] == (Ellipsis, slice(1, 5, None))
    assert sl[:, 1:2:3] == (slice(None, None, None), slice(1, 2, 3))
    assert sl[()] == ()
    assert repr(sl) == "sl" and str(sl) == "sl"
    assert it.sl is sl
    assert "sl" in it.__all__


def test_sl_region_reads_what_the_index_reads():
    p = make((3, None, None), lambda c: pattern(c, (3, 4, 5)), Win((3, 4, 5), (3, 3, 5), (0, 1, -2)), dtype=F64)
    for index, region in [
        ((S(0, 3), S(0, 9), 5), sl[0:3, 0:9, 5]),
        ((-1, S(-7, 2), S(3, 11, 2)), sl[-1, -7:2, 3:11:2]),
        ((Ellipsis, S(4, 5), S(0, 6)), sl[..., 4:5, 0:6]),
        ((1, 2, -3), sl[1, 2, -3]),
    ]:
        (got,) = p.lib[[region]]
        assert_same(got, p.ref[index])
        assert_same(p.lib[index], p.ref[index])


# ---------------------------------------------------------------- region lists


def test_region_list_returns_a_list_in_order():
    """Finite and infinite dims, negative ints (wrap on finite dims, literal on
    infinite ones), squeezed int dims, Ellipsis, steps, empty slices."""
    p = make((3, None, None), lambda c: pattern(c, (3, 4, 5)), Win((3, 4, 5), (3, 3, 5), (0, 1, -2)), dtype=F64)
    regions = [
        sl[:, 0:8, 0:10],
        sl[-1, -9:-2, 4],
        sl[1, 5, -3],
        sl[..., 2:5, 7:9],  # Ellipsis standing for the finite dim
        sl[0:2, 3:20:4, -12:-1:3],
        sl[-2:, 6:6, 0:4],  # an empty slice on an infinite dim
    ]
    got = p.lib[regions]
    assert_list_same(got, [p.ref[r] for r in regions])
    assert [tuple(g.shape) for g in got] == [(3, 8, 10), (7,), (), (3, 3, 2), (2, 5, 4), (2, 0, 4)]


def test_region_list_of_plain_tuples_and_ints():
    """sl is sugar: any list is a list of regions, whatever each region is
    (a tuple of ints/slices, a bare int, a bare slice)."""
    p = make((3, 4), lambda c: pattern(c, (1, 4)), Win((1, 4)), dtype=F64)
    regions = [0, -1, (S(None), 2), S(1, 3), (2, S(1, -1)), (Ellipsis, -1)]
    got = p.lib[regions]
    assert_list_same(got, [p.ref[r] for r in regions])
    # [0, 1] is two regions (rows 0 and 1), never the single index t[0, 1] of 0.3
    two = p.lib[[0, 1]]
    assert_list_same(two, [p.ref[0], p.ref[1]])
    assert [tuple(g.shape) for g in two] == [(4,), (4,)]
    q = line()
    got = q.lib[[0, 5, -1]]
    assert_list_same(got, [q.ref[0], q.ref[5], q.ref[-1]])
    assert all(g.shape == () for g in got)


def test_region_list_of_one_and_empty_list():
    p = line(batch_size=2)
    (only,) = p.lib[[sl[3:9]]]
    assert_same(only, p.ref[3:9])
    p.reset_calls()
    assert p.lib[[]] == []  # upstream 0.4.0 returns an empty list and computes nothing
    assert p.calls == [] and p.batches == []


def test_region_list_duplicates_and_overlaps_compute_each_window_once():
    p = make((None, None), lambda c: pattern(c, (4, 6)), Win((4, 6), (2, 3), (-1, 0)), dtype=F64, batch_size=5)
    regions = [sl[0:8, 0:9], sl[0:8, 0:9], sl[3:6, 4:15], sl[5, -4:7], sl[0:8, 0:9], sl[-3:2, 2]]
    got = p.lib[regions]
    assert_list_same(got, [p.ref[r] for r in regions])
    assert len(p.calls) == len(set(p.calls))
    needed = []
    for r in regions:
        for w in p.ref.windows_for(r):
            if w not in needed:
                needed.append(w)
    assert set(p.calls) == set(needed)
    assert all(len(b) == 5 for b in p.batches[:-1]) and 0 < len(p.batches[-1]) <= 5
    # every result is a tensor of its own, duplicates included
    got[0].add_(1000)
    assert_same(got[1], p.ref[regions[1]])
    assert_same(got[4], p.ref[regions[4]])
    # a second read is served from the cache
    p.reset_calls()
    assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
    assert p.calls == []


@pytest.mark.parametrize("bad", [None, 1.5, "0", [0, 1]], ids=["None", "float", "str", "list"])
def test_index_objects_that_are_not_int_slice_or_ellipsis_raise_type_error(bad):
    """0.4's standardize_indices raises TypeError for anything but int,
    slice, Ellipsis (in 0.3 a list was turned into a tuple)."""
    p = make((None, 3), lambda c: pattern(c, (4, 3)), Win((4, 3)), dtype=F64)
    with pytest.raises(TypeError):
        p.lib[S(0, 4), bad]
    with pytest.raises(TypeError):
        p.lib[[bad]] if isinstance(bad, list) else p.lib[bad]
    with pytest.raises(TypeError):
        p.lib[[sl[0:4], (S(0, 4), bad)]]
    assert p.calls == []


# ---------------------------------------------------------------- batch composition


def test_region_list_batches_in_first_seen_order_1d():
    p = line(batch_size=3)
    regions = [sl[0:8], sl[20:22], sl[3], sl[-5:-1], sl[0:8]]
    got = p.lib[regions]
    assert_list_same(got, [p.ref[r] for r in regions])
    # from upstream 0.4.0
    assert p.batches == [[(0,), (1,), (5,)], [(-2,), (-1,)]]


def test_region_list_batches_in_first_seen_order_2d():
    p = make((None, None), lambda c: pattern(c, (2, 2)), Win((2, 2)), dtype=F64, batch_size=2)
    regions = [sl[0:4, 0:4], sl[1:3, -3:1]]
    assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
    # from upstream 0.4.0: region 1's windows lexicographically, then region 2's new ones
    assert p.batches == [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, -2), (0, -1)], [(1, -2), (1, -1)]]


def test_region_list_batches_with_a_finite_dim():
    p = make((3, None), lambda c: pattern(c, (3, 2)), Win((3, 2)), dtype=F64, batch_size=2)
    regions = [sl[-1, 0:4], sl[0:2, -3], (S(0, 3), S(6, 8)), sl[..., 1:5]]
    got = p.lib[regions]
    assert_list_same(got, [p.ref[r] for r in regions])
    assert [tuple(g.shape) for g in got] == [(4,), (2,), (3, 2), (3, 4)]
    # from upstream 0.4.0
    assert p.batches == [[(0, 0), (0, 1)], [(0, -2), (0, 3)], [(0, 2)]]


def test_region_list_skips_cached_windows():
    p = line(batch_size=2)
    p.lib[4:12]  # windows 1, 2
    assert p.batches == [[(1,), (2,)]]
    p.reset_calls()
    regions = [sl[0:16], sl[-4:6]]
    assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
    assert p.batches == [[(0,), (3,)], [(-1,)]]


PAD_WIN = Win((6,), (4,), (-1,))  # window i of the downstream reads base pixels [4i - 1, 4i + 5)


def pipeline(base_bs, down_bs, store=None):
    base = line(batch_size=base_bs, store=store)
    down = make((None,), lambda c, x: x[1:5] * 2 + x[0] - x[5] + pattern(c, (4,), base=3), Win((4,)),
                [base], [PAD_WIN], store=store, dtype=F64, batch_size=down_bs)
    return base, down


def test_pipeline_region_list_batches_upstream_windows_first_seen():
    base, down = pipeline(3, 2)
    regions = [sl[0:8], sl[20:24], sl[4:12]]
    assert_list_same(down.lib[regions], [down.ref[r] for r in regions])
    # from upstream 0.4.0: downstream windows 0, 1, 5, 2 need base windows
    # (-1, 0, 1), (0, 1, 2), (4, 5, 6), (1, 2, 3): first seen -1 0 1 2 4 5 6 3
    assert base.batches == [[(-1,), (0,), (1,)], [(2,), (4,), (5,)], [(6,), (3,)]]
    assert down.batches == [[(0,), (1,)], [(5,), (2,)]]


def test_pipeline_unbatched_downstream_batched_upstream():
    base, down = pipeline(3, None)
    regions = [sl[0:8], sl[20:24], sl[4:12]]
    assert_list_same(down.lib[regions], [down.ref[r] for r in regions])
    # from upstream 0.4.0
    assert base.batches == [[(-1,), (0,), (1,)], [(2,), (4,), (5,)], [(6,), (3,)]]
    assert down.calls == [(0,), (1,), (5,), (2,)]


def _pipeline_2d(down_bs):
    base = make((None, None), lambda c: pattern(c, (4, 4)), Win((4, 4)), dtype=F64, batch_size=4)
    down = make((None, None), lambda c, x: x[1:5, 1:5] * 2 + x[0, 0] + pattern(c, (4, 4)), Win((4, 4)), [base],
                [Win((6, 6), (4, 4), (-1, -1))], dtype=F64, batch_size=down_bs)
    return base, down


def test_pipeline_2d_upstream_batches_are_first_seen_not_sorted():
    base, down = _pipeline_2d(3)
    assert_same(down.lib[0:8, 0:8], down.ref[0:8, 0:8])
    # from upstream 0.4.0: (0, 0)'s nine neighbours, then (0, 1)'s new column,
    # then (1, 0)'s new row, then (1, 1)'s corner
    assert base.batches == [
        [(-1, -1), (-1, 0), (-1, 1), (0, -1)],
        [(0, 0), (0, 1), (1, -1), (1, 0)],
        [(1, 1), (-1, 2), (0, 2), (1, 2)],
        [(2, -1), (2, 0), (2, 1), (2, 2)],
    ]
    assert down.batches == [[(0, 0), (0, 1), (1, 0)], [(1, 1)]]


def test_pipeline_2d_region_list_follows_region_order():
    base, down = _pipeline_2d(None)
    regions = [(S(4, 8), S(0, 4)), (S(0, 8), S(0, 4))]
    assert_list_same(down.lib[regions], [down.ref[r] for r in regions])
    # from upstream 0.4.0: window (1, 0) (region 1) before (0, 0) (region 2)
    assert down.calls == [(1, 0), (0, 0)]
    assert base.batches == [
        [(0, -1), (0, 0), (0, 1), (1, -1)],
        [(1, 0), (1, 1), (2, -1), (2, 0)],
        [(2, 1), (-1, -1), (-1, 0), (-1, 1)],
    ]


# ---------------------------------------------------------------- iter_regions

ITER_REGIONS = [sl[0:8], sl[6:10], sl[30:31], sl[0:4], sl[-8:-2], sl[9]]

# from upstream 0.4.0: (chunk sizes, batches f received) per batch_size
ITER_EXPECTED = {
    1: ([1, 1, 1, 1, 1, 1], [[(0,)], [(1,)], [(2,)], [(7,)], [(-2,)], [(-1,)]]),
    2: ([1, 2, 2, 1], [[(0,), (1,)], [(2,), (7,)], [(-2,), (-1,)]]),
    3: ([2, 3, 1], [[(0,), (1,), (2,)], [(7,), (-2,), (-1,)]]),
    None: ([6], []),
}


@pytest.mark.parametrize("bs", [1, 2, 3, None])
def test_iter_regions_chunks_and_batches(bs):
    p = line(batch_size=bs)
    chunks = list(p.lib.iter_regions(r for r in ITER_REGIONS))  # a generator
    sizes, batches = ITER_EXPECTED[bs]
    assert all(isinstance(c, list) and c for c in chunks)
    assert [len(c) for c in chunks] == sizes
    assert p.batches == batches
    if bs is None:
        assert p.calls == [(0,), (1,), (2,), (7,), (-2,), (-1,)]
    assert_list_same([x for c in chunks for x in c], [p.ref[r] for r in ITER_REGIONS])


# from upstream 0.4.0: when each region is pulled from the generator, and each
# chunk (size, number of f calls so far) is yielded
ITER_EVENTS = {
    1: ["pull 0", ("chunk", 1, 2), "pull 1", ("chunk", 1, 3), "pull 2", ("chunk", 1, 4), "pull 3",
        "pull 4", ("chunk", 1, 5), ("chunk", 1, 6), "pull 5", ("chunk", 1, 6)],
    2: ["pull 0", ("chunk", 1, 2), "pull 1", "pull 2", ("chunk", 2, 4), "pull 3", "pull 4", ("chunk", 2, 6),
        "pull 5", ("chunk", 1, 6)],
    3: ["pull 0", "pull 1", ("chunk", 2, 3), "pull 2", "pull 3", "pull 4", ("chunk", 3, 6), "pull 5",
        ("chunk", 1, 6)],
    None: ["pull 0", "pull 1", "pull 2", "pull 3", "pull 4", "pull 5", ("chunk", 6, 6)],
}


@pytest.mark.parametrize("bs", [1, 2, 3, None])
def test_iter_regions_pulls_regions_lazily(bs):
    p = line(batch_size=bs)
    events = []

    def regions():
        for i, r in enumerate(ITER_REGIONS):
            events.append(f"pull {i}")
            yield r

    gen = p.lib.iter_regions(regions())
    assert events == [] and p.calls == []  # nothing happens before the first next()
    for chunk in gen:
        events.append(("chunk", len(chunk), len(p.calls)))
    assert events == ITER_EVENTS[bs]


@pytest.mark.parametrize("bs", [1, 3, None])
def test_iter_regions_equals_region_list(bs):
    """Overlapping windows, a finite dim, squeezed dims: the concatenated
    chunks are t[list(regions)], value for value."""
    mk = lambda: make((2, None, None), lambda c: pattern(c, (2, 4, 6)), Win((2, 4, 6), (2, 3, 4), (0, -1, 2)),
                      dtype=F64, batch_size=bs)
    regions = [sl[:, 0:7, 0:9], sl[1, -5:3, 4], sl[0, 2, -8:-1], sl[..., 10:12, 0:3], sl[:, 0:7, 0:9],
               sl[-1, 30:32, 30:41:5]]
    p, q = mk(), mk()
    chunks = list(p.lib.iter_regions(iter(regions)))
    if bs is None:
        assert len(chunks) == 1
    if bs == 1:
        assert len(chunks) >= 4
    flat = [x for c in chunks for x in c]
    assert_list_same(flat, [p.ref[r] for r in regions])
    assert_list_same(flat, q.lib[list(regions)])
    assert sorted(p.calls) == sorted(q.calls) and len(p.calls) == len(set(p.calls))


def test_iter_regions_cached_regions_come_with_the_next_batch():
    p = line(batch_size=2)
    p.lib[0:8]  # windows 0, 1
    p.reset_calls()
    regions = [sl[0:4], sl[4:8], sl[8:12], sl[0:2], sl[12:20], sl[4:6]]
    chunks = list(p.lib.iter_regions(regions))
    # from upstream 0.4.0: the two cached regions wait for the first batch,
    # the cached sl[0:2] is yielded in region order with it, sl[4:6] with the last
    assert [len(c) for c in chunks] == [4, 2]
    assert p.batches == [[(2,), (3,)], [(4,)]]
    assert_list_same([x for c in chunks for x in c], [p.ref[r] for r in regions])


@pytest.mark.parametrize("bs", [2, None])
def test_iter_regions_all_cached_or_empty(bs):
    p = line(batch_size=bs)
    p.lib[0:8]
    p.reset_calls()
    chunks = list(p.lib.iter_regions(iter([sl[0:4], sl[4:8]])))
    assert [len(c) for c in chunks] == [2] and p.calls == []
    assert_list_same(chunks[0], [p.ref[0:4], p.ref[4:8]])
    assert list(p.lib.iter_regions([])) == []  # from upstream 0.4.0: no chunk at all
    assert list(p.lib.iter_regions(iter(()))) == []
    assert p.calls == []


def test_iter_regions_pipeline_batches_per_downstream_batch():
    base, down = pipeline(3, 2)
    regions = [sl[0:8], sl[20:24], sl[4:12]]
    chunks = list(down.lib.iter_regions(regions))
    assert_list_same([x for c in chunks for x in c], [down.ref[r] for r in regions])
    # from upstream 0.4.0: each downstream batch first computes the base
    # windows its own windows need, in first-seen order
    assert [len(c) for c in chunks] == [1, 2]
    assert down.batches == [[(0,), (1,)], [(5,), (2,)]]
    assert base.batches == [[(-1,), (0,), (1,)], [(2,)], [(4,), (5,), (6,)], [(3,)]]


def test_region_list_pins_its_windows_in_a_bounded_cache():
    """README 0.4: the windows of a region list "stay cached until every
    region has been read": with room for one window, each is still computed
    once, and the values are right."""
    store = MemoryTileStore(cache_size_windows=1)
    p = line(batch_size=3, store=store, win=Win((4,), (3,), (1,)))
    regions = [sl[0:10], sl[-6:3], sl[0:10], sl[20:24], sl[5]]
    assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
    assert len(p.calls) == len(set(p.calls))
    # from upstream 0.4.0
    assert p.batches == [[(-1,), (0,), (1,)], [(2,), (-3,), (-2,)], [(6,), (7,)]]


@pytest.mark.parametrize("bs", [1, 3, None])
def test_iter_regions_in_a_bounded_cache(bs):
    """Windows of earlier batches may be evicted before a region that needs
    them is read: the values are still right."""
    store = MemoryTileStore(cache_size_windows=1)
    p = make((None, None), lambda c: pattern(c, (4, 6)), Win((4, 6), (2, 3), (-1, 0)), store=store, dtype=F64,
             batch_size=bs)
    regions = [sl[0:6, 0:7], sl[2:9, 5:12], sl[0:6, 0:7], sl[-5, -3:4], sl[3:4, 2:3]]
    chunks = list(p.lib.iter_regions(iter(regions)))
    assert_list_same([x for c in chunks for x in c], [p.ref[r] for r in regions])


def test_iter_regions_can_be_abandoned():
    p = line(batch_size=1)
    gen = p.lib.iter_regions(sl[i:i + 4] for i in range(0, 400, 4))
    first = next(gen)
    assert_list_same(first, [p.ref[0:4]])
    assert p.calls == [(0,)]
    gen.close()
    assert p.calls == [(0,)]
    assert_same(p.lib[0:12], p.ref[0:12])
    assert p.calls == [(0,), (1,), (2,)]


# ---------------------------------------------------------------- blend (new kwargs in 0.4)


@pytest.mark.parametrize("blend,init", [(torch.maximum, float("-inf")), (torch.minimum, 50.0), (None, None),
                                        (None, 7), (lambda a, b: a * 0.5 + b, 0)],
                         ids=["max", "min", "sum", "sum-init", "decay"])
def test_blend_and_blend_init(blend, init):
    p = make((None, None), lambda c: pattern(c, (4, 4)), Win((4, 4), (2, 3), (0, 1)), dtype=F64,
             blend=blend, blend_init=init, batch_size=3)
    assert p.lib.blend is blend and p.lib.blend_init == init
    regions = [sl[0:9, 0:10], sl[-3, -4:5], sl[2:3, 2:3]]
    assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
    assert_list_same([x for c in p.lib.iter_regions(regions) for x in c], [p.ref[r] for r in regions])


@pytest.mark.parametrize("kw", [dict(blend=3), dict(blend="max"), dict(blend_init=True), dict(blend_init="0"),
                                dict(blend_init=[0])])
def test_blend_validation(kw):
    with pytest.raises(it.ValidationError):
        InfiniteTensor((None,), lambda c: torch.ones(4), TensorWindow((4,)), **kw)


# ---------------------------------------------------------------- begin_access / end_access


class AccessSpy:
    """Mixin for a store subclass: records begin/end_access and each f call's depth."""

    def _spy_init(self):
        self.depth = {}
        self.events = []
        self.min_depth = 0

    def begin_access(self, tensor_id):
        self.depth[tensor_id] = self.depth.get(tensor_id, 0) + 1
        self.events.append(("begin", tensor_id))
        super().begin_access(tensor_id)

    def end_access(self, tensor_id):
        self.depth[tensor_id] = self.depth.get(tensor_id, 0) - 1
        self.min_depth = min(self.min_depth, self.depth[tensor_id])
        self.events.append(("end", tensor_id))
        super().end_access(tensor_id)

    def outer_brackets(self, tensor_id):
        d, n = 0, 0
        for kind, tid, *_ in self.events:
            if kind not in ("begin", "end") or tid != tensor_id:
                continue
            if kind == "begin":
                n += d == 0
                d += 1
            else:
                d -= 1
        return n


class SpyMemory(AccessSpy, MemoryTileStore):
    def __init__(self, *a, **k):
        self._spy_init()
        super().__init__(*a, **k)


def _spied_pipeline(store):
    def fb(ctxs):
        store.events.append(("f", "base", store.depth.get("base", 0)))
        return [pattern(c, (4,)) for c in ctxs]

    def fd(ctxs, xs):
        store.events.append(("f", "down", store.depth.get("down", 0), store.depth.get("base", 0)))
        return [x[1:5] * 2 + pattern(c, (4,)) for c, x in zip(ctxs, xs)]

    base = InfiniteTensor((None,), fb, TensorWindow((4,)), dtype=F64, tile_store=store, tensor_id="base",
                          batch_size=2)
    down = InfiniteTensor((None,), fd, TensorWindow((4,)), args=(base,), args_windows=(PAD_WIN.lib(),), dtype=F64,
                          tile_store=store, tensor_id="down", batch_size=2)
    ref_base = make((None,), lambda c: pattern(c, (4,)), Win((4,)), dtype=F64)
    ref_down = make((None,), lambda c, x: x[1:5] * 2 + pattern(c, (4,)), Win((4,)), [ref_base], [PAD_WIN],
                    dtype=F64)
    return base, down, ref_down.ref


def _check_f_inside_brackets(store):
    fs = [e for e in store.events if e[0] == "f"]
    assert fs, "f was never called"
    for e in fs:
        if e[1] == "base":
            assert e[2] >= 1, store.events
        else:
            assert e[2] >= 1 and e[3] >= 1, store.events  # upstream pinned while down computes
    assert store.min_depth >= 0
    assert all(d == 0 for d in store.depth.values()), store.depth


def test_access_hooks_bracket_a_region_list_read():
    """Upstream 0.4.0 calls begin_access/end_access on a store subclass:
    balanced, f only inside, and one outermost bracket per tensor for a whole
    region-list read (windows stay pinned until every region is read)."""
    store = SpyMemory()
    base, down, ref = _spied_pipeline(store)
    regions = [sl[0:8], sl[12:16], sl[-4:2]]
    got = down[regions]
    assert_list_same(got, [ref[r] for r in regions])
    _check_f_inside_brackets(store)
    assert store.outer_brackets("down") == 1
    assert store.outer_brackets("base") == 1
    store.events.clear()
    base[0:4]
    assert store.outer_brackets("base") == 1 and store.outer_brackets("down") == 0


def test_access_hooks_are_released_at_each_iter_regions_yield():
    store = SpyMemory()
    base, down, ref = _spied_pipeline(store)
    regions = [sl[16:20], sl[24:28], sl[0:4], sl[32:36]]
    depths_at_yield = []
    chunks = []
    for chunk in down.iter_regions(regions):
        depths_at_yield.append(dict(store.depth))
        chunks.append(chunk)
    assert_list_same([x for c in chunks for x in c], [ref[r] for r in regions])
    assert len(chunks) >= 2
    assert all(all(v == 0 for v in d.values()) for d in depths_at_yield), depths_at_yield
    assert store.outer_brackets("down") >= len(chunks)
    _check_f_inside_brackets(store)
    # an abandoned generator leaves nothing open
    gen = down.iter_regions(sl[i:i + 4] for i in range(100, 200, 4))
    next(gen)
    gen.close()
    assert all(d == 0 for d in store.depth.values()), store.depth


def test_access_hooks_on_hdf5_subclass(tmp_path):
    class SpyH5(AccessSpy, HDF5TileStore):
        def __init__(self, *a, **k):
            self._spy_init()
            super().__init__(*a, **k)

    with SpyH5(tmp_path / "a.h5", tile_size=8, cache_size_tiles=1) as store:
        base, down, ref = _spied_pipeline(store)
        regions = [sl[0:8], sl[12:16], sl[-4:2]]
        assert_list_same(down[regions], [ref[r] for r in regions])
        _check_f_inside_brackets(store)
        assert store.outer_brackets("down") == 1 and store.outer_brackets("base") == 1


# ---------------------------------------------------------------- HDF5TileStore cache limits


def test_hdf5_defaults_match_upstream():
    params = inspect.signature(HDF5TileStore).parameters
    assert params["mode"].default == "a"
    assert params["compression"].default == "gzip"
    assert params["compression_opts"].default == 4
    assert params["tile_size"].default == 512
    assert params["cache_size_bytes"].default == 100 * 1024 * 1024
    assert params["cache_size_tiles"].default is None


@pytest.mark.parametrize("limits", [dict(cache_size_tiles=1), dict(cache_size_bytes=1),
                                    dict(cache_size_tiles=2, cache_size_bytes=None),
                                    dict(cache_size_bytes=64 * 8, cache_size_tiles=3), {}],
                         ids=["tiles1", "bytes1", "tiles2", "both", "defaults"])
def test_hdf5_cache_limits_keep_values_and_compute_each_window_once(tmp_path, limits):
    path = tmp_path / "t.h5"
    regions = [sl[0:20, 0:20], sl[-9:3, 5], sl[7, -20:-2], sl[0:20, 0:20], sl[30:41, -3:9:2]]
    win = Win((4, 6), (3, 4), (-1, 2))

    def build(store, bs):
        return make((None, None), lambda c: pattern(c, (4, 6)), win, store=store, dtype=F64, batch_size=bs,
                    tensor_id="t", blend=torch.maximum, blend_init=float("-inf"))

    with HDF5TileStore(path, tile_size=(5, 7), **limits) as store:
        p = build(store, 4)
        assert_list_same(p.lib[regions], [p.ref[r] for r in regions])
        assert len(p.calls) == len(set(p.calls))
        n = len(p.calls)
        chunks = list(p.lib.iter_regions(iter(regions + [sl[-30:-20, 0:3]])))
        assert_list_same([x for c in chunks for x in c], [p.ref[r] for r in regions + [sl[-30:-20, 0:3]]])
        assert len(p.calls) == len(set(p.calls)) and len(p.calls) > n
    with HDF5TileStore(path, tile_size=(5, 7), **limits) as store:
        q = build(store, None)
        assert_list_same(q.lib[regions], [q.ref[r] for r in regions])
        assert q.calls == []  # served from disk


def test_hdf5_tile_cache_size_is_a_deprecated_alias(tmp_path):
    with pytest.warns(DeprecationWarning):
        store = HDF5TileStore(tmp_path / "d.h5", tile_size=4, tile_cache_size=1)
    with store:
        p = line(store=store)
        assert_list_same(p.lib[[sl[0:9], sl[-7:-1]]], [p.ref[0:9], p.ref[-7:-1]])
