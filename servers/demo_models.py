"""The demo models, trained from data that ships with scikit-learn (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

__all__ = ["IRIS_FEATURES", "build_all", "build_iris"]

# The v1 record keys of iris-classifier, in the order the model was trained on.
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_iris(out: Path) -> Path:
    """Iris logistic regression: `out/iris/model.joblib` + `metadata.json` (features, labels)."""
    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    directory = out / "iris"
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    metadata = {
        "feature_names": IRIS_FEATURES,
        "target_names": [str(n) for n in data.target_names],
        "dataset": "sklearn.datasets.load_iris",
    }
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


def build_all(out: Path) -> list[Path]:
    """Build every demo model under `out`; returns the model directories."""
    return [build_iris(out)]
