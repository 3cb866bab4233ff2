"""infinite_tensor.stream against torch-streamer 0.0.2 and torchaudio, numerically.

goldens.pt holds torch-streamer's streamed outputs and torchaudio's resample
outputs on the cases of stream_cases.py (record_goldens.py made them).  For
every case the first reference is still plain torch, ``net(x_full)``:

* where torch-streamer is right, ours equals both it and torch;
* on its known bugs (a lost ConvT tail, a pool in a residual body, MaxPool
  dilation) ours equals torch, and the golden shows torch-streamer did not.
"""

import os

import pytest
import torch

import infinite_tensor.stream as pts
import infinite_tensor.stream.audio as ptsa
import stream_cases as cases

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDENS = torch.load(os.path.join(HERE, "goldens.pt"), weights_only=False)
BUGS = {"bug1_conv_then_convt", "bug4_pool_in_residual", "maxpool_dilation"}


@pytest.mark.parametrize("name,b", sorted(GOLDENS["nets"]))
def test_against_torch_streamer(name, b):
    net, x, _ = cases.build(name, pts.Residual1d)
    ours = cases.stream_blocks(pts.create_stream(net), x, b)
    if name == "conv_padded_valid":
        ref = torch.nn.functional.conv1d(x[None], net.weight, net.bias)[0]  # "valid": padding ignored
    else:
        ref = net(x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    golden = GOLDENS["nets"][(name, b)]
    if name not in BUGS:
        torch.testing.assert_close(ours, golden, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_torch_streamer_bugs_are_fixed(name):
    net, x, blocks = cases.build(name, pts.Residual1d)
    ref = net(x)
    wrong = 0
    for b in blocks:
        golden = GOLDENS["nets"][(name, b)]
        if golden.shape != ref.shape or not torch.allclose(golden, ref):
            wrong += 1
        torch.testing.assert_close(cases.stream_blocks(pts.create_stream(net), x, b), ref)
    assert wrong > 0, "the golden should show torch-streamer's wrong output"


@pytest.mark.parametrize("i", range(len(cases.RESAMPLE)))
def test_resample_against_torchaudio(i):
    src, dst, method, width, rolloff, beta, _ = cases.RESAMPLE[i]
    ref, theirs = GOLDENS["resample"][i]
    x = cases.resample_input(i)
    for block in (1, 7, 1000):
        stream = ptsa.ResampleStream(src, dst, method, width, rolloff, beta)
        ours = cases.stream_blocks(stream, x, block)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
