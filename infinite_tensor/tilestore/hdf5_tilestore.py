"""HDF5TileStore: persistent tiles in one HDF5 file, written by the C core
through the HDF5 C library (h5py is not needed; any HDF5 reader, h5py
included, can read the files).

The file is opened through a journaling driver, so after a crash it holds
exactly what the last flush() (or eviction commit, or close()) saved; the
windows computed since are computed again when needed, and never counted
twice.  The layout is documented in docs/file-format.md.
"""
import json
import os
import pathlib

from .. import _core
from ..errors import ValidationError
from .persistent import DEFAULT_CACHE_SIZE_BYTES, DEFAULT_TILE_SIZE, PersistentTileStore

# 0.3 needed h5py and exposed whether it imported; this store writes HDF5
# through the C library, so it is always available.
HAS_H5PY = True

_MODES = {"r": 0, "r+": 1, "a": 2, "w": 3, "w-": 4, "x": 4}


def _gzip_level(compression, compression_opts):
    if compression is None:
        return -1
    if isinstance(compression, int) and not isinstance(compression, bool):
        level = compression  # h5py's shorthand: an int is a gzip level
    elif compression == "gzip":
        level = 4 if compression_opts is None else compression_opts
    else:
        raise ValidationError(f"compression must be 'gzip' or None, got {compression!r} (lzf and szip "
                              "are not available in the HDF5 C library this store uses)")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ValidationError(f"the gzip level (compression_opts) must be an int in 0-9, got {level!r}")
    return level


def _h5_name(tensor_id):
    """The id as the file names it: HDF5 names are C strings, so an id with a
    NUL character cannot be stored (the memory store takes any id)."""
    tid = str(tensor_id)
    if "\x00" in tid:
        raise ValidationError(f"tensor id {tid!r} contains a NUL character, which an HDF5 file cannot name")
    return tid


class HDF5TileStore(PersistentTileStore):
    """Tiles of any number of tensors in one HDF5 file.

    mode: "r" (read-only; the file must exist), "r+" (read/write; must
    exist), "a" (read/write, created if missing; the default), "w" (create
    or truncate), "w-" or "x" (create; fail if it exists).
    compression: "gzip" (level compression_opts, default 4) or None.
    """

    def __init__(self, filepath, mode="a", compression="gzip", compression_opts=4, tile_size=DEFAULT_TILE_SIZE,
                 cache_size_bytes=DEFAULT_CACHE_SIZE_BYTES, cache_size_tiles=None, **kwargs):
        super().__init__(tile_size=tile_size, cache_size_bytes=cache_size_bytes,
                         cache_size_tiles=cache_size_tiles, **kwargs)
        self._closed = True  # until the file is open
        if mode not in _MODES:
            raise ValidationError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        self.filepath = pathlib.Path(filepath)
        self.mode = mode
        self.compression = compression
        self.compression_opts = compression_opts
        level = _gzip_level(compression, compression_opts)
        if mode in ("r", "r+") and not self.filepath.exists():
            raise FileNotFoundError(f"No such file: '{self.filepath}' (mode {mode!r} opens an existing file)")
        if mode in ("w-", "x") and self.filepath.exists():
            raise FileExistsError(f"File exists: '{self.filepath}' (mode {mode!r} creates a new file)")
        self._file = _core.H5File(os.fspath(self.filepath), _MODES[mode], level)
        self._readonly = mode == "r"
        self._closed = False

    # -- backend -----------------------------------------------------------------
    def _attach(self, node, tensor_id):
        self._file.attach(node, tensor_id)

    def _flush_backend(self):
        self._file.flush()

    def _close_backend(self):
        self._file.close()

    def _reopen_backend(self):
        self._file.reopen()

    # -- storage primitives (the engine reads and writes tiles in C) -------------
    def _read_tensor_metadata(self, tensor_id):
        try:
            record = self._file.read_meta(_h5_name(tensor_id))
        except UnicodeDecodeError as e:  # a damaged file: the metadata text is not UTF-8
            raise ValidationError(f"Tensor {tensor_id} has unreadable metadata on disk: {e}") from None
        if record is None:
            return None
        text, tile_size = record
        try:
            meta = json.loads(text)
        except ValueError as e:
            raise ValidationError(f"Tensor {tensor_id} has unreadable metadata on disk: {e}") from None
        return {"metadata": meta, "tile_size": tuple(tile_size)}

    def _write_tensor_metadata(self, tensor_id, metadata, tile_size):
        self._file.write_meta(_h5_name(tensor_id), json.dumps(metadata), tuple(int(t) for t in tile_size))

    def _delete_tensor_state(self, tensor_id):
        self._file.delete(_h5_name(tensor_id))

    def _read_tile(self, tensor_id, tile_index):
        raise NotImplementedError("HDF5TileStore reads tiles in the C engine; read the tensor instead")

    def _write_tile(self, tensor_id, tile_index, tile, contributions):
        raise NotImplementedError("HDF5TileStore writes tiles in the C engine; read the tensor instead")
