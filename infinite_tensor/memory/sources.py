"""Where the numbers come from: host memory, cgroups, rlimits and CUDA.

Two rules measure memory.

The *host* rule is deep-dimensions' rule, kept as the AutoScaler default.  For
the CPU it is psutil's ``virtual_memory()`` on Linux, which we compute from
``/proc/meminfo`` ourselves (psutil is not a dependency): ``total`` is
MemTotal, ``available`` is MemAvailable (or, on kernels without it or when it
reads 0, psutil's estimate from MemFree, the file LRU, SReclaimable and the
low watermarks of /proc/zoneinfo; a value above the total is replaced by
MemFree, as procps does in containers) and ``used`` is total - available.
For CUDA it is the device's total memory minus what this process's caching
allocator has reserved.  The host rule ignores cgroups, so a process in a
container with a 2 GiB limit on a 256 GiB host is told it has 200 GiB.  The
first time the host rule reports more available memory than the cgroup
leaves, it warns once (UserWarning) and names the opt-in below.

The *effective* rule is what the engine uses (``get_memory_info``,
``available_bytes``) and what ``ScalingConfig(memory_source="effective")``
selects.  For the CPU, free memory is the smallest of

* MemAvailable;
* for every cgroup from this process's own up to the mount root that sets a
  limit, limit - usage (v2: ``memory.max`` - ``memory.current``, where
  ``max`` means no limit; v1: ``memory.limit_in_bytes`` -
  ``memory.usage_in_bytes``, where a value near 2**63 means no limit);
* RLIMIT_AS minus VmSize and RLIMIT_DATA minus VmData (from
  /proc/self/status), when those limits are set.

The process's cgroup comes from /proc/self/cgroup (the ``0::`` line for v2,
the line naming ``memory`` for v1, which wins on hybrid systems because v1
then owns the memory controller) and its directory from /proc/self/mountinfo
(the mount point plus the path below the mount's root).  Missing or unreadable
files drop that term; they never fail the call.  For CUDA, free memory is what
``torch.cuda.mem_get_info`` reports free plus the bytes the allocator has
reserved but not handed out (``memory_reserved - memory_allocated``), capped by
``set_per_process_memory_fraction`` (fraction * total - allocated).

Everything reads through two seams so tests run anywhere: ``SystemReader``
takes a ``root`` directory that stands for ``/`` and an ``rlimit`` function,
and CUDA is read through a provider object (``TorchCuda`` for the real device,
``FakeCuda`` for tests).  ``override_info`` installs numbers, a reader or a
CUDA provider for the duration of a ``with`` block; the module functions and
every AutoScaler see them.  Overrides are process-wide (worker threads see
them too) and kept on a stack guarded by a lock, so nested blocks restore
what was there before.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, Union

from .errors import ConfigTypeError, ConfigValueError, UnsupportedDeviceError

__all__ = [
    "DeviceMemory",
    "MemoryInfo",
    "HostMemory",
    "CgroupLevel",
    "SystemReader",
    "CudaProvider",
    "TorchCuda",
    "FakeCuda",
    "FakeGpu",
    "get_memory_info",
    "available_bytes",
    "estimate_bytes",
    "budget",
    "override_info",
    "parse_device",
]

# A v1 limit at or above this means "no limit" (the kernel writes
# PAGE_COUNTER_MAX * page size, 9223372036854771712 with 4 KiB pages).
_V1_UNLIMITED = 1 << 62
# The CUDA caching allocator hands out blocks in multiples of this.
_CUDA_BLOCK = 512


@dataclass(frozen=True)
class MemoryInfo:
    """deep-dimensions' memory snapshot, as AutoScaler.get_memory_info returns it.

    Attributes:
        total: total memory of the device in bytes.
        available: bytes available for new tensors.
        used: bytes in use.
        device_type: ``"cpu"``, ``"cuda"`` or ``"tpu"``.
        device_index: the device's index (0 for the CPU).
    """

    total: int
    available: int
    used: int
    device_type: str
    device_index: int = 0

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ConfigValueError("Total memory cannot be negative")
        if self.available < 0:
            raise ConfigValueError("Available memory cannot be negative")
        if self.used < 0:
            raise ConfigValueError("Used memory cannot be negative")
        if self.available > self.total:
            raise ConfigValueError("Available memory cannot exceed total memory")

    @property
    def usage_ratio(self) -> float:
        """used / total (0.0 when total is 0)."""
        if self.total == 0:
            return 0.0
        return self.used / self.total


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of one device under the effective rule.

    Attributes:
        total: physical memory of the device (MemTotal, or the GPU's total).
        free: bytes a new allocation may take now: the smallest of the
            applicable limits (see the module notes).
        reclaimable: the part of ``free`` that is held by caches and must be
            reclaimed first (page cache counted in MemAvailable, or CUDA
            memory reserved by the allocator but not allocated).
        limit: the cap that binds ``free`` (a cgroup limit, an rlimit, the
            CUDA memory fraction times the total), or None when only the
            device itself limits it.
        used: bytes in use as counted against that cap (cgroup usage, VmSize,
            VmData, CUDA allocated), or total - free without a cap.
        source: which term decided ``free``: ``"meminfo"``, ``"cgroup2:<dir>"``,
            ``"cgroup1:<dir>"``, ``"rlimit_as"``, ``"rlimit_data"``,
            ``"cuda:<i>"``, ``"cuda:<i>:fraction"`` or ``"override"``.
    """

    total: int
    free: int
    reclaimable: int
    limit: int | None
    used: int
    source: str


