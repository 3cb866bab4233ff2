"""The exceptions infinite_tensor raises.

Every exception of the package derives from InfiniteTensorError.  A
ValidationError is also a ValueError, so code written against 0.3 that caught
ValueError for bad windows keeps working.
"""

__all__ = [
    "InfiniteTensorError",
    "ValidationError",
    "TileAccessError",
    "ShapeMismatchError",
    "DeviceMismatchError",
    "DtypeMismatchError",
    "CorruptBlobError",
    "NotWindowableError",
]


class InfiniteTensorError(Exception):
    """Base class of every error raised by infinite_tensor."""


class ValidationError(InfiniteTensorError, ValueError):
    """A constructor argument, a window or a store setting is invalid, or a
    re-registered tensor does not match what the store holds."""


class TileAccessError(InfiniteTensorError):
    """Cached data is not there: the tensor was cleared from its store, or a
    read that may not compute (read_pixels) needs a window not yet computed."""


class ShapeMismatchError(InfiniteTensorError):
    """f (or blend) returned a tensor of the wrong shape, or a batched f
    returned the wrong number of outputs."""


class DeviceMismatchError(InfiniteTensorError):
    """f returned a tensor on another device than the tensor declares."""


class DtypeMismatchError(InfiniteTensorError):
    """f returned a tensor of another dtype than the tensor declares."""


class CorruptBlobError(InfiniteTensorError, OSError, ValueError):
    """A file opened as a TensorBlob is not one this version reads: not a blob
    at all, damaged (its header or both commit records fail their
    checksums, or it is shorter than its committed rows) or written by a
    newer format version.  An OSError, as h5py and zarr raise for a file they
    cannot read, and a ValueError, as tensorblob raises for a damaged status
    file."""


class NotWindowableError(InfiniteTensorError, ValueError):
    """A module mixes values along a streamed or infinite dim in a way no
    registered rule reproduces piece by piece (global pooling, attention,
    a Linear over that dim, train-mode normalisation, or an unknown module
    with such parts).  infinite_tensor.stream and infinite_tensor.nn raise
    it, naming the module and how to register a rule for it."""
