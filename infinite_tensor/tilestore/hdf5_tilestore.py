"""HDF5TileStore: persistent tiles in one HDF5 file, written by the C core
through the HDF5 C library (h5py is not needed; any HDF5 reader, h5py
included, can read the files).

The file is opened through a journaling driver, so after a crash it holds
exactly what the last flush() (or eviction commit, or close()) saved; the
windows computed since are computed again when needed, and never counted
twice.  The layout is documented in docs/file-format.md.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import threading
from typing import Any

from .. import _core
from ..errors import TileAccessError, ValidationError
from . import _serve
from ._engine import describe_cache
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


_NAME_MAX = 255  # the longest file name Linux takes; temporary names and journals fit in it too


def _check_path(path, mode):
    """Raise the OSError subclass users expect, naming their path, for a path
    the mode cannot open (the C layer would name a temporary file, or say
    only that HDF5 failed)."""
    name = os.fspath(path)
    if len(os.fsencode(path.name)) > _NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, f"File name too long ({len(os.fsencode(path.name))} bytes; "
                      f"at most {_NAME_MAX})", name)
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(errno.ENOENT, f"No such directory: '{parent}'", name)
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"Not a directory: '{parent}'", name)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", name)
    exists = path.exists()
    if mode in ("r", "r+") and not exists:
        raise FileNotFoundError(errno.ENOENT, f"No such file (mode {mode!r} opens an existing file)", name)
    if mode in ("w-", "x") and exists:
        raise FileExistsError(errno.EEXIST, f"File exists (mode {mode!r} creates a new file)", name)
    if exists and not os.access(path, os.R_OK if mode == "r" else os.R_OK | os.W_OK):
        raise PermissionError(errno.EACCES, f"Permission denied (mode {mode!r} needs to "
                              f"{'read' if mode == 'r' else 'read and write'} the file)", name)
    if mode != "r" and not os.access(parent, os.W_OK | os.X_OK):
        # a writer keeps its journal next to the file, and a new file is
        # renamed into place: the directory must be writable
        raise PermissionError(errno.EACCES, f"Permission denied: mode {mode!r} needs to write in "
                              f"the directory '{parent}'", name)


class _OpenFile:
    """One HDF5 file as this process has it open: the C file handle, the tile
    cache and the tensor entries, shared by every HDF5TileStore object open
    on that file.  A second store on an open file (a notebook cell run
    twice) joins the first instead of opening the file again: two handles
    would each hand out the same tile rows and damage the file."""

    __slots__ = ("key", "file", "cache", "tensors", "options", "users")

    def __init__(self, key, store, options):
        self.key = key
        self.file = store._file
        self.cache = store._cache
        self.tensors = store._tensor_store
        self.options = options
        # open stores using it: a count, not a WeakSet, since the collector
        # clears weak references before it runs the finalizers that close
        self.users = 0


_open_files: dict[tuple[int, int, int], _OpenFile] = {}  # (pid, st_dev, st_ino) -> _OpenFile
_open_lock = threading.RLock()


def _file_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.getpid(), st.st_dev, st.st_ino


def _open_here(path):
    """The _OpenFile of path if this process has it open, else None."""
    key = _file_key(path)
    return None if key is None else _open_files.get(key)


def _loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _h5_name(tensor_id):
    """The id as the file names it: HDF5 names are C strings, so an id with a
    NUL character cannot be stored (the memory store takes any id)."""
    tid = str(tensor_id)
    if "\x00" in tid:
        raise ValidationError(f"tensor id {tid!r} contains a NUL character, which an HDF5 file cannot name")
    return tid


def _reopen(path, mode, compression, compression_opts, tile_size, cache_size_bytes, cache_size_tiles):
    """Unpickle an HDF5TileStore (HDF5TileStore.__reduce__)."""
    return HDF5TileStore(path, mode=mode, compression=compression, compression_opts=compression_opts,
                         tile_size=tile_size, cache_size_bytes=cache_size_bytes, cache_size_tiles=cache_size_tiles)


def _reconnect(path, mode, compression, compression_opts, tile_size, cache_size_bytes, cache_size_tiles,
               owner, address, authkey):
    """Unpickle a writable HDF5TileStore: served by its owner when the owner
    still has the file open for writing, else opened here (_reopen)."""
    options = (path, mode, compression, compression_opts, tile_size, cache_size_bytes, cache_size_tiles)
    if owner != os.getpid():
        conn = _serve.reachable(path, address, authkey, owner)
        if conn is not None:
            return HDF5TileStore._served_copy(*options, owner=owner, address=address, authkey=authkey, conn=conn)
    return _reopen(*options)


def _writable_open_here():
    return any(k[0] == os.getpid() and not f.options["read-only"] for k, f in list(_open_files.items()))


def _before_fork():
    """A fork of a process holding a writable file gets the file served (the
    child finds the server in _serve): start serving now, in the parent."""
    if _writable_open_here():
        _serve.serve()


os.register_at_fork(before=_before_fork)


class HDF5TileStore(PersistentTileStore):
    """Tiles of any number of tensors in one HDF5 file.

    mode: "r" (read-only; the file must exist), "r+" (read/write; must
    exist), "a" (read/write, created if missing; the default), "w" (create
    or truncate), "w-" or "x" (create; fail if it exists).
    compression: "gzip" (level compression_opts, default 4) or None.

    Opening a file this process already has open through another
    HDF5TileStore (a notebook cell run twice) joins that store: both objects
    share the file, the tile cache and the tensors, so any order of calls on
    them loses nothing.  The options must agree (read-only or not,
    compression, cache limits); mode "w" on such a file is refused.  The file
    is closed when the last of them closes.

    Args:
        filepath: The file's path (a str or path-like; kept as the
            ``pathlib.Path`` attribute ``filepath``).
        mode: "r", "r+", "a" (default), "w", "w-" or "x", as above.
        compression: "gzip" (default), None, or an int (a gzip level).
        compression_opts: The gzip level, 0-9 (default 4; None: 4).
        tile_size: The tile's extent along every infinite dim (an int,
            default 512), or one entry per infinite dim (a tuple); each > 0.
        cache_size_bytes: The most bytes the tile cache keeps in memory (an
            int >= 0, default 100 MiB), or None for no limit; or ``"auto"``
            (a quarter of the host memory available when the store is
            opened) or a fraction of it such as ``0.5``.
        cache_size_tiles: The most tiles the cache keeps (an int >= 0), or
            None (default) for no limit.
        **kwargs: Only the deprecated ``tile_cache_size=`` (sets
            ``cache_size_tiles`` and warns with DeprecationWarning).

    Raises:
        ValidationError: An unknown mode, a compression other than gzip, a
            bad level or cache limit, or options that differ from those of
            a store of this process already open on the file.
        TypeError: Any other keyword argument.
        OSError: A path the mode cannot open: FileNotFoundError,
            FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError, or ENAMETOOLONG, naming the path.
        ImportError: This build has no HDF5 support (built without the HDF5
            C library).
        TileAccessError: Mode "w" on a file this process has open, another
            process has the file open in a conflicting mode, or the file is
            not a readable HDF5 file of this format.
    """

    def __init__(self, filepath: str | os.PathLike[str], mode: str = "a", compression: str | int | None = "gzip",
                 compression_opts: int | None = 4, tile_size: int | tuple[int, ...] = DEFAULT_TILE_SIZE,
                 cache_size_bytes: int | float | str | None = DEFAULT_CACHE_SIZE_BYTES, cache_size_tiles: int | None = None,
                 **kwargs: Any) -> None:
        if not _core.HAVE_HDF5:
            raise ImportError(
                "this build of infinite_tensor has no HDF5 support (the HDF5 C library was not found when it was "
                "built): install the HDF5 development files (Debian/Ubuntu: apt install libhdf5-dev pkg-config; "
                "or set HDF5_DIR) and reinstall it from source, or install a wheel, which carries its own libhdf5")
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
        self._readonly = mode == "r"
        self._options = {"read-only": self._readonly, "compression level": level,
                         "cache_size_bytes": cache_size_bytes, "cache_size_tiles": self._cache_size_tiles}
        _check_path(self.filepath, mode)
        # the process whose handle writes the file; others reach it through
        # that process (_serve).  Read-only files are read by each process.
        self._owner = None if self._readonly else os.getpid()
        with _open_lock:
            shared = _open_here(self.filepath)
            if shared is not None:
                if mode == "w":
                    raise TileAccessError(
                        f"'{self.filepath}' is open in this process through another HDF5TileStore; mode 'w' "
                        "would truncate it under that store: close it first (or open with mode 'a')")
                self._join(shared)
            else:
                self._file = _core.H5File(os.fspath(self.filepath), _MODES[mode], level)
                self._share(_OpenFile(_file_key(self.filepath), self, self._options))
        self._closed = False

    # -- pickling ----------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as the path and options that open the file again: in this
        process the copy joins the open file (its cache and tensors); in
        another it opens the file itself, never truncating ("w", "w-" and
        "x" reopen as "a"), with the same locking as any open."""
        mode = "a" if self.mode in ("w", "w-", "x") else self.mode
        # absolute: a worker process may run in another directory
        options = (os.path.abspath(self.filepath), mode, self.compression, self.compression_opts, self.tile_size,
                   self._options["cache_size_bytes"], self._options["cache_size_tiles"])
        if self._owner is None or (self._closed and not self._foreign()):
            return _reopen, options
        if self._foreign():  # a served copy passes on its owner's address
            served = _serve.served_for(self)
            address, authkey = served.conn.address, served.conn.authkey
        else:
            server = _serve.serve()
            address, authkey = server.address, server.authkey
        return _reconnect, options + (self._owner, address, authkey)

    @classmethod
    def _served_copy(cls, path, mode, compression, compression_opts, tile_size, cache_size_bytes, cache_size_tiles,
                     *, owner, address, authkey, conn):
        """A store in this process for a file process `owner` holds: reads
        and windows go through the owner (_serve); the file is not opened."""
        self = cls.__new__(cls)
        PersistentTileStore.__init__(self, tile_size=tile_size, cache_size_bytes=cache_size_bytes,
                                     cache_size_tiles=cache_size_tiles)
        self.filepath = pathlib.Path(path)
        self.mode = mode
        self.compression = compression
        self.compression_opts = compression_opts
        self._readonly = False
        self._options = {"read-only": False, "compression level": _gzip_level(compression, compression_opts),
                         "cache_size_bytes": cache_size_bytes, "cache_size_tiles": self._cache_size_tiles}
        self._file = self._shared = None
        self._owner = owner
        self._served = _serve.Served(self, conn)
        self._closed = False
        return self

    def _foreign(self):
        """Whether another process holds the file (this store is served)."""
        return _serve.is_foreign(self)

    def _refuse_foreign(self, what):
        if self._foreign():
            raise TileAccessError(
                f"'{self.filepath}' is held by process {self._owner}, which serves it to this process "
                f"({os.getpid()}): {what} there")

    # -- a store whose file another process holds (_serve) ------------------------
    def register_tensor(self, tensor: Any) -> None:
        """Attach a tensor (see PersistentTileStore.register_tensor).  In a
        process served by the file's owner the tensor computes in a memory
        copy here, and the owner checks it against what it holds at its
        first read.

        Args:
            tensor: The InfiniteTensor being created.

        Raises:
            TileAccessError: The store is closed.
            ValidationError: The id is stored with another configuration,
                tile size, blend or blend_init (in a served process: at the
                tensor's first read).
        """
        if self._foreign():
            self._check_open()
            tensor._node = _serve.served_for(self).shadow(tensor)._node
            return
        super().register_tensor(tensor)

    def flush(self) -> None:
        """Write every changed tile and make the file durable.  In a process
        served by the file's owner, the owner flushes the file (everything
        any process handed it is then durable).

        Raises:
            TileAccessError: The store is closed, or a write failed.
        """
        if self._foreign():
            self._check_open()
            _serve.served_for(self).call("flush")
            return
        super().flush()

    def close(self) -> None:
        """flush(), drop the cache and close the file (see
        PersistentTileStore.close).  In a process served by the file's owner
        only this process's copy closes; the owner keeps the file.

        Raises:
            TileAccessError: A write failed.
        """
        if self._foreign():
            self._closed = True
            return
        super().close()

    def clear_cache(self, tensor_id: str) -> None:
        """Write the tensor's changed tiles, then drop its cached tiles (see
        PersistentTileStore.clear_cache); in a served process, drop this
        process's copies only.

        Args:
            tensor_id: The tensor's id (an unknown id does nothing).

        Raises:
            TileAccessError: The store is closed, or writing failed.
        """
        if self._foreign():
            _serve.served_for(self).local.clear_cache(tensor_id)
            return
        super().clear_cache(tensor_id)

    def clear_tensor(self, tensor_id: str) -> None:
        """Delete everything kept for the tensor (see
        PersistentTileStore.clear_tensor); refused in a served process.

        Args:
            tensor_id: The tensor's id.

        Raises:
            TileAccessError: The store is closed or read-only, the backend
                failed, or another process holds the file.
        """
        self._refuse_foreign("clear the tensor")
        super().clear_tensor(tensor_id)

    def migrate(self, tensor_id: str, old_device: Any, old_dtype: Any) -> None:
        """Move the tensor's cached tiles to the device its InfiniteTensor
        now declares (see PersistentTileStore.migrate); refused in a served
        process.

        Args:
            tensor_id: The tensor's id.
            old_device: The device the cached tiles are on now.
            old_dtype: The tensor's dtype before the change.

        Raises:
            ValidationError: The dtype changed.
            TileAccessError: No tensor is registered under the id, the
                metadata could not be written, or another process holds the
                file.
        """
        self._refuse_foreign("move the tensor (.to())")
        super().migrate(tensor_id, old_device, old_dtype)

    def _remote(self):
        """The Served of this store when another process holds its file."""
        return _serve.served_for(self) if self._foreign() else None

    def _view(self, tensor_id):
        """A tensor of this process registered under tensor_id (served)."""
        served = _serve.served_for(self)
        shadow = served.shadows.get(str(tensor_id))
        if shadow is not None:
            return shadow._original
        entry = self._tensor_store.get(str(tensor_id))  # a fork: the parent's tensors
        view = next(iter(entry.views), None) if entry is not None else None
        if view is None:
            raise TileAccessError(f"Tensor {tensor_id} is not registered in this process")
        return view

    # -- sharing one open file between the stores of this process ----------------
    def _share(self, shared):
        if shared.key is not None:  # (None: the file was renamed away meanwhile; nobody can join it)
            _open_files[shared.key] = shared
        self._shared = shared
        shared.users += 1

    def _join(self, shared):
        ours, theirs = self._options, shared.options
        diffs = [f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ours if ours[k] != theirs[k]]
        if diffs:
            raise ValidationError(
                f"'{self.filepath}' is open in this process through another HDF5TileStore with other options "
                f"({'; '.join(diffs)}): stores on one file share its cache and tensors, so give the same "
                "options, or close the other store first")
        self._file, self._cache, self._tensor_store = shared.file, shared.cache, shared.tensors
        self._shared = shared
        shared.users += 1

    def _releases_backend(self):
        """Leave the shared file; True when no other open store uses it."""
        with _open_lock:
            shared = self._shared
            shared.users -= 1
            if shared.users > 0:
                return False
            if _open_files.get(shared.key) is shared:
                del _open_files[shared.key]
            return True

    def _reopen_backend(self):
        if self._foreign():
            return  # the owner holds the file; this process's copy opens again
        with _open_lock:
            shared = _open_here(self.filepath)
            if shared is self._shared:  # still open through another store
                shared.users += 1
                return
            if shared is not None:
                raise TileAccessError(
                    f"'{self.filepath}' was opened again in this process by another HDF5TileStore after this "
                    "one was closed; use that store, or close it before reopening this one")
            self._file.reopen()
            self._shared.key = _file_key(self.filepath)
            self._share(self._shared)

    # -- what the store holds -------------------------------------------------------
    def tensor_ids(self) -> list[str]:
        """The ids of the tensors stored in the file (sorted).

        Returns:
            A new sorted list of ids, registered in this process or not.

        Raises:
            TileAccessError: The store is closed.
        """
        self._check_open()
        if self._foreign():
            return _serve.served_for(self).call("ids")[1]
        return sorted(tid for tid, _ in self._file.list())

    def _ids_with_meta(self, meta: dict) -> list[str]:
        return sorted(tid for tid, text in self._file.list() if _loads(text) == meta)

    def __repr__(self) -> str:
        state = "closed" if self._closed else describe_cache(self)
        if self._foreign() and not self._closed:
            state = f"served by process {self._owner}"
        return f"<HDF5TileStore '{self.filepath}' mode={self.mode!r} {state}>"

    def _display_rows(self):
        rows = [("path", str(self.filepath)), ("mode", self.mode)]
        return rows + ([("state", "closed")] if self._closed else super()._display_rows())

    # -- backend -----------------------------------------------------------------
    def _attach(self, node, tensor_id):
        self._file.attach(node, tensor_id)

    def _flush_backend(self) -> None:
        self._file.flush()

    def _close_backend(self) -> None:
        self._file.close()

    # -- storage primitives (the engine reads and writes tiles in C) -------------
    def _read_tensor_metadata(self, tensor_id: str) -> dict | None:
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

    def _write_tensor_metadata(self, tensor_id: str, metadata: dict, tile_size: tuple[int, ...]) -> None:
        self._file.write_meta(_h5_name(tensor_id), json.dumps(metadata), tuple(int(t) for t in tile_size))

    def _delete_tensor_state(self, tensor_id: str) -> None:
        self._file.delete(_h5_name(tensor_id))

    def _read_tile(self, tensor_id: str, tile_index: tuple[int, ...]) -> None:
        raise NotImplementedError("HDF5TileStore reads tiles in the C engine; read the tensor instead")

    def _write_tile(self, tensor_id: str, tile_index: tuple[int, ...], tile: Any, contributions: Any) -> None:
        raise NotImplementedError("HDF5TileStore writes tiles in the C engine; read the tensor instead")
