"""Type annotations, docstrings and the PEP 561 marker of the public API.

Every public function, class and method documents each of its parameters by
name (what ``help()`` shows), its annotations resolve at runtime
(``typing.get_type_hints``: the modules use ``from __future__ import
annotations``, so a name that is not importable would only fail here), and
``py.typed`` ships next to ``__init__.py``.
"""
import configparser
import inspect
import os
import pydoc
import re
import typing

import pytest

import infinite_tensor as it
from infinite_tensor import buffers, convert, progress, threads, utils
from infinite_tensor.tensor_window import TensorWindow
from infinite_tensor.tilestore import MemoryTileStore, TileStore
from infinite_tensor.tilestore.hdf5_tilestore import HDF5TileStore
from infinite_tensor.tilestore.persistent import PersistentTileStore

PACKAGE_DIR = os.path.dirname(os.path.abspath(it.__file__))

# classes whose public methods (and constructor) are checked
CLASSES = [it.InfiniteTensor, TensorWindow, TileStore, MemoryTileStore, PersistentTileStore, HDF5TileStore]

# module-level functions of the public API (the package root's extras included)
FUNCTIONS = [
    threads.get_num_threads, threads.set_num_threads,
    buffers.get_buffer_pool_limit, buffers.set_buffer_pool_limit, buffers.buffer_pool_bytes,
    progress.get_progress, progress.set_progress,
    utils.standardize_indices, utils.normalize_slice,
    convert.convert, convert.main,
]

# dunder methods that are part of the API (reads, conversions, `with`)
PUBLIC_DUNDERS = {"__getitem__", "__enter__", "__exit__", "__len__", "__iter__", "__contains__",
                  "__array__", "__dlpack__"}


_SETTER_DOCS = {}  # property setter -> the property's docstring


def _own(obj):
    return getattr(obj, "__module__", "").startswith("infinite_tensor")


def _methods(cls):
    """(qualified name, function) for the public methods and property
    accessors of cls that the package defines (inherited ones included; a
    setter is documented by its property's docstring)."""
    out = []
    for name in dir(cls):
        if name.startswith("_") and name not in PUBLIC_DUNDERS:
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property):
            funcs = [f for f in (attr.fget, attr.fset) if f is not None]
            if attr.fset is not None:
                _SETTER_DOCS[attr.fset] = inspect.getdoc(attr)
        elif isinstance(attr, (staticmethod, classmethod)):
            funcs = [attr.__func__]
        elif inspect.isfunction(attr):
            funcs = [attr]
        else:
            continue
        out += [(f"{cls.__name__}.{name}", f) for f in funcs if _own(f)]
    return out


def _callables():
    """Everything whose docstring and annotations are checked."""
    items = []
    for name in it.__all__:
        obj = getattr(it, name)
        if inspect.isclass(obj):
            if "__init__" in vars(obj):
                items.append((name, obj))
        elif callable(obj):
            items.append((name, obj))
        else:  # sl: a region builder, read with brackets
            items.append((f"{name}.__getitem__", type(obj).__getitem__))
    for cls in CLASSES:
        if _own(cls.__init__):
            items.append((cls.__name__, cls))
        items += _methods(cls)
    items += [(f"{f.__module__}.{f.__name__}", f) for f in FUNCTIONS]
    seen, unique = set(), []
    for name, obj in items:
        if id(obj) not in seen:
            seen.add(id(obj))
            unique.append((name, obj))
    return unique


CALLABLES = _callables()
IDS = [name for name, _ in CALLABLES]


def _doc_and_params(obj):
    """The text help() shows for obj (a class: its docstring and its
    __init__'s) and the parameters it must mention."""
    if inspect.isclass(obj):
        doc = (inspect.getdoc(obj) or "") + "\n" + (inspect.getdoc(obj.__init__) or "")
        params = list(inspect.signature(obj.__init__).parameters.values())[1:]
    else:
        doc = inspect.getdoc(obj) or _SETTER_DOCS.get(obj) or ""
        params = list(inspect.signature(obj).parameters.values())
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
    return doc, params


def test_the_list_is_not_empty():
    objs = {id(obj) for _, obj in CALLABLES}
    for expected in (it.InfiniteTensor, it.InfiniteTensor.__getitem__, it.InfiniteTensor.iter_regions,
                     it.InfiniteTensor.to, TensorWindow.get_bounds, MemoryTileStore, HDF5TileStore,
                     HDF5TileStore.flush, HDF5TileStore.tensor_ids, MemoryTileStore.cache_info,
                     TileStore.register_tensor, type(it.sl).__getitem__, it.set_progress):
        assert id(expected) in objs, expected
    assert len(CALLABLES) > 60


@pytest.mark.parametrize("name,obj", CALLABLES, ids=IDS)
def test_docstring_mentions_every_parameter(name, obj):
    doc, params = _doc_and_params(obj)
    assert doc.strip(), f"{name} has no docstring"
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            word = re.escape(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            word = re.escape(f"**{p.name}")
        else:
            word = rf"\b{re.escape(p.name)}\b"
        assert re.search(word, doc), f"the docstring of {name} does not mention its parameter {p.name!r}"


@pytest.mark.parametrize("name,obj", CALLABLES, ids=IDS)
def test_annotations_resolve_and_are_complete(name, obj):
    fn = obj.__init__ if inspect.isclass(obj) else obj
    hints = typing.get_type_hints(fn)  # raises if an annotation names something not importable
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    for p in params:
        assert p.name in hints, f"{name}: parameter {p.name!r} is not annotated"
    assert "return" in hints, f"{name}: the return type is not annotated"


def test_annotations_name_the_real_types():
    hints = typing.get_type_hints(it.InfiniteTensor.__init__)
    assert hints["tile_store"] == typing.Optional[TileStore]
    assert hints["output_window"] is TensorWindow
    assert hints["progress"] == typing.Optional[bool]
    assert typing.get_type_hints(TileStore.register_tensor)["tensor"] is it.InfiniteTensor
    assert typing.get_type_hints(it.InfiniteTensor.to)["return"] is it.InfiniteTensor
    assert typing.get_type_hints(TensorWindow.from_dict)["return"] is TensorWindow


def test_abstract_store_primitives_are_annotated():
    # the methods a PersistentTileStore subclass implements
    for name in ("_read_tensor_metadata", "_write_tensor_metadata", "_delete_tensor_state", "_read_tile",
                 "_write_tile"):
        fn = getattr(PersistentTileStore, name)
        hints = typing.get_type_hints(fn)
        assert "return" in hints and "tensor_id" in hints, name
        assert inspect.getdoc(fn), name


def test_help_shows_the_arguments():
    text = pydoc.render_doc(it.InfiniteTensor, renderer=pydoc.plaintext)
    for word in ("Args:", "batch_size", "blend_init", "iter_regions", "Yields:", "Raises:"):
        assert word in text


def test_py_typed_marker_next_to_init():
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "__init__.py"))
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))


def test_py_typed_is_package_data():
    setup_cfg = os.path.join(os.path.dirname(PACKAGE_DIR), "setup.cfg")
    if not os.path.isfile(setup_cfg):
        pytest.skip("not a source tree")
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    files = [f.strip() for f in cfg.get("options.package_data", "infinite_tensor", fallback="").split(",")]
    assert "py.typed" in files
