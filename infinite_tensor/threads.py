"""Threads the C core may use to assemble large reads.

A read of more than about half a MiB is copied out of its tiles by a small
pool of worker threads plus the reading thread (the copies are independent
and only touch memory the read holds).  The default is the number of CPUs, at
most 4, or the environment variable ``INFINITE_TENSOR_NUM_THREADS`` read at
the first large read.  Workers start on first use, sleep while idle, and a
forked child (a DataLoader worker) starts its own when it needs them.
"""
from __future__ import annotations

from . import _core
from .errors import ValidationError

__all__ = ["get_num_threads", "set_num_threads"]


def get_num_threads() -> int:
    """Threads used to assemble a large read, the reading thread included.

    Returns:
        The current thread count (at least 1; 1 means no worker threads).
    """
    return _core.copy_threads()


def set_num_threads(n: int) -> int:
    """Use n threads (the reading thread included; 1: no workers) to assemble
    large reads (more than the core's maximum means its maximum).  Returns
    the previous count.

    Args:
        n: The thread count, an int >= 1, the reading thread included; 1
            turns the worker pool off.

    Returns:
        The previous thread count.

    Raises:
        ValidationError: ``n`` is not an int >= 1 (a bool is refused too).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError(f"the thread count must be an int of at least 1, got {n!r}")
    return _core.copy_threads(n)  # the core clamps to its maximum
