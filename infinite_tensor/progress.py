"""Progress bars and log records of reads.

A read (or an iter_regions batch) that computes many windows shows a tqdm
bar per tensor it computes (tqdm.auto: a widget in Jupyter, text in a
terminal), shown only once the plan has run for half a second and removed
when it ends.  Bars are on where someone watches (a terminal on stderr, or
a Jupyter kernel) unless turned off, and need tqdm (optional: without it
there is no bar).  Every read that computed windows also emits a DEBUG
record on the "infinite_tensor" logger with the windows, f calls, time in
f and outside it, and bytes returned.

The C binding calls the hooks installed here (csrc/python/tensor.c): the
progress hook as a plan of 32 windows or more advances, the read hook after
a read that computed windows, when the logger wants DEBUG records.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import threading
from typing import Any

from . import _core

__all__ = ["set_progress", "get_progress"]

logger = logging.getLogger("infinite_tensor")

_UNSET = object()
_default = None          # True, False, or None: on where someone watches
_per_tensor: dict[str, bool] = {}  # tensor id -> True/False (InfiniteTensor(progress=...))
_bars: dict[tuple[int, str | None], Any] = {}  # (thread, tensor id) -> the bar of the plan under way
_lock = threading.Lock()


def _env_default():
    value = os.environ.get("INFINITE_TENSOR_PROGRESS", "").strip().lower()
    return {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}.get(value)


def _watched():
    """A Jupyter kernel, or stderr on a terminal."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _have_tqdm():
    return importlib.util.find_spec("tqdm") is not None


def _region_bar(enabled, total):
    """A bar counting iter_regions' regions (None: no bar)."""
    if not (_watched() if enabled is None else enabled):
        return None
    tqdm = _tqdm()
    if tqdm is None:
        return None
    return tqdm(total=total, desc="regions", unit="region", delay=0.5, leave=False, dynamic_ncols=True)


def set_progress(enabled: bool | None) -> bool | None:
    """Show progress bars for large reads: True, False, or None (the default:
    where someone watches, a terminal or a notebook).  Applies to every
    tensor without a progress= of its own.  Returns the previous setting.
    INFINITE_TENSOR_PROGRESS=0/1 sets the default at import.

    A bar appears for a read whose plan has 32 windows or more, once it has
    run for half a second, and is removed when the read ends; bars need tqdm
    (without it there are none).

    Args:
        enabled: True (always show bars), False (never), or None (show them
            where someone watches: stderr is a terminal, or a Jupyter kernel).

    Returns:
        The previous package-wide setting.

    Raises:
        ValidationError: ``enabled`` is not True, False or None.
    """
    global _default
    check_setting(enabled)
    previous, _default = _default, enabled
    _install()
    return previous


def check_setting(enabled: Any) -> None:
    """ValidationError unless enabled is True, False or None (every
    progress= and set_progress take these)."""
    if enabled is not None and not isinstance(enabled, bool):
        from ._bridge import short_repr
        from .errors import ValidationError
        raise ValidationError(f"progress must be True, False or None, got {short_repr(enabled)}")


def get_progress() -> bool | None:
    """The package-wide setting (True, False or None).

    Returns:
        What ``set_progress`` last set (None, the default, unless
        ``INFINITE_TENSOR_PROGRESS`` says otherwise).  Tensors created with
        ``progress=`` of their own ignore it.
    """
    return _default


def _set_tensor(tensor_id, enabled):
    """progress= of one tensor (None: the package-wide setting)."""
    if enabled is None:
        _per_tensor.pop(tensor_id, None)
    else:
        _per_tensor[tensor_id] = bool(enabled)
    _install()


def _wanted(tensor_id):
    enabled = _per_tensor.get(tensor_id, _default)
    return _watched() if enabled is None else enabled


def _progress(tensor_id, done, total):
    if not _wanted(tensor_id):
        return
    tqdm = _tqdm()
    if tqdm is None:
        return
    key = (threading.get_ident(), tensor_id)
    with _lock:
        bar = _bars.get(key)
        if bar is not None and (bar.total != total or bar.n > done):
            bar.close()  # a plan that failed or was interrupted: a new one starts
            bar = None
        if bar is None:
            name = "windows" if tensor_id is None else f"{tensor_id}"
            bar = tqdm(total=total, desc=name, unit="window", delay=0.5, leave=False, dynamic_ncols=True)
            _bars[key] = bar
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del _bars[key]


def _read(tensor_id, stats):
    outside = max(stats["seconds_reading"] - stats["seconds_in_f"], 0.0)
    logger.debug("read of %s: %d window(s) computed in %d f call(s), %.6f s in f, %.6f s outside f, "
                 "%d byte(s) returned", "tensor" if tensor_id is None else repr(tensor_id), stats["windows"],
                 stats["f_calls"], stats["seconds_in_f"], outside, stats["bytes_read"])


def _install():
    """Hand the binding the hooks needed now: the progress hook only when a
    bar could be shown (so a read pays nothing for it otherwise)."""
    maybe = any(_per_tensor.values()) or (_default is not False and (_default or _watched()))
    _core.set_hooks(_progress if maybe and _have_tqdm() else None, _read,
                    functools.partial(logger.isEnabledFor, logging.DEBUG))


_default = _env_default()
_install()
