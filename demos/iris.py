"""The iris demo: a logistic regression of sklearn's iris data, what `sklearn-iris` and
`iris-classifier` serve (and, as ONNX, Triton's `iris-classifier`)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

__all__ = ["IRIS_FEATURES", "REQUIRES", "build", "build_iris", "write_iris_metadata"]

BUILD_ORDER = 0
REQUIRES: tuple[str, ...] = ()

# The v1 record keys of iris-classifier, in the order the model was trained on.
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_iris(out: Path) -> Path:
    """Iris logistic regression: `out/iris/model.joblib` + `metadata.json` (features, labels)."""
    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    directory = out / "iris"
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    write_iris_metadata(directory)
    return directory


def write_iris_metadata(directory: Path) -> None:
    """`metadata.json` of an iris model (any backend's): feature and target names."""
    metadata = {
        "feature_names": IRIS_FEATURES,
        "target_names": [str(n) for n in load_iris().target_names],
        "dataset": "sklearn.datasets.load_iris",
    }
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def build(out: Path) -> Path:
    """The demo builder's entry: `build_iris`."""
    return build_iris(out)
