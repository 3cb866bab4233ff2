"""Streams: exact inference of 1-D torch.nn layers over a signal that arrives in chunks.

How the buffering works
-----------------------
A stream is an nn.Module whose ``forward(x, final=False)`` takes the next chunk of
a signal shaped ``[C, T]`` (or ``[B, C, T]``) and returns the outputs that the
chunk completes, or ``None`` when it completes none.  Concatenating every
returned tensor gives the layer's output over the whole signal.

Each layer keeps only what a later output still needs:

* A convolution or pooling layer reads windows of ``field = (k - 1) * d + 1``
  input samples, one every ``stride`` samples.  After a call it keeps the
  input from the start of the next window on (fewer than ``field`` samples);
  when ``stride > field`` the next window starts beyond what has arrived, and
  the layer counts how many incoming samples to skip instead.  So output j is
  computed once, from exactly the samples the offline layer reads.
* A transposed convolution scatters each input sample into ``field`` outputs
  spaced ``stride`` apart.  The layer keeps an accumulator of the outputs that
  a future input can still touch: after ``L`` inputs, outputs before
  ``L * stride`` are complete and are returned; the rest wait.  The bias is
  added when an output leaves the accumulator, so it is added once.
* Element-wise layers keep nothing.  A sequence chains its layers, and a
  residual block keeps the skip input until the body's output for it arrives.

Edges.  By default ("valid" edges, as torch-streamer) a layer's padding is
ignored: a stream yields the windows that lie wholly inside the signal.
With ``edges="module"`` a layer pre-fills its left padding before the first
sample, appends its right padding at ``final=True`` and crops a transposed
convolution's padding, so the streamed output equals ``module(x_full)``.

Finishing.  ``final=True`` marks the last chunk.  When a layer of a sequence
returns ``None`` on the last chunk, the later layers still hear of the end: the
sequence hands them a zero-length chunk with ``final=True`` (a flush).  Built-in
stateful streams flush on it; element-wise layers are skipped; a user stream
gets it only if its class sets ``accepts_flush = True``.

Everything here is TorchScript: the per-call code is written over torch ops and
plain ints, so ``torch.jit.script(stream)`` gives the same results as eager.
"""

import math
import typing as T
import warnings
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # the package-wide class, once errors.py defines it
    from ..errors import NotWindowableError  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the rest of the tree
    from ..errors import InfiniteTensorError

    class NotWindowableError(InfiniteTensorError, ValueError):  # type: ignore[no-redef]
        """A module mixes samples along time in a way no registered stream
        (or window rule) knows how to reproduce chunk by chunk."""


__all__ = [
    "BaseStream",
    "Sequential1dStream",
    "Residual1dStream",
    "Residual1d",
    "Conv1dStream",
    "ConvTranspose1dStream",
    "Pool1dStream",
    "Elementwise1dStream",
    "register_streamer",
    "create_stream",
    "pointwise",
    "NotWindowableError",
]

EDGES = ("valid", "module")


def _check_edges(edges: str) -> str:
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    return edges


def _resolve_reset(reset_on_final: Optional[bool], edges: str) -> bool:
    # a stream with module edges models one finite signal: start afresh after it
    if reset_on_final is None:
        return edges == "module"
    return bool(reset_on_final)


# ---------------------------------------------------------------- TorchScript helpers


def _check_rank(x: torch.Tensor) -> None:
    if x.dim() != 2 and x.dim() != 3:
        raise ValueError("stream input must be shaped [C, T] or [B, C, T]")


