"""Port of torch-streamer's public test suite (brentspell/torch-streamer at
f14b04c, tests/test_core.py; MIT licence, (c) 2024 Brent M. Spell), run
against infinite_tensor.stream.

What changed, and why:
- the import: ``import infinite_tensor.stream as pts``;
- upstream's conftest disables grad and makes cuda:0 the default device when
  CUDA is present; here grad is disabled around each call instead (the
  module-wide switch would leak into the rest of the suite), and the CUDA
  default device is covered by test_default_device_cuda (skipped without CUDA);
- hypothesis runs a fixed number of examples (upstream's default profile is
  100 with no deadline), to keep the suite's time down;
- no test read private attributes, so none was dropped.  Every assertion
  is kept: shape, ``allclose(atol=1e-6)``, non-empty outputs, repr prefixes,
  exception classes and messages.
"""

import typing as T

import hypothesis
import hypothesis.strategies as hs
import pytest
import torch as pt
from stream_cases import run  # noqa: F401  (upstream's helper, shared)
import torch.nn as nn

import infinite_tensor.stream as pts

CH = 2  # channels > 1, so that no broadcasting can hide a mistake
EXAMPLES = hypothesis.settings(max_examples=25, deadline=None)




def check(m, s, x, b, script):
    if script:
        s = pt.jit.script(s)
    with pt.no_grad():
        yc = m(x)
    ys = run(s, x, b)
    assert ys.shape == yc.shape
    assert pt.allclose(yc, ys, atol=1e-6)


@EXAMPLES
@hypothesis.given(length=hs.integers(10, 20), block=hs.integers(1, 10), script=hs.booleans())
def test_sequential1d(length: int, block: int, script: bool) -> None:
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = nn.Sequential(
        nn.ConvTranspose1d(CH, CH, kernel_size=3, stride=2),
        nn.ConvTranspose1d(CH, CH, kernel_size=1),
        nn.Conv1d(CH, CH, kernel_size=1),
        nn.Conv1d(CH, 2 * CH, kernel_size=3, dilation=2),
        nn.Conv1d(2 * CH, CH, kernel_size=2),
        nn.Conv1d(CH, CH, kernel_size=1, stride=2),
        nn.AvgPool1d(kernel_size=3, stride=2),
        nn.MaxPool1d(kernel_size=3, stride=2),
        nn.ReLU(),
    )
    check(m, pts.Sequential1dStream(m), x, block, script)


@EXAMPLES
@hypothesis.given(length=hs.integers(10, 20), block=hs.integers(1, 10), script=hs.booleans())
def test_residual1d(length: int, block: int, script: bool) -> None:
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = pts.Residual1d(nn.Sequential(
        nn.Conv1d(CH, CH, kernel_size=1),
        nn.Conv1d(CH, CH, kernel_size=3, dilation=2),
        nn.Conv1d(CH, CH, kernel_size=2),
    ))
    check(m, pts.Residual1dStream(m), x, block, script)


def test_residual1d_invalid() -> None:
    with pytest.raises(ValueError, match=r"invalid_residual_stride"):
        pts.Residual1d(nn.Conv1d(CH, CH, kernel_size=1, stride=2))


@EXAMPLES
@hypothesis.given(kernel=hs.integers(1, 10), stride=hs.integers(1, 10), dilation=hs.integers(1, 10),
                  bias=hs.booleans(), length=hs.integers(0, 20), block=hs.integers(1, 10), script=hs.booleans())
def test_conv1d(kernel, stride, dilation, bias, length, block, script) -> None:
    length = max(length, dilation * (kernel - 1) + 1)
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = nn.Conv1d(CH, CH, kernel_size=kernel, stride=stride, dilation=dilation, groups=CH, bias=bias)
    s = pts.Conv1dStream(m)
    assert repr(s).startswith("Conv1dStream")
    check(m, s, x, block, script)


