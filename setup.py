"""Build the C extension infinite_tensor._core (metadata lives in setup.cfg).

The core (csrc/core) is plain C11 and is compiled into the extension together
with the binding (csrc/python).  HDF5 flags come from pkg-config when the
persistent store is built.
"""
import glob
import os
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(folder):
    return sorted(glob.glob(os.path.join("csrc", folder, "*.c")))


link_extra = ["-pthread"]
extra = ["-std=c11", "-O3", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
         "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
if os.environ.get("IT_SANITIZE"):
    # `make sanitize` builds this way into build/asan-ext (never in place); the
    # extension is linked against the sanitizer runtimes, and Python must run
    # with libasan preloaded (it has to come first in the process)
    extra += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
              "-O1", "-g"]
    link_extra += ["-fsanitize=address,undefined"]


def hdf5_flags():
    """Include dirs, library dirs and libraries of the HDF5 C library, from
    pkg-config (Debian: libhdf5-dev), or HDF5_DIR when set."""
    root = os.environ.get("HDF5_DIR")
    if root:
        return [os.path.join(root, "include")], [os.path.join(root, "lib")], ["hdf5"]
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "hdf5"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("infinite_tensor needs the HDF5 C library: install libhdf5-dev (and "
                         f"pkg-config), or set HDF5_DIR ({e})")
    words = shlex.split(out)
    return ([w[2:] for w in words if w.startswith("-I")], [w[2:] for w in words if w.startswith("-L")],
            [w[2:] for w in words if w.startswith("-l")])


h5_inc, h5_libdirs, h5_libs = hdf5_flags()

core = Extension(
    "infinite_tensor._core",
    sources=sources("core") + sources("python"),
    include_dirs=[os.path.join("csrc", "include"), os.path.join("csrc", "python")] + h5_inc,
    library_dirs=h5_libdirs,
    runtime_library_dirs=h5_libdirs,
    extra_compile_args=extra,
    libraries=h5_libs + ["m"],
    extra_link_args=link_extra,
)

setup(ext_modules=[core])
