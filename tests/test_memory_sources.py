"""infinite_tensor.memory's memory sources: /proc, cgroups, rlimits, CUDA, TensorFlow.

Every CPU rule reads through SystemReader(root), so these tests lay out small
fixture trees (a /proc and a /sys/fs/cgroup) under tmp_path: cgroup v1 and
v2, unlimited limits, nested cgroups, hybrid mounts and missing files.  CUDA
is a FakeCuda, TensorFlow a fake module in sys.modules.  Expected values are
computed here from the fixture's numbers.
"""
import json
import os
import sys
import types
import warnings

import pytest
import torch

from infinite_tensor import memory
from infinite_tensor.memory import (
    AutoScaler,
    DeviceMemory,
    FakeCuda,
    FakeGpu,
    FrameworkNotAvailableError,
    MemoryInfo,
    ScalingConfig,
    SystemReader,
    UnsupportedDeviceError,
    available_bytes,
    estimate_bytes,
    get_memory_info,
    override_info,
)
from infinite_tensor.memory import sources

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = json.load(open(os.path.join(HERE, "data", "memory_golden.json")))
GiB, MiB, KiB = 2 ** 30, 2 ** 20, 1024
NO_CUDA = FakeCuda(available=False)
V1_UNLIMITED = 9223372036854771712

MEMINFO = "MemTotal: {total} kB\nMemFree: {free} kB\nMemAvailable: {avail} kB\nBuffers: 1000 kB\nCached: 2000 kB\n"


def write(root, path, text):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def make_root(tmp_path, *, total_kb=16 * MiB, free_kb=2 * MiB, avail_kb=12 * MiB, cgroup=None, mounts=(),
              files=None, status=None):
    """A fixture tree: /proc/meminfo, /proc/self/{cgroup,mountinfo,status} and cgroup files."""
    root = str(tmp_path / "root")
    write(root, "/proc/meminfo", MEMINFO.format(total=total_kb, free=free_kb, avail=avail_kb))
    if cgroup is not None:
        write(root, "/proc/self/cgroup", cgroup)
    if mounts:
        write(root, "/proc/self/mountinfo", "".join(
            f"{30 + i} 23 0:{28 + i} {mroot} {point} rw,relatime - {fs} {fs} {opts}\n"
            for i, (mroot, point, fs, opts) in enumerate(mounts)))
    for path, text in (files or {}).items():
        write(root, path, text)
    if status is not None:
        write(root, "/proc/self/status", status)
    return root


