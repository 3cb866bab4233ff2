"""torch-streamer's README examples (seed 004), run with only the import
changed to infinite_tensor.stream; each ends with a check against plain torch
(the README's own allclose, or one added where the README stops at building
the stream).  Sizes are the README's, except the channel count of the
Sequential and Residual examples (128 -> 16) to keep the suite fast."""

import typing as T

import torch as pt
from torch import nn

import infinite_tensor.stream as pts


def stream_all(stream, x, block):
    ys = []
    for i in range(0, x.shape[-1], block):
        y = stream(x[..., i:i + block], final=i + block >= x.shape[-1])
        if y is not None:
            ys.append(y)
    return pt.cat(ys, dim=-1)


def test_basic_usage():
    BLOCK_SIZE = 100
    conv = pt.nn.Conv1d(64, 128, 3, stride=2)
    stream = pts.Conv1dStream(conv)
    x = pt.randn([64, 1000])
    yc = conv(x)
    ys = pt.cat(
        [
            stream(x[..., i: i + BLOCK_SIZE])
            for i in range(0, x.shape[-1], BLOCK_SIZE)
        ],
        dim=-1
    )
    assert pt.allclose(yc, ys, atol=1e-6)


def test_sequential_networks():
    net = nn.Sequential(
        nn.Conv1d(1, 16, 1),
        nn.GELU(),
        nn.Conv1d(16, 16, 2, stride=2),
        nn.GELU(),
        nn.Conv1d(16, 16, 2, stride=2),
        nn.AvgPool1d(2),
        nn.ConvTranspose1d(16, 16, 2, stride=2),
        nn.GELU(),
        nn.ConvTranspose1d(16, 16, 2, stride=2),
        nn.GELU(),
        nn.Conv1d(16, 1, 1),
    )
    stream = pts.Sequential1dStream(net)
    x = pt.randn([1, 400])
    with pt.no_grad():
        assert pt.allclose(net(x), stream_all(stream, x, 37), atol=1e-6)


def test_residual_networks():
    net = nn.Sequential(
        nn.Conv1d(1, 16, 1),
        *[
            pts.Residual1d(
                nn.Sequential(
                    nn.GELU(),
                    nn.Conv1d(16, 32, 3),
                    nn.GELU(),
                    nn.Conv1d(32, 16, 1),
                )
            )
            for _ in range(3)
        ],
        nn.Conv1d(16, 1, 1),
    )
    stream = pts.Sequential1dStream(net)
    x = pt.randn([1, 200])
    with pt.no_grad():
        assert pt.allclose(net(x), stream_all(stream, x, 9), atol=1e-6)


def test_custom_stream_handlers():
    class MyResBlock(pt.nn.Module):
        def __init__(self, inner: pt.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: pt.Tensor) -> pt.Tensor:
            return x + self.inner(x)

    class MyResBlockStream(pts.BaseStream):
        def __init__(self, net: MyResBlock):
            super().__init__()
            self.net = net

        def forward(self, x: pt.Tensor, final: bool = False) -> T.Optional[pt.Tensor]:
            y = self.net.inner(x.unsqueeze(0))
            pad = (x.shape[-1] - y.shape[-1]) // 2
            res = x[..., pad:-pad]
            return y.squeeze(0) + res

    pts.register_streamer(MyResBlock, lambda net: MyResBlockStream(net))

    net = pt.nn.Sequential(
        pt.nn.Conv1d(1, 32, 1),
        MyResBlock(pt.nn.Conv1d(32, 32, 3)),
        pt.nn.Conv1d(32, 1, 1),
    )
    stream = pts.Sequential1dStream(net)

    # the README's handler is stateless, so it is exact on one whole block:
    # the valid part of x + inner(x), which is x[1:-1] + inner(x)
    x = pt.randn([1, 50])
    with pt.no_grad():
        h = net[0](x)
        ref = net[2](h[..., 1:-1] + net[1].inner(h))
        assert pt.allclose(stream(x, final=True), ref, atol=1e-6)


def test_docs_stream_md_examples_run():
    """docs/stream.md's python blocks, run in order in one namespace."""
    import os
    import re

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "stream.md")
    blocks = re.findall(r"```python\n(.*?)```", open(path).read(), re.S)
    assert len(blocks) >= 3
    scope = {}
    with pt.no_grad():
        for code in blocks:
            exec(compile(code, "docs/stream.md", "exec"), scope)
    assert "y" in scope and "ys" in scope
