"""Datasets of crops of an infinite tensor, for torch DataLoaders.

``RandomCrops`` streams random crops (an IterableDataset); ``Crops`` indexes
a fixed list of regions (a map-style Dataset; ``Crops.grid`` tiles a
region).  Both hold the tensor itself: with the fork start method the
workers inherit it, with spawn and forkserver it travels pickled, as its
definition (docs/api.md, "Pickling"), so f must be a module-level function
there.  Each worker process computes into its own cache.

Crop ``i`` of an epoch of ``RandomCrops`` depends only on (seed, epoch, i):
the workers of a DataLoader share the crops out (worker k of n takes i = k,
k + n, ...), so the crops of an epoch are the same whatever the number of
workers, and ``state_dict()`` / ``load_state_dict()`` resume an epoch where
it stopped (torchdata's StatefulDataLoader calls them).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import multiprocessing
from multiprocessing.context import get_spawning_popen

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .errors import ValidationError
from .infinite_tensor import InfiniteTensor

__all__ = ["RandomCrops", "Crops", "export_crops"]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _mix(*values: int) -> int:
    """A 63-bit seed from ints (splitmix64 steps): the same in every process
    and Python version."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x >> 1


def _check_tensor(tensor: Any) -> InfiniteTensor:
    if not isinstance(tensor, InfiniteTensor):
        raise ValidationError(f"tensor must be an InfiniteTensor, got {type(tensor).__name__}")
    return tensor


def _crop_extents(tensor: InfiniteTensor, size: Sequence[int | None]) -> list[int | None]:
    """One extent per dim: size lists every dim (None: the whole finite dim)
    or only the unbounded dims (finite dims are taken whole)."""
    shape = tensor.shape
    size = tuple(size)
    inf = [d for d, e in enumerate(shape) if e is None]
    if len(size) == len(inf) and len(inf) != len(shape):
        full: list[int | None] = [None] * len(shape)
        for d, s in zip(inf, size):
            full[d] = s
        size = tuple(full)
    if len(size) != len(shape):
        raise ValidationError(f"size must have one entry per dim ({len(shape)}) or per unbounded dim "
                              f"({len(inf)}), got {len(size)}")
    out: list[int | None] = []
    for d, (s, e) in enumerate(zip(size, shape)):
        if s is None:
            if e is None:
                raise ValidationError(f"size[{d}] is None, but dim {d} is unbounded: give the crop's extent")
            out.append(None)
        elif not _is_int(s) or s <= 0 or (e is not None and s > e):
            raise ValidationError(f"size[{d}] must be a positive int{'' if e is None else f' <= {e}'}, got {s!r}")
        else:
            out.append(s)
    return out