V2_MOUNT = ("/", "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")
V1_MOUNTS = (("/", "/sys/fs/cgroup", "tmpfs", "rw,mode=755"),
             ("/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
             ("/", "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"))
NO_RLIMIT = lambda name: None  # noqa: E731


def reader(root, rlimit=NO_RLIMIT):
    return SystemReader(root, rlimit=rlimit)


# -- /proc/meminfo, psutil's way ----------------------------------------------

@pytest.mark.parametrize("case", GOLDEN["meminfo"], ids=lambda c: str(GOLDEN["meminfo"].index(c)))
def test_host_rule_matches_psutil(tmp_path, case):
    write(str(tmp_path), "/proc/meminfo", case["meminfo"])
    if case["zoneinfo"] is not None:
        write(str(tmp_path), "/proc/zoneinfo", case["zoneinfo"])
    host = SystemReader(str(tmp_path), pagesize=GOLDEN["pagesize"]).host_memory()
    assert {"total": host.total, "available": host.available, "used": host.used} == case["expect"]


def test_host_rule_on_this_machine_agrees_with_psutil_totals():
    psutil = pytest.importorskip("psutil")
    host = SystemReader().host_memory()
    assert host.total == psutil.virtual_memory().total
    assert 0 <= host.available <= host.total and host.used == host.total - host.available


def test_effective_rule_on_this_machine_is_consistent():
    dm = SystemReader().effective()
    assert 0 <= dm.free <= SystemReader().host_memory().total == dm.total
    assert 0 <= dm.reclaimable <= dm.free
    assert dm.source == "meminfo" or dm.limit is not None


def test_missing_meminfo_is_a_clear_error(tmp_path):
    with pytest.raises(UnsupportedDeviceError, match="/proc/meminfo"):
        SystemReader(str(tmp_path)).host_memory()


# -- cgroups --------------------------------------------------------------------------

def test_v2_limit_binds(tmp_path):
    root = make_root(tmp_path, cgroup="0::/user.slice/app.scope\n", mounts=[V2_MOUNT], files={
        "/sys/fs/cgroup/user.slice/memory.max": "max\n",
        "/sys/fs/cgroup/user.slice/memory.current": "5000000000\n",
        "/sys/fs/cgroup/user.slice/app.scope/memory.max": f"{2 * GiB}\n",
        "/sys/fs/cgroup/user.slice/app.scope/memory.current": f"{GiB + 4096}\n",
    })
    dm = reader(root).effective()
    assert dm == DeviceMemory(total=16 * GiB, free=GiB - 4096, reclaimable=GiB - 4096, limit=2 * GiB,
                              used=GiB + 4096, source="cgroup2:/sys/fs/cgroup/user.slice/app.scope")


def test_v2_nested_parent_is_tighter(tmp_path):
    root = make_root(tmp_path, cgroup="0::/a/b/c\n", mounts=[V2_MOUNT], files={
        "/sys/fs/cgroup/a/memory.max": f"{3 * GiB}\n",
        "/sys/fs/cgroup/a/memory.current": f"{3 * GiB - 100 * MiB}\n",
        "/sys/fs/cgroup/a/b/memory.max": "max\n",
        "/sys/fs/cgroup/a/b/memory.current": "1\n",
        "/sys/fs/cgroup/a/b/c/memory.max": f"{2 * GiB}\n",
        "/sys/fs/cgroup/a/b/c/memory.current": f"{GiB}\n",
    })
    r = reader(root)
    assert [lv.path for lv in r.cgroup_levels()] == ["/sys/fs/cgroup/a/b/c", "/sys/fs/cgroup/a"]
    dm = r.effective()
    assert (dm.free, dm.limit, dm.used, dm.source) == (100 * MiB, 3 * GiB, 3 * GiB - 100 * MiB,
                                                       "cgroup2:/sys/fs/cgroup/a")


def test_v2_unlimited_falls_back_to_meminfo(tmp_path):
    root = make_root(tmp_path, cgroup="0::/svc\n", mounts=[V2_MOUNT], files={
        "/sys/fs/cgroup/svc/memory.max": "max\n", "/sys/fs/cgroup/svc/memory.current": "123\n"})
    dm = reader(root).effective()
    assert (dm.free, dm.limit, dm.source) == (12 * GiB, None, "meminfo")
    assert dm.used == 4 * GiB and dm.reclaimable == 10 * GiB  # MemAvailable - MemFree


def test_v2_limit_above_memavailable_does_not_bind(tmp_path):
    root = make_root(tmp_path, cgroup="0::/svc\n", mounts=[V2_MOUNT], files={
        "/sys/fs/cgroup/svc/memory.max": f"{64 * GiB}\n", "/sys/fs/cgroup/svc/memory.current": f"{GiB}\n"})
    assert reader(root).effective().source == "meminfo"


def test_v1_limit_binds_and_unlimited_parent_is_ignored(tmp_path):
    base = "/sys/fs/cgroup/memory"
    root = make_root(tmp_path, cgroup="5:cpu:/\n4:memory:/docker/abc\n0::/\n", mounts=V1_MOUNTS, files={
        f"{base}/memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
        f"{base}/memory.usage_in_bytes": f"{8 * GiB}\n",
        f"{base}/docker/memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
        f"{base}/docker/memory.usage_in_bytes": f"{4 * GiB}\n",
        f"{base}/docker/abc/memory.limit_in_bytes": f"{GiB}\n",
        f"{base}/docker/abc/memory.usage_in_bytes": f"{300 * MiB}\n",
    })
    dm = reader(root).effective()
    assert (dm.free, dm.limit, dm.used, dm.source) == (GiB - 300 * MiB, GiB, 300 * MiB,
                                                       f"cgroup1:{base}/docker/abc")


def test_v1_inside_a_container_mount_root(tmp_path):
    # without a cgroup namespace the container sees its own cgroup mounted at the mount point
    mounts = [("/docker/abc", "/sys/fs/cgroup/memory", "cgroup", "rw,memory")]
    root = make_root(tmp_path, cgroup="4:memory:/docker/abc\n", mounts=mounts, files={
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{512 * MiB}\n",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{12 * MiB}\n",
    })
    assert reader(root).effective().free == 500 * MiB


def test_hybrid_v1_memory_controller_wins(tmp_path):
    mounts = list(V1_MOUNTS) + [("/", "/sys/fs/cgroup/unified", "cgroup2", "rw")]
    root = make_root(tmp_path, cgroup="4:memory:/job\n0::/job\n", mounts=mounts, files={
        "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": f"{GiB}\n",
        "/sys/fs/cgroup/memory/job/memory.usage_in_bytes": f"{GiB // 2}\n",
        "/sys/fs/cgroup/unified/job/memory.max": f"{10 * MiB}\n",  # no memory controller there: unread
        "/sys/fs/cgroup/unified/job/memory.current": "0\n",
    })
    assert reader(root).effective().source == "cgroup1:/sys/fs/cgroup/memory/job"


@pytest.mark.parametrize("missing", ["cgroup", "mountinfo", "current", "leafdir", "garbage"])
def test_missing_or_bad_files_drop_the_term(tmp_path, missing):
    files = {"/sys/fs/cgroup/svc/memory.max": f"{GiB}\n", "/sys/fs/cgroup/svc/memory.current": "0\n"}
    cgroup, mounts = "0::/svc\n", [V2_MOUNT]
    if missing == "cgroup":
        cgroup = None
    elif missing == "mountinfo":
        mounts = []
    elif missing == "current":
        del files["/sys/fs/cgroup/svc/memory.current"]
    elif missing == "leafdir":
        cgroup = "0::/elsewhere\n"  # the directory does not exist: the mount root is read (no limit there)
    elif missing == "garbage":
        files["/sys/fs/cgroup/svc/memory.max"] = "lots\n"
    dm = reader(make_root(tmp_path, cgroup=cgroup, mounts=mounts, files=files)).effective()
    assert (dm.free, dm.source) == (12 * GiB, "meminfo")


def test_mountinfo_octal_escapes(tmp_path):
    mounts = [("/", "/sys/fs/my\\040cgroup", "cgroup2", "rw")]
    root = make_root(tmp_path, cgroup="0::/svc\n", mounts=mounts, files={
        "/sys/fs/my cgroup/svc/memory.max": f"{GiB}\n", "/sys/fs/my cgroup/svc/memory.current": "0\n"})
    assert reader(root).effective().free == GiB


# -- rlimits ---------------------------------------------------------------------------

def test_rlimit_as_and_data(tmp_path):
    status = "Name:\tpython\nVmSize:\t 3145728 kB\nVmData:\t 1048576 kB\n"
    root = make_root(tmp_path, status=status)
    limits = {"as": 5 * GiB, "data": 10 * GiB}
    dm = reader(root, rlimit=limits.get).effective()
    assert (dm.free, dm.limit, dm.used, dm.source) == (2 * GiB, 5 * GiB, 3 * GiB, "rlimit_as")
    limits = {"as": None, "data": GiB + 5}
    dm = reader(root, rlimit=limits.get).effective()
    assert (dm.free, dm.source) == (5, "rlimit_data")


def test_real_rlimit_reader_is_none_or_positive():
    for name in ("as", "data"):
        value = sources._default_rlimit(name)
        assert value is None or value > 0


# -- the host rule's one-time warning ------------------------------------------------------

def test_host_rule_warns_once_when_the_cgroup_is_tighter(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_warned", False)
    root = make_root(tmp_path, cgroup="0::/svc\n", mounts=[V2_MOUNT], files={
        "/sys/fs/cgroup/svc/memory.max": f"{2 * GiB}\n", "/sys/fs/cgroup/svc/memory.current": f"{GiB}\n"})
    with override_info(reader=reader(root), cuda_provider=NO_CUDA):
        host = AutoScaler(ScalingConfig(device="cpu"))
        with pytest.warns(UserWarning, match="memory_source='effective'"):
            info = host.get_memory_info()
        assert info == MemoryInfo(16 * GiB, 12 * GiB, 4 * GiB, "cpu", 0)  # deep-dimensions' figure, kept
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            host.get_memory_info()  # once only
            eff = AutoScaler(ScalingConfig(device="cpu", memory_source="effective"))
            assert eff.get_available_memory() == GiB
            assert eff.scale_dimensions((8192, 8192, 3)) != host.scale_dimensions((8192, 8192, 3))


def test_host_rule_is_silent_without_a_tighter_cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_warned", False)
    with override_info(reader=reader(make_root(tmp_path)), cuda_provider=NO_CUDA):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert AutoScaler(ScalingConfig(device="cpu")).get_available_memory() == 12 * GiB


# -- CUDA ---------------------------------------------------------------------------------------

GPUS = [FakeGpu(total=80 * GiB, free=70 * GiB, reserved=6 * GiB, allocated=4 * GiB),
        FakeGpu(total=40 * GiB, free=30 * GiB, reserved=8 * GiB, allocated=GiB, fraction=0.5)]


def test_cuda_effective_rule_device_1():
    with override_info(cuda_provider=FakeCuda(GPUS)):
        d0 = get_memory_info("cuda:0")
        d1 = get_memory_info(torch.device("cuda", 1))
        assert available_bytes("cuda") == d0.free  # the current device
    assert d0 == DeviceMemory(total=80 * GiB, free=72 * GiB, reclaimable=2 * GiB, limit=None, used=10 * GiB,
                              source="cuda:0")
    # free + cached = 37 GiB, but the fraction allows 20 GiB - 1 GiB allocated
    assert d1 == DeviceMemory(total=40 * GiB, free=19 * GiB, reclaimable=7 * GiB, limit=20 * GiB, used=GiB,
                              source="cuda:1:fraction")


def test_autoscaler_cuda_sources_on_device_1():
    with override_info(cuda_provider=FakeCuda(GPUS)):
        host = AutoScaler(ScalingConfig(device="cuda", cuda_device_index=1))
        eff = AutoScaler(ScalingConfig(device="cuda", cuda_device_index=1, memory_source="effective"))
        assert host.get_memory_info() == MemoryInfo(40 * GiB, 32 * GiB, 8 * GiB, "cuda", 1)
        assert eff.get_memory_info() == MemoryInfo(40 * GiB, 19 * GiB, 21 * GiB, "cuda", 1)
        assert host.adapter.get_cuda_memory_info(1) == (40 * GiB, 32 * GiB, 8 * GiB)


def test_cuda_errors():
    with override_info(cuda_provider=FakeCuda(GPUS)):
        with pytest.raises(UnsupportedDeviceError, match="no CUDA device 5") as e:
            get_memory_info("cuda:5")
        assert e.value.device == "cuda:5"
        with pytest.raises(UnsupportedDeviceError, match="'mps'"):
            available_bytes("mps")
        with pytest.raises(UnsupportedDeviceError, match="cannot parse"):
            available_bytes("cuda:x")
    with override_info(cuda_provider=NO_CUDA):
        with pytest.raises(UnsupportedDeviceError, match="CUDA is not available"):
            get_memory_info("cuda")


def test_torch_cuda_provider_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    assert sources.TorchCuda().is_available() is False
    with pytest.raises(UnsupportedDeviceError):
        get_memory_info("cuda")


# -- override_info ---------------------------------------------------------------------------

def test_override_forms_and_nesting():
    with override_info(cpu=5000):
        assert get_memory_info() == DeviceMemory(5000, 5000, 0, None, 0, "override")
        with override_info(cpu=(8000, 3000), cuda={1: DeviceMemory(9, 7, 1, None, 2, "x")}):
            assert available_bytes("cpu") == 3000
            assert get_memory_info("cuda:1").free == 7
            with override_info(cpu=MemoryInfo(100, 60, 40, "cpu")):
                assert get_memory_info().used == 40
            assert available_bytes() == 3000
        assert available_bytes() == 5000
    with override_info(cuda=DeviceMemory(10 * GiB, 6 * GiB, 0, None, 4 * GiB, "override")):
        s = AutoScaler()  # CUDA numbers make CUDA present for device="auto"
        assert s.device_type == "cuda" and s.get_available_memory() == 6 * GiB
        assert available_bytes("cuda:3") == 6 * GiB


@pytest.mark.parametrize("bad", ["1 GiB", -1, (5, 10), True, [1, 2]])
def test_override_rejects_bad_numbers(bad):
    with pytest.raises(memory.ConfigurationError):
        with override_info(cpu=bad):
            pass


def test_override_root_shorthand(tmp_path):
    with override_info(root=make_root(tmp_path, avail_kb=3 * MiB)):
        assert available_bytes() == 3 * GiB


# -- estimate_bytes and budget ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint16, torch.float8_e4m3fn,
                                   torch.complex128, torch.bool, torch.int64])
