"""Port of torch-streamer's tests/test_audio.py (brentspell/torch-streamer at
f14b04c; MIT licence, (c) 2024 Brent M. Spell) against
infinite_tensor.stream.audio.

ADAPTED: upstream compares with ``torchaudio.functional.resample``; torchaudio
is not a dependency here, so the reference is ``direct_resample`` below, the
band-limited interpolation formula evaluated sample by sample in float64
(no polyphase conv, no streaming).  torchaudio itself is compared in
test_stream_goldens.py through recorded outputs, and directly when it is
installed (test_against_torchaudio_when_installed).  Assertions kept: shape,
``allclose(atol=1e-4)``, non-empty outputs; hypothesis runs fewer examples.
"""

import math

import hypothesis
import hypothesis.strategies as hs
import pytest
import torch as pt
from stream_cases import run  # noqa: F401  (upstream's helper, shared)

import infinite_tensor.stream.audio as ptsa

RATES = [8000, 16000, 22050, 44100, 48000]


def direct_resample(x, src, dst, method, width, rolloff, beta):
    """y[q] = sum_n x[n] h(n / orig - q / new), h the windowed sinc of cut-off
    min(orig, new) * rolloff, q < ceil(new * len / orig)."""
    g = math.gcd(src, dst)
    orig, new = src // g, dst // g
    cut = min(orig, new) * rolloff
    x64 = x.double().reshape(-1, x.shape[-1])
    n = x64.shape[-1]
    q = pt.arange(math.ceil(new * n / orig), dtype=pt.float64)
    t = (pt.arange(n, dtype=pt.float64)[None, :] / orig - q[:, None] / new) * cut
    t = t.clamp(-width, width)
    if method == "sinc_interp_hann":
        w = pt.cos(t * math.pi / width / 2) ** 2
    else:
        b = pt.tensor(float(beta), dtype=pt.float64)
        w = pt.i0(b * pt.sqrt(1 - (t / width) ** 2)) / pt.i0(b)
    a = t * math.pi
    h = pt.where(a == 0, pt.ones_like(a), pt.sin(a) / a) * w * (cut / orig)
    y = x64 @ h.T
    return y.reshape(list(x.shape[:-1]) + [y.shape[-1]]).to(x.dtype)




@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    source_fs=hs.sampled_from(RATES), target_fs=hs.sampled_from(RATES), channels=hs.integers(0, 2),
    resampling_method=hs.sampled_from(["sinc_interp_hann", "sinc_interp_kaiser"]),
    lowpass_filter_width=hs.integers(1, 20), rolloff=hs.floats(0.01, 0.99), beta=hs.floats(1.0, 50.0),
    length=hs.integers(1, 100), block=hs.integers(1, 10), script=hs.booleans())
@hypothesis.example(source_fs=16000, target_fs=48000, channels=1, resampling_method="sinc_interp_hann",
                    lowpass_filter_width=6, rolloff=0.99, beta=14.769656459379492, length=100, block=1,
                    script=False)
def test_resample(source_fs, target_fs, channels, resampling_method, lowpass_filter_width, rolloff, beta,
                  length, block, script) -> None:
    hypothesis.assume(source_fs != target_fs)
    x = pt.randn([channels, length] if channels > 0 else [length]).clamp(-1.0, 1.0)
    s = ptsa.ResampleStream(source_fs=source_fs, target_fs=target_fs, resampling_method=resampling_method,
                            lowpass_filter_width=lowpass_filter_width, rolloff=rolloff, beta=beta)
    if script:
        s = pt.jit.script(s)
    yc = direct_resample(x, source_fs, target_fs, resampling_method, lowpass_filter_width, rolloff, beta)
    ys = run(s, x, block)
    assert ys.shape == yc.shape
    assert pt.allclose(yc, ys, atol=1e-4)


def test_against_torchaudio_when_installed() -> None:
    taf = pytest.importorskip("torchaudio.functional")
    x = pt.randn(2, 77).clamp(-1, 1)
    for src, dst in ((16000, 48000), (44100, 8000)):
        ref = taf.resample(x, src, dst)
        assert pt.allclose(run(ptsa.ResampleStream(src, dst), x, 5), ref, atol=1e-5)