@dataclass(frozen=True)
class HostMemory:
    """The host-wide figures psutil.virtual_memory() reports on Linux."""

    total: int
    available: int
    used: int
    free: int


@dataclass(frozen=True)
class CgroupLevel:
    """One cgroup directory that sets a memory limit."""

    version: int
    path: str
    limit: int
    usage: int

    @property
    def headroom(self) -> int:
        return max(0, self.limit - self.usage)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _unescape_mount(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 4 <= len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _default_rlimit(name: str) -> int | None:
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    which = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}[name]
    soft, _hard = resource.getrlimit(which)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return soft


class SystemReader:
    """Reads the CPU memory figures from a directory tree laid out like ``/``.

    Args:
        root: the directory that stands for ``/`` (tests pass a fixture tree).
        rlimit: ``rlimit("as")`` / ``rlimit("data")`` returns the soft limit
            in bytes, or None for no limit.  Defaults to ``resource.getrlimit``.
        pagesize: page size used by the zoneinfo fallback (default: the system's).
    """

    def __init__(self, root: str = "/", rlimit: Callable[[str], int | None] | None = None,
                 pagesize: int | None = None) -> None:
        self.root = os.fspath(root)
        self._rlimit = rlimit or _default_rlimit
        if pagesize is None:
            try:
                pagesize = os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                pagesize = 4096
        self.pagesize = pagesize

    def _path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    # -- /proc/meminfo -----------------------------------------------------
    def meminfo(self) -> dict[str, int]:
        """/proc/meminfo as a dict of byte counts (keys without the colon)."""
        text = _read_text(self._path("/proc/meminfo"))
        if text is None:
            raise UnsupportedDeviceError("cannot read /proc/meminfo: CPU memory is unknown", device="cpu")
        out: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":"):
                try:
                    out[parts[0][:-1]] = int(parts[1]) * 1024
                except ValueError:
                    continue
        if "MemTotal" not in out or "MemFree" not in out:
            raise UnsupportedDeviceError("/proc/meminfo lacks MemTotal or MemFree", device="cpu")
        return out

    def _estimate_available(self, mems: dict[str, int]) -> int:
        # psutil's fallback for kernels without MemAvailable (or when it reads 0)
        free = mems["MemFree"]
        fallback = free + mems.get("Cached", 0)
        try:
            active_file = mems["Active(file)"]
            inactive_file = mems["Inactive(file)"]
            slab_reclaimable = mems["SReclaimable"]
        except KeyError:
            return fallback
        text = _read_text(self._path("/proc/zoneinfo"))
        if text is None:
            return fallback
        low = 0
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("low"):
                low += int(line.split()[1])
        low *= self.pagesize
        avail: float = free - low
        pagecache: float = active_file + inactive_file
        pagecache -= min(pagecache / 2, low)
        avail += pagecache
        avail += slab_reclaimable - min(slab_reclaimable / 2.0, low)
        return int(avail)

    def host_memory(self) -> HostMemory:
        """The host-wide figures, computed as psutil.virtual_memory() does."""
        mems = self.meminfo()
        total, free = mems["MemTotal"], mems["MemFree"]
        avail = mems.get("MemAvailable")
        if not avail:
            avail = self._estimate_available(mems)
        if avail < 0:
            avail = 0
        elif avail > total:
            avail = free
        return HostMemory(total=total, available=avail, used=total - avail, free=free)

    # -- cgroups -----------------------------------------------------------
    def _mounts(self) -> list[tuple[str, str, str, str]]:
        """(root, mount point, fstype, super options) of every mount."""
        text = _read_text(self._path("/proc/self/mountinfo")) or ""
        mounts = []
        for line in text.splitlines():
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            lf, rf = left.split(), right.split()
            if len(lf) < 5 or len(rf) < 1:
                continue
            mounts.append((_unescape_mount(lf[3]), _unescape_mount(lf[4]), rf[0], rf[2] if len(rf) > 2 else ""))
        return mounts

    def _cgroup_dirs(self) -> tuple[int, list[str]] | None:
        """The cgroup version owning memory and the directories from this
        process's cgroup up to its mount point (leaf first), or None."""
        text = _read_text(self._path("/proc/self/cgroup"))
        if text is None:
            return None
        v1_path = v2_path = None
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            hid, controllers, path = parts
            if hid == "0" and controllers == "":
                v2_path = path
            elif "memory" in controllers.split(","):
                v1_path = path
        mounts = self._mounts()
        if v1_path is not None:
            version, path = 1, v1_path
            cands = [m for m in mounts if m[2] == "cgroup" and "memory" in m[3].split(",")]
        elif v2_path is not None:
            version, path = 2, v2_path
            cands = [m for m in mounts if m[2] == "cgroup2"]
        else:
            return None
        if not cands:
            return None
        # the mount whose root is the longest prefix of our path
        best = None
        for mroot, mpoint, _fs, _opts in cands:
            if mroot == "/" or path == mroot or path.startswith(mroot.rstrip("/") + "/"):
                if best is None or len(mroot) > len(best[0]):
                    best = (mroot, mpoint)
        if best is None:  # a cgroup namespace shows paths we cannot map: use the mount itself
            best = (path, cands[0][1])
        mroot, mpoint = best
        rel = path[len(mroot):] if mroot != "/" else path
        rel = rel.strip("/")
        top = self._path(mpoint)
        leaf = os.path.join(top, rel) if rel else top
        if not os.path.isdir(leaf):
            leaf = top
        dirs = [leaf]
        cur = leaf
        while os.path.normpath(cur) != os.path.normpath(top):
            parent = os.path.dirname(cur.rstrip("/"))
            if parent == cur or not parent.startswith(os.path.normpath(top)):
                break
            cur = parent
            dirs.append(cur)
        return version, dirs

    @staticmethod
    def _read_int(path: str) -> int | None:
        text = _read_text(path)
        if text is None:
            return None
        text = text.strip()
        if text == "max":
            return -1
        try:
            return int(text)
        except ValueError:
            return None

    def cgroup_levels(self) -> list[CgroupLevel]:
        """Every cgroup level (leaf first) that sets a memory limit."""
        found = self._cgroup_dirs()
        if found is None:
            return []
        version, dirs = found
        names = ("memory.max", "memory.current") if version == 2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes")
        levels = []
        for d in dirs:
            limit = self._read_int(os.path.join(d, names[0]))
            if limit is None or limit < 0 or (version == 1 and limit >= _V1_UNLIMITED):
                continue
            usage = self._read_int(os.path.join(d, names[1]))
            if usage is None or usage < 0:
                continue
            rel = os.path.relpath(d, self.root)
            levels.append(CgroupLevel(version=version, path="/" + rel if rel != "." else "/",
                                      limit=limit, usage=usage))
        return levels

    def cgroup_headroom(self) -> CgroupLevel | None:
        """The limiting cgroup level (least headroom), or None when none limits."""
        levels = self.cgroup_levels()
        return min(levels, key=lambda lv: lv.headroom) if levels else None

    # -- rlimits -----------------------------------------------------------
    def _status(self) -> dict[str, int]:
        text = _read_text(self._path("/proc/self/status")) or ""
        out = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if key in ("VmSize", "VmData") and parts:
                try:
                    out[key] = int(parts[0]) * 1024
                except ValueError:
                    pass
        return out

    def rlimit_headrooms(self) -> list[tuple[str, int, int]]:
        """(name, limit, usage) for RLIMIT_AS and RLIMIT_DATA where set."""
        status = None
        out = []
        for name, key in (("as", "VmSize"), ("data", "VmData")):
            limit = self._rlimit(name)
            if limit is None:
                continue
            if status is None:
                status = self._status()
            out.append((name, limit, status.get(key, 0)))
        return out

    # -- the effective rule ------------------------------------------------
    def effective(self) -> DeviceMemory:
        """CPU memory under the effective rule (see the module notes)."""
        mems = self.meminfo()
        host = self.host_memory()
        free, limit, used, source = host.available, None, host.total - host.available, "meminfo"
        level = self.cgroup_headroom()
        if level is not None and level.headroom < free:
            free, limit, used = level.headroom, level.limit, level.usage
            source = f"cgroup{level.version}:{level.path}"
        for name, lim, usage in self.rlimit_headrooms():
            room = max(0, lim - usage)
            if room < free:
                free, limit, used, source = room, lim, usage, f"rlimit_{name}"
        reclaimable = max(0, min(free, host.available - mems["MemFree"]))
        return DeviceMemory(total=host.total, free=free, reclaimable=reclaimable, limit=limit,
                            used=used, source=source)


