"""LightGBM backend: a Booster saved as LightGBM's text model (`model.txt`: data only, no code
runs when it loads) behind KServe v1 and v2, as KServe's `kserve-lgbserver`.

Needs the `lightgbm` extra (`pip install '.[lightgbm]'`).
"""
