"""Cases shared by record_goldens.py (run against torch-streamer 0.0.2 and
torchaudio) and test_stream_goldens.py (run against infinite_tensor.stream).

Each case builds its module and input from a fixed seed, so both sides see
the same weights and samples (same torch).  Plain torch only: no import of
either streaming package here.
"""

import torch
import torch.nn as nn

C = 2


def _seq(*layers):
    return nn.Sequential(*layers)


# name -> (builder of the module, input length, block sizes); the builder
# gets the Residual1d class of the package under test
NETS = {
    "conv_k3_s2": (lambda R: nn.Conv1d(C, 3, 3, stride=2), 41, (1, 3, 7)),
    "conv_k2_s5_gap": (lambda R: nn.Conv1d(C, C, 2, stride=5), 41, (1, 4)),
    "conv_padded_valid": (lambda R: nn.Conv1d(C, C, 3, padding=1), 20, (1, 6)),
    "conv_dil_groups": (lambda R: nn.Conv1d(C, 4, 3, dilation=3, groups=2), 33, (1, 5)),
    "convt_k3_s2": (lambda R: nn.ConvTranspose1d(C, 3, 3, stride=2), 17, (1, 4)),
    "convt_k2_s5": (lambda R: nn.ConvTranspose1d(C, C, 2, stride=5), 9, (1, 2)),
    "avgpool": (lambda R: nn.AvgPool1d(3, 2), 30, (1, 4)),
    "maxpool": (lambda R: nn.MaxPool1d(2), 30, (1, 4)),
    "upstream_sequential": (lambda R: _seq(
        nn.ConvTranspose1d(C, C, 3, stride=2), nn.ConvTranspose1d(C, C, 1), nn.Conv1d(C, C, 1),
        nn.Conv1d(C, 2 * C, 3, dilation=2), nn.Conv1d(2 * C, C, 2), nn.Conv1d(C, C, 1, stride=2),
        nn.AvgPool1d(3, 2), nn.MaxPool1d(3, 2), nn.ReLU()), 20, (1, 3, 10)),
    "residual": (lambda R: _seq(nn.Conv1d(C, C, 1), R(_seq(nn.GELU(), nn.Conv1d(C, 4, 3), nn.GELU(),
                                                              nn.Conv1d(4, C, 1))), nn.Conv1d(C, 1, 1)), 25, (1, 6)),
    # torch-streamer's bug 1: the ConvT after a strided conv loses its tail on some block sizes
    "bug1_conv_then_convt": (lambda R: _seq(nn.Conv1d(C, C, 4, stride=3), nn.ConvTranspose1d(C, C, 5, stride=2)),
                             23, (1, 2, 3, 5, 7, 16)),
    # bug 4 (stride-1 variant): a pool inside a residual body shifts the skip
    "bug4_pool_in_residual": (lambda R: _seq(R(_seq(nn.Conv1d(C, C, 3), nn.MaxPool1d(3, 1)))), 20, (1, 5)),
    # MaxPool dilation, ignored by torch-streamer
    "maxpool_dilation": (lambda R: nn.MaxPool1d(2, 1, dilation=2), 12, (1, 3)),
}

# (source_fs, target_fs, method, width, rolloff, beta, shape)
RESAMPLE = [
    (16000, 48000, "sinc_interp_hann", 6, 0.99, 14.769656459379492, (1, 100)),
    (48000, 16000, "sinc_interp_hann", 6, 0.99, 14.769656459379492, (2, 97)),
    (44100, 22050, "sinc_interp_kaiser", 3, 0.9, 8.0, (60,)),
    (22050, 8000, "sinc_interp_kaiser", 12, 0.5, 30.0, (2, 80)),
    (8000, 44100, "sinc_interp_hann", 1, 0.2, 14.769656459379492, (1, 33)),
]


def build(name, residual_cls):
    builder, n, blocks = NETS[name]
    torch.manual_seed(sum(map(ord, name)))
    net = builder(residual_cls).double()
    x = torch.randn(C, n, dtype=torch.float64).clamp(-1, 1)
    return net, x, blocks


def resample_input(i):
    shape = RESAMPLE[i][-1]
    g = torch.Generator().manual_seed(1000 + i)
    return torch.randn(shape, generator=g).clamp(-1, 1)


def stream_blocks(stream, x, b):
    """torch-streamer's feeding pattern: blocks of b, final on the last."""
    ys = []
    for i in range(0, x.shape[-1], b):
        y = stream(x[..., i:i + b], final=i + b >= x.shape[-1])
        if y is not None:
            ys.append(y)
    return torch.cat(ys, -1) if ys else x[..., :0]


def run(stream, x, b):
    """Feed x to stream in blocks of b (final on the last) without grad;
    the outputs concatenated (every non-None output must be non-empty)."""
    ys = []
    with torch.no_grad():
        for i in range(0, x.shape[-1], b):
            y = stream(x[..., i:i + b], final=i + b >= x.shape[-1])
            if y is not None:
                assert y.shape[-1] != 0
                ys.append(y)
    return torch.cat(ys, dim=-1)