@EXAMPLES
@hypothesis.given(kernel=hs.integers(1, 10), stride=hs.integers(1, 10), dilation=hs.integers(1, 10),
                  bias=hs.booleans(), length=hs.integers(1, 20), block=hs.integers(1, 10), script=hs.booleans())
def test_conv_transpose1d(kernel, stride, dilation, bias, length, block, script) -> None:
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = nn.ConvTranspose1d(CH, CH, kernel_size=kernel, stride=stride, dilation=dilation, groups=CH, bias=bias)
    s = pts.ConvTranspose1dStream(m)
    assert repr(s).startswith("ConvTranspose1dStream")
    check(m, s, x, block, script)


@EXAMPLES
@hypothesis.given(pool_type=hs.sampled_from([nn.AvgPool1d, nn.MaxPool1d]), kernel=hs.integers(1, 10),
                  stride=hs.integers(1, 10), length=hs.integers(0, 20), block=hs.integers(1, 10),
                  script=hs.booleans())
def test_pool1d(pool_type, kernel, stride, length, block, script) -> None:
    length = max(length, kernel)
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = pool_type(kernel_size=kernel, stride=stride)
    s = pts.Pool1dStream(m)
    assert repr(s).startswith(f"{pool_type.__name__}Stream")
    check(m, s, x, block, script)


def test_pool1d_invalid() -> None:
    with pytest.raises(ValueError, match=r"invalid_pool_module"):
        pts.Pool1dStream(T.cast(nn.AvgPool1d, nn.Conv1d(CH, CH, kernel_size=1)))


@EXAMPLES
@hypothesis.given(length=hs.integers(1, 20), block=hs.integers(1, 10), script=hs.booleans())
def test_elementwise1d(length: int, block: int, script: bool) -> None:
    x = pt.randn([CH, length]).clamp(-1, 1)
    m = nn.Conv1d(CH, CH, kernel_size=1)
    check(m, pts.Elementwise1dStream(m), x, block, script)


def test_elementwise1d_invalid() -> None:
    s = pts.Elementwise1dStream(nn.Conv1d(CH, CH, kernel_size=2))  # constructs; fails when called
    with pytest.raises(RuntimeError, match=r"invalid_elementwise_output"):
        s(pt.zeros([CH, 2]))


def test_custom() -> None:
    class MyResBlock(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: pt.Tensor) -> pt.Tensor:
            return x + self.inner(x)

    # registered twice: the second replaces the first
    pts.register_streamer(MyResBlock, lambda net: pts.Residual1dStream(net.inner))
    pts.register_streamer(MyResBlock, lambda net: pts.Residual1dStream(net.inner))

    x = pt.randn([CH, 10])
    m = nn.Sequential(
        nn.Conv1d(CH, CH, kernel_size=1),
        MyResBlock(nn.Sequential(
            nn.Conv1d(CH, CH, kernel_size=3, padding=1),
            nn.Conv1d(CH, CH, kernel_size=5, padding=2),
        )),
        nn.Conv1d(CH, CH, kernel_size=1),
    )
    s = pts.Sequential1dStream(m)
    with pt.no_grad():
        yc = m(x)[..., 3:-3]
    ys = run(s, x, b=1)
    assert ys.shape == yc.shape
    assert pt.allclose(yc, ys, atol=1e-6)


@pytest.mark.skipif(not pt.cuda.is_available(), reason="needs CUDA (upstream's conftest default device)")
def test_default_device_cuda() -> None:
    pt.set_default_device("cuda:0")
    try:
        x = pt.randn([CH, 20]).clamp(-1, 1)
        m = nn.Sequential(nn.ConvTranspose1d(CH, CH, 3, stride=2), nn.Conv1d(CH, CH, 3, dilation=2),
                          nn.AvgPool1d(3, 2), nn.MaxPool1d(3, 2), nn.ReLU())
        for script in (False, True):
            check(m, pts.Sequential1dStream(m), x, 3, script)
    finally:
        pt.set_default_device("cpu")
