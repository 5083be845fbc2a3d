"""Where the wheel's `tritonserver` lives, and the environment it needs to run on CPU here.

The `nvidia-pytriton` wheel ships a real `tritonserver` (2.51) with the python backend. It
pins numpy<2 while our main venv needs numpy 2 (TensorFlow), so it lives in a venv of its own,
`.venv-triton` at the repository root (`make install` creates it). Three things make it run:

- its shared libraries (`nvidia_pytriton.libs`) on `LD_LIBRARY_PATH`, after the LIBDIR of the
  venv's interpreter: the python-backend stub otherwise may bind the system's libpython and
  models fail with `'_thread.RLock' object has no attribute '_recursion_count'`;
- the stub for the venv's Python version copied from `python_backend_stubs/3.X/` into
  `backends/python/` (into a cache directory when the venv is read-only);
- the venv's `bin/` first on `PATH`: the stub ignores PYTHONPATH and imports numpy (and
  onnxruntime, for our models) from the Python it finds there.

`MODELSERVE_TRITON_HOME` (or `--triton_home`) points elsewhere: a venv, its site-packages, or
the `pytriton/tritonserver` directory itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_VENV",
    "ENV_HOME",
    "INSTALL_HINT",
    "TritonInstall",
    "TritonNotInstalled",
    "locate",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".venv-triton"
ENV_HOME = "MODELSERVE_TRITON_HOME"
ENV_CACHE = "MODELSERVE_CACHE_DIR"
INSTALL_HINT = (
    "run `make install` (it creates .venv-triton with nvidia-pytriton, onnxruntime and "
    f"numpy<2), or set {ENV_HOME} to a venv that has them"
)
STUB = "triton_python_backend_stub"
_SERVER_DIR = Path("pytriton") / "tritonserver"


class TritonNotInstalled(RuntimeError):
    """No usable `tritonserver` where we looked; the message says how to get one."""


@dataclass(frozen=True)
class TritonInstall:
    """A `pytriton/tritonserver` directory and the venv whose Python its python backend uses."""

    server_dir: Path
    libs_dir: Path | None
    venv: Path | None
    python_version: str  # "3.11": which python-backend stub to use
    python_libdir: Path | None

    @property
    def binary(self) -> Path:
        """The `tritonserver` executable."""
        return self.server_dir / "bin" / "tritonserver"

    @property
    def stub_source(self) -> Path:
        """The python-backend stub built for `python_version`."""
        return self.server_dir / "python_backend_stubs" / self.python_version / STUB

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: ours) with the library path and PATH `tritonserver` needs."""
        env = dict(os.environ if base is None else base)
        libraries = [str(p) for p in (self.python_libdir, self.libs_dir) if p is not None]
        if env.get("LD_LIBRARY_PATH"):
            libraries.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
        if self.venv is not None:
            env["PATH"] = os.pathsep.join([str(self.venv / "bin"), env.get("PATH", os.defpath)])
            env["VIRTUAL_ENV"] = str(self.venv)
        # The stub embeds an interpreter: another Python's home would break its imports.
        env.pop("PYTHONHOME", None)
        return env

    def backend_directory(self, cache_dir: Path | None = None) -> Path:
        """A `--backend-directory` whose `python/` holds the stub: the wheel's own when it is
        writable, else a copy under `cache_dir` (default `$MODELSERVE_CACHE_DIR` or
        `~/.cache/modelserve`)."""
        if not self.stub_source.is_file():
            raise TritonNotInstalled(
                f"{self.server_dir} has no python-backend stub for Python {self.python_version} "
                f"({self.stub_source}); {INSTALL_HINT}"
            )
        backends = self.server_dir / "backends"
        try:
            _install_stub(self.stub_source, backends / "python" / STUB)
            return backends
        except OSError:
            pass  # a read-only install (a system venv, an image layer): use a private copy
        key = hashlib.sha256(str(self.server_dir).encode()).hexdigest()[:12]
        root = cache_dir or Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache/modelserve")
        copy = root / "triton-backends" / key
        if not (copy / "python" / "libtriton_python.so").is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=copy.parent, prefix=f".{key}-"))
            shutil.copytree(backends, staging / "backends", symlinks=True)
            try:
                staging.joinpath("backends").rename(copy)
            except OSError:  # another process made it first
                pass
            shutil.rmtree(staging, ignore_errors=True)
        _install_stub(self.stub_source, copy / "python" / STUB)
        return copy


def _install_stub(source: Path, target: Path) -> None:
    """Copy the stub into place atomically (concurrent starts may race), unless it is there."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{STUB}-")
    os.close(fd)
    try:
        shutil.copyfile(source, staging)
        os.chmod(staging, 0o755)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _server_dir(path: Path) -> Path | None:
    """The `pytriton/tritonserver` directory under a venv, site-packages or itself."""
    candidates = [path, path / _SERVER_DIR]
    candidates += sorted(path.glob(f"lib/python3*/site-packages/{_SERVER_DIR}"))
    for candidate in candidates:
        if (candidate / "bin" / "tritonserver").is_file():
            return candidate
    return None


def _venv_of(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if (parent / "pyvenv.cfg").is_file():
            return parent
    return None


_PRINT_LIBDIR = "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"


def _libdir(venv: Path | None, version: str) -> Path | None:
    """LIBDIR of the venv's interpreter (ours when it is the same version and no venv)."""
    if venv is None:
        if f"{sys.version_info.major}.{sys.version_info.minor}" != version:
            return None
        libdir = sysconfig.get_config_var("LIBDIR")
        return Path(libdir) if libdir else None
    python = venv / "bin" / "python"
    try:
        found = subprocess.run(
            [str(python), "-c", _PRINT_LIBDIR],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise TritonNotInstalled(f"cannot run the Python of {venv} ({python}): {exc}") from exc
    return Path(found) if found else None


def locate(home: str | Path | None = None) -> TritonInstall:
    """The Triton install at `home`, else `$MODELSERVE_TRITON_HOME`, else `.venv-triton`."""
    given = home or os.environ.get(ENV_HOME)
    path = Path(given).expanduser().resolve() if given else DEFAULT_VENV
    where = f"{path} (from {'--triton_home' if home else ENV_HOME})" if given else str(path)
    if not path.exists():
        raise TritonNotInstalled(f"no Triton install at {where}: {INSTALL_HINT}")
    server_dir = _server_dir(path)
    if server_dir is None:
        raise TritonNotInstalled(
            f"{where} holds no tritonserver (expected lib/python3.X/site-packages/"
            f"{_SERVER_DIR}/bin/tritonserver): {INSTALL_HINT}"
        )
    site_packages = server_dir.parent.parent
    libs = site_packages / "nvidia_pytriton.libs"
    # site-packages sits in lib/python3.X/: that is the Python the stub must match.
    version = site_packages.parent.name.removeprefix("python")
    if not version.startswith("3."):
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = _venv_of(site_packages)
    return TritonInstall(
        server_dir=server_dir,
        libs_dir=libs if libs.is_dir() else None,
        venv=venv,
        python_version=version,
        python_libdir=_libdir(venv, version),
    )