# -- CUDA -------------------------------------------------------------------

class CudaProvider(Protocol):
    """What the CUDA rules read; ``TorchCuda`` and ``FakeCuda`` implement it."""

    def is_available(self) -> bool: ...
    def device_count(self) -> int: ...
    def current_device(self) -> int: ...
    def mem_get_info(self, index: int) -> tuple[int, int]: ...
    def total_memory(self, index: int) -> int: ...
    def memory_reserved(self, index: int) -> int: ...
    def memory_allocated(self, index: int) -> int: ...
    def memory_fraction(self, index: int) -> float: ...


class TorchCuda:
    """The real device, read through torch.cuda."""

    def is_available(self) -> bool:
        import torch
        return bool(torch.cuda.is_available())

    def device_count(self) -> int:
        import torch
        return int(torch.cuda.device_count())

    def current_device(self) -> int:
        import torch
        return int(torch.cuda.current_device())

    def mem_get_info(self, index: int) -> tuple[int, int]:
        import torch
        free, total = torch.cuda.mem_get_info(index)
        return int(free), int(total)

    def total_memory(self, index: int) -> int:
        import torch
        return int(torch.cuda.get_device_properties(index).total_memory)

    def memory_reserved(self, index: int) -> int:
        import torch
        return int(torch.cuda.memory_reserved(index))

    def memory_allocated(self, index: int) -> int:
        import torch
        return int(torch.cuda.memory_allocated(index))

    def memory_fraction(self, index: int) -> float:
        import torch
        getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        return float(getter(index)) if getter is not None else 1.0


