"""What every store built on the C engine shares: one core cache, one node
(a core tensor) per registered id, and the TileStore entry points that only
forward to the node."""
import weakref

from .. import _bridge, _core
from ..errors import TileAccessError, ValidationError
from . import TileStore

DELETED_MESSAGE = ("Tile has been deleted. This indicates either a bug or an attempt to access a tensor "
                   "after cleanup.")


def check_limit(name, value):
    """A cache limit: None (no limit, -1 for the core) or an int >= 0."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be None or an int >= 0, got {value!r}")
    return value  # past int64: the binding takes the largest int64, a limit never reached


class Entry:
    """What a store keeps for one tensor id.  Not the InfiniteTensor itself:
    a tensor holds its store, so a store holding its tensors would make every
    tensor with a private store a reference cycle, freed only by the garbage
    collector, with all its cached tiles."""

    __slots__ = ("meta", "node", "rule", "views", "tile_size")

    def __init__(self, tensor, node, tile_size=None):
        self.meta = tensor.to_json()
        self.node = node
        self.rule = (tensor._combine(), tensor._blend_init)
        self.views = weakref.WeakSet()  # the InfiniteTensor objects reading through node
        self.tile_size = tile_size

    def bind(self, tensor):
        tensor._node = self.node
        self.views.add(tensor)


class EngineStore(TileStore):
    """Base of MemoryTileStore and PersistentTileStore (not public)."""

    def _init_engine(self, byte_limit, weight_limit=None):
        self._cache = _core.Cache(check_limit("cache_size_bytes", byte_limit),
                                  check_limit("cache_size_windows", weight_limit))
        self._tensor_store = {}  # id -> Entry

    def _entry(self, tensor_id):
        entry = self._tensor_store.get(str(tensor_id))
        if entry is None:
            raise TileAccessError(DELETED_MESSAGE)
        return entry

    def _node(self, tensor_id):
        return self._entry(tensor_id).node

    @staticmethod
    def _check_same_meta(tensor_id, existing, new):
        if existing != new:
            raise ValidationError(f"Tensor {tensor_id} re-registered with mismatched metadata "
                                  f"({describe_differences(existing, new)}): existing={existing}, new={new}")

    @property
    def _bytes(self):
        """Bytes held by the cache (0.3 kept this counter under this name)."""
        return self._cache.info()["bytes"]

    def cache_info(self):
        """Counters of the shared cache: bytes (host memory), device_bytes
        (tiles on a GPU), tiles, weight, pinned.  The byte limit applies to
        host and device bytes separately."""
        info = self._cache.info()
        return {k: info[k] for k in ("bytes", "device_bytes", "tiles", "weight", "pinned")}

    def is_window_processed(self, tensor_id, window_index):
        node = self._node(tensor_id)
        try:
            return node.window_done(tuple(window_index))
        except OverflowError:
            raise IndexError(f"window index {tuple(window_index)} is outside the supported range") from None

    def notify_window_processed(self, tensor_id, window_index, output):
        node = self._node(tensor_id)
        try:
            node.contribute(tuple(window_index), output)
        except OverflowError:
            raise IndexError(f"window index {tuple(window_index)} is outside the supported range") from None

    def read_pixels(self, tensor_id, pixel_slices):
        return self._node(tensor_id).read_cached(tuple(pixel_slices))

    def tensor_ids(self):
        """The ids of the tensors registered in this store (sorted)."""
        return sorted(self._tensor_store)

    def __repr__(self):
        return f"<{type(self).__name__} {describe_cache(self)}>"


def _mib(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} B"


def describe_cache(store):
    """'2 tensors, cache 1.5 MiB of 100.0 MiB in 12 tiles' for a store's repr."""
    info = store._cache.info()
    limit = info["byte_limit"]
    n = len(store._tensor_store)
    text = (f"{n} tensor{'' if n == 1 else 's'}, cache {_mib(info['bytes'])} of "
            f"{_mib(limit) if limit >= 0 else 'unbounded'} in {info['tiles']} tile{'' if info['tiles'] == 1 else 's'}")
    if info.get("device_bytes"):
        text += f" (+{_mib(info['device_bytes'])} on devices)"
    return text


def migrate_node(entry, device, dtype, blend_init):
    """Move the node's cached tiles to device and dtype (all or nothing);
    every object sharing the node then declares them."""
    entry.node.migrate(device, dtype, _bridge.fill_tensor(blend_init, dtype),
                       lambda t: t.to(device=device, dtype=dtype))
    views = list(entry.views)
    for view in views:
        view._device, view._dtype = device, dtype
    if views:
        entry.meta = views[0].to_json()


def describe_differences(old, new, prefix=""):
    """'dtype: 'float32' -> 'float64'; ...' for two to_json() dicts."""
    parts = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                if key in old and key in new:
                    parts.append(describe_differences(old[key], new[key], f"{prefix}{key}."))
                else:
                    parts.append(f"{prefix}{key}: {old.get(key)!r} -> {new.get(key)!r}")
        return "; ".join(p for p in parts if p)
    if old != new:
        return f"{prefix[:-1] or 'value'}: {old!r} -> {new!r}"
    return ""
