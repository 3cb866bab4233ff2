"""infinite_tensor.stream: exact streaming inference of 1-D torch.nn networks.

A drop-in for torch-streamer (``import torchstreamer as pts`` becomes
``import infinite_tensor.stream as pts``): feed a network's input in chunks
and get, chunk by chunk, exactly the output the network gives on the whole
input.  See docs/stream.md.
"""

from .core import (
    BaseStream,
    Conv1dStream,
    ConvTranspose1dStream,
    Elementwise1dStream,
    NotWindowableError,
    Pool1dStream,
    Residual1d,
    Residual1dStream,
    Sequential1dStream,
    create_stream,
    pointwise,
    register_streamer,
)
from .wrapper import Stream

__all__ = [
    "BaseStream",
    "Conv1dStream",
    "ConvTranspose1dStream",
    "Elementwise1dStream",
    "NotWindowableError",
    "Pool1dStream",
    "Residual1d",
    "Residual1dStream",
    "Sequential1dStream",
    "Stream",
    "create_stream",
    "pointwise",
    "register_streamer",
]
