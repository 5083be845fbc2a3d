"""`SKLearnPredictor`: a scikit-learn estimator behind KServe v1 and v2 (REST and gRPC)."""

from __future__ import annotations

from typing import Any

import numpy as np

from servers.batching import BatchSettings
from servers.sklearn.artifacts import load_estimator
from servers.tabular_predictor import METHODS, FittedModel, TabularPredictor

__all__ = ["METHODS", "SKLearnPredictor"]


class SKLearnPredictor(TabularPredictor):
    """Serves `predict` (and `predict_proba` when the estimator has it) of a fitted estimator
    saved as .skops, .joblib or a pickle (see `servers.sklearn.artifacts`)."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        method: str = "predict",
        trusted_types: list[str] | None = None,
        batching: BatchSettings | None = None,
        *,
        trust_remote_pickles: bool = False,
    ) -> None:
        super().__init__(name, model_dir, method, batching)
        self.trusted_types = trusted_types or []
        self.trust_remote_pickles = trust_remote_pickles
        self.estimator: Any = None

    def load_model(self) -> FittedModel:
        artifact = load_estimator(
            self.model_dir, self.trusted_types, trust_remote_pickles=self.trust_remote_pickles
        )
        estimator = artifact.model
        if not hasattr(estimator, "predict"):
            raise TypeError(f"{artifact.path} holds {type(estimator).__name__}, no predict()")
        self.estimator = estimator
        n_features = getattr(estimator, "n_features_in_", None)
        names = artifact.metadata.get("feature_names")
        if names is None:
            names = getattr(estimator, "feature_names_in_", None)
        classes = getattr(estimator, "classes_", None)
        return FittedModel(
            kind=type(estimator).__name__,
            methods={m: getattr(estimator, m) for m in METHODS if hasattr(estimator, m)},
            n_features=int(n_features) if n_features is not None else None,
            feature_names=[str(n) for n in names] if names is not None else None,
            classes=np.asarray(classes) if classes is not None else None,
            allow_nan=_allows_nan(estimator),
        )


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # older scikit-learn or a non-sklearn estimator: be strict
        return False
