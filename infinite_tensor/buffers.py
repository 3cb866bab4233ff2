"""The recycling pool behind the C core's buffers.

Tiles, argument regions, window outputs of the core and the results handed
to torch are buffers of the C core.  When one is freed (a tile evicted or
cleared, a result torch drops, on whatever thread) and it is 16 KiB or more,
it goes to a process-wide pool instead of back to the C allocator, and the
next buffer of its size class (eight classes per power of two) reuses it.
Memory that large would otherwise be mapped fresh by malloc and unmapped on
free, so every read would pay a page fault and a page clear per 4 KiB it
touches.  With the pool, a read that repeats the shape of earlier ones
allocates nothing from the operating system.

The pool holds at most its limit (256 MiB by default, or the environment
variable ``INFINITE_TENSOR_POOL_BYTES`` read at import); it is shared by every
store and tensor of the process.  The memory a process can hold is therefore
the cache budgets of its stores, plus what its reads pin while they run, plus
the pool's limit.  Set the limit to 0 to hand every freed buffer back at once
(for instance before forking many DataLoader workers).  docs/architecture.md
("Memory") has the rules.
"""
from __future__ import annotations

import os
import warnings

from . import _core
from .errors import ValidationError

__all__ = ["get_buffer_pool_limit", "set_buffer_pool_limit", "buffer_pool_bytes"]

ENV_LIMIT = "INFINITE_TENSOR_POOL_BYTES"


def _check_limit(nbytes, where):
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValidationError(f"{where} must be an int of at least 0 (bytes), got {nbytes!r}")
    return nbytes


def get_buffer_pool_limit() -> int:
    """Bytes of freed buffers the pool may keep for reuse.

    Returns:
        The pool's current limit in bytes (256 MiB unless changed).
    """
    return _core.buffer_pool_limit()


def set_buffer_pool_limit(nbytes: int) -> int:
    """Keep at most nbytes of freed buffers for reuse (0: none; what the pool
    holds beyond the new limit is freed now).  Returns the previous limit.

    The pool is shared by every store and tensor of the process.

    Args:
        nbytes: The new limit in bytes, an int >= 0.  0 frees what the pool
            holds and keeps nothing from then on.

    Returns:
        The previous limit in bytes.

    Raises:
        ValidationError: ``nbytes`` is not an int >= 0 (a bool is refused too).
    """
    _check_limit(nbytes, "the buffer pool limit")
    old = _core.buffer_pool_limit()
    _core.buffer_pool(min(nbytes, 2**63 - 1))
    return old


def buffer_pool_bytes() -> int:
    """Bytes of freed buffers the pool holds right now.

    Returns:
        The bytes held, at most the limit of ``get_buffer_pool_limit()``.
    """
    return _core.buffer_pool()


def _limit_from_env():
    """Apply INFINITE_TENSOR_POOL_BYTES; a bad value warns and keeps the
    default (an import must not fail over it)."""
    text = os.environ.get(ENV_LIMIT, "").strip()
    if not text:
        return
    try:
        set_buffer_pool_limit(int(text))
    except (ValueError, ValidationError):
        warnings.warn(f"{ENV_LIMIT} must be a number of bytes (an int >= 0), got {text!r}; "
                      f"the buffer pool keeps its limit of {get_buffer_pool_limit()} bytes", RuntimeWarning,
                      stacklevel=2)


_limit_from_env()
