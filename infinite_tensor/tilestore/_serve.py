"""One world for many processes: the process that opened a writable HDF5 file
serves it to the others (docs/architecture.md, "Many processes, one file").

HDF5 lets one process write a file, and a reader that is not the writer cannot
trust what it sees while the writer works.  So the process holding the file
(the owner) keeps it, and other processes of the same machine (DataLoader
workers forked or spawned from it, multiprocessing children, dask workers on
a LocalCluster) reach it through a local socket:

- A read asks the owner for the region.  If every window it needs is in the
  owner's tensor (cached or stored), the owner assembles it and sends it back:
  the worker computes nothing and sees every window any process contributed,
  saved or not.
- Otherwise the owner answers with the missing windows.  The worker computes
  exactly those, in a private memory copy of the tensor (its "shadow"), and
  sends their outputs, with those of any upstream window it computed on the
  way; the owner adds each one not added yet, then reads the region.  The
  canonical fold (docs/architecture.md) makes the values independent of the
  order in which outputs arrive, and the per-tile window bitmaps make a
  window that two workers sent count once.
- Nothing a worker does touches the file, so a worker killed at any moment
  loses only the windows it had not sent; the owner writes the file as it
  always does (evictions, flush(), close()), and the file keeps its last
  commit if the owner dies.

A worker built by fork finds the owner's address in this module (the owner
starts serving just before any fork while it has a writable file open); one
built by unpickling (spawn, forkserver, dask) finds it in the pickle.  A
worker whose owner has gone, or has closed the file, opens the file itself.
"""
from __future__ import annotations

import atexit
import io
import mmap
import os
import pickle
import shutil
import socket
import tempfile
import threading
from multiprocessing import AuthenticationError, reduction
from multiprocessing.connection import Client, Listener
from typing import Any

import torch

from ..errors import TileAccessError, ValidationError

_MAX_ROUNDS = 4  # read -> compute -> put rounds before a worker reads its own values
# Window outputs go to the owner through a buffer the two processes share
# (a memfd the worker creates and hands over on connecting), so a message
# carries where an output lies, not its bytes; what does not fit goes in the
# message.  Pages are only committed as they are written.
_TRANSFER_BYTES = 64 << 20


class _Unknown(Exception):
    """The owner has no tensor under this id (the worker defines it)."""

    def __init__(self, tid):
        super().__init__(tid)
        self.tid = tid


class _Pickler(pickle.Pickler):
    """Host tensors travel as numpy arrays (one copy into the message;
    torch's own pickling goes through torch.save, several times slower).
    Connection.send would hand tensors over as shared memory, through file
    descriptors and a thread of torch's: not wanted for short messages."""

    def reducer_override(self, obj):
        if type(obj) is torch.Tensor and obj.device.type == "cpu" and obj.dtype in _NUMPY_DTYPES \
                and not obj.requires_grad:
            return torch.from_numpy, (obj.resolve_conj().resolve_neg().numpy(),)
        return NotImplemented


