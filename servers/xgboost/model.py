"""`XGBoostPredictor`: an XGBoost Booster behind KServe v1 and v2 (REST and gRPC).

`predict` answers what the objective predicts: class ids for a classifier (`multi:softprob`,
`multi:softmax`, `binary:logistic`), the booster's output otherwise (regression, ranking);
`predict_proba` the class probabilities of a probabilistic classifier (`[1 - p, p]` for a
binary one). Inputs are checked against the booster's feature count (and names, for v1 named
columns and v2 per-feature inputs) before they join a batch; NaN, XGBoost's missing value,
reaches the booster only with `allow_missing`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from servers.errors import ModelLoadError
from servers.storage import load_artifact
from servers.tabular_predictor import BoosterPredictor, FittedModel, Method
from servers.xgboost.backend import BACKEND

__all__ = ["XGBoostPredictor"]

_PROBABILISTIC = ("multi:softprob", "binary:logistic")


def _load_booster(nthread: int, path: Path) -> Any:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": nthread})
    return booster


class XGBoostPredictor(BoosterPredictor):
    """Serves a Booster loaded from `model.json` / `model.ubj` (XGBoost's data-only formats)."""

    def load_model(self) -> FittedModel:
        artifact = load_artifact(
            self.model_dir, BACKEND, {
                ".json": lambda p: _load_booster(self.nthread, p),
                ".ubj": lambda p: _load_booster(self.nthread, p),
            }
        )
        booster = artifact.model
        try:
            learner = json.loads(booster.save_config())["learner"]
            objective = str(learner["objective"]["name"])
            num_class = int(learner["learner_model_param"].get("num_class", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"{artifact.path}: the booster's config is unreadable: {exc}"
            ) from exc
        names = artifact.metadata.get("feature_names") or booster.feature_names
        raw = _raw(booster)
        methods: dict[str, Method] = {}
        classes: np.ndarray | None = None
        if objective == "multi:softprob":
            classes = np.arange(num_class, dtype=np.int64)
            methods["predict"] = lambda m: np.argmax(raw(m), axis=1).astype(np.int64)
            methods["predict_proba"] = lambda m: raw(m).astype(np.float64)
        elif objective == "multi:softmax":
            classes = np.arange(num_class, dtype=np.int64)
            methods["predict"] = lambda m: raw(m).astype(np.int64)
        elif objective == "binary:logistic":
            classes = np.arange(2, dtype=np.int64)
            methods["predict"] = lambda m: (raw(m) > 0.5).astype(np.int64)
            methods["predict_proba"] = lambda m: _binary_proba(raw(m))
        else:
            methods["predict"] = lambda m: raw(m).astype(np.float64)
        return FittedModel(
            kind=f"XGBoost {objective}",
            methods=methods,
            n_features=int(booster.num_features()),
            feature_names=[str(n) for n in names] if names else None,
            classes=classes,
            allow_nan=self.allow_missing,
            nan_hint=self.NAN_HINT,
        )


def _raw(booster: Any) -> Method:
    """The booster's prediction of a float matrix, without a DMatrix (thread-safe on CPU)."""

    def predict(matrix: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        # Our checks already matched the features by position (and by name where sent).
        return np.asarray(booster.inplace_predict(rows, validate_features=False))

    return predict


def _binary_proba(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.stack([1.0 - p, p], axis=1)