def test_estimate_bytes_matches_torch(dtype):
    for shape in ((3, 5, 7), (0, 4), (), (1,)):
        assert estimate_bytes(shape, dtype) == torch.empty(shape, dtype=dtype).nbytes


def test_estimate_bytes_cuda_rounding():
    assert estimate_bytes((1,), torch.float32, device="cuda:0") == 512
    assert estimate_bytes((128,), torch.float32, device="cuda") == 512
    assert estimate_bytes((129,), torch.float32, device="cuda") == 1024
    assert estimate_bytes((0, 9), torch.float32, device="cuda") == 0
    assert estimate_bytes((1000, 1000), torch.float32, device="cuda") == 4_000_256


def test_estimate_bytes_rejects_bad_input():
    with pytest.raises(memory.ConfigValueError):
        estimate_bytes((3, -1), torch.float32)
    with pytest.raises(memory.ConfigTypeError):
        estimate_bytes((3, 1.5), torch.float32)
    with pytest.raises(memory.ConfigTypeError):
        estimate_bytes((3,), "float32")


def test_budget():
    with override_info(cpu=1000):
        assert memory.budget() == 700
        assert memory.budget(fraction=0.5, reserve=100) == 400
        assert memory.budget(fraction=0.1, reserve=1000) == 0
        with pytest.raises(memory.ConfigValueError):
            memory.budget(fraction=1.5)


