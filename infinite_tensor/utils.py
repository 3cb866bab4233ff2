"""Index helpers: `sl`, the region builder of 0.4, and 0.3's index
normalisers (the data path parses indices in C)."""
from __future__ import annotations

from typing import Any

from . import _core

__all__ = ["sl", "normalize_slice", "standardize_indices"]


class _RegionBuilder:
    """``sl[0:512, 5]`` is the region ``t[0:512, 5]`` would read, as a tuple
    ``(slice(0, 512, None), 5)``; ``sl[0:8]`` is the one-item tuple
    ``(slice(0, 8, None),)``.  Regions built this way go in a list to read
    several at once: ``a, b = t[[sl[0:8, 0:8], sl[64:72, 0:8]]]``."""

    __slots__ = ()

    def __getitem__(self, region: Any) -> tuple:
        """The region written between the brackets, as a tuple.

        Args:
            region: What the brackets hold: an int, a slice, ``...``, or a
                tuple of these (``sl[0:8, 5]`` passes the tuple).  It is not
                checked here; a read of the region checks it.

        Returns:
            ``region`` itself when it is a tuple, else the one-item tuple
            ``(region,)``.
        """
        return region if isinstance(region, tuple) else (region,)

    def __repr__(self) -> str:
        return "sl"

    def __reduce__(self) -> str:
        return "sl"  # pickles as the module attribute: one builder


sl = _RegionBuilder()


def standardize_indices(
    tensor_shape: tuple[int | None, ...], indices: tuple[int | slice, ...]
) -> tuple[list[slice], list[int]]:
    """Normalise a __getitem__ key for a tensor of this shape.

    Returns (slices, collapse): one slice with explicit start, stop and step
    per dim, and the dims indexed by an int (squeezed from the result).

    The key is parsed by the C core exactly as a read parses it: slices on
    finite dims clamp like torch's, negative ints and slice ends count from
    the end of a finite dim, ``...`` expands, missing trailing dims are
    taken whole.

    Args:
        tensor_shape: The tensor's shape; None marks an infinite dim.
        indices: A key as ``t[...]`` takes it for one region: an int, a
            slice or ``...``, or a tuple of these.

    Returns:
        ``(slices, collapse)``: a list with one ``slice(start, stop, step)``
        per dim, all three explicit, and the list of dims indexed by an int.

    Raises:
        IndexError: An index past a finite dim or past +-2**62, a slice on an
            infinite dim without both ends, or too many indices.
        ValueError: A slice step <= 0.
        TypeError: An index of the wrong type (None, float, str, a list ...).
    """
    starts, stops, steps, squeezed = _core.parse_index(tuple(tensor_shape), indices)
    return [slice(a, b, s) for a, b, s in zip(starts, stops, steps)], list(squeezed)


def normalize_slice(idx: int | slice, shape_dim: int | None) -> slice:
    """One index (int or slice) of a dim of size shape_dim (None: infinite) as
    a slice with explicit start, stop and step.

    Args:
        idx: An int (one element) or a slice of the dim.
        shape_dim: The dim's size, or None for an infinite dim.

    Returns:
        The equivalent ``slice(start, stop, step)``, as
        ``standardize_indices`` gives it.

    Raises:
        IndexError, ValueError, TypeError: As ``standardize_indices``.
    """
    slices, _ = standardize_indices((shape_dim,), (idx,))
    return slices[0]
