"""XGBoost backend: a Booster saved in XGBoost's own formats (`model.json`, `model.ubj`: data
only, no code runs when they load) behind KServe v1 and v2, as KServe's `kserve-xgbserver`.

Needs the `xgboost` extra (`pip install '.[xgboost]'`: the `xgboost-cpu` wheel).
"""
