"""infinite_tensor.stream: streamed output against plain torch over the whole input.

The reference for every exactness test is ``net(x_full)``: with the default
"valid" edges, the same network with its padding removed (what torch-streamer
streams); with ``edges="module"``, the network itself.  Networks are random
(hypothesis), in float64, fed in random chunk sizes that include 1 and 0.
"""

import copy
import os
import warnings

import hypothesis
import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn

import infinite_tensor.stream as pts

# STREAM_EXAMPLES=1000 for a longer search
SETTINGS = hypothesis.settings(max_examples=int(os.environ.get("STREAM_EXAMPLES", "60")), deadline=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
C = 2


def feed(stream, x, sizes):
    """Push x through ``stream`` in chunks of the given sizes (cycled), the
    last with final=True; return the outputs (None ones dropped, and none may
    be empty)."""
    outs = []
    i, k = 0, 0
    n = x.shape[-1]
    while True:
        b = sizes[k % len(sizes)]
        k += 1
        last = i + b >= n
        y = stream(x[..., i:i + b], final=last)
        if y is not None:
            assert y.shape[-1] > 0, "streams return None, not an empty tensor"
            outs.append(y)
        i += b
        if last:
            break
    return outs


def cat(outs, like):
    if not outs:
        return like[..., :0]
    return torch.cat(outs, -1)


def unpadded(net):
    """A copy of ``net`` with every padding removed: the "valid" reference."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            m.padding = (0,)
            m._reversed_padding_repeated_twice = [0, 0]
            if isinstance(m, nn.ConvTranspose1d):
                m.output_padding = (0,)
        elif isinstance(m, (nn.AvgPool1d, nn.MaxPool1d)):
            m.padding = 0 if isinstance(m, nn.MaxPool1d) else (0,)
            m.ceil_mode = False
    return net


# ------------------------------------------------------------------ random networks


@st.composite
def layers(draw, edges, stride_ok=True):
    kind = draw(st.sampled_from(["conv", "convt", "avg", "max", "act"]))
    s = draw(st.integers(1, 3)) if stride_ok else 1
    if kind == "conv":
        k = draw(st.integers(1, 5))
        d = draw(st.integers(1, 3))
        p = draw(st.integers(0, 2 if stride_ok else (d * (k - 1)) // 2))  # a residual body must not grow
        g = draw(st.sampled_from([1, C]))
        return nn.Conv1d(C, C, k, stride=s, dilation=d, padding=p, groups=g, bias=draw(st.booleans()))
    if kind == "convt":
        k = draw(st.integers(1, 4))
        d = draw(st.integers(1, 2))
        p = draw(st.integers(0, (d * (k - 1)) // 2))
        op = draw(st.integers(0, max(s, d) - 1))
        if not stride_ok:
            # a residual body must not grow: pair it with enough padding
            p = (d * (k - 1) + 1) // 2 if edges == "module" else 0
            op = 0
            return nn.Sequential(nn.ConvTranspose1d(C, C, k, stride=1, dilation=d, padding=p),
                                 nn.Conv1d(C, C, d * (k - 1) + 1))
        return nn.ConvTranspose1d(C, C, k, stride=s, dilation=d, padding=p, output_padding=op,
                                  groups=draw(st.sampled_from([1, C])), bias=draw(st.booleans()))
    if kind == "avg":
        k = draw(st.integers(1, 3))
        return nn.AvgPool1d(k, stride=s, padding=draw(st.integers(0, k // 2 if stride_ok else (k - 1) // 2)))
    if kind == "max":
        k = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        top = k // 2 if stride_ok else (d * (k - 1)) // 2
        return nn.MaxPool1d(k, stride=s, dilation=d, padding=draw(st.integers(0, min(top, k // 2))))
    return draw(st.sampled_from([nn.GELU(), nn.ReLU(), nn.Tanh()]))


@st.composite
def networks(draw, edges):
    items = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 5)) == 0:
            body = nn.Sequential(*[draw(layers(edges, stride_ok=False)) for _ in range(draw(st.integers(1, 2)))])
            items.append(pts.Residual1d(body))
        else:
            items.append(draw(layers(edges)))
    return nn.Sequential(*items).double()


chunks = st.lists(st.integers(0, 7), min_size=1, max_size=5).filter(lambda v: any(v))


def reference(net, x):
    try:
        with torch.no_grad():
            y = net(x)
    except RuntimeError:  # input too short for this network
        return None
    return y if y.shape[-1] > 0 else None


@SETTINGS
@hypothesis.given(net=networks("valid"), n=st.integers(1, 40), sizes=chunks, seed=st.integers(0, 2**16))
def test_random_networks_valid(net, n, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(C, n, generator=g, dtype=torch.float64)
    ref = reference(unpadded(net), x)
    hypothesis.assume(ref is not None)
    y = cat(feed(pts.Sequential1dStream(net), x, sizes), x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@SETTINGS
@hypothesis.given(net=networks("module"), n=st.integers(1, 40), sizes=chunks, seed=st.integers(0, 2**16))
def test_random_networks_module_edges(net, n, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(C, n, generator=g, dtype=torch.float64)
    ref = reference(net, x)
    hypothesis.assume(ref is not None)
    y = cat(feed(pts.Sequential1dStream(net, edges="module"), x, sizes), x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(net=networks("module"), n=st.integers(1, 30), sizes=chunks,
                  edges=st.sampled_from(["valid", "module"]))
def test_scripted_equals_eager(net, n, sizes, edges):
    x = torch.randn(C, n, dtype=torch.float64)
    eager = feed(pts.Sequential1dStream(net, edges=edges), x, sizes)
    scripted = feed(torch.jit.script(pts.Sequential1dStream(net, edges=edges)), x, sizes)
    assert len(eager) == len(scripted)
    for a, b in zip(eager, scripted):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------ single layers


@pytest.mark.parametrize("script", [False, True])
@pytest.mark.parametrize("k,s,d,g,p", [(1, 1, 1, 1, 0), (3, 1, 1, 1, 1), (3, 2, 2, 2, 0), (2, 5, 1, 1, 0),
                                       (4, 3, 3, 2, 2), (5, 1, 2, 1, 0)])
@pytest.mark.parametrize("block", [1, 3, 64])
def test_conv1d_block_sizes(k, s, d, g, p, block, script):
    conv = nn.Conv1d(4, 6, k, stride=s, dilation=d, groups=g, padding=p).double()
    x = torch.randn(4, 37, dtype=torch.float64)
    for edges, ref in (("valid", unpadded(conv)(x)), ("module", conv(x))):
        stream = pts.Conv1dStream(conv, edges=edges)
        if script:
            stream = torch.jit.script(stream)
        y = cat(feed(stream, x, [block]), x)
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,d,p,op", [(1, 2, 1, 0, 0), (3, 2, 1, 1, 1), (2, 5, 1, 0, 3), (4, 3, 2, 2, 1),
                                        (3, 1, 3, 0, 0)])
@pytest.mark.parametrize("block", [1, 4])
def test_conv_transpose1d(k, s, d, p, op, block):
    m = nn.ConvTranspose1d(2, 3, k, stride=s, dilation=d, padding=p, output_padding=op).double()
    x = torch.randn(2, 11, dtype=torch.float64)
    for edges, ref in (("valid", unpadded(m)(x)), ("module", m(x))):
        for stream in (pts.ConvTranspose1dStream(m, edges=edges),
                       torch.jit.script(pts.ConvTranspose1dStream(m, edges=edges))):
            y = cat(feed(stream, x, [block]), x)
            torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_empty_chunks_change_nothing():
    net = nn.Sequential(nn.Conv1d(2, 2, 3, stride=2), nn.ConvTranspose1d(2, 2, 4, stride=3), nn.MaxPool1d(2)).double()
    x = torch.randn(2, 30, dtype=torch.float64)
    y = cat(feed(pts.Sequential1dStream(net), x, [0, 1, 0, 0, 4]), x)
    torch.testing.assert_close(y, net(x), rtol=1e-12, atol=1e-12)


def test_batched_input():
    net = nn.Sequential(nn.Conv1d(2, 3, 3, stride=2), nn.GELU(), nn.ConvTranspose1d(3, 2, 3, stride=2),
                        nn.AvgPool1d(2), pts.Residual1d(nn.Conv1d(2, 2, 3))).double()
    x = torch.randn(5, 2, 33, dtype=torch.float64)
    for stream in (pts.Sequential1dStream(net), torch.jit.script(pts.Sequential1dStream(net))):
        y = cat(feed(stream, x, [4, 1]), x)
        torch.testing.assert_close(y, net(x), rtol=1e-12, atol=1e-12)


def test_bad_rank_is_a_value_error():
    with pytest.raises(ValueError, match=r"\[C, T\]"):
        pts.Conv1dStream(nn.Conv1d(2, 2, 3))(torch.zeros(2))
    with pytest.raises(ValueError, match="edges"):
        pts.Sequential1dStream(nn.Sequential(), edges="same")


def test_reprs_match_torch_streamer():
    assert repr(pts.Conv1dStream(nn.Conv1d(4, 6, 3, stride=2, groups=2))) == \
        "Conv1dStream(2, 6, kernel_size=3, stride=2)"
    assert repr(pts.ConvTranspose1dStream(nn.ConvTranspose1d(4, 6, 3, stride=2))) == \
        "ConvTranspose1dStream(4, 6, kernel_size=3, stride=2)"
    assert repr(pts.Pool1dStream(nn.AvgPool1d(3, 2))) == "AvgPool1dStream(kernel_size=3, stride=2)"
    assert repr(pts.Pool1dStream(nn.MaxPool1d(3))) == "MaxPool1dStream(kernel_size=3, stride=3)"


def test_parameters_alias_the_module():
    conv = nn.Conv1d(1, 1, 2, bias=False).double()
    stream = pts.Conv1dStream(conv)
    assert stream.weight.data_ptr() == conv.weight.data_ptr()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    y = stream(torch.arange(4, dtype=torch.float64)[None], final=True)
    assert y.tolist() == [[1.0, 3.0, 5.0]]


def test_weight_norm_is_folded():
    conv = nn.Conv1d(2, 3, 3).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wn = nn.utils.weight_norm(conv)
    x = torch.randn(2, 20, dtype=torch.float64)
    ref = wn(x)
    torch.testing.assert_close(cat(feed(pts.Conv1dStream(wn), x, [3]), x), ref.detach())
    pm = nn.utils.parametrizations.weight_norm(nn.Conv1d(2, 3, 3).double())
    torch.testing.assert_close(cat(feed(pts.Conv1dStream(pm), x, [3]), x), pm(x).detach())


def test_streams_run_under_no_grad():
    conv = nn.Conv1d(2, 2, 3)
    y = pts.Conv1dStream(conv)(torch.randn(2, 10, requires_grad=True), final=True)
    assert not y.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_follows_module():
    net = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2), nn.ReLU(), nn.ConvTranspose1d(4, 2, 3, stride=2),
                        pts.Residual1d(nn.Conv1d(2, 2, 3)), nn.MaxPool1d(2)).cuda()
    x = torch.randn(2, 50, device="cuda")
    stream = torch.jit.script(pts.Sequential1dStream(net).cuda())
    y = cat(feed(stream, x, [3]), x)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y, net(x), rtol=1e-5, atol=1e-6)
