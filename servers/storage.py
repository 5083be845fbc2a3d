"""Model artifacts: where they are (`--model_dir` / `--storage_uri`) and how they load.

Local paths and `file://` URIs are used in place; anything else (`http(s)://`, `gs://`, `s3://`,
`hf://`, `pvc://` in a cluster) is fetched with KServe's `kserve_storage.Storage`. Formats by
extension: `.skops` (safe: only types on an allow-list are loaded), `.joblib`, `.pkl`/`.pickle`
(pickles: loading one runs whatever code it holds). A pickle of a model fetched from a URI is
refused unless the caller trusts remote pickles (`--trust_remote_pickles`,
`MODELSERVE_TRUST_REMOTE_PICKLES=1`); a local one loads as the operator put it there.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib

from servers.errors import ModelLoadError
from servers.limits import TRUST_REMOTE_PICKLES_ENV

__all__ = [
    "PICKLE_SUFFIXES",
    "ModelArtifact",
    "check_pickle_origin",
    "find_artifact",
    "is_remote",
    "load_artifact",
    "read_metadata",
    "resolve_model_dir",
]

# Beyond skops' own defaults: scikit-learn's compiled model internals (tree structures, losses)
# that common estimators hold. Anything else must be trusted by name (`--trust_type`).
SKOPS_TRUSTED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
    }
)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_EXTENSIONS = (".skops", *PICKLE_SUFFIXES)
METADATA_FILE = "metadata.json"


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

        return Path(Storage.download(uri))
    except Exception as exc:  # any storage backend failure is a load failure
        raise ModelLoadError(f"could not download model from {uri}: {exc}") from exc


def find_artifact(path: Path) -> Path:
    """The one model file in `path` (or `path` itself when it is a file)."""
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.suffix in _EXTENSIONS and p.is_file())
    if not found:
        raise ModelLoadError(
            f"no model file ({', '.join(_EXTENSIONS)}) in {path}; "
            "build the demo models with `modelserve build-models`"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelLoadError(f"more than one model file in {path}: {names}")
    return found[0]


def _load_skops(path: Path, trusted: list[str]) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    allowed = SKOPS_TRUSTED_TYPES | set(trusted)
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise ModelLoadError(
            f"{path.name} holds types that are not trusted: {', '.join(refused)}; "
            "pass them with --trust_type if you trust the artifact"
        )
    return sio.load(path, trusted=untrusted)


def check_pickle_origin(uri: str, path: Path, trust_remote_pickles: bool) -> None:
    """Refuse (ModelLoadError) a pickle fetched from the remote `uri`, unless trusted.

    Whoever can write to the bucket or URL would otherwise run code in the server.
    """
    if path.suffix not in PICKLE_SUFFIXES or not is_remote(uri) or trust_remote_pickles:
        return
    raise ModelLoadError(
        f"{path.name} was downloaded from {uri} and is a pickle: loading it would run any code "
        "it holds. Save the model as .skops (skops.io.dump: loads only allowed types), or, if "
        f"you trust its source, pass --trust_remote_pickles or set {TRUST_REMOTE_PICKLES_ENV}=1 "
        "(`modelserve up --trust-remote-pickles`)"
    )


def load_artifact(
    model_dir: str,
    trusted_types: list[str] | None = None,
    *,
    trust_remote_pickles: bool = False,
) -> ModelArtifact:
    """Load the model in `model_dir` and its optional metadata.json; a pickle downloaded from a
    remote URI only with `trust_remote_pickles`."""
    directory = resolve_model_dir(model_dir)
    path = find_artifact(directory)
    check_pickle_origin(model_dir, path, trust_remote_pickles)
    try:
        if path.suffix == ".skops":
            model = _load_skops(path, trusted_types or [])
        elif path.suffix == ".joblib":
            model = joblib.load(path)
        else:
            with path.open("rb") as handle:
                model = pickle.load(handle)  # noqa: S301 - documented: trusted artifacts only
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
