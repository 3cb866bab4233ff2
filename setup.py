"""Build the C extension infinite_tensor._core (metadata lives in setup.cfg).

The core (csrc/core) is plain C11 and is compiled into the extension together
with the binding (csrc/python).  HDF5 flags come from pkg-config when the
persistent store is built.
"""
import glob
import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(folder):
    return sorted(glob.glob(os.path.join("csrc", folder, "*.c")))


extra = ["-std=c11", "-O3", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
         "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
if os.environ.get("IT_SANITIZE"):
    extra += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]

core = Extension(
    "infinite_tensor._core",
    sources=sources("core") + sources("python"),
    include_dirs=[os.path.join("csrc", "include"), os.path.join("csrc", "python")],
    extra_compile_args=extra,
    libraries=["m"],
)

setup(ext_modules=[core])
