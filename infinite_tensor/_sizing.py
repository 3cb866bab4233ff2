"""Sizing from the memory that is free: the engine's side of
infinite_tensor.memory.

Three settings take "auto", and one check runs before large reads:

- ``cache_size_bytes="auto"`` (or a fraction such as ``0.25``) on a store
  becomes a byte count when the store is made (and again when a pickled
  store is unpickled, in the process that unpickles it): the fraction of
  the host memory available then (``memory.available_bytes("cpu")``:
  MemAvailable, capped by a cgroup's limit and the process's rlimits).
  "auto" is AUTO_CACHE_FRACTION: reads return new tensors as large as the
  region, f needs room of its own, and a pipeline may have several stores.
- ``batch_size="auto"`` on a tensor becomes, whenever the tensor's node is
  (re)configured, the largest batch whose stacked outputs and args take at
  most AUTO_BATCH_FRACTION of the memory available on the tensor's device
  (f's own temporaries need the rest), at most AUTO_BATCH_MAX windows.
- Before a read the binding asks ``it_tensor_read_estimate`` (csrc/core/
  tensor.c) what the read surely adds: the result, the tiles holding the
  region beyond those cached, and one batch of f.  From PROBE_MIN_BYTES up
  it asks ``probe`` below for the bytes available on the tensor's device
  and raises MemoryError, before any f runs, when the estimate is larger.
  On Linux an allocation past free memory often succeeds and the process
  is killed later, so the estimate is the only safe place to refuse.
  ``INFINITE_TENSOR_MEMORY_CHECK=0`` turns the check off.

``plan`` reports the same estimate for one read, with the windows and f
calls it would take in every tensor of the pipeline, computing nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import _core
from .errors import ValidationError

AUTO_CACHE_FRACTION = 0.25
AUTO_BATCH_FRACTION = 0.25
AUTO_BATCH_MAX = 4096
PROBE_MIN_BYTES = 64 << 20


def available(device: Any) -> int | None:
    """The bytes available on device (see infinite_tensor.memory), or None
    when they cannot be known here (no such device, no /proc)."""
    from .memory import available_bytes  # late: only reads that may not fit need it
    try:
        return int(available_bytes(device))
    except (OSError, RuntimeError, ValueError, ImportError):
        return None


def probe(device: str) -> int | None:
    """The binding's memory probe (installed by ``install``)."""
    return available(device)


def install() -> None:
    """Turn the read check on, unless INFINITE_TENSOR_MEMORY_CHECK=0."""
    if os.environ.get("INFINITE_TENSOR_MEMORY_CHECK", "1").strip() in ("0", "false", "no", "off"):
        _core.set_memory_probe(None, 0)
    else:
        _core.set_memory_probe(probe, PROBE_MIN_BYTES)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, float) and 0.0 < value <= 1.0


