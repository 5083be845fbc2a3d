"""The LightGBM demo: a multiclass booster of sklearn's iris data, what `lightgbm-iris` serves.

Saved with `Booster.save_model` as `out/lightgbm-iris/model.txt` (LightGBM's data-only text
format), with the feature names in the booster and `metadata.json` beside it.
"""

from __future__ import annotations

from pathlib import Path

from demos.iris import IRIS_FEATURES, write_iris_metadata

__all__ = ["REQUIRES", "build"]

BUILD_ORDER = 31
REQUIRES = ("lightgbm",)
DIRECTORY = "lightgbm-iris"


def build(out: Path) -> Path:
    """Train the booster (20 rounds, one thread, seeded) and write `out/lightgbm-iris/`."""
    import lightgbm
    from sklearn.datasets import load_iris

    data = load_iris()
    train = lightgbm.Dataset(data.data, label=data.target, feature_name=IRIS_FEATURES)
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7,
              "min_data_in_leaf": 5, "seed": 0, "num_threads": 1, "verbose": -1}
    booster = lightgbm.train(params, train, num_boost_round=20)
    directory = out / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / "model.txt"))
    write_iris_metadata(directory)
    return directory
