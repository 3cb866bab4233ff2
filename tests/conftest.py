"""Shared fixtures for the infinite_tensor test suite.

The plain-torch reference lives in tests/reference.py and the helpers that
build a library tensor next to its reference twin in tests/pairs.py.  This
file only makes them importable whatever pytest's import mode is.
"""

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# The helpers' asserts get pytest's messages (and still run under python -O).
pytest.register_assert_rewrite("pairs", "reference")


@pytest.fixture
def store():
    """A fresh, unbounded MemoryTileStore."""
    import infinite_tensor as it

    return it.MemoryTileStore()