def _batched(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x.unsqueeze(0)
    return x


def _unbatched(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 2:
        return y.squeeze(0)
    return y


def _edge(like: torch.Tensor, n: int, value: float) -> torch.Tensor:
    size = list(like.shape[:-1])
    size.append(n)
    return like.new_full(size, value)


def _empty_like_chunk(x: torch.Tensor) -> torch.Tensor:
    size = list(x.shape[:-1])
    size.append(0)
    return x.new_empty(size)


# ---------------------------------------------------------------- base


class BaseStream(nn.Module):
    """Base class of every stream.

    Subclasses implement ``forward(x, final=False)``: take the next chunk of the
    input, shaped ``[C, T]`` (built-ins also take ``[B, C, T]``), and return the
    outputs it completes, or ``None`` when there are none yet.  ``final=True``
    marks the last chunk.

    ``accepts_flush``: set it to True on a subclass that handles a zero-length
    ``final=True`` chunk; a :class:`Sequential1dStream` then passes the end of
    the signal on to it even when an earlier layer emitted nothing on the last
    chunk.  The flush chunk has length 0 along time; its other dimensions are
    unspecified.
    """

    accepts_flush = False

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        """Process the next chunk; see the class docstring."""
        raise NotImplementedError()

    @torch.jit.export
    def reset(self) -> None:
        """Forget everything buffered, so the stream can take a new signal."""
        pass


# ---------------------------------------------------------------- weights


def _folded_weight(net: nn.Module) -> torch.Tensor:
    """The module's weight as one tensor: the parameter itself (an alias, so
    in-place updates show through), or old-style weight norm and
    parametrizations folded once."""
    if hasattr(net, "weight_g") and hasattr(net, "weight_v"):
        dim = 0
        for hook in net._forward_pre_hooks.values():
            if hook.__class__.__name__ == "WeightNorm":
                dim = hook.dim
        with torch.no_grad():
            return torch._weight_norm(net.weight_v, net.weight_g, dim)
    return net.weight


def _alias(t: Optional[torch.Tensor]) -> Optional[nn.Parameter]:
    if t is None:
        return None
    if isinstance(t, nn.Parameter):
        return nn.Parameter(t, requires_grad=t.requires_grad)  # shares storage
    return nn.Parameter(t.detach(), requires_grad=False)


def _int1(v) -> int:
    if isinstance(v, (tuple, list)):
        return int(v[0])
    return int(v)


def _conv_pads(net: nn.Module, field: int) -> Tuple[int, int]:
    """(left, right) zero padding of a Conv1d, for module edges."""
    if getattr(net, "padding_mode", "zeros") != "zeros":
        raise NotImplementedError(f"edges='module' supports zero padding only, not padding_mode={net.padding_mode!r}")
    p = net.padding
    if isinstance(p, str):
        if p == "valid":
            return 0, 0
        total = field - 1  # "same" (torch allows it with stride 1 only)
        return total // 2, total - total // 2
    p = _int1(p)
    return p, p


# ---------------------------------------------------------------- windowed layers


class _WindowStream(BaseStream):
    """Shared buffering of Conv1dStream and Pool1dStream (see the module essay)."""

    buf: Optional[torch.Tensor]
    proto: Optional[torch.Tensor]
    accepts_flush = True

    def __init__(self, field: int, stride: int, pad_left: int, pad_right: int, pad_value: float,
                 reset_on_final: bool):
        super().__init__()
        self.field = field
        self.stride = stride
        self.pad_left = pad_left
        self.pad_right = pad_right
        self.pad_value = pad_value
        self.reset_on_final = reset_on_final
        self.buf = None
        self.proto = None
        self.skip = 0
        self.started = False

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError()

    @torch.jit.export
    def reset(self) -> None:
        self.buf = None
        self.proto = None
        self.skip = 0
        self.started = False

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        _check_rank(x)
        if x.shape[-1] == 0:
            proto = self.proto
            if proto is None:  # nothing ever arrived: nothing to flush
                if final and self.reset_on_final:
                    self.reset()
                return None
            x = proto  # a flush chunk may carry another layer's channel count
        else:
            self.proto = _empty_like_chunk(x)
        if not self.started:
            self.started = True
            if self.pad_left > 0:
                x = torch.cat([_edge(x, self.pad_left, self.pad_value), x], -1)
        if final and self.pad_right > 0:
            x = torch.cat([x, _edge(x, self.pad_right, self.pad_value)], -1)
        if self.skip > 0:
            drop = min(self.skip, x.shape[-1])
            x = x[..., drop:]
            self.skip -= drop
        buf = self.buf
        if buf is not None and buf.shape[-1] > 0:
            x = torch.cat([buf, x], -1)

        y: Optional[torch.Tensor] = None
        n = x.shape[-1]
        if n >= self.field:
            steps = (n - self.field) // self.stride + 1
            used = (steps - 1) * self.stride + self.field
            with torch.no_grad():
                y = _unbatched(self._apply(_batched(x[..., :used])), x)
            nxt = steps * self.stride
            if nxt <= n:
                self.buf = x[..., nxt:]
            else:
                self.buf = None
                self.skip = nxt - n
        else:
            self.buf = x
        if final and self.reset_on_final:
            self.reset()
        return y


class Conv1dStream(_WindowStream):
    """Stream for ``nn.Conv1d``, any kernel size, stride, dilation and groups.

    With the default ``edges="valid"`` the convolution's padding is ignored and
    the stream yields the "valid" convolution (the windows wholly inside the
    signal), as torch-streamer does.  With ``edges="module"`` the stream
    prepends the left zero padding before the first sample and appends the
    right padding at ``final=True``, so the output equals ``net(x_full)``
    (``padding_mode="zeros"`` only; "same" and "valid" strings work).

    The weight and bias are registered as aliases of the module's parameters.
    """

    # TorchScript reads a class's own annotations only: repeat the base's
    buf: Optional[torch.Tensor]
    proto: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]

    def __init__(self, net: nn.Conv1d, edges: str = "valid", reset_on_final: Optional[bool] = None):
        _check_edges(edges)
        k, d, s = _int1(net.kernel_size), _int1(net.dilation), _int1(net.stride)
        field = d * (k - 1) + 1
        pl, pr = _conv_pads(net, field) if edges == "module" else (0, 0)
        super().__init__(field, s, pl, pr, 0.0, _resolve_reset(reset_on_final, edges))
        self.weight = _alias(_folded_weight(net))
        self.bias = _alias(net.bias)
        self.dilation = d
        self.groups = int(net.groups)
        self.edges = edges

    def __repr__(self) -> str:
        o, i, k = self.weight.shape
        return f"Conv1dStream({i}, {o}, kernel_size={k}, stride={self.stride})"

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Pool1dStream(_WindowStream):
    """Stream for ``nn.AvgPool1d`` and ``nn.MaxPool1d``.

    Default ("valid") edges ignore ``padding`` and ``ceil_mode`` as
    torch-streamer does; MaxPool's ``dilation`` is honoured.  With
    ``edges="module"`` the padding is pre-filled (zeros for AvgPool with
    ``count_include_pad=True``, -inf for MaxPool); ``ceil_mode=True`` and
    ``count_include_pad=False`` with padding raise NotImplementedError.

    Raises:
        ValueError("invalid_pool_module"): ``net`` is not one of the two pools.
    """

    buf: Optional[torch.Tensor]
    proto: Optional[torch.Tensor]

    def __init__(self, net: nn.Module, edges: str = "valid", reset_on_final: Optional[bool] = None):
        _check_edges(edges)
        if isinstance(net, nn.AvgPool1d):
            kind = "Avg"
            d = 1
        elif isinstance(net, nn.MaxPool1d):
            kind = "Max"
            d = _int1(net.dilation)
        else:
            raise ValueError("invalid_pool_module")
        k = _int1(net.kernel_size)
        s = _int1(net.stride) if net.stride is not None else k
        field = d * (k - 1) + 1
        p = 0
        if edges == "module":
            p = _int1(net.padding)
            if net.ceil_mode:
                raise NotImplementedError("edges='module' does not support ceil_mode=True")
            if kind == "Avg" and p > 0 and not net.count_include_pad:
                raise NotImplementedError("edges='module' supports AvgPool1d with count_include_pad=True only")
        value = -math.inf if kind == "Max" else 0.0
        super().__init__(field, s, p, p, value, _resolve_reset(reset_on_final, edges))
        self.pool_type = kind
        self.kernel = k
        self.dilation = d
        self.edges = edges

    def __repr__(self) -> str:
        extra = f", dilation={self.dilation}" if self.dilation != 1 else ""
        return f"{self.pool_type}Pool1dStream(kernel_size={self.kernel}, stride={self.stride}{extra})"

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "Max":
            return F.max_pool1d(x, self.kernel, self.stride, 0, self.dilation)
        return F.avg_pool1d(x, self.kernel, self.stride)


# ---------------------------------------------------------------- transposed convolution


class ConvTranspose1dStream(BaseStream):
    """Stream for ``nn.ConvTranspose1d``, any kernel size, stride, dilation and groups.

    With the default ``edges="valid"`` the stream yields the uncropped
    transposed convolution (``padding`` and ``output_padding`` ignored, as
    torch-streamer).  With ``edges="module"`` it crops ``padding`` on both
    sides and adds ``output_padding`` zeros (plus bias) on the right, so the
    output equals ``net(x_full)``.  The tail is returned at ``final=True``,
    after which the stream starts afresh (as torch-streamer's).
    """

    acc: Optional[torch.Tensor]
    proto: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    accepts_flush = True

    def __init__(self, net: nn.ConvTranspose1d, edges: str = "valid", reset_on_final: Optional[bool] = None):
        super().__init__()
        _check_edges(edges)
        k, d, s = _int1(net.kernel_size), _int1(net.dilation), _int1(net.stride)
        self.weight = _alias(_folded_weight(net))
        self.bias = _alias(net.bias)
        self.field = d * (k - 1) + 1
        self.stride = s
        self.dilation = d
        self.groups = int(net.groups)
        self.crop = 0
        self.extra = 0
        if edges == "module":
            if getattr(net, "padding_mode", "zeros") != "zeros":
                raise NotImplementedError("edges='module' supports zero padding only")
            self.crop = _int1(net.padding)
            self.extra = _int1(net.output_padding)
        self.edges = edges
        self.reset_on_final = _resolve_reset(reset_on_final, edges)
        self.acc = None
        self.proto = None
        self.n_in = 0  # inputs seen
        self.out_pos = 0  # position (in the uncropped output) of acc[..., 0]

    def __repr__(self) -> str:
        i, o, k = self.weight.shape
        return f"ConvTranspose1dStream({i}, {o}, kernel_size={k}, stride={self.stride})"

    @torch.jit.export
    def reset(self) -> None:
        self.acc = None
        self.proto = None
        self.n_in = 0
        self.out_pos = 0

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        _check_rank(x)
        n = x.shape[-1]
        s = self.stride
        if n > 0:
            with torch.no_grad():
                z = _unbatched(
                    F.conv_transpose1d(_batched(x), self.weight, None, s, 0, 0, self.groups, self.dilation), x)
            z = F.pad(z, [self.n_in * s - self.out_pos, 0])
            acc = self.acc
            if acc is not None:
                z = z + F.pad(acc, [0, z.shape[-1] - acc.shape[-1]])
            self.acc = z
            self.n_in += n
        L = self.n_in
        acc = self.acc
        y: Optional[torch.Tensor] = None
        if L > 0 and acc is not None:
            # end (exclusive, uncropped coordinates) of what is complete now
            end = (L - 1) * s + self.field - self.crop + self.extra
            if not final:
                end = min(end, L * s)
            lo = self.out_pos
            if end > lo:
                need = end - lo
                if need > acc.shape[-1]:  # output_padding reaches past the full result
                    acc = F.pad(acc, [0, need - acc.shape[-1]])
                out = acc[..., :need]
                self.acc = acc[..., need:]
                self.out_pos = end
                drop = max(self.crop - lo, 0)
                out = out[..., drop:]
                if out.shape[-1] > 0:
                    bias = self.bias
                    if bias is not None:
                        out = out + bias.unsqueeze(-1)
                    y = out
        if final:
            self.reset()
        return y


# ---------------------------------------------------------------- element-wise


class Elementwise1dStream(BaseStream):
    """Stream for a module with a receptive field of one sample (activations,
    1x1 convolutions, ...): each chunk goes through the module as it is.

    A zero-length chunk gives None (torch-streamer ran the module on it,
    which returns an empty tensor or, for a 1x1 convolution, raises).

    Raises:
        RuntimeError("invalid_elementwise_output"): at call time, when the
            module changes the length of a chunk.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        # one exit: TorchScript mishandles an early return before a with-block
        y: Optional[torch.Tensor] = None
        if x.shape[-1] > 0:  # nothing to map in an empty chunk (torch's convs refuse it)
            with torch.no_grad():
                z = _unbatched(self.net(_batched(x)), x)
            if z.shape[-1] != x.shape[-1]:
                raise RuntimeError("invalid_elementwise_output")
            y = z
        return y


# ---------------------------------------------------------------- sequence


class Sequential1dStream(BaseStream):
    """Stream for an ``nn.Sequential`` (or any module, through its children),
    one stream per child from :func:`create_stream`.

    A layer that returns ``None`` stops the chunk there.  On the last chunk
    the later layers are still flushed (see the module essay), so a
    transposed convolution after a strided one keeps its tail.

    Args:
        net: the network.
        strict: raise NotWindowableError for a child that has no registered
            stream and is not a known or declared pointwise module.
        edges: "valid" (default, as torch-streamer) or "module".
        reset_on_final: reset every layer after ``final=True`` (default: only
            with ``edges="module"``).
    """

    flushable: List[bool]

    def __init__(self, net: nn.Module, strict: bool = False, edges: str = "valid",
                 reset_on_final: Optional[bool] = None):
        super().__init__()
        _check_edges(edges)
        streams = [create_stream(m, strict=strict, edges=edges) for m in net.children()]
        self.streams = nn.ModuleList(streams)
        self.flushable = [bool(getattr(s, "accepts_flush", False)) for s in streams]
        self.reset_on_final = _resolve_reset(reset_on_final, edges)
        self.accepts_flush = True

    @torch.jit.export
    def reset(self) -> None:
        for stream in self.streams:
            stream.reset()

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        y: Optional[torch.Tensor] = x
        flush: Optional[torch.Tensor] = None
        for i, stream in enumerate(self.streams):
            if y is not None:
                inp = y
                y = stream(inp, final=final)
                if y is None and final:
                    flush = inp[..., :0]
            else:
                f = flush
                if f is not None and self.flushable[i]:
                    yf = stream(f, final=True)
                    if yf is not None and yf.shape[-1] > 0:
                        y = yf
        if final and self.reset_on_final:
            self.reset()
        return y


# ---------------------------------------------------------------- residual


class Residual1d(nn.Module):
    """A residual block whose skip input is cropped to the body's output:
    ``y = net(x)``; with ``p = len(x) - len(y)``, ``x`` loses ``p // 2`` samples
    on the left and the rest on the right before ``y + x``.  A plain module,
    not a stream; :func:`create_stream` streams it.

    Raises:
        ValueError("invalid_residual_stride"): the body has a strided Conv1d.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        if any(_int1(m.stride) != 1 for m in net.modules() if isinstance(m, nn.Conv1d)):
            raise ValueError("invalid_residual_stride")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        p = x.shape[-1] - y.shape[-1]
        if p > 0:
            x = x[..., p // 2: x.shape[-1] - (p - p // 2)]
        return y + x


def _shrink(m: nn.Module, edges: str) -> int:
    """How many samples a stride-1 module's streamed output is shorter than its
    input (negative when longer).  Strided layers cannot sit in a residual
    block: the skip would need resampling."""
    factory = _lookup(type(m), m)
    if factory is not None and factory not in _BUILTIN:
        # a user stream: torch-streamer's estimate, the dilated extent of its convs
        return sum(_int1(c.dilation) * (_int1(c.kernel_size) - 1) for c in m.modules() if isinstance(c, nn.Conv1d))
    if isinstance(m, Residual1d):
        return _shrink(m.net, edges)
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.AvgPool1d, nn.MaxPool1d)):
        stride = m.stride if m.stride is not None else m.kernel_size
        if _int1(stride) != 1:
            raise ValueError("invalid_residual_stride")
        d = _int1(getattr(m, "dilation", 1))
        field = d * (_int1(m.kernel_size) - 1) + 1
        if isinstance(m, nn.ConvTranspose1d):
            if edges == "module":
                return -(field - 1 - 2 * _int1(m.padding) + _int1(m.output_padding))
            return -(field - 1)
        pads = 0
        if edges == "module":
            if isinstance(m, nn.Conv1d):
                pl, pr = _conv_pads(m, field)
                pads = pl + pr
            else:
                pads = 2 * _int1(m.padding)
        return field - 1 - pads
    if isinstance(m, nn.Sequential) or factory is _seq_factory:
        return sum(_shrink(c, edges) for c in m.children())
    return 0


