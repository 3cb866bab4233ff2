"""Reading several regions at once (0.4): t[[...]] and t.iter_regions.

Values are checked against tests/reference.py (plain torch over a finite
box); the order in which a batched f sees windows is checked against the
order 0.4 defines, computed here from the windows each region meets
(reference.Win.windows, lexicographic per region)."""
import itertools

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import sl
from pairs import Win, assert_same, make, pattern

S = slice
WIN = Win((4, 4), stride=(2, 3), offset=(0, -1))


def pure(ctx, *args):
    return pattern(ctx, (4, 4), torch.float64)


def box_of(region):
    """[(start, stop)] of a step-1 2-d region of slices."""
    return [(s.start, s.stop) for s in region]


def first_seen(win, regions, shape=(None, None)):
    """0.4's order: each region's windows in lexicographic order, a window
    seen in an earlier region skipped."""
    seen, order = set(), []
    for region in regions:
        for w in win.windows(box_of(region), shape):
            if w not in seen:
                seen.add(w)
                order.append(w)
    return order


def chunks(seq, n):
    return [seq[i:i + n] for i in range(0, len(seq), n)]


REGIONS = [sl[0:6, 0:7], sl[-5:2, 5:9], sl[0:3, 0:3], sl[20:24, -8:-2], sl[1:5, 4:11]]


@pytest.mark.parametrize("batch", [None, 1, 3, 7])
def test_a_list_read_equals_the_regions_read_alone(batch, store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=batch)
    got = p.lib[REGIONS]
    assert len(got) == len(REGIONS)
    for region, value in zip(REGIONS, got):
        assert_same(value, p.ref[region])
    # each window computed once, though regions overlap
    assert sorted(p.calls) == sorted(set(p.calls))


@pytest.mark.parametrize("batch", [2, 3, 5])
def test_a_batched_f_sees_windows_in_first_seen_order(batch, store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=batch)
    p.lib[REGIONS]
    assert p.batches == chunks(first_seen(WIN, REGIONS), batch)


def test_cached_windows_are_skipped_in_a_list_read(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=4)
    p.lib[REGIONS[1]]
    done = set(p.calls)
    p.reset_calls()
    p.lib[REGIONS]
    assert p.batches == chunks([w for w in first_seen(WIN, REGIONS) if w not in done], 4)


def test_a_pipeline_upstream_sees_the_args_regions_in_first_seen_order(store):
    # 0.4 ensures the upstream windows of the pending windows' argument
    # regions, pending window by pending window, each region's in order
    up_win = Win((4, 4), stride=(2, 2))
    up = make((None, None), lambda ctx: pattern(ctx, (4, 4), torch.float64), up_win, store=store,
              dtype=torch.float64, batch_size=3)
    arg_win = Win((5, 5), stride=(3, 3), offset=(-1, -1))
    down = make((None, None), lambda ctx, x: x[1:4, 1:4] * 2, Win((3, 3)), args=[up], args_windows=[arg_win],
                store=store, dtype=torch.float64, batch_size=2)
    regions = [sl[0:6, 0:6], sl[-3:3, 5:9]]
    got = down.lib[regions]
    for region, value in zip(regions, got):
        assert_same(value, down.ref[region])
    pending = first_seen(Win((3, 3)), regions)
    assert down.batches == chunks(pending, 2)
    arg_regions = [tuple(S(a, b) for a, b in arg_win.bounds(w)) for w in pending]
    assert up.batches == chunks(first_seen(up_win, arg_regions), 3)


def test_a_list_read_pins_every_region_until_all_are_read():
    # a cache far too small for the regions: one read still computes each
    # window once, since its tiles stay pinned until every region is read
    store = it.MemoryTileStore(cache_size_bytes=1)
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=3)
    regions = [sl[0:10, 0:10], sl[4:14, 4:14], sl[0:10, 0:10]]
    got = p.lib[regions]
    for region, value in zip(regions, got):
        assert_same(value, p.ref[region])
    assert len(p.calls) == len(set(p.calls))
    assert store.cache_info()["pinned"] == 0


def test_a_list_read_computes_nothing_if_a_region_is_bad(store):
    p = make((3, None), lambda ctx: pattern(ctx, (3, 4), torch.float64), Win((3, 4)), store=store,
             dtype=torch.float64)
    with pytest.raises(IndexError, match="region 1 of the list"):
        p.lib[[sl[:, 0:8], sl[:, 0:]]]
    with pytest.raises(TypeError, match="region 1 of the list"):
        p.lib[[sl[:, 0:8], sl[:, 0.5]]]
    assert p.calls == []


