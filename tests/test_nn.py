"""infinite_tensor.nn.apply: networks over infinite tensors, exactly (issue 20,
part 2).  The reference is the network itself, run by torch on one large
finite crop of the input: away from the crop's edges its output is the
exact answer, and apply must give the same numbers (float64: to rounding)
however the result is read, batched or not, from any store."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn as tnn

import infinite_tensor as it
from infinite_tensor import nn as inn
from infinite_tensor.errors import NotWindowableError, ValidationError


def _noise(channels, nd, dtype=torch.float64):
    size = 16

    def f(ctx):
        g = torch.Generator().manual_seed(hash(tuple(ctx)) & 0xFFFFFFFF)
        return torch.randn((channels,) + (size,) * nd, generator=g, dtype=dtype)
    return it.InfiniteTensor((channels,) + (None,) * nd, f, it.TensorWindow((channels,) + (size,) * nd),
                             dtype=dtype)


def _check(net, x, scale, *, start=-64, n=128, **kw):
    """apply(net, x) against net(crop) where the crop's edges do not reach.
    scale: output positions per input position; start and n: multiples of
    the network's total stride.  The exact outputs of the crop are found
    without knowing the network's reach: they are those that a crop larger
    by n on every side gives the same (an output the edge reaches differs)."""
    nd = len(x.shape) - 1
    y = inn.apply(net, x, **kw)
    with torch.no_grad():
        small = net(x[(slice(None),) + (slice(start, start + n),) * nd][None])[0]
        big = net(x[(slice(None),) + (slice(start - n, start + 2 * n),) * nd][None])[0]
    shift = int(n * scale)
    same = torch.isclose(small, big[(slice(None),) + tuple(slice(shift, shift + k) for k in small.shape[1:])],
                         rtol=1e-12, atol=1e-12).all(dim=0)
    assert same.sum() >= same.numel() // 8, f"too few exact outputs in the crop: {same.sum()} of {same.numel()}"
    o0 = int(start * scale)
    got = y[(slice(None),) + tuple(slice(o0, o0 + k) for k in small.shape[1:])]
    torch.testing.assert_close(got[:, same], small[:, same], rtol=1e-12, atol=1e-12)
    return y


NETS_2D = {
    "conv-relu-strided": (lambda: tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU(),
                                                 tnn.Conv2d(8, 4, 5, padding=2, stride=2)), 0.5),
    "pool-convT": (lambda: tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.MaxPool2d(2),
                                          tnn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)), 1),
    "upsample-bilinear-dilated": (lambda: tnn.Sequential(tnn.Upsample(scale_factor=2, mode="bilinear"),
                                                         tnn.Conv2d(3, 4, 3, dilation=2)), 2),
    "upsample-nearest": (lambda: tnn.Sequential(tnn.Upsample(scale_factor=(2, 3)), tnn.Conv2d(3, 2, 3)), None),
    "residual-avgpool": (lambda: tnn.Sequential(inn.Residual(tnn.Sequential(tnn.Conv2d(3, 3, 3, padding=1),
                                                                            tnn.Tanh())),
                                                tnn.AvgPool2d(3, stride=2, padding=1)), 0.5),
    "groups-same-bn": (lambda: tnn.Sequential(tnn.Conv2d(3, 6, 5, padding="same", groups=3), tnn.BatchNorm2d(6),
                                              tnn.GELU(), tnn.Conv2d(6, 2, 1), tnn.Dropout(0.5)), 1),
    "bicubic": (lambda: tnn.Sequential(tnn.Upsample(scale_factor=2, mode="bicubic"), tnn.Conv2d(3, 1, 2)), 2),
    "convT-output-padding": (lambda: tnn.Sequential(tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1,
                                                                        output_padding=1),
                                                    tnn.Conv2d(2, 2, 3, padding=1)), 2),
}


@pytest.mark.parametrize("name", NETS_2D)
@pytest.mark.parametrize("batch", [None, 4])
def test_2d_networks_equal_the_network_on_a_large_crop(name, batch):
    make, scale = NETS_2D[name]
    torch.manual_seed(len(name))
    net = make().double().eval()
    if name == "groups-same-bn":  # running statistics that change the values
        bn = net[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = _noise(3, 2)
    if scale is None:  # nearest upsampling by (2, 3), then a 3x3 conv: per-axis scales
        y = inn.apply(net, x, tile=12, batch_size=batch)
        crop = x[:, -48:112, -48:112]
        with torch.no_grad():
            ref = net(crop[None])[0]
        got = y[:, -96 + 8:-96 + ref.shape[1] - 8, -144 + 8:-144 + ref.shape[2] - 8]
        torch.testing.assert_close(got, ref[:, 8:-8, 8:-8], rtol=1e-12, atol=1e-12)
        return
    _check(net, x, scale, tile=12, batch_size=batch)


def test_1d_and_3d():
    torch.manual_seed(1)
    net1 = tnn.Sequential(tnn.Conv1d(2, 4, 7, padding=3, dilation=1), tnn.SiLU(), tnn.MaxPool1d(3, 2, 1, dilation=2),
                          tnn.ConvTranspose1d(4, 3, 5, stride=3, padding=2)).double().eval()
    _check(net1, _noise(2, 1), 1.5, start=-96, n=480, tile=30)
    net3 = tnn.Sequential(tnn.Conv3d(1, 2, 3, padding=1), tnn.ReLU(), tnn.AvgPool3d(2)).double().eval()
    _check(net3, _noise(1, 3), 0.5, start=-16, n=48, tile=6)


def _random_net(rng, nd, channels):
    conv = {1: tnn.Conv1d, 2: tnn.Conv2d}[nd]
    convT = {1: tnn.ConvTranspose1d, 2: tnn.ConvTranspose2d}[nd]
    pool = {1: (tnn.MaxPool1d, tnn.AvgPool1d), 2: (tnn.MaxPool2d, tnn.AvgPool2d)}[nd]
    layers, c, scale, down = [], channels, 1.0, 1  # down: the product of the strides down
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["conv", "conv", "pool", "convT", "act"])
        k = rng.randint(1, 5)
        if kind == "conv":
            s, d = rng.choice([1, 1, 2]), rng.choice([1, 2])
            out = rng.randint(1, 4)
            layers.append(conv(c, out, k, stride=s, padding=rng.randint(0, (k - 1) * d), dilation=d))
            c, scale, down = out, scale / s, down * s
        elif kind == "pool":
            cls = rng.choice(pool)
            k = max(k, 2)
            layers.append(cls(k, stride=2, padding=rng.randint(0, k // 2)))
            scale, down = scale / 2, down * 2
        elif kind == "convT":
            s = rng.choice([1, 2])
            out = rng.randint(1, 3)
            layers.append(convT(c, out, k, stride=s, padding=rng.randint(0, (k - 1) // 2)))
            c, scale = out, scale * s
        else:
            layers.append(rng.choice([tnn.ReLU(), tnn.Tanh(), tnn.Identity()]))
    return tnn.Sequential(*layers).double().eval(), scale, down


@pytest.mark.parametrize("seed", range(12))
def test_random_networks(seed):
    rng = random.Random(seed)
    nd = rng.choice([1, 1, 2])
    torch.manual_seed(seed)
    net, scale, down = _random_net(rng, nd, 2)
    n = (64 if nd == 1 else 24) * down  # a multiple of every stride
    _check(net, _noise(2, nd), scale, start=-n, n=n, tile=rng.choice([1, 5, 8, "auto"]),
           batch_size=rng.choice([None, 3]))


def test_reads_in_any_order_and_from_a_file(tmp_path):
    net = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.Conv2d(4, 2, 3, stride=2)).double().eval()
    x = _noise(3, 2)
    with it.HDF5TileStore(tmp_path / "y.h5", mode="w") as store:
        y = inn.apply(net, x, tile=16, tile_store=store, tensor_id="y")
        whole = y[:, -40:40, -40:40].clone()
        parts = [y[:, a:a + 20, b:b + 20] for a in (20, -40, 0, -20) for b in (-40, 20, 0, -20)]
        for (a, b), p in zip([(a, b) for a in (20, -40, 0, -20) for b in (-40, 20, 0, -20)], parts):
            assert torch.equal(p, whole[:, a + 40:a + 60, b + 40:b + 60])
    with it.HDF5TileStore(tmp_path / "y.h5", mode="r") as store:
        again = inn.apply(net, x, tile=16, tile_store=store, tensor_id="y")
        assert torch.equal(again[:, -40:40, -40:40], whole)


def test_window_spec_and_its_halo():
    net = tnn.Sequential(tnn.Conv2d(1, 1, 5, padding=2), tnn.Conv2d(1, 1, 3, stride=2, padding=1))
    spec = inn.window_spec(net, 2, tile=64)
    # output o of the second conv reads [2o - 1, 2o + 2); the first conv widens by 2 each side
    assert spec.tile == (64, 64) and spec.stride == (128, 128)
    assert spec.offset == (-3, -3) and spec.size == (2 * 63 + 3 + 4, 2 * 63 + 3 + 4)
    assert spec.overhead == pytest.approx((133 / 128) ** 2 - 1)
    up = inn.window_spec(tnn.Sequential(tnn.Upsample(scale_factor=4), tnn.ConvTranspose2d(1, 1, 2, stride=3)), 2,
                         tile=10)
    assert up.tile == (12, 12)  # rounded up to a multiple of the upsampling (4 * 3)


@pytest.mark.parametrize("module, fragment", [
    (tnn.AdaptiveAvgPool2d(1), "global pooling"),
    (tnn.Linear(4, 4), "Linear"),
    (tnn.GroupNorm(1, 3), "normalisation"),
    (tnn.Sequential(tnn.Conv2d(3, 3, 3), tnn.Flatten()), "flattening"),
    (tnn.LSTM(3, 3), r"register_window_rule\(LSTM"),
])
def test_unwindowable_modules_are_named(module, fragment):
    with pytest.raises(NotWindowableError, match=fragment):
        inn.apply(module, _noise(3, 2))


def test_train_mode_batchnorm_and_dropout_are_refused():
    with pytest.raises(NotWindowableError, match=r"net.eval\(\)"):
        inn.apply(tnn.Sequential(tnn.Conv2d(3, 3, 3), tnn.BatchNorm2d(3)), _noise(3, 2))
    with pytest.raises(NotWindowableError, match=r"net.eval\(\)"):
        inn.apply(tnn.Dropout(0.2), _noise(3, 2))


def test_registered_rules():
    class Shift(tnn.Module):  # a pointwise module of the user's
        def forward(self, x):
            return x + 1

    inn.register_window_rule(Shift, "pointwise")
    net = tnn.Sequential(tnn.Conv2d(3, 2, 3, padding=1), Shift()).double()
    _check(net, _noise(3, 2), 1, tile=8)

    class Blur3(tnn.Module):  # a 3-wide box blur along the last axis only
        def forward(self, x):
            return (x[..., :-2] + x[..., 1:-1] + x[..., 2:]) / 3

    class BlurRule(inn.WindowRule):
        def __init__(self, m, nd):
            self.m, self.last = m, nd - 1

        def need(self, axis, lo, hi):
            return (lo - 1, hi + 1) if axis == self.last else (lo, hi)

        def run(self, x, starts):
            return self.m(x), list(starts[:-1]) + [starts[-1] + 1]

    inn.register_window_rule(Blur3, BlurRule)
    y = inn.apply(Blur3(), _noise(1, 2), tile=4)
    x = _noise(1, 2)[:, 0:8, -1:9]
    torch.testing.assert_close(y[:, 0:8, 0:8], (x[..., :-2] + x[..., 1:-1] + x[..., 2:]) / 3)
    with pytest.raises(ValidationError):
        inn.register_window_rule(Blur3, "elementwise")


def test_bad_inputs():
    with pytest.raises(ValidationError, match=r"Conv1d works over 1 spatial dim, but the input has 2"):
        inn.apply(tnn.Sequential(tnn.Conv1d(3, 3, 3)), _noise(3, 2))
    with pytest.raises(ValidationError, match=r"MaxPool3d works over 3 spatial dims"):
        inn.apply(tnn.MaxPool3d(2), _noise(3, 2))
    net = tnn.Conv2d(3, 3, 3)
    with pytest.raises(ValidationError, match=r"\(C, None, \.\.\., None\)"):
        inn.apply(net, it.InfiniteTensor((None, None), lambda c: torch.zeros(4, 4), it.TensorWindow((4, 4))))
    with pytest.raises(ValidationError, match="tile"):
        inn.apply(net, _noise(3, 2), tile=0)
    with pytest.raises(ValidationError, match="InfiniteTensor"):
        inn.apply(net, torch.zeros(3, 8, 8))
    with pytest.raises(NotWindowableError, match="scale_factor"):
        inn.apply(tnn.Upsample(size=(8, 8)), _noise(3, 2))
    with pytest.raises(NotWindowableError, match="align_corners"):
        inn.apply(tnn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), _noise(3, 2))


def test_float32_output_and_no_grad():
    net = tnn.Sequential(tnn.Conv2d(3, 2, 3, padding=1))  # float32 weights with grads
    x = _noise(3, 2, dtype=torch.float32)
    y = inn.apply(net, x, tile=8)
    assert y.dtype == torch.float32 and y.shape == (2, None, None)
    out = y[:, 0:8, 0:8]
    assert not out.requires_grad
    with torch.no_grad():
        ref = net(x[:, -1:9, -1:9][None])[0]  # padding 1: outputs -1 .. 8
    torch.testing.assert_close(out, ref[:, 1:9, 1:9])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda():
    net = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU()).double().cuda().eval()
    x = _noise(3, 2).to("cuda")
    y = inn.apply(net, x, tile=16)
    assert y.device.type == "cuda"
    with torch.no_grad():
        ref = net(x[:, -1:33, -1:33][None])[0]
    torch.testing.assert_close(y[:, 0:32, 0:32], ref)


def test_the_guide_runs():
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "nn.md")
    blocks = [b.split("```", 1)[0] for b in open(path).read().split("```python")[1:]]
    assert len(blocks) == 2
    scope = {}
    for code in blocks:
        exec(compile(code, "docs/nn.md", "exec"), scope)
    y, x, net = scope["y"], scope["x"], scope["net"]
    assert scope["region"].shape == (3, 200, 300)
    with torch.no_grad():
        ref = net(x[:, -200:200, -100:400][None])[0]
    torch.testing.assert_close(scope["region"], ref[:, 100:300, 100:400], rtol=1e-5, atol=1e-5)