@dataclass
class FakeGpu:
    """One fake GPU: driver-reported free and total, allocator counters, fraction."""

    total: int
    free: int
    reserved: int = 0
    allocated: int = 0
    fraction: float = 1.0


@dataclass
class FakeCuda:
    """A CUDA provider for tests: ``FakeCuda([FakeGpu(...), ...])``.

    ``FakeCuda(available=False)`` stands for a machine without CUDA.
    """

    gpus: Sequence[FakeGpu] = field(default_factory=list)
    available: bool = True
    current: int = 0

    def _gpu(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise RuntimeError(f"Invalid device id {index}")
        return self.gpus[index]

    def is_available(self) -> bool:
        return self.available and len(self.gpus) > 0

    def device_count(self) -> int:
        return len(self.gpus) if self.available else 0

    def current_device(self) -> int:
        return self.current

    def mem_get_info(self, index: int) -> tuple[int, int]:
        g = self._gpu(index)
        return g.free, g.total

    def total_memory(self, index: int) -> int:
        return self._gpu(index).total

    def memory_reserved(self, index: int) -> int:
        return self._gpu(index).reserved

    def memory_allocated(self, index: int) -> int:
        return self._gpu(index).allocated

    def memory_fraction(self, index: int) -> float:
        return self._gpu(index).fraction


def cuda_host_info(provider: CudaProvider, index: int) -> MemoryInfo:
    """deep-dimensions' CUDA figures: total, total - reserved, reserved."""
    total = provider.total_memory(index)
    reserved = provider.memory_reserved(index)
    return MemoryInfo(total=total, available=total - reserved, used=reserved, device_type="cuda",
                      device_index=index)


def cuda_effective(provider: CudaProvider, index: int) -> DeviceMemory:
    """CUDA memory under the effective rule."""
    driver_free, total = provider.mem_get_info(index)
    reserved = provider.memory_reserved(index)
    allocated = provider.memory_allocated(index)
    cached = max(0, reserved - allocated)
    free = driver_free + cached
    limit, used, source = None, total - driver_free, f"cuda:{index}"
    fraction = provider.memory_fraction(index)
    if fraction < 1.0:
        cap = int(fraction * total)
        room = max(0, cap - allocated)
        if room < free:
            free, limit, used, source = room, cap, allocated, f"cuda:{index}:fraction"
    return DeviceMemory(total=total, free=free, reclaimable=min(cached, free), limit=limit, used=used,
                        source=source)


# -- overrides ----------------------------------------------------------------

@dataclass(frozen=True)
class _Numbers:
    device: DeviceMemory
    info_total: int
    info_available: int
    info_used: int

    def info(self, device_type: str, index: int) -> MemoryInfo:
        return MemoryInfo(total=self.info_total, available=self.info_available, used=self.info_used,
                          device_type=device_type, device_index=index)


NumbersSpec = Union[DeviceMemory, MemoryInfo, int, "tuple[int, int]"]


def _numbers(spec: Any, what: str) -> _Numbers:
    if isinstance(spec, DeviceMemory):
        return _Numbers(spec, spec.total, min(spec.free, spec.total), max(0, spec.total - spec.free))
    if isinstance(spec, MemoryInfo):
        dm = DeviceMemory(spec.total, spec.available, 0, None, spec.used, "override")
        return _Numbers(dm, spec.total, spec.available, spec.used)
    if isinstance(spec, bool):
        raise ConfigTypeError(f"{what} must be a DeviceMemory, a MemoryInfo, an int or (total, available)")
    if isinstance(spec, int):
        if spec < 0:
            raise ConfigValueError(f"{what}: available bytes must be non-negative, got {spec}")
        return _Numbers(DeviceMemory(spec, spec, 0, None, 0, "override"), spec, spec, 0)
    if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        total, avail = spec
        if not 0 <= avail <= total:
            raise ConfigValueError(f"{what}: need 0 <= available <= total, got {spec}")
        return _Numbers(DeviceMemory(total, avail, 0, None, total - avail, "override"), total, avail, total - avail)
    raise ConfigTypeError(f"{what} must be a DeviceMemory, a MemoryInfo, an int or (total, available), "
                          f"got {type(spec).__name__}")


@dataclass(frozen=True)
class _Override:
    cpu: _Numbers | None
    cuda: Mapping[int | None, _Numbers] | None
    cuda_provider: Any
    reader: SystemReader | None


_lock = threading.Lock()
_stack: list[_Override] = []
_default_reader = SystemReader()
_default_cuda = TorchCuda()


def _lookup(attr: str) -> Any:
    with _lock:
        for o in reversed(_stack):
            value = getattr(o, attr)
            if value is not None:
                return value
    return None


def current_reader() -> SystemReader:
    """The SystemReader in force (an override's, or the real system's)."""
    return _lookup("reader") or _default_reader


def current_cuda_provider() -> Any:
    """The CUDA provider in force (an override's, or torch.cuda)."""
    return _lookup("cuda_provider") or _default_cuda


def cpu_override() -> _Numbers | None:
    return _lookup("cpu")


def cuda_override(index: int) -> _Numbers | None:
    table = _lookup("cuda")
    if table is None:
        return None
    return table.get(index, table.get(None))


def cuda_overridden() -> bool:
    return _lookup("cuda") is not None


@contextlib.contextmanager
def override_info(cpu: Any = None, cuda: Any = None, *, cuda_provider: Any = None,
                  reader: SystemReader | None = None, root: str | os.PathLike | None = None,
                  ) -> Iterator[None]:
    """Make every reader of memory figures see the given ones inside the block.

    Args:
        cpu: numbers for the CPU: a DeviceMemory (used as is by the module
            functions), a MemoryInfo (returned as is by AutoScaler), an int
            (available = total = that many bytes) or a (total, available) pair.
        cuda: the same for CUDA, or a mapping {device index: numbers}.  With
            it, CUDA counts as available (device="auto" picks it).
        cuda_provider: an object with the CudaProvider methods (FakeCuda):
            the real formulas run on its numbers.
        reader: a SystemReader (a fixture /proc and /sys tree) for the CPU rules.
        root: shorthand for ``reader=SystemReader(root)``.

    Blocks nest; leaving a block removes exactly what it installed, even when
    an inner block is still open on another thread.
    """
    if root is not None:
        if reader is not None:
            raise ConfigValueError("override_info: give reader or root, not both")
        reader = SystemReader(os.fspath(root))
    cpu_n = _numbers(cpu, "cpu") if cpu is not None else None
    cuda_n: dict[int | None, _Numbers] | None = None
    if cuda is not None:
        if isinstance(cuda, Mapping):
            cuda_n = {int(k): _numbers(v, f"cuda[{k}]") for k, v in cuda.items()}
        else:
            cuda_n = {None: _numbers(cuda, "cuda")}
    entry = _Override(cpu_n, cuda_n, cuda_provider, reader)
    with _lock:
        _stack.append(entry)
    try:
        yield
    finally:
        with _lock:
            for i in range(len(_stack) - 1, -1, -1):
                if _stack[i] is entry:
                    del _stack[i]
                    break


# -- the module-level functions the engine calls ----------------------------------

def parse_device(device: Any = "cpu") -> tuple[str, int | None]:
    """("cpu", 0) or ("cuda", index) for "cpu", "cuda:1" or a torch.device;
    ("cuda", None) for plain "cuda" (the current device, resolved when read)."""
    if device is None:
        return "cpu", 0
    index = None
    if not isinstance(device, str):
        index = getattr(device, "index", None)  # a torch.device
        text = str(device)
    else:
        text = device
    if text == "cpu" or text.startswith("cpu:"):
        return "cpu", 0
    if text == "cuda":
        return "cuda", index
    if text.startswith("cuda:"):
        tail = text[5:]
        if not tail.isdigit():
            raise UnsupportedDeviceError(f"cannot parse the device {text!r}", device=text)
        return "cuda", int(tail)
    raise UnsupportedDeviceError(f"infinite_tensor.memory measures 'cpu' and 'cuda' devices, not {text!r}",
                                 device=text)


def get_memory_info(device: Any = "cpu") -> DeviceMemory:
    """Memory of ``device`` ("cpu", "cuda", "cuda:1", a torch.device) under the effective rule.

    Raises:
        UnsupportedDeviceError: another device type, or a CUDA device that
            does not exist (or no CUDA at all).
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        numbers_ = cpu_override()
        if numbers_ is not None:
            return numbers_.device
        return current_reader().effective()
    if index is None and cuda_overridden():
        index = 0
    numbers_ = cuda_override(index) if index is not None else None
    if numbers_ is not None:
        return numbers_.device
    provider = current_cuda_provider()
    if not provider.is_available():
        raise UnsupportedDeviceError("CUDA is not available", device=str(device))
    if index is None:
        index = provider.current_device()
    if index >= provider.device_count():
        raise UnsupportedDeviceError(f"there is no CUDA device {index} ({provider.device_count()} present)",
                                     device=f"cuda:{index}")
    return cuda_effective(provider, index)


def available_bytes(device: Any = "cpu") -> int:
    """Bytes a new allocation on ``device`` may take now (``get_memory_info(device).free``)."""
    return get_memory_info(device).free


def _itemsize(dtype: Any) -> int:
    import torch
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype > 0:
        return dtype
    raise ConfigTypeError(f"dtype must be a torch.dtype (or an item size in bytes), got {dtype!r}")


def estimate_bytes(shape: Sequence[int], dtype: Any, *, device: Any = None) -> int:
    """Bytes a tensor of ``shape`` and ``dtype`` occupies.

    On the CPU (the default) that is numel * itemsize.  With a CUDA
    ``device``, the size is rounded as the caching allocator rounds a block:
    up to a multiple of 512 bytes, and at least 512 for a non-empty tensor.
    Any torch dtype is accepted (or an item size in bytes); zeros in the shape
    give 0.
    """
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ConfigTypeError(f"shape must be a sequence of ints, got {type(shape).__name__}")
    n = 1
    for i, d in enumerate(shape):
        if isinstance(d, bool) or not isinstance(d, int):
            try:
                import operator
                d = operator.index(d)
            except TypeError:
                raise ConfigTypeError(f"shape[{i}] must be an integer, got {type(d).__name__}") from None
        if d < 0:
            raise ConfigValueError(f"shape[{i}] must be non-negative, got {d}")
        n *= d
    size = n * _itemsize(dtype)
    if device is not None and size > 0 and parse_device(device)[0] == "cuda":
        size = max(_CUDA_BLOCK, -(-size // _CUDA_BLOCK) * _CUDA_BLOCK)
    return size


def budget(device: Any = "cpu", *, fraction: float = 0.7, reserve: int = 0) -> int:
    """``int(available_bytes(device) * fraction) - reserve``, never below 0.

    The default fraction matches ScalingConfig's effective threshold."""
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0 or math.isnan(fraction):
        raise ConfigValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if not isinstance(reserve, int) or reserve < 0:
        raise ConfigValueError(f"reserve must be a non-negative int, got {reserve!r}")
    return max(0, int(available_bytes(device) * fraction) - reserve)


# -- the host rule with its one-time warning -----------------------------------------

_warned = False


def host_cpu_info() -> MemoryInfo:
    """The CPU MemoryInfo under the host rule, warning once about a cgroup limit."""
    global _warned
    numbers_ = cpu_override()
    if numbers_ is not None:
        return numbers_.info("cpu", 0)
    reader = current_reader()
    host = reader.host_memory()
    if not _warned:
        level = reader.cgroup_headroom()
        if level is not None and host.available > level.headroom:
            _warned = True
            warnings.warn(
                f"infinite_tensor.memory: the host reports {host.available} bytes available but this "
                f"process's cgroup ({level.path}) leaves {level.headroom} (limit {level.limit}); "
                "AutoScaler keeps deep-dimensions' host-wide figure. Pass "
                "ScalingConfig(memory_source='effective') to respect the cgroup limit.",
                UserWarning, stacklevel=4)
    return MemoryInfo(total=host.total, available=host.available, used=host.used, device_type="cpu",
                      device_index=0)


def effective_cpu_info() -> MemoryInfo:
    """The CPU MemoryInfo under the effective rule."""
    numbers_ = cpu_override()
    if numbers_ is not None:
        return numbers_.info("cpu", 0)
    dm = current_reader().effective()
    return MemoryInfo(total=dm.total, available=min(dm.free, dm.total), used=max(0, dm.total - dm.free),
                      device_type="cpu", device_index=0)


def cuda_info(index: int, source: str) -> MemoryInfo:
    """The CUDA MemoryInfo of device ``index`` under the host or effective rule."""
    numbers_ = cuda_override(index)
    if numbers_ is not None:
        return numbers_.info("cuda", index)
    provider = current_cuda_provider()
    if source == "host":
        return cuda_host_info(provider, index)
    dm = cuda_effective(provider, index)
    return MemoryInfo(total=dm.total, available=min(dm.free, dm.total), used=max(0, dm.total - dm.free),
                      device_type="cuda", device_index=index)


def cuda_available() -> bool:
    """Whether CUDA counts as present (an override of CUDA numbers says yes)."""
    if cuda_overridden():
        return True
    try:
        return bool(current_cuda_provider().is_available())
    except Exception:  # a broken driver reads as no CUDA, as torch.cuda.is_available does
        return False
