"""scikit-learn's artifact loaders: `.skops` (safe: only types on an allow-list are loaded),
`.joblib` and `.pkl`/`.pickle` (pickles: loading one runs whatever code it holds, so
`servers.storage` refuses a remote one unless trusted)."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import joblib

from servers.errors import ModelLoadError
from servers.sklearn.backend import BACKEND
from servers.storage import Loader, ModelArtifact, load_artifact

__all__ = ["SKOPS_TRUSTED_TYPES", "load_estimator"]

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


def _load_skops(trusted: list[str], path: Path) -> Any:
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


def _load_pickle(path: Path) -> Any:
    with path.open("rb") as handle:
        return pickle.load(handle)  # noqa: S301 - documented: trusted artifacts only


def load_estimator(
    model_dir: str,
    trusted_types: list[str] | None = None,
    *,
    trust_remote_pickles: bool = False,
) -> ModelArtifact:
    """Load the estimator in `model_dir` and its optional metadata.json; a pickle downloaded
    from a remote URI only with `trust_remote_pickles`."""
    loaders: dict[str, Loader] = {
        ".skops": partial(_load_skops, list(trusted_types or [])),
        ".joblib": joblib.load,
        ".pkl": _load_pickle,
        ".pickle": _load_pickle,
    }
    return load_artifact(model_dir, BACKEND, loaders, trust_remote_pickles=trust_remote_pickles)
