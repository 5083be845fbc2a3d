#!/bin/sh
# The Dockerfile's builder steps for one image's /opt/venv (run in /src, the build context's
# pyproject.toml there), in two layers so that a code change reinstalls no dependency:
#   image-venv.sh deps [EXTRAS] [UNUSED...]
#                                   the dependencies of modelserve[EXTRAS], not modelserve,
#                                   without the UNUSED distributions: kserve declares them for
#                                   parts no component of this image imports (its KServeClient
#                                   and credentials helpers: cryptography; pillow), nor does the
#                                   image's code (the run tests prove it); pandas' tzdata where
#                                   the base's /usr/share/zoneinfo serves zoneinfo
#   image-venv.sh code MODULE...    modelserve itself (no deps), and the bytecode of
#                                   what MODULE... import compiled once (the images run with
#                                   PYTHONDONTWRITEBYTECODE and a read-only root: without it
#                                   every start compiles kserve again, 1.5 s -> 4 s)
# uv runs from /opt/uv, outside the venv the image ships; no pip, caches or tests go in.
set -eu
UV=/opt/uv/bin/uv
PY=/opt/venv/bin/python
export UV_NO_CACHE=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=0

trim() {
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # Test suites shipped inside packages (pandas, scipy, numpy, scikit-learn: ~40 MB), stale
  # bytecode, type stubs and the installer's own packages.
  find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
  find "$site" -name '*.pyi' -delete
  # C/C++ headers and Cython/C sources: what a compiler would read, never the interpreter
  # (TensorFlow's include/ alone is 430 MB, for building custom ops).
  find "$site" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.inc' -o -name '*.c' \
    -o -name '*.cc' -o -name '*.cpp' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete
  rm -rf "$site"/tensorflow/include
  # The kubernetes client's asyncio twin (~40 MB): kserve and the control plane use the
  # synchronous client only.
  rm -rf "$site"/kubernetes/aio
  # Debug symbols of extension modules that auditwheel did not patch (no RUNPATH; uvloop's
  # alone are 11 MB): stripping a patchelf-rewritten library breaks its loading ("ELF load
  # command address/offset not page-aligned", numpy's openblas), so those stay as they are.
  if command -v strip >/dev/null; then
    find "$site" -name '*.so' -type f ! -path '*.libs/*' | while read -r lib; do
      readelf -d "$lib" 2>/dev/null | grep -q -E 'RUNPATH|RPATH' || strip --strip-unneeded "$lib"
    done
  fi
  rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/_distutils_hack \
    "$site"/distutils-precedence.pth
}

case "${1:-}" in
deps)
  extras=${2:-}
  [ $# -ge 2 ] && shift 2 || shift $#
  [ -x "$PY" ] || python -m venv --without-pip /opt/venv
  # Empty packages stand in for the code, so only pyproject.toml decides this layer.
  mkdir -p servers gateway && touch servers/__init__.py gateway/__init__.py
  "$UV" pip install -q --python "$PY" ".${extras:+[$extras]}"
  "$UV" pip uninstall -q --python "$PY" modelserve "$@"
  rm -rf servers gateway build ./*.egg-info
  trim
  ;;
code)
  shift
  "$UV" pip install -q --python "$PY" --no-deps .
  rm -rf build ./*.egg-info
  # No second trim: the dependencies were trimmed in their own layer, and rewriting their
  # files here (strip rewrites even a stripped file) would copy each of them into this layer.
  # Importing the entry points (their `main` runs only as __main__) writes the bytecode of
  # everything they load at start-up, and of nothing else.
  for module in "$@"; do
    PYTHONDONTWRITEBYTECODE= "$PY" -c "import importlib, sys; importlib.import_module(sys.argv[1])" "$module"
  done
  ;;
*)
  echo "usage: image-venv.sh deps [EXTRAS] | code MODULE..." >&2
  exit 2
  ;;
esac
