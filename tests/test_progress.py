"""Visibility: t.stats() counters, DEBUG log records of reads that compute,
and progress bars (through a recording stand-in for tqdm)."""
import logging

import pytest
import torch

import infinite_tensor as it
from infinite_tensor import progress, sl


class FakeBar:
    made = []

    def __init__(self, total=None, desc=None, unit=None, **kwargs):
        self.total, self.desc, self.unit, self.n, self.closed = total, desc, unit, 0, False
        FakeBar.made.append(self)

    def update(self, k):
        self.n += k

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    FakeBar.made = []
    monkeypatch.setattr(progress, "_tqdm", lambda: FakeBar)
    monkeypatch.setattr(progress, "_have_tqdm", lambda: True)
    previous = it.set_progress(True)
    yield FakeBar.made
    it.set_progress(previous)


def ones_tensor(tid, batch=None, store=None):
    def f(ctx):
        if batch:
            return [torch.ones(4, 4)] * len(ctx)
        return torch.ones(4, 4)
    return it.InfiniteTensor((None, None), f, it.TensorWindow((4, 4), stride=(2, 2)), tensor_id=tid,
                             batch_size=batch, tile_store=store)


def test_stats_count_reads_windows_calls_and_bytes():
    t = ones_tensor("s", batch=5)
    a = t[0:8, 0:8]
    t[0:8, 0:8]
    got = t[[sl[0:2, 0:2], sl[20:24, 0:4]]]
    s = t.stats()
    windows = len(set(t.output_window.intersecting_windows((slice(0, 8), slice(0, 8))))
                  | set(t.output_window.intersecting_windows((slice(20, 24), slice(0, 4)))))
    assert s["reads"] == 3 and s["cached_reads"] == 1
    assert s["windows"] == windows
    assert s["f_calls"] == -(-len(set(t.output_window.intersecting_windows((slice(0, 8), slice(0, 8))))) // 5) + \
        -(-(windows - len(set(t.output_window.intersecting_windows((slice(0, 8), slice(0, 8)))))) // 5)
    assert s["bytes_read"] == 2 * a.numel() * 4 + sum(x.numel() * 4 for x in got)
    assert 0 <= s["seconds_in_f"] <= s["seconds_reading"]
    assert s["seconds_outside_f"] == pytest.approx(s["seconds_reading"] - s["seconds_in_f"])
    assert s["cached_bytes"] > 0 and s["cached_tiles"] > 0
    t.reset_stats()
    assert t.stats()["reads"] == 0 and t.stats()["windows"] == 0


def test_a_read_that_computes_logs_a_debug_record(caplog):
    t = ones_tensor("logged")
    with caplog.at_level(logging.DEBUG, logger="infinite_tensor"):
        t[0:8, 0:8]
        t[0:8, 0:8]  # cached: no record
    records = [r for r in caplog.records if r.name == "infinite_tensor"]
    assert len(records) == 1
    n = t.stats()["windows"]
    assert f"read of 'logged': {n} window(s) computed in {n} f call(s)" in records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="infinite_tensor"):
        t[40:48, 0:8]
    assert not [r for r in caplog.records if r.name == "infinite_tensor"]


def test_a_large_read_shows_one_bar_that_completes(bars):
    t = ones_tensor("big", batch=7)
    t[0:40, 0:40]
    n = t.stats()["windows"]
    assert n >= 32
    assert len(bars) == 1 and bars[0].total == n and bars[0].n == n and bars[0].closed
    assert bars[0].desc == "big" and bars[0].unit == "window"
    t[100:102, 0:2]  # a small plan: no bar
    assert len(bars) == 1


def test_progress_off_globally_or_per_tensor(bars):
    it.set_progress(False)
    t = ones_tensor("quiet")
    t[0:40, 0:40]
    assert bars == []
    loud = ones_tensor("loud")
    loud.progress = True
    loud[0:40, 0:40]
    assert len(bars) == 1 and bars[0].desc == "loud"
    it.set_progress(True)
    hushed = it.InfiniteTensor((None,), lambda c: torch.ones(4), it.TensorWindow((4,)), progress=False,
                               tensor_id="hushed")
    hushed[0:400]
    assert len(bars) == 1


def test_iter_regions_counts_regions(bars):
    t = ones_tensor("it", batch=4)
    regions = [sl[0:4, 4 * k:4 * k + 4] for k in range(10)]
    chunks = list(t.iter_regions(regions, progress=True))
    region_bars = [b for b in bars if b.unit == "region"]
    assert len(region_bars) == 1
    assert region_bars[0].total == 10 and region_bars[0].n == sum(len(c) for c in chunks) == 10
    assert region_bars[0].closed


def test_bad_progress_values():
    with pytest.raises(it.ValidationError):
        it.set_progress("yes")
    with pytest.raises(it.ValidationError):
        ones_tensor("x").progress = 1


def test_preview_scales_to_unit_range_with_channels_last():
    t = it.InfiniteTensor((3, None, None), lambda c: torch.arange(3 * 16, dtype=torch.float32).reshape(3, 4, 4),
                          it.TensorWindow((3, 4, 4)))
    raw = t[:, 0:4, 0:8]
    pic = t.preview(sl[:, 0:4, 0:8], show=False)
    want = raw.permute(1, 2, 0)
    want = (want - want.min()) / (want.max() - want.min())
    assert pic.shape == (4, 8, 3) and torch.allclose(pic, want)
    gray = t.preview(sl[1, 0:4, 0:4], show=False)
    assert gray.shape == (4, 4) and gray.min() == 0 and gray.max() == 1
    with pytest.raises(ValueError, match="preview needs"):
        t.preview(sl[0, 0, 0:4], show=False)  # 1-d


def test_preview_draws_with_matplotlib_when_asked(monkeypatch):
    import sys
    import types
    drawn = []
    plt = types.ModuleType("matplotlib.pyplot")
    plt.imshow = lambda a, **kw: drawn.append((a.shape, kw))
    plt.axis = lambda *a: None
    plt.show = lambda: drawn.append("shown")
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = plt
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", plt)
    t = it.InfiniteTensor((None, None), lambda c: torch.ones(4, 4), it.TensorWindow((4, 4)))
    assert t.preview(sl[0:4, 0:8], show=True) is None
    assert drawn == [((4, 8), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}), "shown"]
