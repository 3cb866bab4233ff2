"""Build the C extension infinite_tensor._core (metadata lives in setup.cfg).

The core (csrc/core) is plain C11 and is compiled into the extension together
with the binding (csrc/python).  HDF5 flags come from HDF5_DIR or pkg-config;
without the HDF5 C library (or with INFINITE_TENSOR_NO_HDF5=1) the extension
is built without the HDF5 store: the memory store works, and HDF5TileStore
raises ImportError naming what to install.
"""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(folder):
    return sorted(glob.glob(os.path.join("csrc", folder, "*.c")))


link_extra = ["-pthread"]
# a C API function this Python lacks must fail the build, not leave an
# undefined symbol for import time to find
extra = ["-std=c11", "-O3", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
         "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-Werror=implicit-function-declaration"]
if os.environ.get("IT_SANITIZE"):
    # `make sanitize` builds this way into build/asan-ext (never in place); the
    # extension is linked against the sanitizer runtimes, and Python must run
    # with libasan preloaded (it has to come first in the process)
    extra += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
              "-O1", "-g"]
    link_extra += ["-fsanitize=address,undefined"]


def hdf5_flags():
    """Include dirs, library dirs and libraries of the HDF5 C library, from
    HDF5_DIR when set, else pkg-config (Debian: libhdf5-dev); None without
    it."""
    if os.environ.get("INFINITE_TENSOR_NO_HDF5") == "1":
        return None
    root = os.environ.get("HDF5_DIR")
    if root:
        return [os.path.join(root, "include")], [os.path.join(root, "lib")], ["hdf5"]
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "hdf5"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"warning: the HDF5 C library was not found ({e}): building without HDF5TileStore; install "
              "libhdf5-dev and pkg-config (or set HDF5_DIR) and build again to have it", file=sys.stderr)
        return None
    words = shlex.split(out)
    return ([w[2:] for w in words if w.startswith("-I")], [w[2:] for w in words if w.startswith("-L")],
            [w[2:] for w in words if w.startswith("-l")])


flags = hdf5_flags()
core_sources = sources("core")
macros = []
if flags is None:
    h5_inc, h5_libdirs, h5_libs = [], [], []
    core_sources = [s for s in core_sources if not os.path.basename(s).startswith("h5")]
    macros = [("IT_NO_HDF5", "1")]
else:
    h5_inc, h5_libdirs, h5_libs = flags

core = Extension(
    "infinite_tensor._core",
    sources=core_sources + sources("python"),
    define_macros=macros,
    include_dirs=[os.path.join("csrc", "include"), os.path.join("csrc", "python")] + h5_inc,
    library_dirs=h5_libdirs,
    runtime_library_dirs=h5_libdirs,
    extra_compile_args=extra,
    libraries=h5_libs + ["m"],
    extra_link_args=link_extra,
)

setup(ext_modules=[core])