class Residual1dStream(BaseStream):
    """Stream for :class:`Residual1d` (or for any module ``net``, as the body
    of ``x + net(x)``): the body streams, and the skip input waits for it.

    The skip is offset by half the body's length change (the left part of
    ``Residual1d.forward``'s crop), computed from every layer of the body:
    convolutions, pools and transposed convolutions.

    Raises:
        ValueError("invalid_residual_stride"): a strided layer in the body.
        ValueError: the body makes the signal longer.
    """

    skip_buf: Optional[torch.Tensor]
    proto: Optional[torch.Tensor]
    accepts_flush = True

    def __init__(self, net: nn.Module, strict: bool = False, edges: str = "valid",
                 reset_on_final: Optional[bool] = None):
        super().__init__()
        _check_edges(edges)
        body = net.net if isinstance(net, Residual1d) else net
        p = _shrink(body, edges)
        if p < 0:
            raise ValueError("invalid_residual_length: the residual body makes the signal longer")
        self.padding = p // 2
        self.stream = create_stream(body, strict=strict, edges=edges)
        self.reset_on_final = _resolve_reset(reset_on_final, edges)
        self.skip_buf = None
        self.proto = None
        self.to_skip = self.padding

    @torch.jit.export
    def reset(self) -> None:
        self.stream.reset()
        self.skip_buf = None
        self.proto = None
        self.to_skip = self.padding

    def forward(self, x: torch.Tensor, final: bool = False) -> Optional[torch.Tensor]:
        _check_rank(x)
        if x.shape[-1] == 0:
            proto = self.proto
            if proto is not None:
                x = proto
        else:
            self.proto = _empty_like_chunk(x)
            r = x
            if self.to_skip > 0:
                drop = min(self.to_skip, r.shape[-1])
                r = r[..., drop:]
                self.to_skip -= drop
            sb = self.skip_buf
            if sb is not None:
                r = torch.cat([sb, r], -1)
            self.skip_buf = r
        y = self.stream(x, final=final)
        if y is not None:
            sb = self.skip_buf
            if sb is None:
                raise RuntimeError("residual stream: the body produced more output than its input")
            n = y.shape[-1]
            y = y + sb[..., :n]
            self.skip_buf = sb[..., n:]
        if final and self.reset_on_final:
            self.reset()
        return y


