"""Audio streams: sample-rate conversion chunk by chunk.

How the buffering works
-----------------------
Band-limited resampling from ``source_fs`` to ``target_fs`` reduces both
rates by their gcd to ``orig`` and ``new``.  Every ``orig`` input samples
give ``new`` output samples, each a windowed-sinc filter of the input: output
phase ``j`` of block ``m`` reads the input window that starts at ``m * orig``
and spans ``2 * width + orig`` samples, where ``width`` is the filter's
one-sided reach.  So the whole resampler is one ``conv1d`` with ``new`` output
channels (one filter per phase) and stride ``orig``, over the input with
``width`` zeros before it and ``width + orig`` zeros after it; the result is
cut to ``ceil(new * n / orig)`` samples.  This is what
``torchaudio.functional.resample`` computes.

The stream pre-fills the left zeros on its first call, keeps the input from
the start of the next window on (fewer than ``2 * width + orig`` samples),
appends the right zeros at ``final=True`` and cuts the total output there.
The filter bank is computed here (in float64, cast to the input's dtype),
with the same formula as torchaudio, so torchaudio is not needed.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .core import BaseStream

__all__ = ["ResampleStream", "sinc_resample_kernel"]

_METHODS = ("sinc_interp_hann", "sinc_interp_kaiser")


def sinc_resample_kernel(
    source_fs: int,
    target_fs: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    resampling_method: str = "sinc_interp_hann",
    beta: float = 14.769656459379492,
) -> Tuple[torch.Tensor, int]:
    """The polyphase filter bank of band-limited resampling, float64.

    Returns ``(kernel, width)``: ``kernel`` is shaped ``[new, 1, 2 * width + orig]``
    (rates reduced by their gcd); ``width`` is the one-sided reach in input
    samples.  Phase ``j`` evaluates, for each tap ``i``, a sinc of cut-off
    ``min(orig, new) * rolloff`` at ``t = i / orig - j / new`` (``i`` from
    ``-width``), tapered by a Hann (cos^2) or Kaiser window over
    ``lowpass_filter_width`` zero crossings.
    """
    if int(source_fs) != source_fs or int(target_fs) != target_fs or source_fs <= 0 or target_fs <= 0:
        raise ValueError("sample rates must be positive integers")
    if resampling_method not in _METHODS:
        raise ValueError(f"Invalid resampling method: {resampling_method}")
    if lowpass_filter_width <= 0:
        raise ValueError("Low pass filter width should be positive.")
    g = math.gcd(int(source_fs), int(target_fs))
    orig, new = int(source_fs) // g, int(target_fs) // g
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    phases = -torch.arange(new, dtype=torch.float64) / new
    t = (phases[:, None] + taps[None, :]) * cutoff
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    if resampling_method == "sinc_interp_hann":
        window = torch.cos(t * (math.pi / lowpass_filter_width / 2)) ** 2
    else:
        b = torch.tensor(float(beta), dtype=torch.float64)
        window = torch.i0(b * torch.sqrt(1 - (t / lowpass_filter_width) ** 2)) / torch.i0(b)
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
    kernel = sinc * window * (cutoff / orig)
    return kernel[:, None, :], width


class ResampleStream(BaseStream):
    """Stream ``torchaudio.functional.resample`` from ``source_fs`` to ``target_fs``.

    Inputs are shaped ``[T]``, ``[C, T]`` or ``[B, C, T]``; outputs keep the rank.
    The concatenated output equals ``torchaudio.functional.resample`` over the
    whole input (to float rounding).

    Args:
        source_fs: input sample rate, Hz.
        target_fs: output sample rate, Hz.
        resampling_method: "sinc_interp_hann" or "sinc_interp_kaiser".
        lowpass_filter_width: zero crossings of the sinc on each side.
        rolloff: cut-off as a fraction of the lower Nyquist frequency.
        beta: the Kaiser window's shape (ignored with Hann).
        reset_on_final: start afresh after ``final=True`` (default False, as
            torch-streamer, whose state carries over).
    """

    buf: Optional[torch.Tensor]
    accepts_flush = True

    def __init__(
        self,
        source_fs: int,
        target_fs: int,
        resampling_method: str = "sinc_interp_hann",
        lowpass_filter_width: int = 6,
        rolloff: float = 0.99,
        beta: float = 14.769656459379492,
        reset_on_final: bool = False,
    ):
        super().__init__()
        kernel, width = sinc_resample_kernel(source_fs, target_fs, lowpass_filter_width, rolloff,
                                             resampling_method, beta)
        g = math.gcd(int(source_fs), int(target_fs))
        self.source_rate = int(source_fs) // g
        self.target_rate = int(target_fs) // g
        self.register_buffer("kernel", kernel)
        self.width = width
        self.field = kernel.shape[-1]
        self.stride = self.source_rate
        self.reset_on_final = reset_on_final
        self.buf = None
        self.started = False
        self.x_total = 0
        self.y_total = 0

    def __repr__(self) -> str:
        return f"ResampleStream({self.source_rate}, {self.target_rate}, width={self.width})"

    @torch.jit.export
    def reset(self) -> None:
        self.buf = None
        self.started = False
        self.x_total = 0
        self.y_total = 0

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        if x.dim() < 1 or x.dim() > 3:
            raise ValueError("ResampleStream input must be shaped [T], [C, T] or [B, C, T]")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 1 else x.unsqueeze(0)
        if not self.started:
            self.started = True
            x2 = torch.cat([x2.new_zeros([x2.shape[0], self.width]), x2], -1)
        self.x_total += x.shape[-1]
        if final:
            x2 = torch.cat([x2, x2.new_zeros([x2.shape[0], self.width + self.source_rate])], -1)
        buf = self.buf
        if buf is not None:
            x2 = torch.cat([buf, x2], -1)

        y: Optional[torch.Tensor] = None
        n = x2.shape[-1]
        if n >= self.field:
            steps = (n - self.field) // self.stride + 1
            used = (steps - 1) * self.stride + self.field
            with torch.no_grad():
                z = F.conv1d(x2[:, None, :used], self.kernel.to(x2.dtype), stride=self.stride)
            z = z.transpose(1, 2).reshape(z.shape[0], -1)
            self.buf = x2[..., steps * self.stride:]
            if final:
                total = (self.target_rate * self.x_total + self.source_rate - 1) // self.source_rate
                keep = max(total - self.y_total, 0)
                z = z[..., :keep]
            self.y_total += z.shape[-1]
            if z.shape[-1] > 0:
                out_shape = list(lead)
                out_shape.append(z.shape[-1])
                y = z.reshape(out_shape)
        else:
            self.buf = x2
        if final and self.reset_on_final:
            self.reset()
        return y