@pytest.mark.parametrize("batch", [None, 1, 2, 3, 16])
def test_iter_regions_chunks_concatenate_to_the_list_read(batch, store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=batch)
    got = list(p.lib.iter_regions(iter(REGIONS)))
    if batch is None:
        assert len(got) == 1
    flat = list(itertools.chain.from_iterable(got))
    assert len(flat) == len(REGIONS)
    for region, value in zip(REGIONS, flat):
        assert_same(value, p.ref[region])
    if batch is not None:
        # full batches in first-seen order, the last one possibly short
        assert p.batches == chunks(first_seen(WIN, REGIONS), batch)


def test_iter_regions_yields_a_region_once_its_batch_is_done(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=1)
    regions = [sl[0:2, i:i + 3] for i in range(0, 30, 3)]
    sizes = [len(c) for c in p.lib.iter_regions(regions)]
    assert sum(sizes) == len(regions)
    assert max(sizes) <= 2  # batch 1: about one region per chunk


def test_iter_regions_pulls_the_generator_lazily(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=4)
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield sl[0:4, 3 * i:3 * i + 3]

    stream = p.lib.iter_regions(endless())
    first = next(stream)
    assert len(pulled) <= len(first) + 4  # a batch's worth of regions ahead, not the whole stream
    for k, value in enumerate(first):
        assert_same(value, p.ref[0:4, 3 * k:3 * k + 3])
    taken = sum(len(next(stream)) for _ in range(50))
    assert taken > 50 and len(pulled) < 200


def test_iter_regions_with_cached_regions_yields_them_with_the_next_batch(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=2)
    p.lib[0:4, 0:4]
    p.reset_calls()
    got = list(p.lib.iter_regions([sl[0:4, 0:4], sl[0:4, 20:24]]))
    flat = [v for c in got for v in c]
    assert_same(flat[0], p.ref[0:4, 0:4])
    assert_same(flat[1], p.ref[0:4, 20:24])
    assert all(w not in p.calls for w in WIN.windows([(0, 4), (0, 4)]))


def test_iter_regions_custom_blend_and_bounded_cache():
    store = it.MemoryTileStore(cache_size_bytes=1)
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, batch_size=3,
             blend=lambda a, b: a * 0.5 + b)
    regions = [sl[0:6, 0:7], sl[30:35, 0:4], sl[0:6, 0:7]]
    flat = [v for c in p.lib.iter_regions(regions) for v in c]
    for region, value in zip(regions, flat):
        assert_same(value, p.ref[region])


def test_iter_regions_refuses_a_list_region(store):
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64)
    with pytest.raises(TypeError, match="got a list"):
        list(p.lib.iter_regions([[S(0, 2), S(0, 2)]]))


def test_begin_access_defers_eviction_until_the_outermost_end():
    store = it.MemoryTileStore(cache_size_bytes=1)
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64)
    store.begin_access(p.lib.uuid)
    store.begin_access(p.lib.uuid)
    p.lib[0:8, 0:8]
    n = len(p.calls)
    p.lib[0:8, 0:8]
    assert len(p.calls) == n  # still cached: nothing computed again
    store.end_access(p.lib.uuid)
    assert store.cache_info()["tiles"] > 0
    store.end_access(p.lib.uuid)
    assert store.cache_info()["tiles"] == 0  # the outermost end trims
    store.end_access(p.lib.uuid)  # unmatched: nothing happens
    assert_same(p.lib[0:8, 0:8], p.ref[0:8, 0:8])


def test_a_store_overriding_the_access_hooks_sees_every_read():
    events = []

    class Recording(it.MemoryTileStore):
        def begin_access(self, tensor_id):
            events.append(("begin", tensor_id))
            super().begin_access(tensor_id)

        def end_access(self, tensor_id):
            events.append(("end", tensor_id))
            super().end_access(tensor_id)

    store = Recording()
    p = make((None, None), pure, WIN, store=store, dtype=torch.float64, tensor_id="t", batch_size=2)
    p.lib[0:4, 0:4]
    p.lib[[sl[0:4, 0:4], sl[8:9, 8:9]]]
    assert events == [("begin", "t"), ("end", "t")] * 2
    events.clear()
    list(p.lib.iter_regions([sl[0:4, 0:4]]))
    assert events and events[0] == ("begin", "t") and events.count(("begin", "t")) == events.count(("end", "t"))


def test_repr_and_html_show_the_configuration(store):
    t = it.InfiniteTensor((3, None), lambda ctx: torch.ones(3, 4), it.TensorWindow((3, 4), stride=(3, 2)),
                          tile_store=store, tensor_id="ones", blend=torch.maximum)
    text = repr(t)
    assert text.startswith("InfiniteTensor(id='ones', shape=(3, None), dtype=torch.float32, device=cpu")
    assert "blend=torch.maximum" in text and "cached=0 B in 0 tiles" in text
    t[:, 0:8]
    assert "cached=0 B" not in repr(t)
    html = t._repr_html_()
    assert "<table>" in html and "torch.maximum" in html and "&#x27;ones&#x27;" in html
    assert "&#x27;ones&#x27;" in store._repr_html_()
