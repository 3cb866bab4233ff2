"""Index helpers kept from 0.3 (the data path parses indices in C)."""
from . import _core

__all__ = ["normalize_slice", "standardize_indices"]


def standardize_indices(tensor_shape, indices):
    """Normalise a __getitem__ key for a tensor of this shape.

    Returns (slices, collapse): one slice with explicit start, stop and step
    per dim, and the dims indexed by an int (squeezed from the result)."""
    starts, stops, steps, squeezed = _core.parse_index(tuple(tensor_shape), indices)
    return [slice(a, b, s) for a, b, s in zip(starts, stops, steps)], list(squeezed)


def normalize_slice(idx, shape_dim):
    """One index (int or slice) of a dim of size shape_dim (None: infinite) as
    a slice with explicit start, stop and step."""
    slices, _ = standardize_indices((shape_dim,), (idx,))
    return slices[0]