_NUMPY_DTYPES = {torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128, torch.bool,
                 torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def _send(conn, obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    conn.send_bytes(buf.getbuffer())


def _recv(conn):
    return pickle.loads(conn.recv_bytes())


def _portable(exc):
    """exc as it can travel back to the worker (pickled), else a
    TileAccessError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling
        return TileAccessError(f"{type(exc).__name__}: {exc}")


def _rule_key(rule):
    """The parts of InfiniteTensor._rule() that mean the same in every
    process (a weight tensor is named by its hash there)."""
    return tuple(rule[:2]) + (len(rule) > 2,)


# ---------------------------------------------------------------------------
# The owner's side
# ---------------------------------------------------------------------------
class _Server:
    """Serves every HDF5 file this process has open for writing: a thread
    accepts connections on a socket in a private directory, one thread per
    connection answers its requests."""

    def __init__(self):
        self.pid = os.getpid()
        self.authkey = os.urandom(32)
        self.dir = tempfile.mkdtemp(prefix="infinite_tensor-")  # mode 0700: only this user connects
        self.address = os.path.join(self.dir, "serve")
        self.listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self.define_lock = threading.Lock()
        self.closed = False
        self.serving: dict[threading.Thread, Any] = {}  # connection threads and their connections
        threading.Thread(target=self._accept, name="infinite_tensor serve", daemon=True).start()
        atexit.register(self.close)

    def close(self):
        """Stop serving (at exit): no new connections; each open one ends
        after the request it is answering, before the interpreter goes (a
        thread still inside the engine then could see it torn down)."""
        if self.closed or os.getpid() != self.pid:  # a fork inherits the exit hook, not the socket
            return
        self.closed = True
        try:
            self.listener.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        for thread, conn in list(self.serving.items()):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)  # its recv() ends
            except OSError:
                pass
            thread.join(timeout=5)

    def _accept(self):
        while not self.closed:
            try:
                conn = self.listener.accept()
            except (AuthenticationError, EOFError, ConnectionError):
                continue  # a client that died while connecting, or a stranger
            except OSError:
                return  # the listener was closed
            thread = threading.Thread(target=self._serve, args=(conn,), name="infinite_tensor serve conn",
                                      daemon=True)
            self.serving[thread] = conn
            thread.start()

    def _serve(self, conn):
        shared = _Shared()
        try:
            with conn:
                self._serve_requests(conn, shared)
        finally:
            shared.close()
            self.serving.pop(threading.current_thread(), None)

    def _serve_requests(self, conn, shared):
        """Answer conn's requests, one reply each, until it ends."""
        while True:
            try:
                request = _recv(conn)
                if request[0] == "buffer":
                    shared.receive(conn, request[2])
            except (EOFError, OSError):
                return  # the worker ended, or was killed in the middle of a message: nothing was applied
            except Exception as e:  # noqa: BLE001 - a message that does not unpickle here
                reply = ("error", TileAccessError(f"the owner could not read a request: {e}"))
            else:
                try:
                    reply = ("ok", None) if request[0] == "buffer" else self._handle(shared, *request)
                except _Unknown as u:
                    reply = ("unknown", u.tid)
                except BaseException as e:  # noqa: BLE001 - every failure goes back to the worker
                    reply = ("error", _portable(e))
            try:
                _send(conn, reply)
            except (EOFError, OSError):
                return
            except Exception as e:  # noqa: BLE001 - a reply that does not pickle
                _send(conn, ("error", TileAccessError(f"the owner could not send its reply: {e}")))

    @staticmethod
    def _open(path):
        from .hdf5_tilestore import _open_here
        shared = _open_here(path)
        if shared is None:
            raise TileAccessError(f"'{path}' is not open in process {os.getpid()}, which served it: it was "
                                  "closed there")
        return shared

    def _node(self, path, tid):
        entry = self._open(path).tensors.get(tid)
        if entry is None:
            raise _Unknown(tid)
        return entry.node

    @staticmethod
    def _read(node, key):
        missing = _missing_windows(node, key)
        if missing:
            return ("missing", missing)
        return ("ok", node.read_cached(key))  # windows stay once added: nothing is missing now either

    def _handle(self, shared, op, path, *rest):
        if op == "hello":
            from .hdf5_tilestore import _open_here
            opened = _open_here(path)
            return ("ok", opened is not None and not opened.options["read-only"])
        if op == "check":
            tid, meta, rule = rest
            self._node(path, tid)  # _Unknown: the worker defines it
            entry = self._open(path).tensors[tid]
            if entry.meta != meta:
                from ._engine import describe_differences
                raise ValidationError(f"Tensor {tid} is registered in the process that holds '{path}' with "
                                      f"another configuration ({describe_differences(entry.meta, meta)})")
            if _rule_key(entry.rule) != _rule_key(rule):
                raise ValidationError(f"Tensor {tid} is registered in the process that holds '{path}' with "
                                      "another blend or blend_init")
            return ("ok", None)
        if op == "define":
            tid, blob = rest
            with self.define_lock:
                if self._open(path).tensors.get(tid) is None:
                    _let_go(pickle.loads(blob))  # registered in the open file, which keeps the node
            return ("ok", None)
        if op == "read":
            tid, key = rest
            return self._read(self._node(path, tid), key)
        if op == "put":
            outputs, tid, key = rest
            for wtid, window, output in outputs:
                # one already added is not added again
                self._node(path, wtid).contribute(window, shared.tensor(output))
            return ("ok", None) if tid is None else self._read(self._node(path, tid), key)
        if op == "done":
            tid, window = rest
            return ("ok", self._node(path, tid).window_done(window))
        if op == "flush":
            opened = self._open(path)
            for entry in list(opened.tensors.values()):
                entry.node.flush()
            opened.file.flush()
            return ("ok", None)
        if op == "ids":
            return ("ok", sorted(tid for tid, _ in self._open(path).file.list()))
        raise ValidationError(f"unknown request {op!r}")


def _let_go(tensor):
    """A tensor unpickled from a worker's definition joined the open files
    of its stores through store objects of its own: leave those (the files
    stay open for their users; the nodes stay in them), so that the user's
    close() still closes the file."""
    todo, seen = [tensor], set()
    while todo:
        t = todo.pop()
        store = t._store
        if id(store) not in seen:
            seen.add(id(store))
            if getattr(store, "_shared", None) is not None and not store._closed and not is_foreign(store):
                store._releases_backend()
                store._closed = True
        todo.extend(t._args)


class _Shared:
    """The owner's side of one connection's transfer buffer."""

    def __init__(self):
        self.buffer = None

    def receive(self, conn, size):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno())) as sock:
            fd = reduction.recvfds(sock, 1)[0]
        try:
            self.close()
            self.buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def tensor(self, output):
        """A put's output: a tensor, or where it lies in the buffer (a view
        of the buffer, used before the reply: the worker then reuses it)."""
        if not isinstance(output, tuple):
            return output
        _, offset, shape, dtype = output
        dtype = getattr(torch, dtype)
        count = dtype.itemsize
        for n in shape:
            count *= n
        if self.buffer is None or offset < 0 or offset + count > len(self.buffer):
            raise TileAccessError("a window output lies outside the transfer buffer")
        return torch.frombuffer(self.buffer, dtype=torch.uint8, count=count, offset=offset).view(dtype).view(shape)

    def close(self):
        if self.buffer is not None:
            try:
                self.buffer.close()
            except BufferError:  # a view is still alive somewhere: the collector frees the mapping
                pass
            self.buffer = None