# ---------------------------------------------------------------- registry


class _Options(T.NamedTuple):
    strict: bool
    edges: str


def _seq_factory(net: nn.Module, o: _Options) -> BaseStream:
    return Sequential1dStream(net, strict=o.strict, edges=o.edges)


def _residual_factory(net: nn.Module, o: _Options) -> BaseStream:
    return Residual1dStream(net, strict=o.strict, edges=o.edges)


def _pointwise_conv(net: nn.Module) -> bool:
    if _int1(net.kernel_size) != 1 or _int1(net.stride) != 1:
        return False
    p = net.padding
    if isinstance(p, str):
        return True  # "same" and "valid" with k=1 pad nothing
    if _int1(p) != 0:
        return False
    return _int1(getattr(net, "output_padding", 0)) == 0


def _conv_factory(net: nn.Module, o: _Options) -> BaseStream:
    if _pointwise_conv(net):
        return Elementwise1dStream(net)
    return Conv1dStream(net, edges=o.edges)


def _convt_factory(net: nn.Module, o: _Options) -> BaseStream:
    if _pointwise_conv(net):
        return Elementwise1dStream(net)
    return ConvTranspose1dStream(net, edges=o.edges)


def _pool_factory(net: nn.Module, o: _Options) -> BaseStream:
    return Pool1dStream(net, edges=o.edges)


