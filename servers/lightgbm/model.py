"""`LightGBMPredictor`: a LightGBM Booster behind KServe v1 and v2 (REST and gRPC).

`predict` answers class ids for a classifier (`multiclass`, `multiclassova`, `binary`), the
booster's output otherwise (regression, ranking); `predict_proba` the class probabilities of
a classifier (`[1 - p, p]` for a binary one). Inputs are checked against the booster's feature
count (and names, unless they are LightGBM's `Column_N` defaults) before they join a batch;
NaN, LightGBM's missing value, reaches the booster only with `allow_missing`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from servers.lightgbm.backend import BACKEND
from servers.storage import load_artifact
from servers.tabular_predictor import BoosterPredictor, FittedModel, Method

__all__ = ["LightGBMPredictor"]

_CLASSIFIERS = ("multiclass", "multiclassova", "softmax", "ova", "binary")
_DEFAULT_NAME = re.compile(r"Column_\d+")


def _load_booster(path: Path) -> Any:
    import lightgbm

    return lightgbm.Booster(model_file=str(path))


class LightGBMPredictor(BoosterPredictor):
    """Serves a Booster loaded from `model.txt` (LightGBM's data-only text format)."""

    def load_model(self) -> FittedModel:
        artifact = load_artifact(self.model_dir, BACKEND, {"model.txt": _load_booster})
        booster = artifact.model
        objective = str(booster.dump_model(num_iteration=0).get("objective", "")).split()
        name = objective[0] if objective else "unknown"
        names = artifact.metadata.get("feature_names") or [
            n for n in booster.feature_name() if not _DEFAULT_NAME.fullmatch(n)
        ]
        raw = _raw(booster, self.nthread)
        methods: dict[str, Method] = {}
        classes: np.ndarray | None = None
        if name in _CLASSIFIERS and name != "binary":
            classes = np.arange(booster.num_model_per_iteration(), dtype=np.int64)
            methods["predict"] = lambda m: np.argmax(raw(m), axis=1).astype(np.int64)
            methods["predict_proba"] = raw
        elif name == "binary":
            classes = np.arange(2, dtype=np.int64)
            methods["predict"] = lambda m: (raw(m) > 0.5).astype(np.int64)
            methods["predict_proba"] = lambda m: np.stack([1.0 - raw(m), raw(m)], axis=1)
        else:
            methods["predict"] = raw
        n_features = int(booster.num_feature())
        return FittedModel(
            kind=f"LightGBM {name}",
            methods=methods,
            n_features=n_features,
            feature_names=[str(n) for n in names] if len(names) == n_features else None,
            classes=classes,
            allow_nan=self.allow_missing,
            nan_hint=self.NAN_HINT,
        )


def _raw(booster: Any, nthread: int) -> Method:
    """The booster's prediction of a float matrix, on `nthread` threads."""

    def predict(matrix: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        return np.asarray(booster.predict(rows, num_threads=nthread), dtype=np.float64)

    return predict