_server: _Server | None = None
_server_lock = threading.Lock()


def serve() -> _Server:
    """This process's server, started on first use."""
    global _server
    with _server_lock:
        if _server is None or _server.pid != os.getpid() or _server.closed:
            _server = _Server()
        return _server


def owner_server(owner):
    """The server a fork inherited from owner, or None."""
    srv = _server
    return srv if srv is not None and srv.pid == owner and not srv.closed else None


# ---------------------------------------------------------------------------
# A worker's side
# ---------------------------------------------------------------------------
class _Connection:
    """One worker process's connection to one owner (requests from several
    threads take turns)."""

    def __init__(self, address, authkey, owner):
        self.owner, self.address, self.authkey = owner, address, authkey
        self.conn = Client(address, family="AF_UNIX", authkey=authkey)
        self.lock = threading.Lock()
        self.buffer, self.used = None, 0
        self.buffer_lock = threading.Lock()
        try:
            fd = os.memfd_create("infinite_tensor-transfer", os.MFD_CLOEXEC)
        except (AttributeError, OSError):
            return  # not Linux: outputs travel in the messages
        try:
            os.ftruncate(fd, _TRANSFER_BYTES)
            buffer = mmap.mmap(fd, _TRANSFER_BYTES)
            with self.lock:
                _send(self.conn, ("buffer", None, _TRANSFER_BYTES))
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(self.conn.fileno())) as sock:
                    reduction.sendfds(sock, [fd])
                kind, value = _recv(self.conn)
            if kind == "error":
                raise value
            self.buffer = buffer
        finally:
            os.close(fd)

    def slot(self, out):
        """Copy a window output into the transfer buffer: where it lies, or
        None (no buffer, no room, or not host memory)."""
        n = out.numel() * out.element_size()
        if self.buffer is None or n == 0 or out.device.type != "cpu":
            return None
        with self.buffer_lock:
            offset = (self.used + 63) & ~63
            if offset + n > _TRANSFER_BYTES:
                return None
            self.used = offset + n
        view = torch.frombuffer(self.buffer, dtype=torch.uint8, count=n, offset=offset)
        view.view(out.dtype).view(out.shape).copy_(out)
        return ("slot", offset, tuple(out.shape), str(out.dtype).replace("torch.", ""))

    def mark(self):
        return self.used

    def release(self, mark):
        """After a put: the buffer is free again unless outputs were added
        since mark (another thread's, still to be sent)."""
        with self.buffer_lock:
            if self.used == mark:
                self.used = 0

    def call(self, request):
        with self.lock:
            try:
                _send(self.conn, request)
                kind, value = _recv(self.conn)
            except (EOFError, OSError) as e:
                raise TileAccessError(f"process {self.owner}, which holds '{request[1]}', does not answer "
                                      f"({type(e).__name__}: {e}): it ended or closed the file") from None
        if kind == "error":
            raise value
        return kind, value


