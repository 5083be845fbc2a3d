"""The backend registry: what each `servers/<backend>/` package serves, declared in its
`backend.py` and found by looking, so a new backend is one folder.

A declaration (`BACKEND = Backend(...)`) says what KServe's ServingRuntime for it says (its
name, `supportedModelFormats` with versions, `autoSelect` and priorities, its args), the
`python -m` entry point that plays it, the artifact files it loads (and whether loading one
runs code), and the pip extra its image installs. Readers:

- the control plane's runtime resolution (`gateway/controlplane/runtimes.py`) and launch
  policy (`gateway/controlplane/policy.py`: the entry points that run without an opt-in);
- storage (`servers.storage.find_artifact`): which files in a model directory are models;
- the Dockerfile's `backend` target: `python -m servers.backends extra NAME` names the extra
  to install and `python -m servers.backends run` starts the backend the image was built for.

`backend.py` modules import nothing heavy: the registry is read by processes (the gateway, the
CLI) that never load a model.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MOUNT_PATH",
    "TRANSFORMER_ENTRY_POINTS",
    "ArtifactFormat",
    "Backend",
    "SupportedFormat",
    "backend_named",
    "backends",
    "code_running_suffixes",
    "entry_points",
]

# Where a ServingRuntime's container finds the model (the storage initializer's mount).
MOUNT_PATH = "/mnt/models"
# The transformers are not backends (they serve no model format) but are shipped entry points.
TRANSFORMER_ENTRY_POINTS = ("servers.transformers.image", "servers.transformers.tabular")
BACKEND_ENV = "MODELSERVE_BACKEND"


@dataclass(frozen=True)
class SupportedFormat:
    """One `supportedModelFormats` entry of a ServingRuntime (KServe's field names, snake
    cased): a model of format `name` (and `version`, when the model names one) may be served
    by the runtime; among the `auto_select` ones the highest `priority` wins."""

    name: str
    versions: tuple[str, ...] = ()
    auto_select: bool = True
    priority: int = 1

    def serves(self, name: str, version: str | None) -> bool:
        """Whether a model's `modelFormat: {name, version}` matches this entry (a model that
        names no version matches any, as in KServe)."""
        return name == self.name and (version is None or not self.versions or
                                      version in self.versions)


@dataclass(frozen=True)
class ArtifactFormat:
    """A model file a backend loads: a file name suffix (`.skops`, `.ubj`) or a whole name
    (`model.txt`), and whether loading it runs code the file holds (a pickle does)."""

    pattern: str
    description: str
    runs_code: bool = False

    def matches(self, path: Path) -> bool:
        """Whether `path` is a file of this format."""
        if self.pattern.startswith("."):
            return path.suffix == self.pattern
        return path.name == self.pattern


@dataclass(frozen=True)
class Backend:
    """A backend package's declaration: the KServe ServingRuntime it plays and how."""

    name: str  # the folder: servers/<name>
    runtime: str  # KServe's (Cluster)ServingRuntime name, e.g. kserve-xgbserver
    entry_point: str  # what `python -m` runs
    formats: tuple[SupportedFormat, ...]
    # The runtime's own args, as its ServingRuntime gives them (`{name}`: the service's name).
    args: tuple[str, ...] = ("--model_name={name}", f"--model_dir={MOUNT_PATH}")
    artifacts: tuple[ArtifactFormat, ...] = ()
    protocol_versions: tuple[str, ...] = ("v1", "v2", "grpc-v2")
    extra: str | None = None  # the pyproject extra the backend's image installs
    # Other modules `python -m` may run for this backend (a predictor beside the runtime).
    more_entry_points: tuple[str, ...] = field(default=())

    def supported(self, name: str, version: str | None) -> SupportedFormat | None:
        """The entry serving `modelFormat: {name, version}`, if any."""
        return next((f for f in self.formats if f.serves(name, version)), None)

    def artifact_of(self, path: Path) -> ArtifactFormat | None:
        """The artifact format `path` is, if this backend loads it."""
        return next((a for a in self.artifacts if a.matches(path)), None)


@functools.cache
def backends() -> tuple[Backend, ...]:
    """Every backend declared under servers/ (`servers/<name>/backend.py`), by name."""
    package = Path(__file__).parent
    found: list[Backend] = []
    for module in pkgutil.iter_modules([str(package)]):
        if not module.ispkg or not (package / module.name / "backend.py").is_file():
            continue
        declared = importlib.import_module(f"servers.{module.name}.backend").BACKEND
        if not isinstance(declared, Backend):
            raise TypeError(f"servers/{module.name}/backend.py: BACKEND is not a Backend")
        found.append(declared)
    return tuple(sorted(found, key=lambda b: b.name))


def backend_named(name: str) -> Backend:
    """The backend called `name` (its folder); KeyError names the known ones."""
    for backend in backends():
        if backend.name == name:
            return backend
    raise KeyError(f"no backend {name!r}; known: {[b.name for b in backends()]}")


def entry_points() -> frozenset[str]:
    """Every module a shipped component runs with `python -m`."""
    modules = {b.entry_point for b in backends()}
    modules.update(m for b in backends() for m in b.more_entry_points)
    return frozenset(modules | set(TRANSFORMER_ENTRY_POINTS))


def code_running_suffixes() -> tuple[str, ...]:
    """The file suffixes of every artifact format whose loading runs code (pickles)."""
    return tuple(sorted({
        a.pattern for b in backends() for a in b.artifacts if a.runs_code and
        a.pattern.startswith(".")
    }))


def main(argv: list[str] | None = None) -> int:
    """`python -m servers.backends list|extra NAME|run [ARGS]`: the registry for images.

    `run` replaces itself with the entry point of the backend `$MODELSERVE_BACKEND` names (the
    Dockerfile's `backend` target sets it), with `--model_dir=/mnt/models` unless ARGS give one.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "list"
    if command == "list":
        for backend in backends():
            formats = ", ".join(f.name for f in backend.formats)
            print(f"{backend.name}\t{backend.runtime}\t{backend.entry_point}\t{formats}")
        return 0
    if command == "extra" and len(args) == 1:
        try:
            print(backend_named(args[0]).extra or "")
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        return 0
    if command == "run":
        try:
            backend = backend_named(os.environ.get(BACKEND_ENV, ""))
        except KeyError as exc:
            print(f"error: ${BACKEND_ENV}: {exc.args[0]}", file=sys.stderr)
            return 2
        if not any(a.startswith(("--model_dir", "--storage_uri")) for a in args):
            args.append(f"--model_dir={MOUNT_PATH}")
        os.execv(sys.executable, [sys.executable, "-m", backend.entry_point, *args])
    print("usage: python -m servers.backends list | extra NAME | run [ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Through the imported module: the declarations' Backend is servers.backends.Backend.
    from servers import backends as _registry

    sys.exit(_registry.main())