_BUILTIN = (_seq_factory, _residual_factory, _conv_factory, _convt_factory, _pool_factory)

_stream_map: List[Tuple[type, Callable]] = [
    (nn.Sequential, _seq_factory),
    (Residual1d, _residual_factory),
    (nn.Conv1d, _conv_factory),
    (nn.ConvTranspose1d, _convt_factory),
    (nn.AvgPool1d, _pool_factory),
    (nn.MaxPool1d, _pool_factory),
]


def register_streamer(module: type, streamer: Callable[[nn.Module], BaseStream]) -> None:
    """Register ``streamer(net) -> BaseStream`` for modules of type ``module``.

    A second registration of the same type replaces the first.  When several
    registered types match a module, the most specific one (first in the
    module's MRO) wins, so a subclass of a built-in can have its own stream.
    Element-wise modules need no registration.
    """
    if not isinstance(module, type):
        raise TypeError(f"register_streamer expects a type, got {module!r}")
    if not callable(streamer):
        raise TypeError(f"register_streamer expects a callable, got {streamer!r}")
    for i, (m, _) in enumerate(_stream_map):
        if m is module:
            _stream_map[i] = (module, streamer)
            return
    _stream_map.append((module, streamer))


def _lookup(cls: type, net: nn.Module) -> Optional[Callable]:
    exact = {m: f for m, f in _stream_map}
    for c in cls.__mro__:
        if c in exact:
            return exact[c]
    for m, f in _stream_map:  # virtual subclasses (ABC registrations)
        if isinstance(net, m):
            return f
    return None