_connections: dict[tuple[int, str], _Connection] = {}
_connections_lock = threading.Lock()


def connect(address, authkey, owner) -> _Connection:
    key = (os.getpid(), address)  # a fork of a worker opens its own
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = _Connection(address, authkey, owner)
        return conn


def reachable(path, address, authkey, owner) -> _Connection | None:
    """A connection to the owner if it still serves path for writing."""
    try:
        conn = connect(address, authkey, owner)
        return conn if conn.call(("hello", path))[1] else None
    except (OSError, EOFError, AuthenticationError, TileAccessError):
        return None


# window outputs computed in this process and not yet handed over:
# (Served, tensor id, window index, output)
_sink: list[tuple[Any, str, tuple[int, ...], torch.Tensor]] = []
_sink_lock = threading.Lock()


def _take_sink(conn):
    """The outputs computed so far, and conn's transfer mark (see release)."""
    with _sink_lock:
        taken = list(_sink)
        _sink.clear()
        return taken, conn.mark()


def _recorder(f, served, tid, batched):
    """f as a shadow's node calls it: the outputs are also kept (as copies:
    the engine may reuse the buffers) to be handed to the owner."""
    def record(ctx, *args):
        out = f(ctx, *args)
        if batched:
            try:
                items = [(tuple(c), out[i]) for i, c in enumerate(ctx)]
            except Exception:  # noqa: BLE001 - a malformed result: the engine says what is wrong
                return out
        else:
            items = [(tuple(ctx), out)]
        with _sink_lock:  # (a slot is taken and listed at once: see _take_sink)
            _sink.extend((served, tid, w, served.conn.slot(o) or o.clone(memory_format=torch.contiguous_format))
                         for w, o in items if isinstance(o, torch.Tensor))
        return out
    record.__wrapped__ = f
    return record