class RandomCrops(IterableDataset):
    """Random crops of an InfiniteTensor, as a stream.

    Args:
        tensor: The InfiniteTensor to crop.
        size: The crop's extent: one entry per dim (None takes a finite dim
            whole) or one per unbounded dim (finite dims are taken whole).
        region: Where crops lie: one ``(start, stop)`` per unbounded dim
            (each crop fits inside), or None when ``sampler`` is given.
        sampler: Instead of ``region``, ``sampler(generator)`` returns a
            crop's start along each unbounded dim (ints), drawing from the
            torch.Generator it is given.  For a finite dim that the crop does
            not take whole, the start is drawn uniformly.
        length: Crops per epoch (an int), or None for an endless stream.
        seed: The base seed (an int).  Crop i of epoch e is drawn from a
            generator seeded by (seed, e, i).
        transform: A callable applied to each crop, or None.

    Raises:
        ValidationError: A bad tensor, size, region, length, seed or sampler.
    """

    def __init__(self, tensor: InfiniteTensor, size: Sequence[int | None],
                 region: Sequence[tuple[int, int]] | None = None, *,
                 sampler: Callable[[torch.Generator], Sequence[int]] | None = None, length: int | None = None,
                 seed: int = 0, transform: Callable[[torch.Tensor], Any] | None = None) -> None:
        super().__init__()
        self.tensor = _check_tensor(tensor)
        self.size = _crop_extents(tensor, size)
        inf = [d for d, e in enumerate(tensor.shape) if e is None]
        if (region is None) == (sampler is None):
            raise ValidationError("give exactly one of region (where crops lie) and sampler")
        if region is not None:
            region = [tuple(r) for r in region]
            if len(region) != len(inf):
                raise ValidationError(f"region must have one (start, stop) per unbounded dim ({len(inf)}), "
                                      f"got {len(region)}")
            for k, (d, r) in enumerate(zip(inf, region)):
                if len(r) != 2 or not all(_is_int(v) for v in r) or r[1] - r[0] < self.size[d]:
                    raise ValidationError(f"region[{k}] must be (start, stop) ints at least size[{d}] = "
                                          f"{self.size[d]} apart, got {r!r}")
        elif not callable(sampler):
            raise ValidationError(f"sampler must be callable, got {type(sampler).__name__}")
        if length is not None and (not _is_int(length) or length < 0):
            raise ValidationError(f"length must be None or an int >= 0, got {length!r}")
        if not _is_int(seed):
            raise ValidationError(f"seed must be an int, got {seed!r}")
        self.region = region
        self.sampler = sampler
        self.length = length
        self.seed = seed
        self.transform = transform
        # the epoch lives in shared memory: DataLoader workers (persistent
        # ones too, fork or spawn) see set_epoch as soon as it is called
        self._epoch = multiprocessing.RawValue("q", 0)
        self._start = 0  # the first crop of the epoch still to give (load_state_dict)
        self._start_epoch = 0  # ... in this epoch
        self._given = 0  # crops this process gave in the current epoch
        self._finished = False  # the last pass ran to the end of its epoch

    @property
    def epoch(self) -> int:
        """The epoch whose crops the next iteration gives (set_epoch)."""
        return int(self._epoch.value)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if get_spawning_popen() is None:  # a plain pickle: the epoch as a number
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless RandomCrops (length=None) has no len()")
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw the crops of another epoch (an int) from the next iteration."""
        if not _is_int(epoch) or epoch < 0:
            raise ValidationError(f"epoch must be an int >= 0, got {epoch!r}")
        self._epoch.value = epoch
        self._start, self._start_epoch = 0, epoch

    def box(self, i: int, epoch: int | None = None) -> tuple[slice, ...]:
        """The region of crop i of an epoch (this one by default)."""
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch if epoch is None else epoch, i))
        starts: list[int] = []
        if self.sampler is not None:
            starts = [int(v) for v in self.sampler(g)]
            if len(starts) != sum(e is None for e in self.tensor.shape):
                raise ValidationError(f"sampler returned {len(starts)} starts; the tensor has "
                                      f"{sum(e is None for e in self.tensor.shape)} unbounded dims")
        out, k = [], 0
        for d, (s, e) in enumerate(zip(self.size, self.tensor.shape)):
            if e is None:
                if self.region is not None:
                    lo, hi = self.region[k]
                    a = int(torch.randint(lo, hi - s + 1, (1,), generator=g))
                else:
                    a = starts[k]
                k += 1
                out.append(slice(a, a + s))
            elif s is None:
                out.append(slice(0, e))
            else:
                a = int(torch.randint(0, e - s + 1, (1,), generator=g))
                out.append(slice(a, a + s))
        return tuple(out)

    def _indices(self) -> Iterator[int]:
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        # a resumed position holds for the epoch it was taken in only
        start = self._start if self.epoch == self._start_epoch else 0
        i = start + k
        while self.length is None or i < self.length:
            yield i
            i += n

    def __iter__(self) -> Iterator[Any]:
        self._given = 0
        if self.epoch != self._start_epoch or self._finished:
            self._start, self._start_epoch = 0, self.epoch
        self._finished = False
        for i in self._indices():
            crop = self.tensor[self.box(i)]
            self._given += 1
            yield crop if self.transform is None else self.transform(crop)
        self._finished = True  # another pass over this epoch starts from its first crop

    def state_dict(self) -> dict[str, int]:
        """Where this epoch stands: ``{"epoch", "next"}`` (the first crop not
        given yet, counted over all workers of a DataLoader when called in a
        worker, as torchdata's StatefulDataLoader does)."""
        info = get_worker_info()
        n = 1 if info is None else info.num_workers
        start = self._start if self.epoch == self._start_epoch else 0
        return {"epoch": self.epoch, "next": start + self._given * n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state["next"]`` of ``state["epoch"]`` (from state_dict)."""
        try:
            epoch, nxt = state["epoch"], state["next"]
        except (KeyError, TypeError):
            raise ValidationError(f"a RandomCrops state is a dict with 'epoch' and 'next', got {state!r}") from None
        if not (_is_int(epoch) and _is_int(nxt) and epoch >= 0 and nxt >= 0):
            raise ValidationError(f"a RandomCrops state holds ints >= 0, got {state!r}")
        self._epoch.value, self._start, self._start_epoch = epoch, nxt, epoch
        self._finished = False


class Crops(Dataset):
    """Crops of an InfiniteTensor at fixed regions (a map-style Dataset).

    Args:
        tensor: The InfiniteTensor to crop.
        regions: A sequence of regions, each what ``tensor[...]`` takes (a
            tuple of slices and ints, as ``sl[...]`` builds).
        transform: A callable applied to each crop, or None.

    Raises:
        ValidationError: A tensor that is not an InfiniteTensor.
    """

    def __init__(self, tensor: InfiniteTensor, regions: Sequence[Any],
                 transform: Callable[[torch.Tensor], Any] | None = None) -> None:
        self.tensor = _check_tensor(tensor)
        self.regions = list(regions)
        self.transform = transform

    @classmethod
    def grid(cls, tensor: InfiniteTensor, size: Sequence[int | None], region: Sequence[tuple[int, int]],
             stride: Sequence[int] | None = None, transform: Callable[[torch.Tensor], Any] | None = None) -> Crops:
        """The crops of ``size`` (as RandomCrops takes it) at every ``stride``
        (default: the size, so they tile it) whose whole lies in ``region``
        (one ``(start, stop)`` per unbounded dim), in row-major order.

        Raises:
            ValidationError: A bad size, region or stride.
        """
        _check_tensor(tensor)
        extents = _crop_extents(tensor, size)
        inf = [d for d, e in enumerate(tensor.shape) if e is None]
        region = [tuple(r) for r in region]
        if len(region) != len(inf):
            raise ValidationError(f"region must have one (start, stop) per unbounded dim ({len(inf)})")
        steps = list(stride) if stride is not None else [extents[d] for d in inf]
        if len(steps) != len(inf) or not all(_is_int(s) and s > 0 for s in steps):
            raise ValidationError(f"stride must be one positive int per unbounded dim ({len(inf)}), got {stride!r}")
        axes: list[list[slice]] = []
        k = 0
        for d, (s, e) in enumerate(zip(extents, tensor.shape)):
            if e is None:
                lo, hi = region[k]
                axes.append([slice(a, a + s) for a in range(lo, hi - s + 1, steps[k])])
                k += 1
            else:
                axes.append([slice(0, e if s is None else s)])
        regions: list[tuple[slice, ...]] = [()]
        for axis in axes:
            regions = [r + (a,) for r in regions for a in axis]
        return cls(tensor, regions, transform)

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i: int) -> Any:
        crop = self.tensor[self.regions[i]]
        return crop if self.transform is None else self.transform(crop)


def export_crops(tensor: InfiniteTensor, blob: Any, regions: Any, *, resume: bool = True,
                 progress: bool | None = None) -> int:
    """Write ``tensor[region]`` for each region as one row of a TensorBlob,
    streaming the regions through ``tensor.iter_regions`` (so windows are
    computed in batches and memory holds one batch of crops, whatever the
    number of regions).

    Args:
        tensor: The infinite tensor to crop.
        blob: A ``TensorBlob`` open for writing (rows go at its end), or a
            path: a blob there is appended to, or created with the tensor's
            dtype and the first crop's shape.
        regions: An iterable of regions (``sl[...]``, as ``t[...]`` takes
            them; a generator is read lazily), or a ``Crops`` dataset (its
            regions).  Every crop must have the blob's row shape.
        resume: Skip as many regions as the blob already has rows, so a run
            that stopped part-way continues where it stopped (the regions
            must come in the same order each run).
        progress: A bar of the crops written: True, False, or None to
            follow the tensor's setting.

    Returns:
        The number of rows this call wrote.

    Raises:
        ValueError: A crop's shape or dtype is not the blob's.
    """
    import itertools
    import os

    from .blob import TensorBlob

    tensor = _check_tensor(tensor)
    if isinstance(regions, Crops):
        regions = regions.regions
    it = iter(regions)
    own = not isinstance(blob, TensorBlob)
    out: TensorBlob | None = blob if not own else None
    if own and os.path.exists(os.fspath(blob)):
        out = TensorBlob.open(blob, "a")
    try:
        if out is not None and resume:
            it = itertools.islice(it, len(out), None)
        written = 0
        for chunk in tensor.iter_regions(it, progress=progress):
            rows = torch.stack(chunk)
            if out is None:
                out = TensorBlob.open(blob, "w", dtype=rows.dtype, shape=tuple(rows.shape[1:]))
            if rows.shape[1:] != out.shape or rows.dtype != out._torch_dtype:
                raise ValueError(
                    f"crops of shape {tuple(rows.shape[1:])} and dtype {rows.dtype} do not fit the blob's rows "
                    f"(shape {out.shape}, dtype {out.dtype})"
                )
            out.seek(0, 2)
            written += out.write(rows)
        return written
    finally:
        if own and out is not None:
            out.close()