def check_cache_bytes(value: Any, name: str = "cache_size_bytes") -> None:
    """ValidationError unless value is None, an int >= 0, "auto" or a float
    fraction in (0, 1]."""
    if value is None or value == "auto" or _is_fraction(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be None or an int >= 0 (or 'auto', or a fraction of the available "
                              f"memory in (0, 1] such as 0.25), got {value!r}")


def cache_bytes(value: Any, name: str = "cache_size_bytes") -> int | None:
    """value as a byte limit: "auto" and fractions of the host memory
    available now become ints (None when it cannot be known: no limit)."""
    check_cache_bytes(value, name)
    if value is None or isinstance(value, int):
        return value
    fraction = AUTO_CACHE_FRACTION if value == "auto" else value
    free = available("cpu")
    return None if free is None else int(free * fraction)


def batch_bytes_per_window(tensor: Any) -> int:
    """What one window adds to a batch: its output and each arg's window."""
    from .memory import estimate_bytes
    per = estimate_bytes(tensor.output_window.size, tensor.dtype)
    for arg, window in zip(tensor.args, tensor.args_windows):
        per += estimate_bytes(window.size, arg.dtype)
    return per


def auto_batch_size(tensor: Any) -> int:
    """The batch "auto" means for tensor now (see the module's essay)."""
    free = available(tensor.device)
    if free is None:
        return 1
    per = max(batch_bytes_per_window(tensor), 1)
    return max(1, min(AUTO_BATCH_MAX, int(free * AUTO_BATCH_FRACTION) // per))


# -- plan ---------------------------------------------------------------------
@dataclass(frozen=True)
class TensorPlan:
    """One tensor's part of a read: the windows f would compute (those not
    done yet), in how many calls, and the bytes of one call's batch."""

    tensor_id: str
    windows: int
    f_calls: int
    batch_bytes: int
    cached_bytes: int


@dataclass(frozen=True)
class ReadPlan:
    """What a read would take, from ``InfiniteTensor.plan``; computes nothing.

    ``tensors`` lists the tensor read first, then its upstream tensors in
    the order a read reaches them.  The byte figures are those of the
    check that runs before large reads (``needed_bytes``, compared with
    ``available_bytes``): the result, the tiles holding the region (beyond
    the tensor's cached bytes) and one batch of f.  Upstream tensors are
    read in bounded groups, so their regions are not counted.
    """

    result_bytes: int
    tiles: int
    tile_bytes: int
    needed_bytes: int
    available_bytes: int | None
    device: str
    tensors: tuple[TensorPlan, ...]

    @property
    def windows(self) -> int:
        """Windows computed over the whole pipeline."""
        return sum(p.windows for p in self.tensors)

    @property
    def f_calls(self) -> int:
        """Calls of f (of every tensor's f) over the whole pipeline."""
        return sum(p.f_calls for p in self.tensors)

    @property
    def fits(self) -> bool | None:
        """needed_bytes <= available_bytes (None: available unknown)."""
        return None if self.available_bytes is None else self.needed_bytes <= self.available_bytes

    def __str__(self) -> str:
        from ._display import size_text as mib
        avail = "unknown" if self.available_bytes is None else mib(self.available_bytes)
        lines = [f"read plan: {self.windows} windows in {self.f_calls} f calls; needs {mib(self.needed_bytes)} "
                 f"of {avail} available on {self.device} (result {mib(self.result_bytes)}, "
                 f"{self.tiles} tiles of {mib(self.tile_bytes)})"]
        for p in self.tensors:
            lines.append(f"  {p.tensor_id}: {p.windows} windows, {p.f_calls} f calls, batch {mib(p.batch_bytes)}, "
                         f"cached {mib(p.cached_bytes)}")
        return "\n".join(lines)


def _upstream_order(tensor: Any) -> list[Any]:
    """tensor and every tensor upstream of it, each after all its readers."""
    seen, post = set(), []

    def visit(t):
        if id(t) in seen:
            return
        seen.add(id(t))
        for a in t.args:
            visit(a)
        post.append(t)
    visit(tensor)
    return post[::-1]


def plan(tensor: Any, key: Any) -> ReadPlan:
    """The ReadPlan of ``tensor[key]`` (key: a region or a list of them)."""
    node = tensor._live_node()
    est = node.read_estimate(key)
    demands: dict[int, list[Any]] = {id(tensor): key if isinstance(key, list) else [key]}
    parts = []
    for t in _upstream_order(tensor):
        regions = demands.pop(id(t), [])
        missing, seen = [], set()
        for region in regions:
            for w in t._live_node().missing_windows(region):
                if w not in seen:
                    seen.add(w)
                    missing.append(w)
        for arg, window in zip(t.args, t.args_windows):
            demands.setdefault(id(arg), []).extend(window.get_bounds(w) for w in missing)
        batch = max(t._callbacks()[2], 1)  # the core's batch (0: unbatched, one window a call)
        parts.append(TensorPlan(tensor_id=t.uuid, windows=len(missing), f_calls=-(-len(missing) // batch),
                                batch_bytes=batch_bytes_per_window(t) * batch, cached_bytes=t._live_node().nbytes))
    device = str(tensor.device)
    return ReadPlan(result_bytes=est["result_bytes"], tiles=est["tiles"], tile_bytes=est["tile_bytes"],
                    needed_bytes=est["needed"], available_bytes=available(tensor.device), device=device,
                    tensors=tuple(parts))
