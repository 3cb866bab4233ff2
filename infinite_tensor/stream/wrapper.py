"""Stream: a push/finish front end over a network's stream.

How it works
------------
``Stream(net)`` builds the network's stream once (``create_stream``) and
keeps it.  ``push(chunk)`` hands the chunk to it with ``final=False``;
``finish(chunk=None)`` hands over the last chunk (or a zero-length one) with
``final=True``, so every layer flushes, and then resets the layers.  After
``finish`` the object refuses ``push`` until ``reset()``: a finished signal
cannot grow, and silently starting a new one would glue two signals together.

The time axis may be any dimension (``dim``); it is moved last for the layers
and back for the caller.  The buffering itself is the layers' (see core.py);
this class only keeps the finished flag and the shape of a zero-length chunk.
"""

from typing import Optional

import torch
import torch.nn as nn

from .core import BaseStream, _check_edges, create_stream

__all__ = ["Stream"]


class Stream:
    """Stream a network over a signal pushed in chunks.

    Args:
        net: an ``nn.Module`` (streamed through :func:`create_stream`) or a
            ready :class:`BaseStream`.
        dim: the time dimension of the chunks (default: the last).
        edges: "valid" (the windows wholly inside the signal, as
            torch-streamer) or "module" (the output equals ``net(x_full)``,
            padding included).
        strict: refuse unregistered modules not declared pointwise.

    ``push`` and ``finish`` return the new outputs, or None when there are none.
    """

    def __init__(self, net: nn.Module, dim: int = -1, edges: str = "valid", strict: bool = False):
        _check_edges(edges)
        if not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if isinstance(net, BaseStream):
            self.stream = net
        else:
            self.stream = create_stream(net, strict=strict, edges=edges)
        self.dim = dim
        self.edges = edges
        self.finished = False
        self._empty: Optional[torch.Tensor] = None

    def _to_layers(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"a chunk must be a torch.Tensor, got {type(x).__name__}")
        if not -x.dim() <= self.dim < x.dim():
            raise ValueError(f"dim {self.dim} is out of range for a chunk of shape {tuple(x.shape)}")
        x = x.movedim(self.dim, -1)
        if x.dim() not in (2, 3):
            raise ValueError(f"a chunk must have 2 or 3 dimensions ([C, T] or [B, C, T]), got {tuple(x.shape)}")
        return x

    def _from_layers(self, y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if y is None or y.shape[-1] == 0:
            return None
        return y.movedim(-1, self.dim)

    def push(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Feed the next chunk; return the outputs it completes (or None).

        Raises:
            RuntimeError: after ``finish()`` (call ``reset()`` first).
        """
        if self.finished:
            raise RuntimeError("push() after finish(): call reset() to start a new signal")
        x = self._to_layers(x)
        self._empty = x[..., :0]
        return self._from_layers(self.stream(x, final=False))

    def finish(self, x: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Feed the last chunk (optional), flush every layer, return the rest.

        Raises:
            RuntimeError: when the signal is already finished.
        """
        if self.finished:
            raise RuntimeError("finish() after finish(): call reset() to start a new signal")
        self.finished = True
        if x is None:
            if self._empty is None:  # nothing was ever pushed
                self.stream.reset()
                return None
            x = self._empty
        else:
            x = self._to_layers(x)
        y = self.stream(x, final=True)
        self.stream.reset()
        self._empty = None
        return self._from_layers(y)

    def reset(self) -> None:
        """Forget the current signal (finished or not) and accept a new one."""
        self.stream.reset()
        self.finished = False
        self._empty = None

    def __repr__(self) -> str:
        return f"Stream({self.stream!r}, dim={self.dim}, edges={self.edges!r})"
