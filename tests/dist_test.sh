#!/usr/bin/env bash
# make dist-test: install the wheel, the sdist (built from source in pip's
# isolated build) and the repaired wheel, one after the other, into a fresh
# venv beside the pinned torch, and run tests/smoke_installed.py (a smoke
# test, then the README's samples) with each from an empty directory, so
# that only the installed package can be imported.  The repaired wheel must carry its own libhdf5: ldd must find
# every HDF5 library inside the wheel, and where this runs as root the
# smoke test runs again with the system's libhdf5 hidden (a private mount
# namespace binds /dev/null over it) and pkg-config and LD_LIBRARY_PATH gone.
# Last, a wheel built from the sdist without HDF5 (INFINITE_TENSOR_NO_HDF5=1,
# as a machine without libhdf5-dev builds it): the memory store works and
# HDF5TileStore raises ImportError.
#   usage: tests/dist_test.sh DIST_DIR WHEELHOUSE_DIR PYTHON TORCH_PIN
set -euo pipefail
dist=$(cd "$1" && pwd)
wheelhouse=$(cd "$2" && pwd)
python=$3
torch_pin=$4
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shopt -s nullglob
wheels=("$dist"/*.whl)
sdists=("$dist"/*.tar.gz)
repaired=("$wheelhouse"/*manylinux*.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ${#sdists[@]} -ne 1 ] || [ ${#repaired[@]} -ne 1 ]; then
  echo "dist_test: expected one wheel and one sdist in $dist, one manylinux wheel in $wheelhouse" >&2
  exit 1
fi
# the version all must report: the one in the sdist's name
version=$(basename "${sdists[0]}" .tar.gz)
version=${version#infinite_tensor_core-}
"$python" -m venv "$work/venv"
vpy="$work/venv/bin/python"
pip=("$vpy" -m pip -q --disable-pip-version-check)
"${pip[@]}" install "$torch_pin" numpy
mkdir "$work/run"
readme="$here/../README.md"
smoke() { (cd "$work/run" && "$@" "$vpy" -I "$here/smoke_installed.py" "$version" "$readme"); }
for pkg in "${wheels[0]}" "${sdists[0]}" "${repaired[0]}"; do
  echo "dist-test: $(basename "$pkg")"
  "${pip[@]}" install --no-deps --force-reinstall "$pkg"
  smoke env
done
# the repaired wheel is installed now
core=$("$vpy" -I -c "import importlib.util as u; print(u.find_spec('infinite_tensor._core').origin)")
libs=$(ldd "$core")
echo "$libs" | grep -i hdf5
if echo "$libs" | grep -i hdf5 | grep -v "infinite_tensor_core.libs" | grep -q .; then
  echo "dist_test: the repaired wheel's extension loads a libhdf5 from outside the wheel" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
  hidden=(/usr/lib/*/libhdf5*.so* /usr/lib/*/hdf5/serial/lib/libhdf5*.so*)
  echo "dist-test: the repaired wheel with ${#hidden[@]} system HDF5 libraries hidden"
  binds=""
  for f in "${hidden[@]}"; do [ -f "$f" ] && [ ! -L "$f" ] && binds+="mount --bind /dev/null '$f'; "; done
  # inside: the system libhdf5 reads as an empty file, so loading it would fail
  (cd "$work/run" && unshare -m bash -c "$binds exec env -u LD_LIBRARY_PATH PATH=/usr/bin:/bin PKG_CONFIG_PATH=/nonexistent \
     '$vpy' -I '$here/smoke_installed.py' '$version' '$readme'")
else
  echo "dist-test: not root (or no mount namespaces): the system libhdf5 stays visible; ldd checked above"
fi

echo "dist-test: a build from the sdist without the HDF5 C library"
INFINITE_TENSOR_NO_HDF5=1 "${pip[@]}" wheel --no-deps -w "$work/noh5" "${sdists[0]}"
"${pip[@]}" install --no-deps --force-reinstall "$work"/noh5/*.whl
(cd "$work/run" && "$vpy" -I "$here/smoke_installed.py" "$version" "$readme" no-hdf5)

# Other Pythons on this machine (pyenv's): a wheel for each, built from the
# sdist; its extension must load and answer (without torch: the smoke test
# above needs a torch build for that Python, which this machine lacks).
main=$("$vpy" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for py in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*/bin/python3; do
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  case $ver in 3.9|3.1[0-3]) ;; *) continue ;; esac
  [ "$ver" = "$main" ] && continue
  echo "dist-test: a wheel for Python $ver"
  "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/py$ver" "${sdists[0]}"
  mkdir "$work/py$ver/x"
  (cd "$work/py$ver/x" && "$py" -m zipfile -e "$work"/py"$ver"/*.whl .)
  (cd "$work/run" && "$py" -I -c '
import importlib, sys, types
pkg = types.ModuleType("infinite_tensor")
pkg.__path__ = [sys.argv[1] + "/infinite_tensor"]
sys.modules["infinite_tensor"] = pkg  # the extension alone: __init__ would import torch
core = importlib.import_module("infinite_tensor._core")
assert core.HAVE_HDF5 == 1 and core.H5_FORMAT >= 1
info = core.Cache(1 << 20, -1).info()
assert info["byte_limit"] == 1 << 20 and info["tiles"] == 0, info
print("  the extension loads under Python", sys.version.split()[0])
' "$work/py$ver/x")
done
