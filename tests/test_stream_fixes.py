"""Regression tests for the fixes infinite_tensor.stream makes to
torch-streamer (one per fix), and tests of the opt-ins: reset_on_final and
reset(), strict=True and pointwise(), the Stream(...) push/finish wrapper.
References are plain torch over the whole input."""

import warnings

import pytest
import torch
import torch.nn as nn

import infinite_tensor.stream as pts
from infinite_tensor.errors import InfiniteTensorError
from infinite_tensor.stream import NotWindowableError


def feed(stream, x, b):
    ys = []
    for i in range(0, x.shape[-1], b):
        y = stream(x[..., i:i + b], final=i + b >= x.shape[-1])
        if y is not None:
            assert y.shape[-1] > 0
            ys.append(y)
    return torch.cat(ys, -1) if ys else x[..., :0]


def x64(c, n, seed=0):
    return torch.randn(c, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ fixes


def test_fix_final_reaches_layers_after_a_silent_one():
    # torch-streamer: 79 of 300 runs lost the ConvT's tail (bug 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 2, 4, stride=3), nn.ConvTranspose1d(2, 2, 5, stride=2)).double()
    for n in range(10, 60, 7):
        x = x64(2, n, n)
        for b in (1, 2, 3, 5, 7, 16):
            torch.testing.assert_close(feed(pts.Sequential1dStream(net), x, b), net(x))


def test_fix_flush_goes_only_to_streams_that_accept_it():
    calls = []

    class Recorder(pts.BaseStream):
        def forward(self, x, final: bool = False):
            calls.append((x.shape[-1], final))
            return x

    class Wants(Recorder):
        accepts_flush = True

    class Marker(nn.Module):
        def forward(self, x):
            return x

    class Marker2(Marker):
        pass

    pts.register_streamer(Marker, lambda m: Recorder())
    pts.register_streamer(Marker2, lambda m: Wants())
    seq = pts.Sequential1dStream(nn.Sequential(nn.Conv1d(1, 1, 3, stride=3), Marker(), Marker2()))
    seq(torch.zeros(1, 4))  # one output from the conv, then a remainder of 1
    calls.clear()
    assert seq(torch.zeros(1, 1), final=True) is None  # conv is silent on the last chunk
    assert calls == [(0, True)]  # only the declaring stream heard the flush


def test_fix_unregistered_time_mixing_module_raises():
    class Wrapped(nn.Module):  # keeps the length, so torch-streamer streamed wrong values
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    for bad in (Wrapped(), nn.Sequential(nn.Linear(4, 4), nn.LSTM(2, 2)), nn.MultiheadAttention(4, 1)):
        with pytest.raises(NotWindowableError, match="time") as e:
            pts.create_stream(nn.Sequential(bad)) if not isinstance(bad, nn.Sequential) else \
                pts.create_stream(nn.Sequential(nn.Sequential(Wrapped2(bad))))
        assert isinstance(e.value, ValueError) and isinstance(e.value, InfiniteTensorError)


class Wrapped2(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_fix_unknown_module_warns_once_and_known_pointwise_is_silent():
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pts.create_stream(nn.GELU())
        pts.create_stream(nn.Sequential(nn.ReLU(), nn.Dropout(), nn.Conv1d(2, 2, 1)))
        assert not w
        s = pts.create_stream(Scale())
        pts.create_stream(Scale())
    assert len([x for x in w if issubclass(x.category, UserWarning)]) == 1
    assert s(torch.ones(1, 3)).tolist() == [[2.0, 2.0, 2.0]]


def test_fix_residual_offset_counts_pools():
    # body shrinks by 2 (conv) + 2 (pool): Residual1d.forward crops 2 on the left
    torch.manual_seed(1)
    net = pts.Residual1d(nn.Sequential(nn.Conv1d(2, 2, 3), nn.MaxPool1d(3, 1))).double()
    x = x64(2, 20)
    for b in (1, 4, 20):
        torch.testing.assert_close(feed(pts.create_stream(net), x, b), net(x))


def test_fix_strided_pool_in_residual_raises():
    net = pts.Residual1d(nn.Sequential(nn.Conv1d(2, 2, 3), nn.AvgPool1d(2)))
    with pytest.raises(ValueError, match="invalid_residual_stride"):
        pts.create_stream(net)


def test_fix_maxpool_dilation():
    pool = nn.MaxPool1d(3, 2, dilation=2)
    x = x64(2, 25)
    for b in (1, 3, 25):
        torch.testing.assert_close(feed(pts.Pool1dStream(pool), x, b), pool(x))
    assert repr(pts.Pool1dStream(pool)) == "MaxPool1dStream(kernel_size=3, stride=2, dilation=2)"


def test_fix_most_specific_registered_type_wins():
    class MyConv(nn.Conv1d):
        pass

    class Marked(pts.BaseStream):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, final: bool = False):
            return x * 0 + 7

    pts.register_streamer(MyConv, Marked)
    assert isinstance(pts.create_stream(MyConv(1, 1, 3)), Marked)
    assert isinstance(pts.create_stream(nn.Conv1d(1, 1, 3)), pts.Conv1dStream)


def test_registration_replaces_in_place():
    class Mod(nn.Module):
        def forward(self, x):
            return x

    pts.register_streamer(Mod, lambda m: pts.Elementwise1dStream(nn.ReLU()))
    pts.register_streamer(Mod, lambda m: pts.Elementwise1dStream(nn.Tanh()))
    s = pts.create_stream(Mod())
    assert isinstance(s.net, nn.Tanh)
    with pytest.raises(TypeError):
        pts.register_streamer("Mod", lambda m: None)


def test_padded_pointwise_convs_use_valid_streams():
    # torch-streamer routed k=1 convs with padding to the element-wise stream,
    # which then failed at call time
    for m in (nn.Conv1d(2, 2, 1, padding=1), nn.ConvTranspose1d(2, 2, 1, padding=0, output_padding=0)):
        m = m.double()
        x = x64(2, 9)
        ref = nn.functional.conv1d(x[None], m.weight, m.bias)[0] if isinstance(m, nn.Conv1d) else m(x)
        torch.testing.assert_close(feed(pts.create_stream(m), x, 2), ref)


# ------------------------------------------------------------------ opt-ins


def test_state_carries_over_by_default_and_reset_clears_it():
    conv = nn.Conv1d(1, 1, 3).double()
    x = x64(1, 20)
    s = pts.Conv1dStream(conv)
    first = feed(s, x, 20)
    second = feed(s, x, 20)
    assert first.shape[-1] == 18 and second.shape[-1] == 20  # torch-streamer's behaviour (bug 2)
    s.reset()
    torch.testing.assert_close(feed(s, x, 20), conv(x))
    r = pts.Conv1dStream(conv, reset_on_final=True)
    for _ in range(2):
        torch.testing.assert_close(feed(r, x, 3), conv(x))


def test_reset_on_final_for_sequences_and_scripted():
    net = nn.Sequential(nn.Conv1d(1, 2, 3, stride=2), pts.Residual1d(nn.Conv1d(2, 2, 3)),
                        nn.ConvTranspose1d(2, 1, 3, stride=2), nn.AvgPool1d(2)).double()
    x = x64(1, 31)
    for s in (pts.Sequential1dStream(net, reset_on_final=True),
              torch.jit.script(pts.Sequential1dStream(net, reset_on_final=True))):
        for b in (1, 5, 4):
            torch.testing.assert_close(feed(s, x, b), net(x))
    s = torch.jit.script(pts.Sequential1dStream(net))
    feed(s, x, 3)
    s.reset()
    torch.testing.assert_close(feed(s, x, 3), net(x))


def test_resample_reset():
    from infinite_tensor.stream.audio import ResampleStream

    x = torch.randn(1, 50)
    s = ResampleStream(16000, 8000, reset_on_final=True)
    a, b = feed(s, x, 7), feed(s, x, 7)
    torch.testing.assert_close(a, b)
    s2 = ResampleStream(16000, 8000)
    feed(s2, x, 7)
    s2.reset()
    torch.testing.assert_close(feed(s2, x, 7), a)


def test_strict_refuses_unregistered_modules_unless_declared():
    class Scale(nn.Module):
        def forward(self, x):
            return 3 * x

    net = nn.Sequential(nn.Conv1d(1, 1, 3), nn.GELU(), Scale())
    with pytest.raises(NotWindowableError, match="Scale"):
        pts.Sequential1dStream(net, strict=True)
    assert pts.pointwise(Scale) is Scale
    s = pts.Sequential1dStream(net, strict=True)
    x = x64(1, 12).float()
    torch.testing.assert_close(feed(s, x, 5), net(x).detach())


def test_module_edges_reference_examples():
    net = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool1d(3, 2, padding=1),
                        nn.Conv1d(4, 4, 3, padding="same"), pts.Residual1d(nn.Conv1d(4, 4, 3, padding=1)),
                        nn.ConvTranspose1d(4, 1, 4, stride=2, padding=1)).double()
    x = x64(1, 40)
    for b in (1, 6, 40):
        torch.testing.assert_close(feed(pts.Sequential1dStream(net, edges="module"), x, b), net(x))


