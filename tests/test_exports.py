"""Package surface: exports, exception classes and hierarchy, constants."""

import os

import pytest
import torch

import infinite_tensor as it

EXPECTED = {
    "InfiniteTensor",
    "InfiniteTensorError",
    "TileAccessError",
    "ShapeMismatchError",
    "DeviceMismatchError",
    "DtypeMismatchError",
    "ValidationError",
    "TensorWindow",
    "MemoryTileStore",
    "sl",  # 0.4
}


def test_all_lists_the_public_names():
    # HDF5TileStore is appended when h5py imports; persistence is tested elsewhere.
    assert set(it.__all__) - {"HDF5TileStore"} == EXPECTED
    assert len(it.__all__) == len(set(it.__all__))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_resolves(name):
    assert getattr(it, name) is not None


def test_version_is_a_string():
    assert isinstance(it.__version__, str) and it.__version__


def test_star_import():
    ns = {}
    exec("from infinite_tensor import *", ns)
    for name in EXPECTED:
        assert name in ns


@pytest.mark.parametrize(
    "name",
    ["TileAccessError", "ShapeMismatchError", "DeviceMismatchError", "DtypeMismatchError", "ValidationError"],
)
def test_exceptions_derive_from_infinite_tensor_error(name):
    cls = getattr(it, name)
    assert issubclass(cls, it.InfiniteTensorError)
    assert issubclass(cls, Exception)


def test_base_exception():
    assert issubclass(it.InfiniteTensorError, Exception)
    assert not issubclass(it.InfiniteTensorError, ValueError)


def test_validation_error_is_also_a_value_error():
    assert issubclass(it.ValidationError, ValueError)
    with pytest.raises(ValueError):
        raise it.ValidationError("x")


def test_exceptions_are_distinct():
    classes = [getattr(it, n) for n in EXPECTED if n.endswith("Error")]
    assert len(set(classes)) == len(classes) == 6
    for a in classes:
        for b in classes:
            if a is not b and a is not it.InfiniteTensorError and b is not it.InfiniteTensorError:
                assert not issubclass(a, b)


def test_tilestore_module():
    from infinite_tensor.tilestore import MemoryTileStore, TileStore

    assert MemoryTileStore is it.MemoryTileStore
    assert issubclass(MemoryTileStore, TileStore)
    assert "TileStore" not in it.__all__
    assert isinstance(it.MemoryTileStore(), TileStore)


def test_module_constants():
    from infinite_tensor import infinite_tensor as mod

    assert mod.DEFAULT_DTYPE == torch.float32
    assert mod.DEFAULT_DEVICE == torch.device("cpu")


def test_an_unbuilt_source_tree_says_so(tmp_path):
    """Without the C extension, importing the package names the fix (it
    used to fail with a misleading "partially initialized module" error)."""
    import shutil
    import subprocess
    import sys

    src = tmp_path / "infinite_tensor"
    shutil.copytree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "infinite_tensor"), src,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import infinite_tensor"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "C extension infinite_tensor._core is not built" in proc.stderr, proc.stderr
    assert "make build" in proc.stderr and "circular import" not in proc.stderr.splitlines()[-1]