# ---------------------------------------------------------------- pointwise detection

_declared_pointwise: set = set()
_warned: set = set()


def pointwise(cls: type) -> type:
    """Declare a module class element-wise in time (usable as a decorator):
    the fallback streams it with no warning, also under ``strict=True``."""
    if not isinstance(cls, type):
        raise TypeError(f"pointwise expects a type, got {cls!r}")
    _declared_pointwise.add(cls)
    return cls


_SOFTMAX = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
_POINTWISE_TYPES: Tuple[type, ...] = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.BatchNorm1d,
    nn.Sequential, nn.ModuleList,
)


def _known_pointwise(m: nn.Module) -> bool:
    if type(m) in _declared_pointwise:
        return True
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        return _pointwise_conv(m)
    if isinstance(m, _SOFTMAX):
        return m.dim is None or m.dim in (0, 1, -2, -3)
    if type(m) in _POINTWISE_TYPES:
        return True
    mod = type(m).__module__
    return mod == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention)


def _mixes_time(m: nn.Module) -> Optional[str]:
    """Name the first submodule that mixes samples along time, if any."""
    for name, sub in m.named_modules():
        where = f"{type(sub).__name__}" + (f" at {name!r}" if name else "")
        if isinstance(sub, nn.modules.conv._ConvNd):
            ks = sub.kernel_size
            if any(k != 1 for k in ks) or any(s != 1 for s in sub.stride) or (
                    not isinstance(sub.padding, str) and any(p != 0 for p in sub.padding)):
                return where
        elif isinstance(sub, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                              nn.modules.pooling._LPPoolNd, nn.modules.pooling._MaxUnpoolNd,
                              nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer,
                              nn.TransformerDecoderLayer, nn.Transformer, nn.Upsample)):
            return where
        elif isinstance(sub, _SOFTMAX) and not _known_pointwise(sub):
            return where
    return None


