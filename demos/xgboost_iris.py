"""The XGBoost demo: a softprob booster of sklearn's iris data, what `xgboost-iris` serves.

Saved with `Booster.save_model` as `out/xgboost-iris/model.json` (XGBoost's data-only format),
with the feature names in the booster and, as for every demo, `metadata.json` beside it.
"""

from __future__ import annotations

from pathlib import Path

from demos.iris import IRIS_FEATURES, write_iris_metadata

__all__ = ["REQUIRES", "build"]

BUILD_ORDER = 30
REQUIRES = ("xgboost",)
DIRECTORY = "xgboost-iris"


def build(out: Path) -> Path:
    """Train the booster (20 rounds, depth 3, one thread, seeded) and write `out/xgboost-iris/`."""
    import xgboost
    from sklearn.datasets import load_iris

    data = load_iris()
    train = xgboost.DMatrix(data.data, label=data.target, feature_names=IRIS_FEATURES)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "eta": 0.3,
              "seed": 0, "nthread": 1}
    booster = xgboost.train(params, train, num_boost_round=20)
    directory = out / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / "model.json"))
    write_iris_metadata(directory)
    return directory
