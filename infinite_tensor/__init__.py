"""infinite_tensor: tensors with unbounded dimensions for PyTorch.

A tensor is defined by a deterministic function f that produces one window at
a time; reading a region computes only the windows it needs, combines
overlapping windows and caches the result.  The bookkeeping runs in a C core
(infinite_tensor._core) that exchanges buffers with torch through DLPack.
"""
from importlib import metadata as _metadata

try:
    from . import _core  # noqa: F401  (the C extension: built by `make build` or `pip install .`)
except ImportError as _e:
    import glob as _glob
    import os as _os

    if any(_glob.glob(_os.path.join(__path__[0], "_core*" + ext)) for ext in (".so", ".pyd")):
        raise  # built, but it cannot load (a missing library, another Python): the error says why
    # a source tree without the build: say so, rather than "partially initialized module"
    raise ImportError(f"the C extension infinite_tensor._core is not built in {__path__[0]}: run `make build` "
                      "in the checkout (or `pip install .`), or import an installed infinite_tensor from "
                      "another directory") from _e

from . import _bridge  # noqa: F401  (connects the C core to torch)
from .errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InfiniteTensorError,
    ShapeMismatchError,
    TileAccessError,
    ValidationError,
)
from .infinite_tensor import InfiniteTensor
from .tensor_window import TensorWindow
from .threads import get_num_threads, set_num_threads  # noqa: F401  (not in __all__: the 0.3 surface)
from .buffers import buffer_pool_bytes, get_buffer_pool_limit, set_buffer_pool_limit  # noqa: F401  (likewise)
from .progress import get_progress, set_progress  # noqa: F401  (likewise)
from .tilestore import HDF5TileStore, MemoryTileStore
from .utils import sl
from . import _sizing

_sizing.install()  # the memory check before large reads (INFINITE_TENSOR_MEMORY_CHECK=0: off)

try:  # written by setuptools-scm when the package is built (the git tag, or .devN after it)
    from ._version import __version__
except ImportError:
    try:
        __version__ = _metadata.version("infinite-tensor-core")
    except _metadata.PackageNotFoundError:
        __version__ = "0.0.0"

__all__ = [
    "InfiniteTensor",
    "InfiniteTensorError",
    "TileAccessError",
    "ShapeMismatchError",
    "DeviceMismatchError",
    "DtypeMismatchError",
    "ValidationError",
    "TensorWindow",
    "MemoryTileStore",
    "HDF5TileStore",
    "sl",
]
