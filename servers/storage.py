"""Model artifacts: where they are (`--model_dir` / `--storage_uri`), which file in a model
directory is the model, and loading it with the backend's own loaders.

Local paths and `file://` URIs are used in place; anything else (`http(s)://`, `gs://`, `s3://`,
`hf://`, `pvc://` in a cluster) is fetched with KServe's `kserve_storage.Storage`. Which files
are models, and which of them run code when loaded (pickles), each backend declares
(`servers/<backend>/backend.py`, `servers.backends.ArtifactFormat`); a file of a format the
backend does not declare is not a model to it (a pickle is nothing to the XGBoost server). A
code-running file fetched from a URI is refused unless the caller trusts remote pickles
(`--trust_remote_pickles`, `MODELSERVE_TRUST_REMOTE_PICKLES=1`); a local one loads as the
operator put it there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.backends import ArtifactFormat, Backend
from servers.errors import ModelLoadError
from servers.limits import TRUST_REMOTE_PICKLES_ENV

__all__ = [
    "Loader",
    "ModelArtifact",
    "check_pickle_origin",
    "find_artifact",
    "is_remote",
    "load_artifact",
    "read_metadata",
    "resolve_model_dir",
]

METADATA_FILE = "metadata.json"
# A backend's loader for one artifact format: the file in, the model object out.
Loader = Callable[[Path], Any]


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded model and the metadata stored beside it (feature and target names)."""

    model: Any
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def is_remote(uri: str) -> bool:
    """Whether `uri` names a model elsewhere than this machine's file system (a download)."""
    return "://" in uri and not uri.startswith("file://")


def resolve_model_dir(uri: str) -> Path:
    """A local directory holding the model: the path itself, or a download of the URI."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if not is_remote(uri):
        path = Path(uri)
        if not path.exists():
            raise ModelLoadError(f"model path {path} does not exist")
        return path
    try:
        from kserve_storage import Storage
    except ImportError as exc:  # an image built without the `storage` extra
        raise ModelLoadError(
            f"cannot fetch {uri}: kserve-storage is not installed (modelserve's `storage` "
            "extra); mount the model at --model_dir, as KServe's storage initializer does"
        ) from exc
    try:
        return Path(Storage.download(uri))
    except Exception as exc:  # any storage backend failure is a load failure
        raise ModelLoadError(f"could not download model from {uri}: {exc}") from exc


def find_artifact(path: Path, formats: Sequence[ArtifactFormat]) -> Path:
    """The one model file in `path` (or `path` itself when it is a file) among `formats`."""
    wanted = ", ".join(f.pattern for f in formats)
    if path.is_file():
        if not any(f.matches(path) for f in formats):
            raise ModelLoadError(f"{path.name} is not a model file this server loads ({wanted})")
        return path
    # metadata.json (feature and target names) sits beside the model, whatever its format.
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != METADATA_FILE)
    found = [p for p in files if any(f.matches(p) for f in formats)]
    if not found:
        others = [p.name for p in files]
        seen = f"; it holds {', '.join(others[:5])}, which this server does not load" if (
            others) else ""
        raise ModelLoadError(
            f"no model file ({wanted}) in {path}{seen}; "
            "build the demo models with `modelserve build-models`"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelLoadError(f"more than one model file in {path}: {names}")
    return found[0]


def check_pickle_origin(
    uri: str, path: Path, artifact: ArtifactFormat, trust_remote_pickles: bool
) -> None:
    """Refuse (ModelLoadError) a code-running file fetched from the remote `uri`, unless
    trusted: whoever can write to the bucket or URL would otherwise run code in the server."""
    if not artifact.runs_code or not is_remote(uri) or trust_remote_pickles:
        return
    raise ModelLoadError(
        f"{path.name} was downloaded from {uri} and is a pickle: loading it would run any code "
        "it holds. Save the model as .skops (skops.io.dump: loads only allowed types), or, if "
        f"you trust its source, pass --trust_remote_pickles or set {TRUST_REMOTE_PICKLES_ENV}=1 "
        "(`modelserve up --trust-remote-pickles`)"
    )


def load_artifact(
    model_dir: str,
    backend: Backend,
    loaders: Mapping[str, Loader],
    *,
    trust_remote_pickles: bool = False,
) -> ModelArtifact:
    """Find the backend's model file in `model_dir`, load it with the loader of its format
    (`loaders`, by the format's pattern) and read the metadata.json beside it."""
    directory = resolve_model_dir(model_dir)
    path = find_artifact(directory, backend.artifacts)
    artifact = backend.artifact_of(path)
    assert artifact is not None  # find_artifact only returns files of the backend's formats
    check_pickle_origin(model_dir, path, artifact, trust_remote_pickles)
    try:
        model = loaders[artifact.pattern](path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"could not load {path}: {type(exc).__name__}: {exc}") from exc
    return ModelArtifact(model=model, path=path, metadata=read_metadata(path.parent))


def read_metadata(directory: Path) -> dict[str, Any]:
    """The metadata.json stored beside a model (feature and target names), or {}."""
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file():
        return {}
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{meta_path} must hold a JSON object")
    return metadata