def test_module_edges_refuses_what_it_cannot_do():
    with pytest.raises(NotImplementedError):
        pts.Conv1dStream(nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect"), edges="module")
    with pytest.raises(NotImplementedError):
        pts.Pool1dStream(nn.AvgPool1d(3, padding=1, count_include_pad=False), edges="module")
    with pytest.raises(NotImplementedError):
        pts.Pool1dStream(nn.MaxPool1d(3, ceil_mode=True), edges="module")


def test_stream_wrapper_push_finish_reset():
    net = nn.Sequential(nn.Conv1d(3, 2, 3, padding=1), nn.ConvTranspose1d(2, 2, 3, stride=2, padding=1)).double()
    x = torch.randn(4, 30, 3, dtype=torch.float64)  # [B, T, C]: time on dim 1
    ref = net(x.transpose(1, 2)).transpose(1, 2)
    s = pts.Stream(net, dim=1, edges="module")
    outs = [s.push(x[:, i:i + 4]) for i in range(0, 30, 4)]
    outs.append(s.finish())
    y = torch.cat([o for o in outs if o is not None], dim=1)
    torch.testing.assert_close(y, ref)
    with pytest.raises(RuntimeError, match="finish"):
        s.push(x[:, :3])
    s.reset()
    outs = [s.push(x[:, :10]), s.finish(x[:, 10:])]
    torch.testing.assert_close(torch.cat([o for o in outs if o is not None], dim=1), ref)
    valid = pts.Stream(net)
    xv = x.transpose(1, 2)
    got = [valid.push(xv[..., :13]), valid.finish(xv[..., 13:])]
    vnet = nn.Sequential(nn.Conv1d(3, 2, 3), nn.ConvTranspose1d(2, 2, 3, stride=2)).double()
    vnet.load_state_dict(net.state_dict())
    torch.testing.assert_close(torch.cat([g for g in got if g is not None], -1), vnet(xv))
    with pytest.raises(ValueError):
        pts.Stream(net, dim=5).push(xv)