# -- TensorFlow, faked ----------------------------------------------------------------------------

def fake_tensorflow(gpus=0):
    tf = types.ModuleType("tensorflow")
    log = []

    class DType:
        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return f"tf.{self.name}"

    for name in ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
                 "uint16", "uint32", "uint64", "bool", "complex64", "complex128", "string"):
        setattr(tf, name, DType(name))

    class Device:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            log.append(("device", self.name))

        def __exit__(self, *exc):
            return False

    tf.device = Device
    tf.zeros = lambda shape, dtype: ("zeros", tuple(shape), dtype)
    tf.ones = lambda shape, dtype: ("ones", tuple(shape), dtype)
    tf.cast = lambda value, dtype: value
    tf.fill = lambda shape, value: ("fill", tuple(shape), value)
    tf.Variable = lambda t, trainable: ("variable", t, trainable)
    tf.config = types.SimpleNamespace(list_physical_devices=lambda kind: ["gpu"] * gpus)
    tf.log = log
    return tf


def test_tensorflow_adapter_with_a_fake_module(monkeypatch):
    tf = fake_tensorflow()
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    with override_info(cpu=(2 * GiB, GiB), cuda_provider=NO_CUDA):
        s = AutoScaler(ScalingConfig(device="cpu"), framework="tensorflow")
        assert s.framework == "tensorflow" and s.adapter.get_default_dtype() is tf.float32
        assert s.scale_dimensions((8192, 8192, 3), tf.float32) == (8006, 8006, 3)
        assert s.estimate_memory((4, 4), tf.uint16) == 32
        assert s.create_scaled_tensor((4, 5)) == ("zeros", (4, 5), tf.float32)
        assert s.create_scaled_tensor((4, 5), tf.int8, fill_value=7, requires_grad=True) == \
            ("variable", ("fill", (4, 5), 7), True)
        with pytest.raises(ValueError, match=r"^Unsupported dtype: tf.string$"):
            s.scale_dimensions((4, 4), tf.string)
    assert tf.log == [("device", "/CPU:0"), ("device", "/CPU:0")]
    assert memory.frameworks.available_frameworks() == ["pytorch", "tensorflow"]


def test_tensorflow_tensor_goes_to_the_configured_gpu(monkeypatch):
    tf = fake_tensorflow(gpus=2)
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    with override_info(cuda_provider=FakeCuda(GPUS)):
        s = AutoScaler(ScalingConfig(framework="tensorflow", cuda_device_index=1))
        s.create_scaled_tensor((2, 2), fill_value=1.0)
    assert tf.log == [("device", "/GPU:1")] and s.adapter.is_cuda_available()


def test_tensorflow_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(FrameworkNotAvailableError) as e:
        AutoScaler(ScalingConfig(framework="tensorflow"))
    assert str(e.value) == "Framework 'tensorflow' is not available. Available frameworks: ['pytorch']"