def _fallback(net: nn.Module, strict: bool) -> BaseStream:
    if _known_pointwise(net):
        return Elementwise1dStream(net)
    if strict:
        raise NotWindowableError(
            f"no stream is registered for {type(net).__name__}: register one with register_streamer, "
            f"or declare the class element-wise with pointwise({type(net).__name__})")
    mixing = _mixes_time(net)
    if mixing is not None:
        raise NotWindowableError(
            f"{type(net).__name__} has no registered stream and contains {mixing}, which mixes samples "
            f"along time; register a stream for it with register_streamer")
    cls = type(net)
    if cls not in _warned:
        _warned.add(cls)
        warnings.warn(
            f"no stream is registered for {cls.__qualname__}; streaming it as an element-wise module "
            f"(declare it with pointwise() to silence this, or register a stream)", UserWarning, stacklevel=3)
    return Elementwise1dStream(net)


def create_stream(net: nn.Module, strict: bool = False, edges: str = "valid") -> BaseStream:
    """Create the stream for ``net``: the registered stream of its most specific
    registered type, else an element-wise stream.

    The fallback refuses a module that contains time-mixing layers (a conv
    with kernel > 1, stride or padding, pools, RNNs, attention) with
    NotWindowableError; known element-wise modules pass; any other module
    passes with a one-time UserWarning per class (``strict=True``: raises).

    ``edges`` ("valid" or "module") reaches the built-in streams; a user
    factory is called as ``factory(net)``.
    """
    _check_edges(edges)
    if not isinstance(net, nn.Module):
        raise TypeError(f"create_stream expects an nn.Module, got {type(net).__name__}")
    factory = _lookup(type(net), net)
    if factory is None:
        return _fallback(net, strict)
    if factory in _BUILTIN:
        return factory(net, _Options(strict, edges))
    return factory(net)