class Served:
    """What a worker process keeps for one store whose file another process
    holds: the connection, and a memory store of shadows (a copy of each
    tensor whose f also hands its outputs over)."""

    def __init__(self, store, conn):
        from .memory import MemoryTileStore
        self.pid = os.getpid()
        self.store = store
        self.path = os.path.abspath(store.filepath)
        self.conn = conn
        self.local = MemoryTileStore(cache_size_bytes=store._options["cache_size_bytes"])
        self.shadows: dict[str, Any] = {}
        self.checked: set[str] = set()
        self.lock = threading.RLock()

    def call(self, *request):
        return self.conn.call(request[:1] + (self.path,) + request[1:])

    # -- shadows -------------------------------------------------------------
    def shadow(self, tensor):
        """The memory copy of tensor that computes its windows here."""
        from ..infinite_tensor import InfiniteTensor
        tid = tensor.uuid
        with self.lock:
            s = self.shadows.get(tid)
            if s is not None:
                return s
            args = [served_for(a._store).shadow(a) if is_foreign(a._store) else a for a in tensor._args]
            s = InfiniteTensor(tensor._shape, tensor._fn, tensor._output_window, args=args,
                               args_windows=tensor._args_windows, dtype=tensor._dtype, device=tensor._device,
                               tile_store=self.local, tensor_id=tid, batch_size=tensor._batch_size,
                               blend=tensor._blend, blend_init=tensor._blend_init, progress=tensor._progress,
                               weight=tensor._weight)
            f, blend, batch = s._callbacks()
            s._node.set_callbacks(_recorder(f, self, tid, batch != 0), blend, batch)
            s._original = tensor
            self.shadows[tid] = s
            return s

    def _define(self, tid):
        """Register tid with the owner, from this process's definition."""
        s = self.shadows.get(tid)
        if s is None:
            raise TileAccessError(f"Tensor {tid} is not registered in the process that holds '{self.path}'")
        try:
            blob = pickle.dumps(s._original)
        except pickle.PicklingError as e:
            raise TileAccessError(
                f"Tensor {tid} was built in this process (pid {os.getpid()}) and the process that holds "
                f"'{self.path}' does not know it; it learns a tensor by unpickling it, which failed: {e}. "
                "Build the tensor before the workers start, or give it a module-level f") from None
        self.call("define", tid, blob)

    def _call(self, *request):
        """call(), defining the tensors the owner does not know yet."""
        for _ in range(64):
            kind, value = self.call(*request)
            if kind != "unknown":
                return kind, value
            self._define(value)
        raise TileAccessError(f"the process that holds '{self.path}' keeps asking for tensor definitions")

    def _check(self, tensor):
        tid = tensor.uuid
        if tid not in self.checked:
            self.shadow(tensor)
            self._call("check", tid, tensor.to_json(), tensor._rule())
            self.checked.add(tid)

    # -- what a store or tensor of the worker asks ---------------------------
    def read(self, tensor, key, compute=True):
        self._check(tensor)
        tid = tensor.uuid
        kind, value = self._call("read", tid, key)
        for _ in range(_MAX_ROUNDS):
            if kind == "ok":
                return value
            if not compute:
                raise TileAccessError(f"Tensor {tid}: the region needs windows not computed yet")
            shadow = self.shadow(tensor)
            outputs, mark = self._compute(shadow, value)
            try:
                if not _missing_windows(shadow._node, key):
                    # every window of the region is in this process's copy (a
                    # region no one had read: the usual case in a large
                    # world): read it here, and only hand the new windows over
                    self._call("put", self._hand_over(outputs), None, None)
                    return shadow[key]
                kind, value = self._call("put", self._hand_over(outputs), tid, key)
            finally:
                self.conn.release(mark)
        # the owner keeps losing them (its tensor cleared meanwhile): this process's own values
        return self.shadow(tensor)[key]

    def _compute(self, shadow, windows):
        """Compute windows in the shadow; (their outputs and those of the
        upstream windows computed on the way, the transfer mark).  Outputs
        computed before f fails are handed over all the same.  A window the
        shadow already holds (computed for an earlier read, and lost by the
        owner since) is computed again: its output is needed."""
        tid = shadow.uuid
        outputs: list[Any] = []
        try:
            shadow._node.compute_windows(windows)
            taken, mark = _take_sink(self.conn)
            outputs += taken
            recorded = {w for _, t, w, _ in outputs if t == tid}
            if any(tuple(w) not in recorded for w in windows):
                shadow._node.clear()
                shadow._node.compute_windows(windows)
                taken, mark = _take_sink(self.conn)
                outputs += taken
            return outputs, mark
        except BaseException:
            taken, mark = _take_sink(self.conn)
            outputs += taken
            try:
                if outputs:
                    self._call("put", self._hand_over(outputs), None, None)
            except Exception:  # noqa: BLE001 - the error of f is the one to raise
                pass
            finally:
                self.conn.release(mark)
            raise

    def _hand_over(self, outputs):
        """The outputs for this store; those of other stores go to them now."""
        mine, others = [], {}
        for served, tid, w, out in outputs:
            if served is self:
                mine.append((tid, w, out))
            else:
                others.setdefault(served, []).append((tid, w, out))
        for served, items in others.items():
            served._call("put", items, None, None)
        return mine

    def contribute(self, tensor, window, output):
        self._check(tensor)
        self._call("put", [(tensor.uuid, tuple(window), output)], None, None)

    def window_done(self, tensor, window):
        self._check(tensor)
        return self._call("done", tensor.uuid, tuple(window))[1]


def _missing_windows(node, key):
    """The windows a read of key (a region or a list of them) would compute
    in node, each once, in the order the regions first need them."""
    missing, seen = [], set()
    for region in key if isinstance(key, list) else [key]:
        for w in node.missing_windows(region):
            if w not in seen:
                seen.add(w)
                missing.append(w)
    return missing


def is_foreign(store) -> bool:
    """Whether store's file is held by another process (it is served)."""
    owner = getattr(store, "_owner", None)
    return owner is not None and owner != os.getpid()


def served_for(store) -> Served:
    """The Served of a store whose file another process holds: made on
    first use in a forked child (the owner's server is inherited)."""
    s = store.__dict__.get("_served")
    if s is not None and s.pid == os.getpid():
        return s
    if s is not None:  # a fork of a served process: the owner's address came along
        address, authkey = s.conn.address, s.conn.authkey
    else:
        srv = owner_server(store._owner)
        if srv is None:
            raise TileAccessError(
                f"'{store.filepath}' was opened for writing by process {store._owner}, which does not serve it "
                f"to this process ({os.getpid()}); open the file in this process, or pickle the store from its "
                "owner")
        address, authkey = srv.address, srv.authkey
    s = Served(store, connect(address, authkey, store._owner))
    store._served = s
    return s


def read(tensor, key):
    """tensor[key] in a process whose store's file another process holds."""
    served = served_for(tensor._store)
    value = served.read(tensor, key)
    shadow = served.shadows.get(tensor.uuid)
    if shadow is not None and tensor._node is not shadow._node:
        tensor._node = shadow._node  # stats(), clear_cache() and the rest act on this process's copy
    return value
